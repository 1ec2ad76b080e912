//! Garbage collection of `events.k8s.io` Events: an Event is deleted once it has not been
//! observed again for the TTL (Kubernetes keeps events for an hour by default).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::store::{ListOptions, ObjectKey, Precondition, ResourceRef, Store};

/// When an Event was last observed: its series' last observation, else its event time, else
/// when it was created.
fn last_observed(ev: &Value) -> Option<jiff::Timestamp> {
    ["/series/lastObservedTime", "/eventTime", "/deprecatedLastTimestamp", "/metadata/creationTimestamp"]
        .iter()
        .filter_map(|p| ev.pointer(p).and_then(Value::as_str))
        .find_map(|s| s.parse::<jiff::Timestamp>().ok())
}

/// Deletes every Event last observed before `now - ttl`; returns how many.
pub async fn collect_once(store: &dyn Store, ttl: Duration, now: jiff::Timestamp) -> usize {
    let resource = ResourceRef { group: "events.k8s.io".into(), resource: "events".into() };
    let Ok(list) = store.list(&resource, None, &ListOptions::default()) else { return 0 };
    let cutoff = now.as_second() - ttl.as_secs() as i64;
    let mut deleted = 0;
    for ev in list.items {
        let expired = last_observed(&ev.value()).is_none_or(|t| t.as_second() < cutoff);
        if !expired {
            continue;
        }
        let key =
            ObjectKey { resource: resource.clone(), namespace: ev.key.namespace.clone(), name: ev.key.name.clone() };
        if store.delete(&key, Precondition::ResourceVersion(ev.resource_version)).await.is_ok() {
            deleted += 1;
        }
    }
    deleted
}

/// Runs [`collect_once`] every `interval` until `stop` is cancelled.
pub async fn run(store: Arc<dyn Store>, ttl: Duration, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let n = collect_once(&*store, ttl, jiff::Timestamp::now()).await;
                if n > 0 {
                    tracing::debug!(deleted = n, "garbage-collected expired events");
                }
            }
        }
    }
}
