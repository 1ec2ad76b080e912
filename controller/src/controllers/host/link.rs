//! One long-lived task per Host that owns its Docker connection: it dials the endpoint (with
//! exponential, jittered backoff between failed attempts), registers the connection in the
//! [`HostPool`], follows the daemon's event stream (invalidating the host's snapshot on every
//! event and publishing [`OwnerEvent`](crate::controllers::pool::OwnerEvent)s), pings the daemon
//! so that one that silently disappears is noticed, and reconnects when the connection drops.
//!
//! [`Links`] starts a task when a Host appears, restarts it when the Host's endpoint or TLS
//! material changes, and stops it when the Host is deleted. Each task publishes a [`LinkView`]
//! (its [`ConnectionState`] and the daemon's facts) that the reconciler turns into status, and
//! asks for a reconcile of its Host whenever reachability changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::HostControllerOptions;
use super::connection::{ConnectionInput, ConnectionState, transition};
use super::docker_events::owner_event;
use super::metered::Metered;
use crate::controllers::pool::{HostHandle, HostPool, instance_filter};
use crate::docker::{Connector, DaemonFacts, DockerApi, DockerError, TlsFiles};
use crate::metrics::Metrics;

/// Where and how to reach a daemon: when this changes, the connection is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `unix://…`, `tcp://…`, `ssh://…`.
    pub endpoint: String,
    /// TLS material for `tcp://`.
    pub tls: Option<TlsFiles>,
}

impl Target {
    /// The target a Host's spec names.
    pub fn of(spec: &berth_crds::HostSpec) -> Self {
        Self {
            endpoint: spec.endpoint.clone(),
            tls: spec.tls.as_ref().map(|t| TlsFiles {
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            }),
        }
    }
}

/// What a connection task tells the reconciler.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkView {
    /// The endpoint this task serves.
    pub endpoint: String,
    /// Where the connection stands.
    pub state: ConnectionState,
    /// Facts the daemon reported at the last successful connection of this task.
    pub facts: Option<DaemonFacts>,
}

/// What every connection task needs.
pub(super) struct LinkDeps {
    pub connector: Arc<dyn Connector>,
    pub pool: Arc<HostPool>,
    pub instance: String,
    pub metrics: Arc<Metrics>,
    pub options: HostControllerOptions,
    /// Names of Hosts to reconcile now (their reachability changed).
    pub notify: mpsc::UnboundedSender<String>,
}

struct Link {
    target: Target,
    view: watch::Receiver<LinkView>,
    task: JoinHandle<()>,
}

/// The connection tasks, by Host name.
pub(super) struct Links {
    deps: Arc<LinkDeps>,
    // An async mutex: stopping a task awaits its end, so that an old task can never touch the
    // pool after its replacement started.
    links: tokio::sync::Mutex<BTreeMap<String, Link>>,
}

impl Links {
    pub fn new(deps: LinkDeps) -> Self {
        Self { deps: Arc::new(deps), links: Default::default() }
    }

    /// The view of `name`'s connection, starting (or restarting, when `target` changed) its task.
    /// `still_wanted` is asked under the lock before a task starts, so that a Host deleted while
    /// its reconcile ran does not get a new connection.
    pub async fn ensure(&self, name: &str, target: &Target, still_wanted: impl FnOnce() -> bool) -> Option<LinkView> {
        let mut links = self.links.lock().await;
        if let Some(link) = links.get(name)
            && link.target == *target
            && !link.task.is_finished()
        {
            return Some(link.view.borrow().clone());
        }
        if let Some(old) = links.remove(name) {
            tracing::info!(host = name, old = %old.target.endpoint, new = %target.endpoint, "Host endpoint changed; reconnecting");
            stop_task(old).await;
            self.deps.pool.remove(name);
        }
        if !still_wanted() {
            return None;
        }
        let initial = LinkView { endpoint: target.endpoint.clone(), state: ConnectionState::Disconnected, facts: None };
        let (tx, rx) = watch::channel(initial.clone());
        let task = tokio::spawn(drive(name.to_string(), target.clone(), self.deps.clone(), tx));
        links.insert(name.to_string(), Link { target: target.clone(), view: rx, task });
        Some(initial)
    }

    /// Stops `name`'s connection and forgets the host in the pool.
    pub async fn stop(&self, name: &str) {
        let old = self.links.lock().await.remove(name);
        if let Some(old) = old {
            tracing::info!(host = name, "Host deleted; closing its Docker connection");
            stop_task(old).await;
        }
        self.deps.pool.remove(name);
    }

