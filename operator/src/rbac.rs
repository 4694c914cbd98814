//! The operator's declared API needs: every resource it reads or writes and
//! every verb it uses, and nothing else.
//!
//! This list is kept next to the code that makes the calls and must change
//! with it: [`controller`](crate::controller) watches (`list`, `watch`),
//! [`reconcile`](crate::reconcile) reads Secrets and GC pods and applies the
//! owned objects server-side (`patch`, and `create` for the first apply),
//! deletes an unscheduled CronJob and patches the Registry's status; the
//! event recorder creates Events and patches repeated ones; the
//! [`leader`](crate::leader) elector reads and replaces its Lease.
//!
//! The Helm chart (`charts/berth/templates/rbac.yaml`) grants exactly these
//! rules: `operator/tests/helm_rbac.rs` checks that every resource here is one
//! the code's types name and compares the rendered ClusterRole and Roles with
//! [`RBAC`]; `helm_install.rs` runs the operator with nothing but the
//! rendered ServiceAccount's permissions.

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The namespaces the operator watches: a ClusterRole when it watches
    /// all of them (the default), a Role in the one namespace given by
    /// `--namespace` otherwise.
    Watched,
    /// The namespace of the leader-election Lease (the operator's own).
    LeaseNamespace,
}

/// Which objects of the resource a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Names {
    /// Any object.
    Any,
    /// Only the Lease named by `--lease-name` (RBAC `resourceNames`).
    Lease,
}

/// One permission the operator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` is the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where it applies to one.
    pub resource: &'static str,
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
    /// Where the rule applies.
    pub scope: Scope,
    /// Which objects it covers.
    pub names: Names,
}

const fn watched(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Rule {
    Rule {
        group,
        resource,
        verbs,
        scope: Scope::Watched,
        names: Names::Any,
    }
}

/// Every resource and verb the operator uses. A verb missing here fails
/// at run time with 403; a verb here that the code no longer uses is a
/// permission granted for nothing.
pub const RBAC: &[Rule] = &[
    // The controller's primary watch; reconcile::still_wanted reads the
    // Registry before each apply; reconcile::cleanup patches its metadata
    // (the containerd-hosts finalizer and the hosts directory annotation).
    watched(
        "berth.dev",
        "registries",
        &["get", "list", "patch", "watch"],
    ),
    // reconcile::patch_status (server-side apply of the status subresource).
    watched("berth.dev", "registries/status", &["patch"]),
    // Owned objects: watched by the controller, read by reconcile::taken_name
    // (is the name someone else's?), applied by reconcile::apply (an apply
    // that creates the object needs `create` as well as `patch`). Config
    // ConfigMaps are also deleted by reconcile::prune_config_maps.
    watched(
        "",
        "configmaps",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
    watched(
        "",
        "serviceaccounts",
        &["create", "get", "list", "patch", "watch"],
    ),
    watched("", "services", &["create", "get", "list", "patch", "watch"]),
    // DaemonSets are also deleted by reconcile::cleanup: the registry
    // DaemonSet of a deleted Registry before its nodes are cleaned, and the
    // cleanup DaemonSet once they are.
    watched(
        "apps",
        "daemonsets",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
    // Also read and deleted by reconcile::delete_owned_cron_job.
    watched(
        "batch",
        "cronjobs",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
    // Referenced Secrets: watched so that a missing one is reported and a
    // new one picked up, read by reconcile::secrets_hash.
    watched("", "secrets", &["get", "list", "watch"]),
    // The controller watches a Registry's pods; reconcile::last_gc lists the
    // GC pods of a Registry, pod_trouble its registry pods,
    // prune_config_maps all of its pods ...
    watched("", "pods", &["list", "watch"]),
    // reconcile::node_gc asks each registry pod of an InServer Registry for
    // its last collection through the API server. (A narrower grant than
    // the Secrets the operator already reads.)
    watched("", "pods/proxy", &["get"]),
    // ... and its Jobs.
    watched("batch", "jobs", &["list"]),
    // kube's event Recorder: create, and patch to count a repeated event;
    // reconcile::pod_trouble lists the DaemonSet's FailedCreate Events.
    watched("events.k8s.io", "events", &["create", "list", "patch"]),
    // leader::Elector reads and replaces only its own Lease. The chart
    // creates that Lease, so that `helm uninstall` deletes it (after the
    // RBAC that would let a stopping replica write it again); the elector
    // creates one only where it may, outside a cluster. RBAC cannot
    // restrict `create` by name, so it is not granted.
    Rule {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "update"],
        scope: Scope::LeaseNamespace,
        names: Names::Lease,
    },
];

/// [`RBAC`] flattened to one `(scope, group, resource, verb, names)` per
/// permission, sorted: the form in which two rule lists compare equal
/// however their rules are grouped.
pub fn permissions() -> Vec<(Scope, &'static str, &'static str, &'static str, Names)> {
    let mut all: Vec<_> = RBAC
        .iter()
        .flat_map(|rule| {
            rule.verbs
                .iter()
                .map(move |verb| (rule.scope, rule.group, rule.resource, *verb, rule.names))
        })
        .collect();
    all.sort();
    all
}
