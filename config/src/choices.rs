//! Keys whose value is one of a few words: `log.level`, `log.formatter`,
//! `http.tls.minimumtls`. Typed as enums, a misspelt word is refused when
//! the file is read, naming the key and the words it takes, and the
//! registry matches on variants rather than on strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `log.level`: the least severe events logged (also a Registry's
/// `logLevel`, with the `schemars` feature).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Detail for debugging.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level as the file spells it, which is also a tracing filter.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `log.formatter`: how log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatter {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `http.tls.minimumtls`: the oldest TLS version accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    #[serde(rename = "tls1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "tls1.3")]
    Tls13,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_and_write_as_the_file_spells_them() {
        let level: LogLevel = serde_norway::from_str("debug").unwrap();
        assert_eq!(level, LogLevel::Debug);
        assert_eq!(serde_norway::to_string(&level).unwrap(), "debug\n");
        let tls: TlsVersion = serde_norway::from_str("tls1.3").unwrap();
        assert_eq!(serde_norway::to_string(&tls).unwrap(), "tls1.3\n");
        assert!(serde_norway::from_str::<TlsVersion>("tls1.1").is_err());
        assert!(serde_norway::from_str::<LogFormatter>("xml").is_err());
    }
}
