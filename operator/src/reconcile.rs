//! One reconcile of one Registry, as a short pipeline:
//! validate -> read referenced Secrets -> build desired objects ->
//! server-side apply each -> read DaemonSet status (and, while pods are
//! missing or not ready, why) -> delete configs no pod uses -> patch
//! Registry status.
//!
//! A Registry being deleted is left to the garbage collector, after its
//! nodes are cleaned of the containerd hosts files it wrote (see
//! [`cleanup`]); one that does not fit the Rust types (see
//! [`crate::decoded`]) only gets a status and an Event saying why.

mod cleanup;

pub use cleanup::{HOSTS_DIR_ANNOTATION, HOSTS_FINALIZER};

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, PodSpec, Secret};
use k8s_openapi::api::events::v1::Event as ClusterEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::crd::{Registry, RegistryStatus};
use crate::decoded::{Decoded, Undecodable};
use crate::metrics::Metrics;
use crate::resources::{self, COMPONENT_LABEL, Desired, INSTANCE_LABEL, MANAGER, cron_job_name};
use crate::status::{self, Blocked, PodTrouble, READY, Rollout};

/// The longest Registry name: its GC CronJob is `<name>-gc`, and CronJob
/// names are limited to 52 characters.
pub const MAX_NAME_LEN: usize = 49;

/// How often a settled Registry is looked at again without any event.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a blocked or rolling Registry is looked at again.
const RETRY: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events on Registries.
    pub recorder: Recorder,
    /// Reconcile counters and durations.
    pub metrics: Metrics,
    /// The berth-registry image of Registries that set no `spec.image`.
    pub registry_image: String,
}

/// Why a reconcile failed (and will be retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Registry has no namespace (the API server always sets one).
    #[error("Registry {0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// A short, stable name of the kind of failure: the `error` label of
    /// the failure counter (never the message, which would make one series
    /// per object).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(_),
                ..
            } => "api_error",
            Error::Kube { .. } => "api_request",
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// Reconciles one Registry, counting the outcome.
pub async fn reconcile(
    registry: Arc<Decoded<Registry>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match registry.as_ref() {
        Decoded::Valid(registry) => reconcile_inner(registry, &ctx).await,
        Decoded::Invalid(undecodable) => {
            report_undecodable(undecodable, registry.object_ref(&()), &ctx).await
        }
    };
    ctx.metrics.reconciled(
        result.as_ref().err().map(Error::metric_label),
        started.elapsed(),
    );
    result
}

/// Retries a failed reconcile after a pause and says why in an Event.
pub fn error_policy(registry: Arc<Decoded<Registry>>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(registry = %registry.name_any(), namespace = ?registry.namespace(), %error, "reconcile failed");
    let event = Event {
        type_: EventType::Warning,
        reason: "ReconcileFailed".to_owned(),
        note: Some(event_note(&error.to_string())),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let reference = registry.object_ref(&());
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            warn!(%error, "cannot publish event");
        }
    });
    Action::requeue(RETRY)
}

