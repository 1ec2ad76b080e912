//! The host pool: one Docker connection per Host, the shared per-host observation (one labelled
//! listing per host per pass, shared by every Stack and Lease on it), and the fan-out of Docker
//! events to the controllers that own the objects they concern.
//!
//! The Host controller fills the pool (connects, reconnects with backoff, marks hosts
//! unreachable); the Stack and Lease controllers read it. A snapshot is reused until it is
//! invalidated (a Docker event on the host, or a change berth made there) or older than the
//! caller's `max_age`, and concurrent callers share one listing (single flight), so a resync of
//! 200 converged Stacks costs one listing per host, not 200.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_crds::common::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::docker::{
    ContainerSummary, DockerApi, DockerError, DockerEvent, LabelFilter, NetworkSummary, VolumeSummary,
};

/// Everything berth of this instance manages on one host, as one pass saw it.
#[derive(Debug, Clone, Default)]
pub struct HostSnapshot {
    /// Containers with berth's labels (any state).
    pub containers: Vec<ContainerSummary>,
    /// Networks with berth's labels.
    pub networks: Vec<NetworkSummary>,
    /// Volumes with berth's labels.
    pub volumes: Vec<VolumeSummary>,
    /// When the listing was taken.
    pub taken_at: Option<Instant>,
}

/// A connected host.
pub struct HostHandle {
    /// Host name (the Host object's name).
    pub name: String,
    /// The connection.
    pub docker: Arc<dyn DockerApi>,
    cache: tokio::sync::Mutex<Cache>,
    /// Bumped by every invalidation; a listing started before a bump is not fresh.
    epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHandle").field("name", &self.name).field("endpoint", &self.docker.endpoint()).finish()
    }
}

#[derive(Default)]
struct Cache {
    snapshot: Option<Arc<HostSnapshot>>,
    /// The epoch at which the snapshot's listing started.
    listed_epoch: u64,
}

/// Labels every object of this berth instance carries (the listing filter).
pub fn instance_filter(instance: &str) -> LabelFilter {
    vec![
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
    ]
}

impl HostHandle {
    /// A handle over a connection.
    pub fn new(name: &str, docker: Arc<dyn DockerApi>) -> Self {
        Self {
            name: name.to_string(),
            docker,
            cache: tokio::sync::Mutex::new(Cache::default()),
            epoch: Default::default(),
        }
    }

    /// The host's berth objects, from the shared snapshot when it is valid and younger than
    /// `max_age`, else from a new listing (three calls: containers, networks, volumes) that
    /// concurrent callers share.
    pub async fn observe(&self, instance: &str, max_age: Duration) -> Result<Arc<HostSnapshot>, DockerError> {
        // Holding the async mutex across the listing makes concurrent callers wait for it and
        // then reuse its result: the single flight.
        let mut cache = self.cache.lock().await;
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        if let Some(s) = &cache.snapshot
            && cache.listed_epoch == epoch
            && s.taken_at.is_some_and(|t| t.elapsed() <= max_age)
        {
            return Ok(s.clone());
        }
        let filter = instance_filter(instance);
        let containers = self.docker.list_containers(&filter).await?;
        let networks = self.docker.list_networks(&filter).await?;
        let volumes = self.docker.list_volumes(&filter).await?;
        let snapshot = Arc::new(HostSnapshot { containers, networks, volumes, taken_at: Some(Instant::now()) });
        cache.snapshot = Some(snapshot.clone());
        cache.listed_epoch = epoch;
        Ok(snapshot)
    }

    /// The last snapshot, however old, without listing (placement counts labels from it).
    pub fn peek(&self) -> Option<Arc<HostSnapshot>> {
        self.cache.try_lock().ok().and_then(|c| c.snapshot.clone())
    }

    /// Marks the snapshot stale (berth changed something, or Docker reported an event).
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What the controllers are told about a Docker event: the owner it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerEvent {
    /// Host the event came from.
    pub host: String,
    /// `Stack` or `Lease`.
    pub owner_kind: String,
    /// Owner namespace.
    pub namespace: String,
    /// Owner name.
    pub name: String,
    /// The Docker event.
    pub event: DockerEvent,
}

/// Reachability of a host as the Host controller last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// Connected and answering.
    Reachable,
    /// Not answering; the message says why.
    Unreachable(String),
}

/// A host's reachability and, once it connected, its connection.
type HostEntry = (Reachability, Option<Arc<HostHandle>>);

