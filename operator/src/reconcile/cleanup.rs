//! Cleaning the nodes of the containerd hosts files a Registry wrote
//! (`spec.containerd`), once its own pods can no longer do it.
//!
//! A Registry that configures containerd carries the finalizer
//! [`HOSTS_FINALIZER`] and, in the annotation [`HOSTS_DIR_ANNOTATION`], the
//! node directory its files are in; both are set before the first registry
//! pod runs the hosts writer. When the Registry is deleted, the operator
//! first deletes the registry DaemonSet and waits until it is gone (so no
//! registry pod starts again and re-applies), then runs the cleanup
//! DaemonSet on the same nodes; once each of its pods is Ready (its node is
//! clean), it deletes it and removes the finalizer. When `spec.containerd`
//! is removed from a live Registry, the same cleanup runs once the rollout
//! has replaced every pod that could still apply. A mirror dropped from a
//! live Registry needs none of this: the rolled pods' `apply` removes it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Context, Error, apply, event_note, patch_status, publish_changes};
use crate::crd::Registry;
use crate::resources::{self, cleanup_daemon_set, cleanup_name};
use crate::status::{self, Rollout};

/// The finalizer of a Registry whose hosts files may be on nodes.
pub const HOSTS_FINALIZER: &str = "berth.dev/containerd-hosts";
/// The annotation naming the node directory the Registry's hosts files are in.
pub const HOSTS_DIR_ANNOTATION: &str = "berth.dev/containerd-hosts-dir";

/// How soon a Registry whose nodes are being cleaned is looked at again:
/// the cleanup DaemonSet is not owned, so its changes trigger nothing.
const POLL: Duration = Duration::from_secs(3);

/// Whether the Registry holds [`HOSTS_FINALIZER`].
pub fn holds_finalizer(registry: &Registry) -> bool {
    registry.finalizers().iter().any(|f| f == HOSTS_FINALIZER)
}

/// The hosts directory this Registry's files were written to, when it
/// holds the finalizer.
pub fn recorded_dir(registry: &Registry) -> Option<&str> {
    holds_finalizer(registry)
        .then(|| registry.annotations().get(HOSTS_DIR_ANNOTATION))
        .flatten()
        .map(String::as_str)
}

/// Before the first apply of a Registry with `spec.containerd`: adds the
/// finalizer and records the hosts directory. `Ok(false)` when the
/// Registry changed meanwhile (the next reconcile sees the new one).
pub async fn claim(
    registry: &Registry,
    client: &Client,
    namespace: &str,
    hosts_dir: &str,
) -> Result<bool, Error> {
    let mut finalizers = registry.finalizers().to_vec();
    if !holds_finalizer(registry) {
        finalizers.push(HOSTS_FINALIZER.to_owned());
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "annotations": {HOSTS_DIR_ANNOTATION: hosts_dir},
    }});
    patch_metadata(registry, client, namespace, patch).await
}

/// Removes the finalizer and the recorded directory, or, when the Registry
/// writes into `hosts_dir` now, records that one instead.
async fn release(
    registry: &Registry,
    client: &Client,
    namespace: &str,
    hosts_dir: Option<&str>,
) -> Result<bool, Error> {
    let patch = match hosts_dir {
        Some(dir) => json!({"metadata": {"annotations": {HOSTS_DIR_ANNOTATION: dir}}}),
        None => {
            let finalizers: Vec<&String> = registry
                .finalizers()
                .iter()
                .filter(|f| *f != HOSTS_FINALIZER)
                .collect();
            json!({"metadata": {
                "finalizers": finalizers,
                "annotations": {HOSTS_DIR_ANNOTATION: null},
            }})
        }
    };
    patch_metadata(registry, client, namespace, patch).await
}

