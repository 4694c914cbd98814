//! What `berth-registry` and `berth-operator` exchange, typed once for both.
//!
//! The operator writes what the registry reads, and reads what the registry
//! writes; a type defined on each side would let the two drift apart with
//! nothing to notice. This crate holds those types, and depends on nothing
//! heavier than serde, so the operator need not build the registry's server.
//!
//! - [`gc_report`]: the report of a garbage collection, which the registry
//!   writes and the operator puts into a Registry's status.

pub mod gc_report;

pub use gc_report::GcReport;
