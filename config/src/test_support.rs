//! What the crate's tests share: a small valid file and the reading of a
//! text as the registry reads its file.

use crate::error::ConfigError;
use crate::schema::Config;
use crate::settings::Settings;

/// A minimal valid file: filesystem storage, deletes on.
pub(crate) const BASIC: &str = "version: 0.1\nhttp:\n  addr: 127.0.0.1:5001\nstorage:\n  filesystem:\n    rootdirectory: /tmp/r\n  delete:\n    enabled: true\n";

/// `text` read and checked with overrides `env`, as the registry reads its file.
pub(crate) fn parse(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Config::parse(
        text,
        "test.yml",
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// The error `text` with overrides `env` is refused with.
pub(crate) fn error(text: &str, env: &[(&str, &str)]) -> String {
    match parse(text, env) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}