async fn reconcile_inner(registry: &Registry, ctx: &Context) -> Result<Action, Error> {
    let namespace = registry
        .namespace()
        .ok_or_else(|| Error::NoNamespace(registry.name_any()))?;
    if is_being_deleted(registry) {
        if cleanup::holds_finalizer(registry) {
            return cleanup::after_deletion(registry, ctx, &namespace).await;
        }
        // The garbage collector deletes the owned objects (in the
        // foreground, while the Registry waits for them); applying them
        // again would only re-create what it just deleted.
        return Ok(Action::await_change());
    }
    if let Some(hosts_dir) = registry.spec.hosts_dir()
        && cleanup::recorded_dir(registry).is_none()
    {
        // No registry pod may write to the nodes before the Registry holds
        // the finalizer that cleans up after them.
        cleanup::claim(registry, &ctx.client, &namespace, hosts_dir).await?;
        return Ok(Action::await_change());
    }
    let now = Time(Timestamp::now());
    let checked = match validate(registry) {
        Ok(()) => secrets_hash(registry, &ctx.client, &namespace).await?,
        Err(blocked) => Err(blocked),
    };
    let applied = match checked {
        Ok(secrets_hash) => {
            let desired = resources::build(registry, &ctx.registry_image, &secrets_hash);
            let config_map = desired.config_map.name_any();
            match apply_all(registry, &ctx.client, &namespace, desired).await? {
                Applied::DaemonSet(daemon_set) => Ok((*daemon_set, config_map)),
                Applied::Refused(blocked) => Err(blocked),
                Applied::Gone => return Ok(Action::await_change()),
            }
        }
        Err(blocked) => Err(blocked),
    };
    let (status, applied, requeue) = match applied {
        Err(blocked) => {
            warn!(registry = %registry.name_any(), %namespace, reason = blocked.reason, message = %blocked.message, "blocked");
            (status::blocked(registry, &blocked, &now), false, RETRY)
        }
        Ok((daemon_set, config_map)) => {
            let rollout = Rollout::of(&daemon_set);
            let trouble = pod_trouble(registry, rollout, &ctx.client, &namespace).await?;
            prune_config_maps(registry, &ctx.client, &namespace, &config_map).await?;
            let last_gc = last_gc(registry, &ctx.client, &namespace).await?;
            let node_gc = node_gc(registry, &ctx.client, &namespace).await?;
            let mut status = status::applied(registry, rollout, trouble, last_gc, node_gc, &now);
            if registry.spec.containerd.is_some() {
                let pods = registry_pods(registry, &ctx.client, &namespace).await?;
                status.configured_nodes = Some(status::configured_nodes(&pods));
            }
            let cleaning = cleanup::live(registry, ctx, &namespace, rollout).await?;
            let requeue = if let Some(poll) = cleaning {
                poll
            } else if is_true(&status, READY) {
                // Pick up each node's next in-server collection soon after it runs.
                next_in_server_gc(registry).map_or(RESYNC, |wait| RESYNC.min(wait + GC_MARGIN))
            } else {
                RETRY
            };
            (status, true, requeue)
        }
    };
    let previous = registry.status.as_ref();
    publish_changes(previous, &status, applied, registry.object_ref(&()), ctx).await;
    // An unchanged status is not written: the write would trigger another
    // reconcile, which would write again.
    if previous != Some(&status) {
        patch_status(&registry.name_any(), &ctx.client, &namespace, &status).await?;
    }
    Ok(Action::requeue(requeue))
}

/// Says on a Registry that does not fit the Rust types why, in its status
/// and an Event, and waits for it to change. Writing the status also
/// replaces a status that someone else made unreadable.
async fn report_undecodable(
    object: &Undecodable,
    reference: ObjectReference,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &object.metadata;
    let name = meta.name.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    warn!(registry = %name, %namespace, error = %object.error, "cannot decode");
    let message = format!(
        "the Registry does not fit berth-operator's types: {}",
        object.error
    );
    let now = Time(Timestamp::now());
    let previous = object.status.as_ref();
    let status = status::undecodable(previous, meta.generation, &message, &now);
    publish_changes(previous, &status, false, reference, ctx).await;
    if previous != Some(&status) {
        patch_status(&name, &ctx.client, &namespace, &status).await?;
    }
    Ok(Action::await_change())
}

/// Whether the Registry has been deleted and waits only for its finalizers
/// (such as the garbage collector's `foregroundDeletion`).
fn is_being_deleted(registry: &Registry) -> bool {
    registry.metadata.deletion_timestamp.is_some()
}

/// What the schema cannot check.
fn validate(registry: &Registry) -> Result<(), Blocked> {
    let name = registry.name_any();
    if name.len() > MAX_NAME_LEN {
        return Err(Blocked {
            reason: "InvalidSpec",
            message: format!(
                "metadata.name: {name:?} is longer than {MAX_NAME_LEN} characters (its GC CronJob is <name>-gc)"
            ),
        });
    }
    if let Some(cache) = &registry.spec.node_cache
        && cache.max_bytes().is_none_or(|bytes| bytes == 0)
    {
        return Err(Blocked {
            reason: "InvalidSpec",
            message: format!(
                "spec.nodeCache.size: {:?} is not a positive whole number of bytes",
                cache.size.0
            ),
        });
    }
    let gc = registry.spec.gc.as_ref();
    if let Some(schedule) = gc.and_then(|gc| gc.schedule.as_deref())
        && !resources::is_cron_schedule(schedule)
    {
        return Err(Blocked {
            reason: "InvalidSpec",
            message: format!("spec.gc.schedule: {schedule:?} is not a cron schedule"),
        });
    }
    Ok(())
}

