//! berth-registry: an OCI Distribution registry server, a drop-in for CNCF
//! Distribution (same API, same storage layout, a compatible config file).
//!
//! Data flows one way: [`api`] (HTTP) -> [`service`] (registry semantics) ->
//! [`storage`] (bytes at paths). [`layout`] maps registry objects to paths;
//! [`config`], [`auth`], [`tls`], [`https`], [`notify`], [`metrics`], [`logging`],
//! [`maintenance`] and [`gc`] sit beside them, and [`server`] wires
//! everything into a process.

pub mod api;
pub mod auth;
pub mod config;
pub mod containerd_hosts;
pub mod digest;
pub mod error;
pub mod fill;
pub mod gc;
pub mod https;
pub mod layout;
pub mod logging;
pub mod maintenance;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod nodecache;
pub mod notify;
#[cfg(test)]
mod properties;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
