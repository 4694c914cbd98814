//! Registry status from what the cluster reports: DaemonSet counts,
//! conditions, and the last garbage collection.

use berth_config::GcReport;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::crd::{GcResult, NodeGcResult, Registry, RegistryStatus};
use crate::resources::{HOSTS_INIT_CONTAINER, collects_in_server, endpoint, runs_cron_job};

/// Condition type: every desired node runs an updated, ready pod.
pub const READY: &str = "Ready";
/// Condition type: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something is wrong that a rollout will not fix.
pub const DEGRADED: &str = "Degraded";

/// Why a Registry could not be applied: a reason (CamelCase) and a message
/// naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The condition reason, such as `SecretNotFound`.
    pub reason: &'static str,
    /// What is wrong, naming the Secret or field.
    pub message: String,
}

/// How far the DaemonSet's rollout has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Nodes that should run a pod.
    pub desired: i32,
    /// Nodes that run a pod (ready or not).
    pub scheduled: i32,
    /// Nodes whose pod is ready.
    pub ready: i32,
    /// Nodes whose pod runs the current template.
    pub updated: i32,
    /// Nodes whose pod has been ready long enough to count as available.
    pub available: i32,
    /// Whether the DaemonSet controller has seen the current template.
    pub observed: bool,
}

impl Rollout {
    /// Reads the counts from a DaemonSet's status.
    pub fn of(ds: &DaemonSet) -> Self {
        let Some(status) = &ds.status else {
            return Rollout::default();
        };
        Rollout {
            desired: status.desired_number_scheduled,
            scheduled: status.current_number_scheduled,
            ready: status.number_ready,
            updated: status.updated_number_scheduled.unwrap_or(0),
            available: status.number_available.unwrap_or(0),
            observed: status.observed_generation.is_some()
                && status.observed_generation == ds.metadata.generation,
        }
    }

    /// Whether every desired node runs an updated, ready, available pod of
    /// the template the DaemonSet controller has seen.
    pub fn is_complete(&self) -> bool {
        self.observed
            && self.desired > 0
            && [self.ready, self.updated, self.available]
                .iter()
                .all(|n| *n == self.desired)
    }
}

/// Why a Registry's pods are missing or not ready, as the cluster says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTrouble {
    /// The condition reason: `PodsRejected` or `PodsFailing`.
    pub reason: &'static str,
    /// What the cluster said, naming the pod or the DaemonSet.
    pub message: String,
}

/// Container waiting reasons that keep a pod from running until someone
/// acts (as opposed to `ContainerCreating`, which passes).
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What keeps the DaemonSet `daemon_set` from running a ready pod on every
/// node: while pods are missing, the newest `FailedCreate` Event about it
/// (Pod Security admission, a quota, ...); else the first pod that is not
/// ready and waits on one of [`STUCK`] (an image pull, a crash loop, ...).
pub fn pod_trouble(
    daemon_set: &str,
    rollout: Rollout,
    events: &[Event],
    pods: &[Pod],
) -> Option<PodTrouble> {
    if rollout.scheduled < rollout.desired {
        let newest = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(daemon_set))
            .max_by_key(|e| event_time(e));
        if let Some(event) = newest {
            return Some(PodTrouble {
                reason: "PodsRejected",
                message: format!(
                    "DaemonSet {daemon_set} cannot create pods: {}",
                    event.note.as_deref().unwrap_or("no message")
                ),
            });
        }
    }
    if let Some(trouble) = pods.iter().find_map(hosts_failure) {
        return Some(trouble);
    }
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let containers = status.init_container_statuses.iter().flatten();
        let waiting = containers
            .chain(status.container_statuses.iter().flatten())
            .filter(|c| !c.ready)
            .find_map(|c: &ContainerStatus| {
                let waiting = c.state.as_ref()?.waiting.as_ref()?;
                let reason = waiting.reason.as_deref()?;
                STUCK.contains(&reason).then(|| {
                    format!(
                        "container {}: {reason}: {}",
                        c.name,
                        waiting.message.as_deref().unwrap_or("")
                    )
                })
            })?;
        Some(PodTrouble {
            reason: "PodsFailing",
            message: format!("pod {}: {}", pod.name_any(), waiting.trim_end_matches(": ")),
        })
    })
}

/// The `containerd-hosts` init container's status in `pod`.
fn hosts_status(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    statuses.iter().find(|c| c.name == HOSTS_INIT_CONTAINER)
}

