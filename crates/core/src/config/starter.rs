//! The commented starter `repave.toml` that `repave init` writes.

/// A commented `repave.toml` for the local provider: one pipeline `web` on
/// the local group `web`. It parses and validates as is.
pub fn starter_config() -> &'static str {
    include_str!("starter.toml")
}