/// All hosts berth manages, by Host name.
pub struct HostPool {
    hosts: Mutex<BTreeMap<String, HostEntry>>,
    events: broadcast::Sender<OwnerEvent>,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPool").finish()
    }
}

impl Default for HostPool {
    fn default() -> Self {
        Self::new()
    }
}

impl HostPool {
    /// An empty pool.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self { hosts: Mutex::new(BTreeMap::new()), events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostEntry>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connected host (replacing any previous connection).
    pub fn set_connected(&self, name: &str, docker: Arc<dyn DockerApi>) -> Arc<HostHandle> {
        let handle = Arc::new(HostHandle::new(name, docker));
        self.lock().insert(name.to_string(), (Reachability::Reachable, Some(handle.clone())));
        handle
    }

    /// Marks a host unreachable; controllers then take no action there.
    pub fn set_unreachable(&self, name: &str, why: &str) {
        let mut hosts = self.lock();
        let entry = hosts.entry(name.to_string()).or_insert((Reachability::Unreachable(why.into()), None));
        entry.0 = Reachability::Unreachable(why.to_string());
    }

    /// Marks a known host reachable again (its connection answered).
    pub fn set_reachable(&self, name: &str) {
        if let Some(entry) = self.lock().get_mut(name)
            && entry.1.is_some()
        {
            entry.0 = Reachability::Reachable;
        }
    }

    /// Forgets a host (its Host object was deleted).
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The connection of a reachable host.
    pub fn get(&self, name: &str) -> Result<Arc<HostHandle>, Reachability> {
        match self.lock().get(name) {
            Some((Reachability::Reachable, Some(h))) => Ok(h.clone()),
            Some((r @ Reachability::Unreachable(_), _)) => Err(r.clone()),
            Some((_, None)) | None => Err(Reachability::Unreachable(format!(
                "host {name} is not connected (is there a Host named {name}, and does its daemon answer?)"
            ))),
        }
    }

    /// The connection of a host whether or not it is currently marked reachable.
    pub fn handle(&self, name: &str) -> Option<Arc<HostHandle>> {
        self.lock().get(name).and_then(|(_, h)| h.clone())
    }

    /// Names of every known host with its reachability.
    pub fn hosts(&self) -> Vec<(String, Reachability)> {
        self.lock().iter().map(|(n, (r, _))| (n.clone(), r.clone())).collect()
    }

    /// Publishes a Docker event of an owned object (the Host controller calls this).
    pub fn publish(&self, event: OwnerEvent) {
        let _ = self.events.send(event);
    }

    /// Subscribes to owner events (the Stack and Lease controllers turn them into reconciles).
    pub fn subscribe(&self) -> broadcast::Receiver<OwnerEvent> {
        self.events.subscribe()
    }

    /// Sends on `changed` whenever a host's reachability changes (checked every second), until
    /// `shutdown`: the Stack and Lease controllers reconcile everything then, so a host that
    /// answers again is caught up at once and one that stops answering shows it at once.
    pub async fn watch_reachability(self: Arc<Self>, changed: mpsc::UnboundedSender<()>, shutdown: CancellationToken) {
        let snapshot = || -> BTreeMap<String, bool> {
            self.hosts().into_iter().map(|(n, r)| (n, r == Reachability::Reachable)).collect()
        };
        let mut last = snapshot();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = snapshot();
            if now != last {
                let _ = changed.send(());
                last = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeDocker;

    #[tokio::test]
    async fn concurrent_observers_share_one_listing_until_invalidated() {
        let fake = FakeDocker::default();
        let pool = HostPool::new();
        let h = pool.set_connected("local", Arc::new(fake.clone()));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.observe("i", Duration::from_secs(30)).await.unwrap() }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(fake.calls("list_containers"), 1);
        h.invalidate();
        h.observe("i", Duration::from_secs(30)).await.unwrap();
        assert_eq!(fake.calls("list_containers"), 2);
        h.observe("i", Duration::ZERO).await.unwrap();
        assert_eq!(fake.calls("list_containers"), 3);
    }

    #[tokio::test]
    async fn unreachable_hosts_are_not_handed_out() {
        let pool = HostPool::new();
        assert!(pool.get("local").is_err());
        pool.set_connected("local", Arc::new(FakeDocker::default()));
        assert!(pool.get("local").is_ok());
        pool.set_unreachable("local", "connection refused");
        assert_eq!(pool.get("local").unwrap_err(), Reachability::Unreachable("connection refused".into()));
        pool.set_reachable("local");
        assert!(pool.get("local").is_ok());
    }
}