/// A merge patch of the Registry's metadata made only on the version
/// `registry` is (a list in a merge patch is replaced whole, so a finalizer
/// someone else added meanwhile must not be lost); `Ok(false)` on a conflict.
async fn patch_metadata(
    registry: &Registry,
    client: &Client,
    namespace: &str,
    mut patch: serde_json::Value,
) -> Result<bool, Error> {
    let name = registry.name_any();
    patch["metadata"]["resourceVersion"] = json!(registry.resource_version());
    let api: Api<Registry> = Api::namespaced(client.clone(), namespace);
    match api
        .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("patching the finalizers of Registry {namespace}/{name}"),
            source,
        }),
    }
}

/// How far the cleanup DaemonSet has come.
enum Progress {
    /// Some nodes are not clean yet; says how many are.
    Cleaning(String),
    /// Every node it runs on is clean (its pods are Ready).
    Clean,
    /// The cleanup DaemonSet cannot be created: the namespace is being
    /// deleted, which no new object may enter. Says so.
    Impossible(String),
}

/// Applies the cleanup DaemonSet for `hosts_dir` and reads how far it is.
async fn run_cleanup(
    registry: &Registry,
    ctx: &Context,
    namespace: &str,
    hosts_dir: &str,
) -> Result<Progress, Error> {
    let image = registry.spec.image_or(&ctx.registry_image);
    let desired = cleanup_daemon_set(registry, image, hosts_dir);
    let applied = match apply(&ctx.client, namespace, &desired).await {
        Ok(applied) => applied,
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if namespace_terminating(&status) => {
            return Ok(Progress::Impossible(format!(
                "namespace {namespace} is being deleted, so the cleanup DaemonSet cannot be created: the containerd hosts files in {hosts_dir} stay on the nodes; remove them with `berth-registry containerd-hosts remove --hosts-dir {hosts_dir} --owner {}` on each node",
                resources::owner(registry)
            )));
        }
        Err(error) => return Err(error),
    };
    let rollout = Rollout::of(&applied);
    if rollout.observed && rollout.ready == rollout.desired {
        return Ok(Progress::Clean);
    }
    Ok(Progress::Cleaning(format!(
        "{} of {} nodes clean (DaemonSet {})",
        rollout.ready,
        rollout.desired,
        cleanup_name(registry)
    )))
}

/// Whether the API server refused an object because its namespace is
/// being deleted (the NamespaceLifecycle admission plugin).
fn namespace_terminating(status: &kube::core::Status) -> bool {
    let causes = status.details.iter().flat_map(|d| d.causes.iter());
    status.code == 403
        && (causes
            .into_iter()
            .any(|c| c.reason == "NamespaceTerminating")
            || status.message.contains("because it is being terminated"))
}

/// Deletes the cleanup DaemonSet, when there is one; its pods go after it
/// (they only hold).
async fn delete_cleanup(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<(), Error> {
    let name = cleanup_name(registry);
    delete_daemon_set(client, namespace, &name, &DeleteParams::background()).await
}

/// Deletes the DaemonSet `name`; one already gone is fine.
async fn delete_daemon_set(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("deleting DaemonSet {namespace}/{name}"),
            source,
        }),
    }
}