/// Why the pod's `containerd-hosts` init container failed, naming the node
/// and the writer's termination message, unless it has succeeded since.
fn hosts_failure(pod: &Pod) -> Option<PodTrouble> {
    let status = hosts_status(pod)?;
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    if current.is_some_and(|t| t.exit_code == 0) {
        return None;
    }
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let failed = current.or(last).filter(|t| t.exit_code != 0)?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let message = failed.message.as_deref().map_or("", str::trim);
    Some(PodTrouble {
        reason: "NodeConfigurationFailed",
        message: format!(
            "node {}: pod {}: {HOSTS_INIT_CONTAINER} exited with code {}: {}",
            node.unwrap_or("(unscheduled)"),
            pod.name_any(),
            failed.exit_code,
            last_line(message)
        ),
    })
}

/// The nodes whose registry pod wrote the containerd hosts files: pods
/// whose `containerd-hosts` init container exited 0.
pub fn configured_nodes(pods: &[Pod]) -> i32 {
    let configured = pods.iter().filter(|pod| {
        hosts_status(pod)
            .and_then(|c| c.state.as_ref()?.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    });
    i32::try_from(configured.count()).unwrap_or(i32::MAX)
}

/// The status of a Registry whose nodes are being cleaned of its
/// containerd hosts files: not ready (and, when `deleting`, not serving),
/// with `progress` saying how far the cleanup DaemonSet has come.
pub fn cleaning(registry: &Registry, progress: &str, now: &Time) -> RegistryStatus {
    let mut status = previous(registry).cloned().unwrap_or_default();
    status.observed_generation = registry.metadata.generation;
    status.conditions = Vec::new();
    let message = format!("removing the containerd hosts files from the nodes: {progress}");
    let before = before(registry);
    set(
        &mut status,
        before,
        READY,
        false,
        CLEANING_NODES,
        &message,
        now,
    );
    set(
        &mut status,
        before,
        PROGRESSING,
        true,
        CLEANING_NODES,
        &message,
        now,
    );
    set(
        &mut status,
        before,
        DEGRADED,
        false,
        CLEANING_NODES,
        "",
        now,
    );
    status
}

/// The reason of the conditions while the nodes are cleaned.
pub const CLEANING_NODES: &str = "CleaningNodes";

/// When an Event last happened, as far as it says.
fn event_time(event: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    let series = event.series.as_ref().map(|s| s.last_observed_time.0);
    series
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.deprecated_last_timestamp.as_ref().map(|t| t.0))
}

/// What the registry pods of an `InServer` Registry said of their last
/// collection.
#[derive(Debug, Default)]
pub struct NodeGc {
    /// The results of the pods that answered.
    pub answered: Vec<NodeGcResult>,
    /// The nodes that run a registry pod now.
    pub nodes: Vec<String>,
}

impl NodeGc {
    /// The results to show: each node's answer, or for a node whose pod
    /// did not answer this time (restarting, say), the result shown
    /// before; nodes without a pod drop out.
    fn merged(self, previous: &[NodeGcResult]) -> Vec<NodeGcResult> {
        let mut results = self.answered;
        for before in previous {
            if self.nodes.contains(&before.node) && !results.iter().any(|r| r.node == before.node) {
                results.push(before.clone());
            }
        }
        results.sort_by(|a, b| a.node.cmp(&b.node));
        results
    }
}

