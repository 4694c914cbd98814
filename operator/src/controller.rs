//! The controller: watches Registries, the objects they own, the Secrets
//! they reference and their pods, and runs
//! [`reconcile`](crate::reconcile::reconcile) for each.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::crd::Registry;
use crate::decoded::Decoded;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::{INSTANCE_LABEL, MANAGER};

/// The berth-registry image of Registries that set no `spec.image`, unless
/// the operator is told another (`--registry-image`): the release of the
/// same version as the operator.
pub const DEFAULT_REGISTRY_IMAGE: &str = concat!(
    "ghcr.io/berth-dev/berth-registry:v",
    env!("CARGO_PKG_VERSION")
);

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace; `None` watches all.
    pub namespace: Option<String>,
    /// Events on one Registry arriving within this window cause one reconcile.
    pub debounce: Duration,
    /// Who publishes Events (`reportingInstance`).
    pub identity: String,
    /// The berth-registry image of Registries that set no `spec.image`.
    pub registry_image: String,
}

impl Default for Settings {
    /// All namespaces, a one-second debounce, identity `berth-operator`,
    /// and [`DEFAULT_REGISTRY_IMAGE`]: the flags' defaults.
    fn default() -> Self {
        Settings {
            namespace: None,
            debounce: Duration::from_secs(1),
            identity: MANAGER.to_owned(),
            registry_image: DEFAULT_REGISTRY_IMAGE.to_owned(),
        }
    }
}

/// Runs the controller until `shutdown` completes, then lets running reconciles finish.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: Some(settings.identity.clone()),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        registry_image: settings.registry_image.clone(),
    });
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));

    // Registries are watched as `Decoded`: one that does not fit the Rust
    // types must not fail the list (and so the controller) for all others.
    let controller = Controller::new(
        api::<Decoded<Registry>>(&client, &settings),
        watcher::Config::default(),
    );
    let registries = controller.store();
    info!(
        namespace = settings.namespace.as_deref().unwrap_or("(all)"),
        registry_image = %settings.registry_image,
        "controller starting"
    );
    controller
        .owns(api::<DaemonSet>(&client, &settings), owned.clone())
        .owns(api::<ConfigMap>(&client, &settings), owned.clone())
        .owns(api::<Service>(&client, &settings), owned.clone())
        .owns(api::<ServiceAccount>(&client, &settings), owned.clone())
        .owns(api::<CronJob>(&client, &settings), owned.clone())
        // Registry pods becoming ready or failing, and GC pods finishing,
        // change the status. GC pods belong to Jobs of the CronJob, not to
        // the Registry, so they are mapped by their instance label.
        .watches(api::<Pod>(&client, &settings), owned, |pod| {
            instance_of(&pod)
        })
        .watches(
            api::<Secret>(&client, &settings),
            watcher::Config::default(),
            move |secret| referencing(&registries, &secret),
        )
        .with_config(controller::Config::default().debounce(settings.debounce))
        .trigger_backoff(WatchBackoff::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => {
                    info!(registry = %object.name, namespace = ?object.namespace, "reconciled")
                }
                Err(error) => warn!(%error, "reconcile or watch failed"),
            }
        })
        .await;
    info!("controller stopped");
}

/// Pause after a watch error: doubling from 100 ms to at most 1 s, back to
/// the start after a success. kube-runtime pauses the merged stream of all
/// seven watches after each single error, so a long pause would leave the
/// controller deaf for minutes after an API server restart (every watch
/// fails and then re-lists); a short cap lets them all reconnect in seconds.
#[derive(Debug, Clone, Copy)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(pause)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

fn api<K>(client: &Client, settings: &Settings) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match &settings.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The Registry a pod of the operator's belongs to, by its instance label.
fn instance_of(pod: &Pod) -> Option<ObjectRef<Decoded<Registry>>> {
    let name = pod.labels().get(INSTANCE_LABEL)?;
    let namespace = pod.namespace()?;
    Some(ObjectRef::new(name).within(&namespace))
}

/// The Registries in the Secret's namespace that reference it.
fn referencing(
    registries: &Store<Decoded<Registry>>,
    secret: &Secret,
) -> Vec<ObjectRef<Decoded<Registry>>> {
    let name = secret.name_any();
    registries
        .state()
        .iter()
        .filter(|registry| registry.namespace() == secret.namespace())
        .filter(|registry| {
            registry
                .valid()
                .is_some_and(|r| r.spec.secret_refs().iter().any(|r| r.name == name))
        })
        .map(|registry| ObjectRef::from_obj(registry.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_doubles_to_a_cap_and_resets() {
        let mut backoff = WatchBackoff::default();
        let pauses: Vec<_> = backoff.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(100)));
    }
}
