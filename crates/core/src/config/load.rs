//! Parsing and validation with positions. (Filled in by the config work.)

use super::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parse and validate `src` (read from `file`, used in messages).
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
    toml::from_str(src).map_err(|e| ConfigError {
        file: file.into(),
        line: 1,
        col: 1,
        field: None,
        message: e.message().to_string(),
    })
}
