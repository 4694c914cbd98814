//! Structured logs with `tracing`, as text or JSON on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormatter, LogSettings};

/// Installs the global subscriber. `BERTH_LOG` (an `EnvFilter` directive)
/// overrides `log.level` when set.
pub fn init(log: &LogSettings) {
    let filter =
        EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if log.formatter == LogFormatter::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `log.fields` as `key=value` pairs, attached to every request's span.
pub fn static_fields(log: &LogSettings) -> String {
    log.fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
