//! The Berth operator: reconciles `Registry` custom resources into per-node
//! DaemonSets of berth-registry.
//!
//! This crate holds its place in the workspace; the controller is built in
//! its own change (see DESIGN.md, "The operator").