/// Reads every referenced Secret and digests the keys the registry reads
/// only at start (see [`resources::SECRETS_HASH_ANNOTATION`]); a missing
/// Secret or key, or a key that does not hold what it must, blocks the
/// Registry with a message naming it.
async fn secrets_hash(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<Result<String, Blocked>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for reference in registry.spec.secret_refs() {
        let found = secrets
            .get_opt(reference.name)
            .await
            .map_err(Error::kube(format!(
                "reading Secret {namespace}/{}",
                reference.name
            )))?;
        let Some(secret) = found else {
            return Ok(Err(Blocked {
                reason: "SecretNotFound",
                message: format!(
                    "Secret {namespace}/{} ({}) not found",
                    reference.name, reference.field
                ),
            }));
        };
        let data = secret.data.unwrap_or_default();
        for key in reference.keys {
            let Some(value) = data.get(*key) else {
                return Ok(Err(Blocked {
                    reason: "SecretKeyMissing",
                    message: format!(
                        "Secret {namespace}/{} ({}) has no key {key:?}",
                        reference.name, reference.field
                    ),
                }));
            };
            if let Some(problem) = reference.content.problem(&value.0) {
                return Ok(Err(Blocked {
                    reason: "SecretKeyInvalid",
                    message: format!(
                        "Secret {namespace}/{} ({}): key {key:?} {problem}",
                        reference.name, reference.field
                    ),
                }));
            }
            if reference.read_at_start {
                parts.push(format!("{}/{key}", reference.name).into_bytes());
                parts.push(value.0.clone());
            }
        }
    }
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(Ok(resources::hash_of(&parts)))
}

/// What applying the desired objects came to.
enum Applied {
    /// Every object applied; the DaemonSet as the API server now has it
    /// (with its status); boxed, as it is far larger than the others.
    DaemonSet(Box<DaemonSet>),
    /// Nothing (more) applied: an object of that name belongs to someone
    /// else, or the API server refused one (invalid, forbidden by admission
    /// or a quota). Says which, in the API server's words.
    Refused(Blocked),
    /// The Registry turned out to be deleted on the way (see
    /// [`still_wanted`]): nothing more applied.
    Gone,
}

/// Server-side applies every desired object; a CronJob no longer wanted is
/// deleted. Objects of the names it would apply that this Registry does
/// not control are left alone, and nothing is applied.
async fn apply_all(
    registry: &Registry,
    client: &Client,
    namespace: &str,
    desired: Desired,
) -> Result<Applied, Error> {
    if let Some(blocked) = taken_name(registry, client, namespace, &desired).await? {
        return Ok(Applied::Refused(blocked));
    }
    macro_rules! apply_owned {
        ($object:expr) => {{
            if !still_wanted(registry, client, namespace).await? {
                return Ok(Applied::Gone);
            }
            match apply(client, namespace, $object).await {
                Ok(object) => object,
                Err(error) => match refusal(&error) {
                    Some(blocked) => return Ok(Applied::Refused(blocked)),
                    None => return Err(error),
                },
            }
        }};
    }
    apply_owned!(&desired.config_map);
    apply_owned!(&desired.service_account);
    apply_owned!(&desired.service);
    let daemon_set = apply_owned!(&desired.daemon_set);
    match &desired.cron_job {
        Some(cron_job) => {
            apply_owned!(cron_job);
        }
        None => delete_owned_cron_job(registry, client, namespace).await?,
    }
    Ok(Applied::DaemonSet(Box::new(daemon_set)))
}

/// The first desired object whose name is taken by an object this Registry
/// does not control (a Registry named `default` and the namespace's
/// `default` ServiceAccount, say), as a `Conflict` naming it.
async fn taken_name(
    registry: &Registry,
    client: &Client,
    namespace: &str,
    desired: &Desired,
) -> Result<Option<Blocked>, Error> {
    async fn taken<K>(
        registry: &Registry,
        client: &Client,
        namespace: &str,
        object: &K,
    ) -> Result<Option<Blocked>, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object.name_any();
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let existing = api
            .get_metadata_opt(&name)
            .await
            .map_err(Error::kube(format!(
                "reading {} {namespace}/{name}",
                K::kind(&())
            )))?;
        Ok(existing.filter(|e| !owned_by(e, registry)).map(|_| Blocked {
            reason: "Conflict",
            message: format!(
                "{} {namespace}/{name} exists and belongs to something else; the Registry leaves it alone (rename the Registry or remove that object)",
                K::kind(&())
            ),
        }))
    }
    let checks = [
        taken(registry, client, namespace, &desired.config_map).await?,
        taken(registry, client, namespace, &desired.service_account).await?,
        taken(registry, client, namespace, &desired.service).await?,
        taken(registry, client, namespace, &desired.daemon_set).await?,
    ];
    if let Some(blocked) = checks.into_iter().flatten().next() {
        return Ok(Some(blocked));
    }
    match &desired.cron_job {
        Some(cron_job) => taken(registry, client, namespace, cron_job).await,
        None => Ok(None),
    }
}

