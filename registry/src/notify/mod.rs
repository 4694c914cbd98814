//! Webhook notifications in CNCF Distribution's envelope.
//!
//! Handlers [`publish`](Notifier::publish) events without waiting: each
//! endpoint has its own bounded queue and delivery task, so a slow or dead
//! endpoint delays nobody and costs at most its queue's memory (the oldest
//! events are dropped, and counted, when it is full).

mod endpoint;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::config::EndpointSettings;
use crate::metrics::Metrics;
use endpoint::Endpoint;

/// Content type of a notification POST.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A manifest or blob was pushed.
    Push,
    /// A manifest or blob was pulled.
    Pull,
    /// A blob was mounted from another repository.
    Mount,
    /// A manifest, tag or blob was deleted.
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Media type of the manifest or blob.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Digest.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Size in bytes (Distribution repeats it as `length`).
    pub length: u64,
    /// The repository.
    pub repository: String,
    /// Where to fetch the content.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The tag, for manifest events by tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The source repository, for mounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
}

/// The request that caused an event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestRecord {
    /// The request id.
    pub id: String,
    /// The client's address.
    pub addr: String,
    /// The `Host` the client asked for.
    pub host: String,
    /// The HTTP method.
    pub method: String,
    /// The client's `User-Agent`.
    pub useragent: String,
}

/// Who caused an event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Actor {
    /// The authenticated user, empty when anonymous.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Which registry instance emitted an event.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// The instance's address (`hostname:port`).
    pub addr: String,
    /// A random id of this process.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// One event, as Distribution sends it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unique id of the event.
    pub id: String,
    /// When it happened (RFC 3339).
    pub timestamp: String,
    /// What happened.
    pub action: Action,
    /// To what.
    pub target: Target,
    /// Through which request.
    pub request: RequestRecord,
    /// By whom.
    pub actor: Actor,
    /// Where.
    pub source: Source,
}

/// Fans events out to every endpoint's queue.
pub struct Notifier {
    endpoints: Vec<Arc<Endpoint>>,
    source: Source,
}

impl Notifier {
    /// Starts a delivery task per endpoint. `source_addr` identifies this instance.
    pub fn start(
        settings: &[EndpointSettings],
        queue_size: usize,
        metrics: Arc<Metrics>,
        source_addr: String,
    ) -> Arc<Notifier> {
        let endpoints = settings
            .iter()
            .map(|s| Endpoint::start(s.clone(), queue_size, metrics.clone()))
            .collect();
        let source = Source {
            addr: source_addr,
            instance_id: format!("{:032x}", rand::random::<u128>()),
        };
        Arc::new(Notifier { endpoints, source })
    }

    /// A notifier with no endpoints.
    pub fn disabled() -> Arc<Notifier> {
        Arc::new(Notifier {
            endpoints: Vec::new(),
            source: Source {
                addr: String::new(),
                instance_id: String::new(),
            },
        })
    }

    /// Whether any endpoint is configured (callers skip building events otherwise).
    pub fn is_enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Queues an event for every endpoint that wants it; never waits.
    pub fn publish(&self, action: Action, target: Target, request: RequestRecord, actor: Actor) {
        if !self.is_enabled() {
            return;
        }
        let event = Arc::new(Event {
            id: format!("{:032x}", rand::random::<u128>()),
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            action,
            target,
            request,
            actor,
            source: self.source.clone(),
        });
        for endpoint in &self.endpoints {
            endpoint.offer(&event);
        }
    }

    /// Waits until every queue is empty, or `deadline`.
    pub async fn flush(&self, deadline: Instant) {
        for endpoint in &self.endpoints {
            endpoint.flush(deadline).await;
        }
    }
}