    /// Stops every connection whose Host is not in `keep`.
    pub async fn retain(&self, keep: &BTreeSet<String>) {
        let names: Vec<String> = self.links.lock().await.keys().filter(|n| !keep.contains(*n)).cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }

    /// Stops every connection (berth is shutting down).
    pub async fn stop_all(&self) {
        let all: Vec<(String, Link)> = std::mem::take(&mut *self.links.lock().await).into_iter().collect();
        for (name, link) in all {
            stop_task(link).await;
            self.deps.pool.remove(&name);
        }
    }
}

async fn stop_task(link: Link) {
    link.task.abort();
    let _ = link.task.await;
}

/// Reachability as status shows it: connected, or the error; used to notify only on a change.
fn reachability(state: &ConnectionState) -> (bool, Option<String>) {
    (matches!(state, ConnectionState::Connected), state.error().map(str::to_string))
}

struct Driver {
    name: String,
    target: Target,
    deps: Arc<LinkDeps>,
    view: watch::Sender<LinkView>,
    state: ConnectionState,
    facts: Option<DaemonFacts>,
}

impl Driver {
    fn step(&mut self, input: ConnectionInput) {
        match transition(&self.state, input) {
            Ok(next) => {
                let changed = reachability(&next) != reachability(&self.state);
                self.state = next;
                self.view.send_replace(LinkView {
                    endpoint: self.target.endpoint.clone(),
                    state: self.state.clone(),
                    facts: self.facts.clone(),
                });
                if changed {
                    let _ = self.deps.notify.send(self.name.clone());
                }
            }
            Err(e) => tracing::error!(host = %self.name, error = %e, "connection state machine refused a move"),
        }
    }
}

/// The connection task of one Host; runs until aborted.
async fn drive(name: String, target: Target, deps: Arc<LinkDeps>, view: watch::Sender<LinkView>) {
    let mut d = Driver { name, target, deps, view, state: ConnectionState::Disconnected, facts: None };
    let mut backoff = d.deps.options.reconnect_backoff();
    loop {
        d.step(ConnectionInput::Dial);
        let permanent = match dial(&d).await {
            Ok((docker, facts)) => {
                tracing::info!(host = %d.name, endpoint = %d.target.endpoint, version = %facts.version, api = %facts.api_version, "connected to Docker");
                d.facts = Some(facts);
                let handle = d.deps.pool.set_connected(&d.name, docker);
                d.step(ConnectionInput::Established);
                backoff = d.deps.options.reconnect_backoff();
                let why = follow(&d.name, &handle, &d.deps).await;
                tracing::warn!(host = %d.name, reason = %why, "lost the Docker connection; reconnecting");
                d.deps.pool.set_unreachable(&d.name, &why);
                d.step(ConnectionInput::Dropped(why));
                false
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(host = %d.name, error = %message, "connecting to Docker failed");
                d.deps.pool.set_unreachable(&d.name, &message);
                d.step(ConnectionInput::DialFailed(message));
                !e.is_transient()
            }
        };
        // A permanent error (a malformed endpoint) will not heal by itself, but the TLS files
        // or the daemon's configuration may be fixed without a spec change: retry slowly.
        let delay = if permanent { None } else { backoff.next() };
        tokio::time::sleep(delay.unwrap_or(d.deps.options.reconnect_max_delay)).await;
    }
}

/// Connects, negotiates and reads the daemon's facts, within the call timeout.
async fn dial(d: &Driver) -> Result<(Arc<dyn DockerApi>, DaemonFacts), DockerError> {
    let timeout = d.deps.options.call_timeout;
    let attempt = async {
        let raw = d.deps.connector.connect(&d.target.endpoint, d.target.tls.as_ref()).await?;
        let docker: Arc<dyn DockerApi> = Arc::new(Metered::new(raw, &d.deps.metrics, &d.name));
        let facts = docker.info().await?;
        Ok((docker, facts))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(DockerError::Timeout { operation: format!("connect to {}", d.target.endpoint), after: timeout }),
    }
}

/// Follows a connected daemon until the connection stops working; returns why.
async fn follow(name: &str, handle: &HostHandle, deps: &LinkDeps) -> String {
    let mut events = handle.docker.events(&instance_filter(&deps.instance));
    let mut ping = tokio::time::interval(deps.options.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate; the daemon just answered `info`
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    handle.invalidate();
                    if let Some(owner_event) = owner_event(name, &event) {
                        deps.pool.publish(owner_event);
                    }
                }
                Some(Err(e)) => return format!("the Docker event stream failed: {e}"),
                None => return format!(
                    "the Docker daemon at {} closed the event stream",
                    handle.docker.endpoint()
                ),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(deps.options.call_timeout, handle.docker.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return format!(
                        "the Docker daemon at {} did not answer a ping within {}; check that it runs and is not overloaded",
                        handle.docker.endpoint(),
                        berth_crds::duration::format_duration(deps.options.call_timeout)
                    ),
                }
            }
        }
    }
}

