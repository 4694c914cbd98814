//! What `berth-registry` and `berth-operator` exchange, typed once for both.
//!
//! The operator writes the registry's configuration file and reads the
//! reports of its garbage collections; types defined on each side would let
//! the two drift apart with nothing to notice. This crate holds those types
//! and the checks a configuration must pass, so the operator can check what
//! it renders with the function the registry runs on the file. It depends
//! on no async runtime or HTTP server.
//!
//! - [`schema`]: the file's types, which both read and write it.
//! - [`env`](mod@env): the `REGISTRY_*` environment overrides.
//! - [`check`]: reading a file and checking it into [`Settings`].
//! - [`settings`]: the checked values the registry runs with.
//! - [`pull_through`]: `proxy` and `berth.mirrors`, checked.
//! - [`choices`], [`duration`], [`headers`], [`schedule`], [`network`], [`service_account`]: values
//!   the file holds.
//! - [`error`]: the error naming the key at fault.
//! - [`gc_report`]: the report of a garbage collection.

pub mod check;
pub mod choices;
pub mod duration;
pub mod env;
pub mod error;
pub mod gc_report;
pub mod headers;
pub mod network;
pub mod pull_through;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod service_account;
pub mod settings;

pub use choices::{LogFormatter, LogLevel, TlsVersion};
pub use duration::GoDuration;
pub use env::CONFIGURATION_PATH_ENV;
pub use error::ConfigError;
pub use gc_report::GcReport;
pub use headers::Headers;
pub use pull_through::{
    DEFAULT_MIRROR, PullThrough, UpstreamCredentials, UpstreamSettings, default_upstream_url,
    is_registry_host,
};
pub use schema::*;
pub use secret::Secret;
pub use service_account::ServiceAccountKey;
pub use settings::*;

#[cfg(test)]
mod test_support;
