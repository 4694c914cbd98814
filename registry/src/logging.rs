//! Structured logs with `tracing`, as text or JSON on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormatter};

/// Installs the global subscriber. `BERTH_LOG` (an `EnvFilter` directive)
/// overrides `log.level` when set.
pub fn init(log: &Log) {
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

/// `log.fields` rendered as `key=value` pairs, attached to every request's span.
pub fn static_fields(log: &Log) -> String {
    log.fields
        .iter()
        .map(|(k, v)| match v {
            serde_norway::Value::String(s) => format!("{k}={s}"),
            other => format!(
                "{k}={}",
                serde_norway::to_string(other).unwrap_or_default().trim()
            ),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
