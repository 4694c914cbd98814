//! The Berth operator: reconciles `Registry` custom resources into per-node
//! DaemonSets of berth-registry (see DESIGN.md, "The operator").
//!
//! Read top-down: [`crd`] is the API ([`decoded`] keeps a Registry that
//! does not fit it from stopping the rest), [`resources`] the pure builders,
//! [`reconcile`] one pass over one Registry, [`status`] what it reports,
//! [`controller`] the watches around it, [`leader`] and [`metrics`] the
//! process around that.

pub mod controller;
pub mod crd;
pub mod decoded;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod resources;
pub mod status;

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as `crdgen` prints it and `crds/registry.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&crd::Registry::crd())
}