/// An API error that a retry will not cure (the object is invalid, or
/// admission or a quota forbids it), as the reason the Registry is blocked.
fn refusal(error: &Error) -> Option<Blocked> {
    let Error::Kube {
        action,
        source: kube::Error::Api(status),
    } = error
    else {
        return None;
    };
    let permanent = (400..500).contains(&status.code) && ![408, 409, 429].contains(&status.code);
    permanent.then(|| Blocked {
        reason: "ApplyRejected",
        message: format!("{action}: {}", status.message),
    })
}

/// Whether the Registry still exists as `registry` (the same UID) and is
/// not being deleted, read from the API server rather than the cache: the
/// cache may still hold a Registry the user has deleted, and an apply for
/// it would re-create what the garbage collector just removed. Read before
/// every apply, so a deletion can slip in only during that one request.
async fn still_wanted(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<bool, Error> {
    let name = registry.name_any();
    let api: Api<Registry> = Api::namespaced(client.clone(), namespace);
    let current = api
        .get_metadata_opt(&name)
        .await
        .map_err(Error::kube(format!("reading Registry {namespace}/{name}")))?;
    Ok(current.is_some_and(|current| {
        current.metadata.uid == registry.metadata.uid
            && current.metadata.deletion_timestamp.is_none()
    }))
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned,
    K: std::fmt::Debug,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(Error::kube(format!(
            "applying {} {namespace}/{name}",
            K::kind(&())
        )))
}

async fn delete_owned_cron_job(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<(), Error> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let name = cron_job_name(registry);
    let found = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading CronJob {namespace}/{name}")))?;
    let owned = found.is_some_and(|cron| owned_by(&cron, registry));
    if owned {
        info!(cronjob = %name, %namespace, "deleting GC CronJob that is no longer scheduled");
        api.delete(&name, &Default::default())
            .await
            .map_err(Error::kube(format!("deleting CronJob {namespace}/{name}")))?;
    }
    Ok(())
}

/// While the rollout is incomplete, what the cluster says keeps the pods
/// from running (see [`status::pod_trouble`]).
async fn pod_trouble(
    registry: &Registry,
    rollout: Rollout,
    client: &Client,
    namespace: &str,
) -> Result<Option<PodTrouble>, Error> {
    if rollout.is_complete() {
        return Ok(None);
    }
    let name = resources::object_name(registry);
    let events: Api<ClusterEvent> = Api::namespaced(client.clone(), namespace);
    let events = events
        .list(&ListParams::default().fields(&format!("regarding.name={name},reason=FailedCreate")))
        .await
        .map_err(Error::kube(format!(
            "listing Events of DaemonSet {namespace}/{name}"
        )))?;
    let pods = registry_pods(registry, client, namespace).await?;
    Ok(status::pod_trouble(&name, rollout, &events.items, &pods))
}

/// The Registry's registry pods (not its GC pods).
async fn registry_pods(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{INSTANCE_LABEL}={},{COMPONENT_LABEL}=registry",
        registry.name_any()
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("listing registry pods in {namespace}")))?;
    Ok(list.items)
}

