//! One notification endpoint: a bounded queue and the task delivering it.
//!
//! Events go out in order, in batches of what is queued. A failed delivery
//! is retried after `backoff`; after `threshold` consecutive failures the
//! delay doubles with each further failure, up to [`MAX_BACKOFF`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::Notify;

use super::{EVENTS_MEDIA_TYPE, Event};
use crate::config::EndpointSettings;
use crate::metrics::{DeliveryLabels, EndpointLabels, Metrics};

/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most events sent in one POST.
const MAX_BATCH: usize = 100;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A queue of events for one endpoint.
pub(super) struct Endpoint {
    settings: EndpointSettings,
    queue: Mutex<VecDeque<Arc<Event>>>,
    capacity: usize,
    wake: Notify,
    drained: Notify,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Creates the endpoint and spawns its delivery task.
    pub(super) fn start(
        settings: EndpointSettings,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Endpoint> {
        let endpoint = Arc::new(Endpoint {
            settings,
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            drained: Notify::new(),
            metrics,
        });
        tokio::spawn(endpoint.clone().deliver_forever(crate::https::client()));
        endpoint
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn wants(&self, event: &Event) -> bool {
        let settings = &self.settings;
        !settings
            .ignored_actions
            .iter()
            .any(|a| a == event.action.as_str())
            && !settings
                .ignored_media_types
                .contains(&event.target.media_type)
    }

    fn count(&self, outcome: &'static str, n: usize) {
        let labels = DeliveryLabels {
            endpoint: self.name().to_owned(),
            outcome,
        };
        self.metrics
            .notification_events
            .get_or_create(&labels)
            .inc_by(n as u64);
    }

    fn set_depth(&self, depth: usize) {
        let labels = EndpointLabels {
            endpoint: self.name().to_owned(),
        };
        self.metrics
            .notification_queue_depth
            .get_or_create(&labels)
            .set(depth as i64);
    }

    /// Queues `event` if this endpoint wants it, dropping the oldest when full.
    pub(super) fn offer(&self, event: &Arc<Event>) {
        if !self.wants(event) {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= self.capacity {
            queue.pop_front();
            self.count("dropped", 1);
        }
        queue.push_back(event.clone());
        self.set_depth(queue.len());
        drop(queue);
        self.wake.notify_one();
    }

    /// Waits until the queue is empty or `deadline` passes.
    pub(super) async fn flush(&self, deadline: Instant) {
        loop {
            let drained = self.drained.notified();
            if self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                return;
            }
            if tokio::time::timeout_at(deadline.into(), drained)
                .await
                .is_err()
            {
                tracing::warn!(
                    endpoint = self.name(),
                    "notification queue not flushed before the deadline"
                );
                return;
            }
        }
    }

    fn next_batch(&self) -> Vec<Arc<Event>> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.iter().take(MAX_BATCH).cloned().collect()
    }

    /// Removes the delivered events from the front of the queue. Events
    /// dropped meanwhile (queue full) may have shifted it: remove by identity.
    fn acknowledge(&self, batch: &[Arc<Event>]) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.retain(|e| !batch.iter().any(|b| Arc::ptr_eq(b, e)));
        self.set_depth(queue.len());
        if queue.is_empty() {
            self.drained.notify_waiters();
        }
    }

    async fn deliver_forever(self: Arc<Self>, client: HttpClient) {
        let mut failures: u32 = 0;
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                self.drained.notify_waiters();
                self.wake.notified().await;
                continue;
            }
            match self.post(&client, &batch).await {
                Ok(()) => {
                    failures = 0;
                    self.count("delivered", batch.len());
                    self.acknowledge(&batch);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.count("failed", batch.len());
                    let delay =
                        retry_delay(self.settings.backoff, self.settings.threshold, failures);
                    tracing::warn!(endpoint = self.name(), error = %e, failures, retry_in = ?delay, "notification delivery failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn post(&self, client: &HttpClient, batch: &[Arc<Event>]) -> Result<(), String> {
        let events: Vec<&Event> = batch.iter().map(|e| &**e).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
            .map_err(|e| e.to_string())?;
        let mut request =
            Request::post(&self.settings.url).header(http::header::CONTENT_TYPE, EVENTS_MEDIA_TYPE);
        for (name, value) in &self.settings.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(self.settings.timeout, client.request(request))
            .await
            .map_err(|_| format!("timed out after {:?}", self.settings.timeout))?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("endpoint answered {status}"))
        }
    }
}

/// The wait after the `failures`-th consecutive failure.
fn retry_delay(backoff: Duration, threshold: u32, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(threshold).min(16);
    backoff
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF.max(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_after_threshold() {
        let b = Duration::from_millis(100);
        assert_eq!(retry_delay(b, 3, 1), b);
        assert_eq!(retry_delay(b, 3, 3), b);
        assert_eq!(retry_delay(b, 3, 4), b * 2);
        assert_eq!(retry_delay(b, 3, 6), b * 8);
        assert_eq!(retry_delay(b, 3, 100), MAX_BACKOFF);
    }
}
