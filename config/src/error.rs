//! The configuration's one error type: each error names the key at fault
//! (and the environment variable, when one set it), so the message says
//! where to look.

use std::path::PathBuf;

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML is malformed.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or its value invalid.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `storage.filesystem.rootdirectory`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}