/// Deletes this Registry's config ConfigMaps that no longer serve: not the
/// current one, not the newest of the others (a Job the CronJob controller
/// creates from a template it has not yet seen updated still needs it), and
/// not used by any running pod or unfinished Job of the Registry. A pod of
/// the old template keeps its config until it is gone, so it never reads a
/// newer one.
async fn prune_config_maps(
    registry: &Registry,
    client: &Client,
    namespace: &str,
    current: &str,
) -> Result<(), Error> {
    let instance = format!("{INSTANCE_LABEL}={}", registry.name_any());
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{instance},{COMPONENT_LABEL}={}",
        resources::CONFIG_COMPONENT
    );
    let mut candidates: Vec<ConfigMap> = maps
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "listing config ConfigMaps in {namespace}"
        )))?
        .items
        .into_iter()
        .filter(|map| map.name_any() != current && owned_by(map, registry))
        .collect();
    candidates.sort_by_key(|map| map.creation_timestamp());
    candidates.pop();
    if candidates.is_empty() {
        return Ok(());
    }
    let mut in_use = BTreeSet::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&instance))
        .await
        .map_err(Error::kube(format!("listing pods in {namespace}")))?;
    // A pod that has finished, or a Job that will start no more pods,
    // needs its config no longer.
    let running = |pod: &&Pod| {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        !matches!(phase, Some("Succeeded" | "Failed"))
    };
    for pod in pods.items.iter().filter(running) {
        in_use.extend(config_maps_of(pod.spec.as_ref()));
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let jobs = jobs
        .list(&ListParams::default().labels(&instance))
        .await
        .map_err(Error::kube(format!("listing Jobs in {namespace}")))?;
    let unfinished = |job: &&Job| {
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        !conditions
            .into_iter()
            .flatten()
            .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
    };
    for job in jobs.items.iter().filter(unfinished) {
        in_use.extend(config_maps_of(
            job.spec.as_ref().and_then(|j| j.template.spec.as_ref()),
        ));
    }
    for map in candidates {
        let name = map.name_any();
        if in_use.contains(&name) {
            continue;
        }
        info!(configmap = %name, %namespace, "deleting a config no pod uses");
        match maps.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("deleting ConfigMap {namespace}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The ConfigMaps a pod spec mounts.
fn config_maps_of(spec: Option<&PodSpec>) -> Vec<String> {
    spec.and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
        .collect()
}

/// Whether `object` is controlled by `registry` (by its UID, not its name).
fn owned_by(object: &impl Resource, registry: &Registry) -> bool {
    let uid = registry.uid();
    object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// The result of the most recent GC pod of this Registry.
async fn last_gc(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<Option<crate::crd::GcResult>, Error> {
    if !resources::runs_cron_job(registry) {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{INSTANCE_LABEL}={},{COMPONENT_LABEL}=gc",
        registry.name_any()
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("listing GC pods in {namespace}")))?;
    Ok(status::last_gc(&list.items))
}

/// How long after a scheduled in-server collection the operator asks the
/// pods for its result.
const GC_MARGIN: Duration = Duration::from_secs(15);

/// How long a registry pod may take to answer for its last collection.
const GC_REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The time until the next in-server collection, when the Registry's pods
/// collect.
fn next_in_server_gc(registry: &Registry) -> Option<Duration> {
    if !resources::collects_in_server(registry) {
        return None;
    }
    let schedule = registry.spec.gc.as_ref()?.schedule.as_deref()?;
    let cron = croner::Cron::from_str(schedule).ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let next = cron.find_next_occurrence(&now, false).ok()?;
    (next - now).to_std().ok()
}

/// Asks each running registry pod of an `InServer` Registry for its last
/// collection (`GET /berth/gc/last`, through the API server's pod proxy,
/// which reaches pods wherever the operator runs). A pod that has not
/// collected yet answers 404; one that does not answer keeps the result
/// shown before.
async fn node_gc(
    registry: &Registry,
    client: &Client,
    namespace: &str,
) -> Result<status::NodeGc, Error> {
    if !resources::collects_in_server(registry) {
        return Ok(status::NodeGc::default());
    }
    let pods = registry_pods(registry, client, namespace).await?;
    let scheme = if registry.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let port = resources::listen_port(registry);
    let mut node_gc = status::NodeGc::default();
    for pod in &pods {
        let (Some(node), Some("Running")) = (
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        ) else {
            continue;
        };
        node_gc.nodes.push(node.clone());
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods/{scheme}:{}:{port}/proxy/berth/gc/last",
            pod.name_any()
        );
        let Ok(request) = http::Request::get(&path).body(Vec::new()) else {
            continue;
        };
        match tokio::time::timeout(GC_REPORT_TIMEOUT, client.request_text(request)).await {
            Ok(Ok(body)) => node_gc
                .answered
                .extend(status::node_gc_result(&node, &body)),
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
            Ok(Err(error)) => {
                warn!(pod = %pod.name_any(), %namespace, %error, "cannot read the pod's last collection");
            }
            Err(_) => {
                warn!(pod = %pod.name_any(), %namespace, "the pod did not say its last collection in time");
            }
        }
    }
    Ok(node_gc)
}

async fn patch_status(
    name: &str,
    client: &Client,
    namespace: &str,
    status: &RegistryStatus,
) -> Result<(), Error> {
    let api: Api<Registry> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": Registry::api_version(&()),
        "kind": Registry::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "patching status of Registry {namespace}/{name}"
    )))?;
    Ok(())
}