/// The status of a Registry whose objects were applied.
pub fn applied(
    registry: &Registry,
    rollout: Rollout,
    trouble: Option<PodTrouble>,
    last_gc: Option<GcResult>,
    node_gc: NodeGc,
    now: &Time,
) -> RegistryStatus {
    let mut status = base(registry);
    status.desired_nodes = rollout.desired;
    status.ready_nodes = rollout.ready;
    status.updated_nodes = rollout.updated;
    status.nodes = Some(format!("{}/{}", rollout.ready, rollout.desired));
    status.last_gc = last_gc.or_else(|| previous(registry).and_then(|s| s.last_gc.clone()));
    status.node_gc = node_gc.merged(previous(registry).map_or(&[], |s| &s.node_gc));

    let (ready, reason, message) = if rollout.is_complete() {
        (
            true,
            "AllNodesReady",
            format!(
                "{} of {} nodes run an updated, ready registry",
                rollout.ready, rollout.desired
            ),
        )
    } else if !rollout.observed {
        (
            false,
            "RolloutPending",
            "the DaemonSet controller has not yet observed the current pod template".to_owned(),
        )
    } else if rollout.desired == 0 {
        (
            false,
            "NoNodes",
            "no node matches the Registry's nodeSelector, tolerations and affinity".to_owned(),
        )
    } else if let Some(trouble) = &trouble {
        (false, trouble.reason, trouble.message.clone())
    } else {
        let Rollout {
            desired,
            ready,
            updated,
            ..
        } = rollout;
        (
            false,
            "NodesNotReady",
            format!("{ready} of {desired} nodes ready, {updated} of {desired} updated"),
        )
    };
    set(
        &mut status,
        before(registry),
        READY,
        ready,
        reason,
        &message,
        now,
    );
    if rollout.is_complete() || (rollout.observed && rollout.desired == 0) {
        set(
            &mut status,
            before(registry),
            PROGRESSING,
            false,
            "RolloutComplete",
            "every node runs the current pod template",
            now,
        );
    } else {
        set(
            &mut status,
            before(registry),
            PROGRESSING,
            true,
            "RollingOut",
            &message,
            now,
        );
    }
    if let Some(trouble) = trouble.filter(|_| !rollout.is_complete()) {
        set(
            &mut status,
            before(registry),
            DEGRADED,
            true,
            trouble.reason,
            &trouble.message,
            now,
        );
    } else if registry.spec.node_local_storage() && rollout.desired > 1 {
        let message = format!(
            "filesystem hostPath storage on {} nodes: each node keeps its own content, so an image pushed through one node is missing on the others",
            rollout.desired
        );
        set(
            &mut status,
            before(registry),
            DEGRADED,
            true,
            "NodeLocalStorage",
            &message,
            now,
        );
    } else {
        set(
            &mut status,
            before(registry),
            DEGRADED,
            false,
            "AsExpected",
            "",
            now,
        );
    }
    status
}

/// The status of a Registry that could not be applied; counts are kept from before.
pub fn blocked(registry: &Registry, blocked: &Blocked, now: &Time) -> RegistryStatus {
    let mut status = base(registry);
    if let Some(previous) = previous(registry) {
        status.desired_nodes = previous.desired_nodes;
        status.ready_nodes = previous.ready_nodes;
        status.updated_nodes = previous.updated_nodes;
        status.nodes = previous.nodes.clone();
        status.last_gc = previous.last_gc.clone();
        status.configured_nodes = previous.configured_nodes;
    }
    set(
        &mut status,
        before(registry),
        READY,
        false,
        blocked.reason,
        &blocked.message,
        now,
    );
    set(
        &mut status,
        before(registry),
        PROGRESSING,
        false,
        blocked.reason,
        &blocked.message,
        now,
    );
    set(
        &mut status,
        before(registry),
        DEGRADED,
        true,
        blocked.reason,
        &blocked.message,
        now,
    );
    status
}

/// The reason of the conditions of a Registry the operator cannot read.
pub const UNDECODABLE: &str = "Undecodable";

/// The status of a Registry that does not fit the operator's types (see
/// [`crate::decoded`]): not ready and degraded, saying why; what the
/// previous status reported is kept when it still reads.
pub fn undecodable(
    previous: Option<&RegistryStatus>,
    generation: Option<i64>,
    message: &str,
    now: &Time,
) -> RegistryStatus {
    let mut status = RegistryStatus {
        observed_generation: generation,
        ..previous.cloned().unwrap_or_default()
    };
    status.conditions = Vec::new();
    let before = Before {
        status: previous,
        generation,
    };
    set(&mut status, before, READY, false, UNDECODABLE, message, now);
    set(
        &mut status,
        before,
        PROGRESSING,
        false,
        UNDECODABLE,
        message,
        now,
    );
    set(
        &mut status,
        before,
        DEGRADED,
        true,
        UNDECODABLE,
        message,
        now,
    );
    status
}

/// Fields that do not depend on the cluster.
fn base(registry: &Registry) -> RegistryStatus {
    let gc_mode = match &registry.spec.gc {
        Some(_) if runs_cron_job(registry) => "CronJob",
        Some(_) if collects_in_server(registry) => "InServer",
        _ => "Disabled",
    };
    RegistryStatus {
        observed_generation: registry.metadata.generation,
        storage: Some(registry.spec.storage_kind().to_owned()),
        endpoint: Some(endpoint(registry)),
        gc_mode: Some(gc_mode.to_owned()),
        ..RegistryStatus::default()
    }
}