/// A deleted Registry holding [`HOSTS_FINALIZER`]: stops its registry
/// pods, cleans its nodes, then lets it go.
pub async fn after_deletion(
    registry: &Registry,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let Some(hosts_dir) = recorded_dir(registry) else {
        // A finalizer without a directory: nothing was recorded, so
        // nothing can have been written.
        release(registry, &ctx.client, namespace, None).await?;
        return Ok(Action::await_change());
    };
    let registry_pods = resources::object_name(registry);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
    let progress = if daemon_sets
        .get_metadata_opt(&registry_pods)
        .await
        .map_err(Error::kube(format!(
            "reading DaemonSet {namespace}/{registry_pods}"
        )))?
        .is_some()
    {
        // In the foreground: the DaemonSet is gone only once its pods are.
        let params = DeleteParams::foreground();
        delete_daemon_set(&ctx.client, namespace, &registry_pods, &params).await?;
        Progress::Cleaning("waiting for the registry pods to stop".to_owned())
    } else {
        run_cleanup(registry, ctx, namespace, hosts_dir).await?
    };
    match progress {
        Progress::Cleaning(progress) => {
            report(
                registry,
                ctx,
                namespace,
                &status::cleaning(registry, &progress, &now),
            )
            .await?;
            Ok(Action::requeue(POLL))
        }
        Progress::Clean => {
            finish(registry, ctx, namespace, hosts_dir, None).await?;
            Ok(Action::await_change())
        }
        Progress::Impossible(why) => {
            // Holding the Registry would hold its namespace forever.
            warn!(registry = %registry.name_any(), %namespace, "{why}");
            publish(registry, ctx, EventType::Warning, "NodesNotCleaned", &why).await;
            release(registry, &ctx.client, namespace, None).await?;
            Ok(Action::await_change())
        }
    }
}

/// A live Registry: when it no longer writes where its recorded files
/// are (`spec.containerd` removed), cleans them once no pod of the old
/// template is left to apply them again. Returns how soon to look again
/// while cleaning; a cleanup DaemonSet left from before is deleted when
/// there is nothing (more) to clean.
pub async fn live(
    registry: &Registry,
    ctx: &Context,
    namespace: &str,
    rollout: Rollout,
) -> Result<Option<Duration>, Error> {
    let wanted = registry.spec.hosts_dir();
    let Some(recorded) = recorded_dir(registry) else {
        return Ok(None);
    };
    if Some(recorded) == wanted {
        // spec.containerd set again before a cleanup finished.
        delete_cleanup(registry, &ctx.client, namespace).await?;
        return Ok(None);
    }
    let rolled = rollout.is_complete() || (rollout.observed && rollout.desired == 0);
    if !rolled {
        return Ok(Some(POLL));
    }
    match run_cleanup(registry, ctx, namespace, recorded).await? {
        Progress::Cleaning(_) | Progress::Impossible(_) => Ok(Some(POLL)),
        Progress::Clean => {
            finish(registry, ctx, namespace, recorded, wanted).await?;
            Ok(None)
        }
    }
}

/// Every node is clean of the files in `cleaned`: deletes the cleanup
/// DaemonSet, says so in an Event, and releases the Registry (recording
/// `now_writing` when it writes elsewhere now).
async fn finish(
    registry: &Registry,
    ctx: &Context,
    namespace: &str,
    cleaned: &str,
    now_writing: Option<&str>,
) -> Result<(), Error> {
    delete_cleanup(registry, &ctx.client, namespace).await?;
    if !release(registry, &ctx.client, namespace, now_writing).await? {
        // Changed meanwhile: the next reconcile finds the nodes clean again.
        return Ok(());
    }
    info!(registry = %registry.name_any(), %namespace, "nodes cleaned of the containerd hosts files");
    let note = format!("removed the containerd hosts files from {cleaned} on every node");
    publish(registry, ctx, EventType::Normal, "NodesCleaned", &note).await;
    Ok(())
}

/// Publishes an Event of the cleanup on the Registry.
async fn publish(registry: &Registry, ctx: &Context, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(event_note(note)),
        action: "Cleanup".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &registry.object_ref(&()))
        .await
    {
        warn!(%error, "cannot publish event");
    }
}

/// Writes the status of a Registry being cleaned, with an Event for each
/// condition that changed.
async fn report(
    registry: &Registry,
    ctx: &Context,
    namespace: &str,
    status: &crate::crd::RegistryStatus,
) -> Result<(), Error> {
    let previous = registry.status.as_ref();
    publish_changes(previous, status, false, registry.object_ref(&()), ctx).await;
    if previous != Some(status) {
        patch_status(&registry.name_any(), &ctx.client, namespace, status).await?;
    }
    Ok(())
}