fn is_true(status: &RegistryStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The longest note the API server accepts on an Event, in bytes.
const EVENT_NOTE_MAX: usize = 1024;

/// `text` cut to fit an Event's note (the API server refuses longer ones,
/// and an API error's message can be longer), marked with `…` when cut.
fn event_note(text: &str) -> String {
    if text.len() <= EVENT_NOTE_MAX {
        return text.to_owned();
    }
    let mut end = EVENT_NOTE_MAX - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// One Event for each condition that changed from `previous` and for a
/// newly applied generation.
async fn publish_changes(
    previous: Option<&RegistryStatus>,
    status: &RegistryStatus,
    applied: bool,
    reference: ObjectReference,
    ctx: &Context,
) {
    let mut events = Vec::new();
    for condition in &status.conditions {
        let before =
            previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == condition.type_));
        if before.map(|c| (&c.status, &c.reason)) == Some((&condition.status, &condition.reason)) {
            continue;
        }
        // Ready and Degraded are news either way; Progressing is noise unless it starts.
        let healthy = (condition.type_ == READY) == (condition.status == "True");
        if condition.type_ == status::PROGRESSING && condition.status != "True" {
            continue;
        }
        events.push(Event {
            type_: if healthy {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: condition.reason.clone(),
            note: Some(event_note(&format!(
                "{}={}: {}",
                condition.type_, condition.status, condition.message
            ))),
            action: "Reconcile".to_owned(),
            secondary: None,
        });
    }
    if applied && previous.and_then(|s| s.observed_generation) != status.observed_generation {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Applied".to_owned(),
            note: Some(format!(
                "applied generation {}",
                status.observed_generation.unwrap_or_default()
            )),
            action: "Apply".to_owned(),
            secondary: None,
        });
    }
    for event in events {
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, "cannot publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::*;

    #[test]
    fn errors_have_a_metric_label_per_kind() {
        let api = Error::kube("patch")(kube::Error::Api(Box::default()));
        let request = Error::kube("get")(kube::Error::Discovery(
            kube::error::DiscoveryError::MissingKind("x".to_owned()),
        ));
        let labels = [api, request, Error::NoNamespace("r".to_owned())].map(|e| e.metric_label());
        assert_eq!(labels, ["api_error", "api_request", "no_namespace"]);
    }

    #[test]
    fn long_names_and_bad_schedules_are_blocked() {
        let mut registry = s3_registry();
        registry.metadata.name = Some("r".repeat(50));
        let blocked = validate(&registry).unwrap_err();
        assert_eq!(blocked.reason, "InvalidSpec");
        assert!(
            blocked.message.starts_with("metadata.name"),
            "{}",
            blocked.message
        );

        let mut registry = s3_registry();
        registry.spec.gc.as_mut().unwrap().schedule = Some("61 * * * *".to_owned());
        assert!(
            validate(&registry)
                .unwrap_err()
                .message
                .starts_with("spec.gc.schedule")
        );
        assert_eq!(validate(&s3_registry()), Ok(()));

        let mut registry = s3_registry();
        registry.spec.node_cache = serde_json::from_value(serde_json::json!({"size": "1.5"})).ok();
        let blocked = validate(&registry).unwrap_err();
        assert!(
            blocked.message.starts_with("spec.nodeCache.size"),
            "{}",
            blocked.message
        );
    }

    #[test]
    fn event_notes_fit_the_api_servers_limit() {
        assert_eq!(event_note("short"), "short");
        let long = "é".repeat(2000);
        let note = event_note(&long);
        assert!(
            note.len() <= EVENT_NOTE_MAX && note.ends_with('…'),
            "{}",
            note.len()
        );
    }

    #[test]
    fn a_deleted_registry_is_left_to_the_garbage_collector() {
        let mut registry = s3_registry();
        assert!(!is_being_deleted(&registry));
        registry.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        registry.metadata.finalizers = Some(vec!["foregroundDeletion".to_owned()]);
        assert!(is_being_deleted(&registry));
    }
}