fn previous(registry: &Registry) -> Option<&RegistryStatus> {
    registry.status.as_ref()
}

/// What a new condition is compared with: the status it replaces and the
/// generation it describes.
#[derive(Debug, Clone, Copy)]
struct Before<'a> {
    status: Option<&'a RegistryStatus>,
    generation: Option<i64>,
}

fn before(registry: &Registry) -> Before<'_> {
    Before {
        status: previous(registry),
        generation: registry.metadata.generation,
    }
}

/// Adds a condition, keeping its last transition time when its status is unchanged.
fn set(
    status: &mut RegistryStatus,
    before: Before<'_>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let value = if value { "True" } else { "False" };
    let last_transition_time = before
        .status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == value)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    status.conditions.push(Condition {
        type_: type_.to_owned(),
        status: value.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: before.generation,
        last_transition_time,
    });
}

/// The result in a node's `GET /berth/gc/last` answer; `None` for a body
/// that is no report.
pub fn node_gc_result(node: &str, body: &str) -> Option<NodeGcResult> {
    let report: GcReport = serde_json::from_str(body).ok()?;
    let time = Time(report.finished_at?.parse().ok()?);
    let result = match report.error {
        None => GcResult {
            time,
            deleted_blobs: saturating_i64(report.blobs_deleted as u64),
            freed_bytes: saturating_i64(report.bytes_freed),
            outcome: "Succeeded".to_owned(),
        },
        Some(error) => GcResult {
            time,
            deleted_blobs: 0,
            freed_bytes: 0,
            outcome: format!("Failed: {}", last_line(&error)),
        },
    };
    Some(NodeGcResult {
        node: node.to_owned(),
        result,
    })
}

/// The result of the most recently finished GC pod, from its termination message.
pub fn last_gc(pods: &[Pod]) -> Option<GcResult> {
    pods.iter()
        .filter_map(|pod| {
            let state = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?;
            let terminated = state.terminated.as_ref()?;
            Some((terminated.finished_at.clone()?, terminated, pod))
        })
        .max_by(|a, b| {
            a.0.0
                .cmp(&b.0.0)
                .then_with(|| a.2.name_any().cmp(&b.2.name_any()))
        })
        .map(|(time, terminated, _)| {
            let message = terminated.message.as_deref().unwrap_or_default();
            match (
                terminated.exit_code,
                serde_json::from_str::<GcReport>(message),
            ) {
                (0, Ok(report)) => GcResult {
                    time,
                    deleted_blobs: saturating_i64(report.blobs_deleted as u64),
                    freed_bytes: saturating_i64(report.bytes_freed),
                    outcome: "Succeeded".to_owned(),
                },
                (code, _) => GcResult {
                    time,
                    deleted_blobs: 0,
                    freed_bytes: 0,
                    outcome: format!("Failed: exit code {code}: {}", last_line(message)),
                },
            }
        })
}

