//! End-to-end test harness for Berth: starts real processes (the Berth
//! registry server, CNCF Distribution, MinIO, skopeo, curl, the OCI
//! conformance suite) and gives the integration tests in `tests/` what
//! they share.
//!
//! Every server binds 127.0.0.1 on a free port, keeps its files in its own
//! temporary directory, and is killed when its handle drops, so tests run
//! in parallel. A missing tool fails the test with a message saying to run
//! `make tools`; nothing is skipped silently.

#![warn(missing_docs)]

pub mod azurite;
pub mod certs;
pub mod conformance;
pub mod containerd;
pub mod curl;
pub mod distribution;
pub mod fake_gcs;
pub mod htpasswd;
pub mod http;
pub mod images;
pub mod metrics;
pub mod minio;
pub mod netns;
pub mod node;
pub mod object_store;
pub mod oci;
pub mod process;
pub mod proxy;
pub mod readme;
pub mod registry;
pub mod skopeo;
pub mod storage;
pub mod tools;
pub mod webhook;
pub mod xml;
pub mod yaml;
