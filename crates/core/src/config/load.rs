//! Parsing and validation with positions: every error names the file, the
//! line and column of the offending key, and its dotted path.

use super::locate::{self, Seg};
use super::{validate, Config};
use toml_edit::ImDocument;

/// Largest config file accepted. A real `repave.toml` is a few KB; anything
/// this big is the wrong file.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// A config problem at `file:line:col` (1-based), for the key `field`
/// (dotted path) when one can be named.
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

impl ConfigError {
    /// An error at byte `offset` of `src` (1:1 when unknown).
    pub(crate) fn at(file: &str, src: &str, offset: Option<usize>, field: Option<String>, message: String) -> Self {
        let (line, col) = offset.map_or((1, 1), |o| locate::line_col(src, o));
        Self {
            file: file.into(),
            line,
            col,
            field,
            message,
        }
    }
}

/// Parse and validate `src` (read from `file`, used in messages). Returns the
/// first problem in document order; see [`parse_all`] for every problem.
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
    parse_all(src, file).map_err(|mut errors| errors.remove(0))
}

/// Like [`parse`], but reports every semantic problem (sorted by position;
/// never empty). Syntax and type errors stop at the first one.
pub fn parse_all(src: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    parse_all_with(src, file, &|_| Vec::new())
}

/// Checks that live outside this crate (cron and time-zone parsing belong to
/// the scheduler): given the parsed config, each returns problems as
/// (dotted key path such as `pipelines.web.window.timezone`, message), and
/// they are reported with the key's position like every other error.
pub type ExtraCheck<'a> = &'a dyn Fn(&Config) -> Vec<(String, String)>;

/// [`parse_bytes`] plus `extra` checks, first problem in document order.
pub fn parse_bytes_with(bytes: &[u8], file: &str, extra: ExtraCheck<'_>) -> Result<Config, ConfigError> {
    let config = parse_bytes(bytes, file)?;
    let src = std::str::from_utf8(bytes).unwrap_or_default();
    let problems = extra(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    parse_all_with(src, file, extra).map_err(|mut errors| errors.remove(0))
}

fn parse_all_with(src: &str, file: &str, extra: ExtraCheck<'_>) -> Result<Config, Vec<ConfigError>> {
    check_size(src.len(), file).map_err(|e| vec![e])?;
    if let Some(nul) = src.find('\0') {
        return Err(vec![nul_error(src, nul, file)]);
    }
    let doc = ImDocument::parse(src).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        vec![ConfigError::at(file, src, offset, None, clean(e.message()))]
    })?;
    let config: Config = toml::from_str(src).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        let path = offset.map(|o| locate::path_at(&doc, o)).unwrap_or_default();
        let field = (!path.is_empty()).then(|| locate::display_path(&path));
        vec![ConfigError::at(file, src, offset, field, clean(e.message()))]
    })?;
    let mut errors = validate::check(&config, &|path: &[Seg], message: String| {
        let field = Some(locate::display_path(path));
        ConfigError::at(file, src, locate::offset_of(&doc, path), field, message)
    });
    for (dotted, message) in extra(&config) {
        let path: Vec<Seg> = dotted.split('.').map(|k| Seg::Key(k.to_string())).collect();
        let field = Some(locate::display_path(&path));
        errors.push(ConfigError::at(
            file,
            src,
            locate::offset_of(&doc, &path),
            field,
            message,
        ));
    }
    if errors.is_empty() {
        return Ok(config);
    }
    errors.sort_by_key(|e| (e.line, e.col));
    Err(errors)
}

/// [`parse`] for raw file contents: rejects files over [`MAX_CONFIG_BYTES`],
/// NUL bytes (a binary file) and invalid UTF-8, each with its position.
pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Config, ConfigError> {
    check_size(bytes.len(), file)?;
    let utf8 = std::str::from_utf8(bytes);
    let bad_utf8 = utf8.as_ref().err().map(|e| e.valid_up_to());
    let nul = bytes.iter().position(|&b| b == 0);
    // Whichever comes first; the prefix before it is valid UTF-8.
    match (nul, bad_utf8) {
        (Some(n), bad) if bad.is_none_or(|b| n < b) => {
            let prefix = std::str::from_utf8(&bytes[..n]).unwrap_or_default();
            Err(nul_error(prefix, n, file))
        }
        (_, Some(b)) => {
            let prefix = std::str::from_utf8(&bytes[..b]).unwrap_or_default();
            let message = format!(
                "file is not valid UTF-8 (byte 0x{:02x} at offset {b}); save it as UTF-8",
                bytes[b]
            );
            Err(ConfigError::at(file, prefix, Some(b), None, message))
        }
        _ => parse(utf8.unwrap_or_default(), file),
    }
}

fn check_size(len: usize, file: &str) -> Result<(), ConfigError> {
    if len <= MAX_CONFIG_BYTES {
        return Ok(());
    }
    let message = format!("file is {len} bytes; a repave config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB)");
    Err(ConfigError::at(file, "", None, None, message))
}

fn nul_error(src: &str, offset: usize, file: &str) -> ConfigError {
    let message = "file contains a NUL byte; is this a binary file?".to_string();
    ConfigError::at(file, src, Some(offset), None, message)
}

/// toml's messages end in a newline and sometimes span lines; keep them on
/// one line so `file:line:col: field: message` stays greppable.
fn clean(message: &str) -> String {
    message.trim().lines().map(str::trim).collect::<Vec<_>>().join("; ")
}