/// A backoff sequence that starts at `min`, doubles to `max`, and adds jitter.
pub(super) fn exponential(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeConnector;

    fn links(connector: FakeConnector) -> (Links, Arc<HostPool>, mpsc::UnboundedReceiver<String>) {
        let pool = Arc::new(HostPool::new());
        let (notify, rx) = mpsc::unbounded_channel();
        let options = HostControllerOptions {
            reconnect_min_delay: Duration::from_millis(20),
            reconnect_max_delay: Duration::from_millis(100),
            ping_interval: Duration::from_millis(50),
            ..HostControllerOptions::default()
        };
        let deps = LinkDeps {
            connector: Arc::new(connector),
            pool: pool.clone(),
            instance: "prod".into(),
            metrics: Arc::new(Metrics::new()),
            options,
            notify,
        };
        (Links::new(deps), pool, rx)
    }

    async fn wait_for(rx: &mut mpsc::UnboundedReceiver<String>, pool: &HostPool, what: impl Fn(&HostPool) -> bool) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !what(pool) {
                let _ = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
            }
        })
        .await
        .expect("condition reached within the deadline");
    }

    fn target(endpoint: &str) -> Target {
        Target { endpoint: endpoint.into(), tls: None }
    }

    #[tokio::test]
    async fn connects_notices_a_dead_daemon_reconnects_and_stops() {
        let connector = FakeConnector::new();
        let daemon = connector.daemon("fake:///a");
        let (links, pool, mut rx) = links(connector);
        links.ensure("a", &target("fake:///a"), || true).await.unwrap();
        wait_for(&mut rx, &pool, |p| p.get("a").is_ok()).await;

        daemon.set_unreachable(true);
        wait_for(&mut rx, &pool, |p| p.get("a").is_err()).await;
        let why = pool.get("a").unwrap_err();
        assert!(format!("{why:?}").contains("unreachable"), "{why:?}");

        daemon.set_unreachable(false);
        wait_for(&mut rx, &pool, |p| p.get("a").is_ok()).await;

        links.stop("a").await;
        assert!(pool.hosts().is_empty(), "a stopped host leaves the pool");
    }

    #[tokio::test]
    async fn a_failed_ping_drops_the_connection_even_while_events_flow() {
        let connector = FakeConnector::new();
        let daemon = connector.daemon("fake:///a");
        let (links, pool, mut rx) = links(connector);
        links.ensure("a", &target("fake:///a"), || true).await.unwrap();
        wait_for(&mut rx, &pool, |p| p.get("a").is_ok()).await;
        assert_eq!(daemon.calls("info"), 1);
        daemon.fail_next("ping", DockerError::Timeout { operation: "ping".into(), after: Duration::from_secs(1) });
        // The drop is followed by a reconnect: a second `info`.
        wait_for(&mut rx, &pool, |_| daemon.calls("info") >= 2).await;
        wait_for(&mut rx, &pool, |p| p.get("a").is_ok()).await;
    }

    #[tokio::test]
    async fn an_endpoint_change_replaces_the_connection() {
        let connector = FakeConnector::new();
        let a = connector.daemon("fake:///a");
        let b = connector.daemon("fake:///b");
        let (links, pool, mut rx) = links(connector);
        links.ensure("h", &target("fake:///a"), || true).await.unwrap();
        wait_for(&mut rx, &pool, |p| p.get("h").is_ok_and(|h| h.docker.endpoint() == "fake:///a")).await;
        links.ensure("h", &target("fake:///b"), || true).await.unwrap();
        wait_for(&mut rx, &pool, |p| p.get("h").is_ok_and(|h| h.docker.endpoint() == "fake:///b")).await;
        // The old task has ended when `ensure` returns: while the new connection pings on, the
        // old daemon hears nothing more.
        let before = a.calls("ping") + a.calls("events");
        let b_pings = b.calls("ping");
        wait_for(&mut rx, &pool, |_| b.calls("ping") >= b_pings + 3).await;
        assert_eq!(a.calls("ping") + a.calls("events"), before);
    }

    #[tokio::test]
    async fn a_host_no_longer_wanted_gets_no_connection() {
        let connector = FakeConnector::new();
        connector.daemon("fake:///a");
        let (links, pool, _rx) = links(connector);
        assert!(links.ensure("a", &target("fake:///a"), || false).await.is_none());
        assert!(pool.hosts().is_empty());
    }
}