/// A count as the status's integer, saturating at its largest.
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn last_line(message: &str) -> &str {
    message.trim().lines().last().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DaemonSetStatus;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::resources::fixtures::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn daemon_set(
        generation: i64,
        observed: i64,
        desired: i32,
        ready: i32,
        updated: i32,
    ) -> DaemonSet {
        let mut ds = DaemonSet::default();
        ds.metadata.generation = Some(generation);
        ds.status = Some(DaemonSetStatus {
            observed_generation: Some(observed),
            desired_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: Some(updated),
            number_available: Some(ready),
            ..DaemonSetStatus::default()
        });
        ds
    }

    fn condition<'a>(status: &'a RegistryStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn node_reports_become_results_and_keep_silent_nodes() {
        let ok = node_gc_result(
            "a",
            r#"{"dryRun":false,"blobsDeleted":4,"bytesFreed":4096,"finishedAt":"2026-12-02T03:00:01Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (
                ok.result.deleted_blobs,
                ok.result.freed_bytes,
                ok.result.outcome.as_str()
            ),
            (4, 4096, "Succeeded")
        );
        assert_eq!(ok.result.time.0.to_string(), "2026-12-02T03:00:01Z");
        let failed = node_gc_result(
            "b",
            r#"{"finishedAt":"2026-12-02T03:00:02Z","error":"garbage collection failed: disk\nfull"}"#,
        )
        .unwrap();
        assert_eq!(failed.result.outcome, "Failed: full");
        for junk in ["", "{}", "not json", r#"{"finishedAt":"yesterday"}"#] {
            assert_eq!(node_gc_result("c", junk), None, "{junk}");
        }
        let earlier = NodeGcResult {
            node: "b".into(),
            result: ok.result.clone(),
        };
        let gone = NodeGcResult {
            node: "z".into(),
            result: ok.result.clone(),
        };
        let shown = NodeGc {
            answered: vec![ok.clone()],
            nodes: vec!["a".into(), "b".into()],
        }
        .merged(&[earlier.clone(), gone]);
        assert_eq!(shown, vec![ok, earlier], "b keeps its result, z has no pod");
    }

    #[test]
    fn ready_only_when_every_node_is_updated_and_ready() {
        let registry = s3_registry();
        let status = applied(
            &registry,
            Rollout::of(&daemon_set(2, 2, 3, 3, 3)),
            None,
            None,
            NodeGc::default(),
            &at(10),
        );
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(condition(&status, PROGRESSING).status, "False");
        assert_eq!(
            (
                status.desired_nodes,
                status.ready_nodes,
                status.updated_nodes
            ),
            (3, 3, 3)
        );
        assert_eq!(status.nodes.as_deref(), Some("3/3"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.gc_mode.as_deref(), Some("CronJob"));

        let rolling = applied(
            &registry,
            Rollout::of(&daemon_set(2, 2, 3, 3, 1)),
            None,
            None,
            NodeGc::default(),
            &at(10),
        );
        assert_eq!(condition(&rolling, READY).reason, "NodesNotReady");
        assert_eq!(
            condition(&rolling, READY).message,
            "3 of 3 nodes ready, 1 of 3 updated"
        );
        assert_eq!(condition(&rolling, PROGRESSING).status, "True");

        let stale = applied(
            &registry,
            Rollout::of(&daemon_set(3, 2, 3, 3, 3)),
            None,
            None,
            NodeGc::default(),
            &at(10),
        );
        assert_eq!(condition(&stale, READY).reason, "RolloutPending");

        let none = applied(
            &registry,
            Rollout::of(&daemon_set(2, 2, 0, 0, 0)),
            None,
            None,
            NodeGc::default(),
            &at(10),
        );
        assert_eq!(condition(&none, READY).reason, "NoNodes");
    }

    #[test]
    fn rejected_and_failing_pods_are_named() {
        let registry = s3_registry();
        let event = |name: &str, seconds: i64, note: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("e{seconds}")},
                "eventTime": null,
                "deprecatedLastTimestamp": at(seconds).0.to_string(),
                "reason": "FailedCreate",
                "regarding": {"kind": "DaemonSet", "name": name},
                "note": note,
            }))
            .unwrap()
        };
        let events = [
            event("cache", 10, "old"),
            event(
                "cache",
                20,
                r#"pods "cache-x" is forbidden: violates PodSecurity "baseline:latest": hostPort"#,
            ),
            event("other", 30, "not ours"),
        ];
        let missing = Rollout::of(&daemon_set(1, 1, 1, 0, 0));
        let trouble = pod_trouble("cache", missing, &events, &[]).expect("rejected pods");
        assert_eq!(trouble.reason, "PodsRejected");
        assert!(
            trouble.message.contains("violates PodSecurity"),
            "{}",
            trouble.message
        );
        let status = applied(
            &registry,
            missing,
            Some(trouble),
            None,
            NodeGc::default(),
            &at(40),
        );
        assert_eq!(condition(&status, READY).reason, "PodsRejected");
        assert_eq!(condition(&status, DEGRADED).status, "True");

        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cache-abc"},
            "status": {"containerStatuses": [{
                "name": "registry", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
            }]}
        }))
        .unwrap();
        let mut scheduled = daemon_set(1, 1, 1, 0, 0);
        scheduled.status.as_mut().unwrap().current_number_scheduled = 1;
        let rollout = Rollout::of(&scheduled);
        assert_eq!(
            pod_trouble("cache", rollout, &events, std::slice::from_ref(&pod)),
            Some(PodTrouble {
                reason: "PodsFailing",
                message:
                    "pod cache-abc: container registry: ImagePullBackOff: Back-off pulling image"
                        .to_owned()
            }),
            "pods exist, so old FailedCreate events do not count"
        );
        assert_eq!(pod_trouble("cache", rollout, &[], &[]), None);
    }

    fn hosts_pod(name: &str, node: &str, state: serde_json::Value, last: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": []},
            "status": {"initContainerStatuses": [{
                "name": "containerd-hosts", "image": "x", "imageID": "", "ready": false,
                "restartCount": 1, "state": state, "lastState": last,
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn configured_nodes_count_and_a_failed_writer_is_named() {
        let done = hosts_pod(
            "cache-a",
            "a",
            serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            serde_json::json!({}),
        );
        let crashing = hosts_pod(
            "cache-b",
            "b",
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}),
            serde_json::json!({"terminated": {"exitCode": 1,
                "message": "/host/containerd-hosts/docker.io/hosts.toml: written by infra/other\n"}}),
        );
        let running = hosts_pod(
            "cache-c",
            "c",
            serde_json::json!({"running": {}}),
            serde_json::json!({}),
        );
        let pods = [done, crashing, running];
        assert_eq!(configured_nodes(&pods), 1);
        let rollout = Rollout {
            desired: 3,
            scheduled: 3,
            ..Rollout::default()
        };
        assert_eq!(
            pod_trouble("cache", rollout, &[], &pods),
            Some(PodTrouble {
                reason: "NodeConfigurationFailed",
                message: "node b: pod cache-b: containerd-hosts exited with code 1: /host/containerd-hosts/docker.io/hosts.toml: written by infra/other".to_owned(),
            }),
            "more specific than the CrashLoopBackOff it is in"
        );
        let status = cleaning(&s3_registry(), "1 of 2 nodes clean", &at(5));
        let ready = condition(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "CleaningNodes")
        );
        assert!(
            ready.message.ends_with("1 of 2 nodes clean"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn host_path_on_several_nodes_is_degraded() {
        let registry = host_path_registry();
        let status = applied(
            &registry,
            Rollout::of(&daemon_set(1, 1, 2, 2, 2)),
            None,
            None,
            NodeGc::default(),
            &at(10),
        );
        let degraded = condition(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "NodeLocalStorage")
        );
        assert!(
            degraded.message.contains("hostPath storage on 2 nodes"),
            "{}",
            degraded.message
        );
        assert_eq!(status.gc_mode.as_deref(), Some("InServer"));
        assert_eq!(status.storage.as_deref(), Some("HostPath"));
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let mut registry = s3_registry();
        let first = applied(
            &registry,
            Rollout::of(&daemon_set(1, 1, 1, 1, 1)),
            None,
            None,
            NodeGc::default(),
            &at(10),
        );
        registry.status = Some(first.clone());
        let second = applied(
            &registry,
            Rollout::of(&daemon_set(1, 1, 1, 1, 1)),
            None,
            None,
            NodeGc::default(),
            &at(20),
        );
        assert_eq!(
            first, second,
            "an unchanged cluster gives an identical status, which is not written"
        );

        let blocked_status = blocked(
            &registry,
            &Blocked {
                reason: "SecretNotFound",
                message: "gone".to_owned(),
            },
            &at(30),
        );
        assert_eq!(
            condition(&blocked_status, READY).last_transition_time,
            at(30)
        );
        assert_eq!(blocked_status.ready_nodes, 1);
    }

    #[test]
    fn last_gc_from_termination_message() {
        let pod = |name: &str, finished: i64, code: i32, message: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"containerStatuses": [{
                    "name": "gc", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code, "message": message,
                        "finishedAt": at(finished).0.to_string()}}
                }]}
            }))
            .unwrap()
        };
        let pods = [
            pod("old", 10, 0, r#"{"blobsDeleted": 1, "bytesFreed": 2}"#),
            pod(
                "new",
                20,
                0,
                r#"{"dryRun": false, "blobsDeleted": 4, "bytesFreed": 4096}"#,
            ),
        ];
        let result = last_gc(&pods).unwrap();
        assert_eq!(
            (
                result.deleted_blobs,
                result.freed_bytes,
                result.outcome.as_str()
            ),
            (4, 4096, "Succeeded")
        );
        assert_eq!(result.time, at(20));

        let failed = last_gc(&[pod("bad", 5, 1, "error: storage unreachable\n")]).unwrap();
        assert_eq!(
            failed.outcome,
            "Failed: exit code 1: error: storage unreachable"
        );
        assert_eq!(last_gc(&[]), None);
    }
}
