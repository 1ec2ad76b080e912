//! The Lease controller: ephemeral, hardened, tenant-isolated workloads with a SKU, an expiry,
//! retention and signed callbacks (PRODUCT.md §3 Lease).
//!
//! Wiring ([`run`]): a kube-runtime `Controller<Lease>` over `ctx.client`, triggered by changes
//! of a Lease's generation, deletion, finalizers or annotations (the restart annotation); by
//! Docker events of its containers (a container that dies is diagnosed at once); by the end of
//! its background operation; by host reachability changes; and by time (expiry, retention,
//! retries).
//!
//! A reconcile ([`LeaseController::apply`]) is a step of the lifecycle state machine
//! ([`machine`]): it decides from the Lease, its status, the clock and the state of its
//! background operation ([`tasks`]) which event happened, applies it through
//! [`machine::transition`], starts the next operation when one is needed, and writes status.
//! Long Docker work (pull, create, start, verify, copy volumes) never runs inside a reconcile:
//! it runs as a cancellable task, so a close, delete or expiry arriving during a slow pull
//! cancels it within a second or two.
//!
//! Placement ([`placement`]) happens under one lock with in-memory reservations on top of the
//! allocations recorded in the store (`status.host`, `status.allocated`) and those found in
//! container labels, so that two Leases never book the same room, also after a restart.
//!
//! Terminal transitions (Ready, Failed, Closed, Retained) are written to the callback outbox
//! ([`callbacks`]) before the new phase is written to status; the outbox delivers them signed,
//! retried across restarts, at most once per Lease and phase.

pub mod callbacks;
pub mod machine;
pub mod placement;
pub mod plan;
pub mod render;
pub mod status;
pub mod tasks;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_crds::Lease;
use berth_crds::common::{
    ConditionStatus, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID, LABEL_RELEASE, LABEL_REPLICA,
    LABEL_RETAINED_UNTIL, LABEL_ROLE, LABEL_SERVICE, ROLE_RETAINED_VOLUME, find_condition,
};
use berth_crds::host::Host;
use berth_crds::lease::{
    CallbackRecord, LeaseAllocation, LeaseDiagnostics, LeaseInstanceStatus, LeasePhase, LeaseRelease, LeaseStatus,
    RESTART_ANNOTATION,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig};
use kube::runtime::events::Reporter;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;

use self::machine::{LeaseEvent, is_live, transition};
use self::placement::{Candidate, Unplaceable, place};
use self::render::{LeaseNaming, LeaseRenderContext, RenderedLease, instance_count, public_host, render, sku_of};
use self::status::{set, set_ready};
use self::tasks::{Finished, Op, TaskView, Tasks};
use self::worker::{Outcome, ReadyInfo, RestoreSource, Retain, Worker, WorkerOptions, reason as ev};
use crate::controllers::context::Context;
use crate::controllers::pool::{HostHandle, Reachability};
use crate::controllers::stack::events::{Note, Notify};
use crate::controllers::stack::references::FetchedReferences;
use crate::controllers::stack::retry::Retries;
use crate::docker::{ContainerState, LabelFilter};

/// Finalizer that keeps a deleted Lease until its containers are gone from its host.
pub const FINALIZER: &str = "berth.dev/lease-cleanup";
/// `reportingController` of the events.
pub const CONTROLLER_NAME: &str = "berth.dev/lease-controller";
/// How long a reconcile waits for a cancelled operation to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How often a Lease whose operation runs is looked at (progress of pulls in the condition).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// How long a container named in a `die`/`kill` event is inspected rather than trusted from
/// the listing.
const SUSPECT_FOR: Duration = Duration::from_secs(10);
/// How often Host `status.allocated` is brought up to date.
const ALLOCATION_SYNC: Duration = Duration::from_secs(2);

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// An API call failed.
    #[error("{operation} failed: {source}")]
    Kube {
        /// What was done.
        operation: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The state machine refused an event (a bug, or a status edited by hand).
    #[error(transparent)]
    Refused(#[from] machine::Refused),
    /// The host of a deleted Lease does not answer; the finalizer stays.
    #[error("{0}")]
    DeletionBlocked(String),
    /// The callback could not be written to the outbox.
    #[error("writing the callback of Lease {lease} to the outbox failed: {message}")]
    Outbox {
        /// `namespace/name`.
        lease: String,
        /// Why.
        message: String,
    },
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<LeaseError>>),
}

fn kube_err(operation: impl Into<String>) -> impl FnOnce(kube::Error) -> LeaseError {
    let operation = operation.into();
    move |source| LeaseError::Kube { operation, source: Box::new(source) }
}

/// Now, in whole seconds (as the API stores times).
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()))
}

fn key(lease: &Lease) -> String {
    format!("{}/{}", lease.namespace_or_default(), lease.name())
}

fn uid(lease: &Lease) -> String {
    lease.metadata.uid.clone().unwrap_or_default()
}

/// The Lease-scoped [`Notify`]: events go to the publisher task, progress to a slot the
/// reconcile shows in the Ready condition while an operation runs.
struct LeaseNotify {
    tx: mpsc::UnboundedSender<(ObjectReference, Note)>,
    reference: ObjectReference,
    progress: Arc<Mutex<HashMap<String, String>>>,
    uid: String,
}

impl Notify for LeaseNotify {
    fn note(&self, note: Note) {
        let _ = self.tx.send((self.reference.clone(), note));
    }

    fn progress(&self, message: String) {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).insert(self.uid.clone(), message);
    }
}

/// The Lease controller's state, shared by every reconcile.
pub struct LeaseController {
    ctx: Arc<Context>,
    leases: Store<Lease>,
    hosts: Store<Host>,
    tasks: Tasks<ObjectRef<Lease>>,
    retries: Retries,
    /// Earliest time an operation that failed transiently is started again, by uid.
    not_before: Mutex<HashMap<String, Instant>>,
    /// Serializes placement decisions.
    placement: tokio::sync::Mutex<()>,
    /// Placements not yet visible in the cache: uid → (host, allocation).
    reservations: Mutex<HashMap<String, (String, LeaseAllocation)>>,
    events: mpsc::UnboundedSender<(ObjectReference, Note)>,
    /// Queues Leases for a reconcile.
    wake: mpsc::UnboundedSender<ObjectRef<Lease>>,
    /// Containers a Docker event said may have stopped, with when: Docker can report `die`
    /// before its listing shows the container stopped, so these are inspected.
    suspects: Mutex<HashMap<String, Instant>>,
    progress: Arc<Mutex<HashMap<String, String>>>,
    outbox: Option<Arc<callbacks::Outbox>>,
    /// Last status written per uid with the resourceVersion the write produced.
    written: Mutex<HashMap<String, (u64, LeaseStatus)>>,
    options: WorkerOptions,
}

impl std::fmt::Debug for LeaseController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseController").field("instance", &self.ctx.instance).finish()
    }
}

/// Tunables of the controller (tests shorten the verification polling).
#[derive(Debug, Clone, Default)]
pub struct LeaseControllerOptions {
    /// Where the callback outbox lives (`<data-dir>/callbacks`); `None` disables callbacks.
    pub outbox_dir: Option<PathBuf>,
    /// Overrides of the worker's tunables.
    pub worker: Option<WorkerOptions>,
}

/// Runs the Lease controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, options: LeaseControllerOptions, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let relevant = |l: &Lease| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        l.metadata.generation.hash(&mut h);
        l.metadata.deletion_timestamp.is_some().hash(&mut h);
        l.finalizers().hash(&mut h);
        l.metadata.annotations.hash(&mut h);
        l.metadata.uid.hash(&mut h);
        Some(h.finish())
    };
    let lease_stream = watcher(Api::<Lease>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(lease_writer)
        .applied_objects()
        .predicate_filter(relevant, PredicateConfig::default());
    let (hosts, host_writer) = reflector::store::<Host>();
    let host_stream = watcher(Api::<Host>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(host_writer)
        .touched_objects();

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let reporter = Reporter { controller: CONTROLLER_NAME.into(), instance: Some(ctx.instance.clone()) };
    let publisher = tokio::spawn(crate::controllers::stack::publish_events(client.clone(), reporter, events_rx));

    let outbox = match &options.outbox_dir {
        Some(dir) => match callbacks::Outbox::open(dir) {
            Ok(o) => Some(Arc::new(o)),
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "the callback outbox cannot be opened; Lease callbacks are not sent");
                None
            }
        },
        None => None,
    };

    let (wake_tx, wake_rx) = mpsc::unbounded_channel::<ObjectRef<Lease>>();
    let lc = Arc::new(LeaseController {
        options: options.worker.clone().unwrap_or_else(|| WorkerOptions::from_config(&ctx.config.leases)),
        ctx: ctx.clone(),
        leases: leases.clone(),
        hosts,
        tasks: Tasks::new(wake_tx.clone()),
        retries: Retries::new(),
        not_before: Mutex::new(HashMap::new()),
        placement: tokio::sync::Mutex::new(()),
        reservations: Mutex::new(HashMap::new()),
        events: events_tx,
        wake: wake_tx.clone(),
        suspects: Mutex::new(HashMap::new()),
        progress: Arc::new(Mutex::new(HashMap::new())),
        outbox: outbox.clone(),
        written: Mutex::new(HashMap::new()),
    });

    let mut background = Vec::new();
    if let Some(outbox) = outbox {
        let wake = wake_tx.clone();
        let on_change: Arc<dyn Fn(&callbacks::DeliveryRecord) + Send + Sync> = Arc::new(move |r| {
            let _ = wake.send(ObjectRef::<Lease>::new(&r.name).within(&r.namespace));
        });
        match callbacks::http_client() {
            Ok(http) => background.push(tokio::spawn(callbacks::run_sender(outbox, http, on_change, shutdown.clone()))),
            Err(e) => tracing::error!(error = %e, "no HTTP client for Lease callbacks; they stay in the outbox"),
        }
    }
    background.push(tokio::spawn(sync_host_allocations(lc.clone(), shutdown.clone())));
    background.push(tokio::spawn(reap_retained_volumes(lc.clone(), shutdown.clone())));
    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    background.push(tokio::spawn(ctx.pool.clone().watch_reachability(all_tx.clone(), shutdown.clone())));
    let docker_events = owner_event_refs(lc.clone(), all_tx);

    let all_leases = leases.clone();
    Controller::for_stream(lease_stream, leases)
        .watches_stream(host_stream, move |h: Host| {
            // A Host that changes (becomes Ready, is uncordoned, reports capacity) may make room
            // for Pending Leases.
            let _ = h;
            all_leases
                .state()
                .iter()
                .filter(|l| l.status.as_ref().and_then(|s| s.phase).is_none_or(|p| p == LeasePhase::Pending))
                .map(|l| ObjectRef::from_obj(l.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(docker_events)
        .reconcile_on(UnboundedReceiverStream::new(wake_rx))
        .reconcile_all_on(UnboundedReceiverStream::new(all_rx))
        .with_config(ControllerConfig::default().concurrency(16))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, lc.clone())
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "lease controller");
            }
            futures::future::ready(())
        })
        .await;
    for t in background {
        t.abort();
    }
    publisher.abort();
}

/// Docker events of Lease containers, as reconcile requests of their owners.
fn owner_event_refs(
    lc: Arc<LeaseController>,
    all: mpsc::UnboundedSender<()>,
) -> impl futures::Stream<Item = ObjectRef<Lease>> + Send + 'static {
    BroadcastStream::new(lc.ctx.pool.subscribe()).filter_map(move |item| {
        let out = match item {
            Ok(ev)
                if ev.owner_kind == render::OWNER_KIND
                    && ev.event.kind == "container"
                    && (matches!(ev.event.action.as_str(), "die" | "destroy" | "oom" | "kill" | "stop" | "start")
                        || ev.event.action.starts_with("health_status")) =>
            {
                if let Some(h) = lc.ctx.pool.handle(&ev.host) {
                    h.invalidate();
                }
                if matches!(ev.event.action.as_str(), "die" | "kill" | "oom" | "stop" | "destroy") {
                    let mut suspects = lc.suspects.lock().unwrap_or_else(|e| e.into_inner());
                    suspects.retain(|_, t| t.elapsed() < SUSPECT_FOR);
                    suspects.insert(ev.event.id.clone(), Instant::now());
                }
                Some(ObjectRef::<Lease>::new(&ev.name).within(&ev.namespace))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                let _ = all.send(());
                None
            }
        };
        futures::future::ready(out)
    })
}

async fn reconcile(lease: Arc<Lease>, lc: Arc<LeaseController>) -> Result<Requeue, LeaseError> {
    let api: Api<Lease> = Api::namespaced(lc.ctx.client.clone(), lease.namespace_or_default());
    let run = finalizer(&api, FINALIZER, lease, |event| async {
        match event {
            FinalizerEvent::Apply(l) => lc.apply(&l).await,
            FinalizerEvent::Cleanup(l) => lc.cleanup(&l).await,
        }
    });
    lc.ctx.metrics.observe_reconcile("Lease", run).await.map_err(|e| LeaseError::Finalizer(Box::new(e)))
}

fn error_policy(lease: Arc<Lease>, err: &LeaseError, lc: Arc<LeaseController>) -> Requeue {
    let (count, delay) = lc.retries.failed(&format!("reconcile/{}", key(&lease)));
    tracing::warn!(lease = %key(&lease), attempt = count, retry_in = ?delay, error = %err, "reconcile failed");
    Requeue::requeue(delay)
}

/// A step made a transition: the reconcile goes on with the new phase.
struct Stop;

impl LeaseController {
    fn notify_for(&self, lease: &Lease) -> LeaseNotify {
        LeaseNotify {
            tx: self.events.clone(),
            reference: lease.object_ref(&()),
            progress: self.progress.clone(),
            uid: uid(lease),
        }
    }

    fn note(&self, lease: &Lease, note: Note) {
        let _ = self.events.send((lease.object_ref(&()), note));
    }

    /// The status to start from: the cache's, unless this controller wrote a newer one.
    fn current_status(&self, lease: &Lease) -> LeaseStatus {
        let cached = lease.status.clone().unwrap_or_default();
        let rv: Option<u64> = lease.metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match (written.get(&uid(lease)), rv) {
            (Some((w_rv, w_status)), Some(rv)) if *w_rv > rv => w_status.clone(),
            _ => cached,
        }
    }

    async fn write_status(&self, lease: &Lease, old: &LeaseStatus, new: &LeaseStatus) -> Result<(), LeaseError> {
        let Some(patch) = status::patch(old, new) else { return Ok(()) };
        let api: Api<Lease> = Api::namespaced(self.ctx.client.clone(), lease.namespace_or_default());
        let updated = api
            .patch_status(lease.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err(format!("writing the status of Lease {}", key(lease))))?;
        if let (Some(uid), Some(rv)) =
            (updated.metadata.uid.clone(), updated.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()))
        {
            self.written.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, (rv, new.clone()));
        }
        Ok(())
    }

    fn go(
        &self,
        st: &mut LeaseStatus,
        event: LeaseEvent,
        message: impl Into<String>,
        now: &Time,
    ) -> Result<(), LeaseError> {
        let next = transition(st.phase, event)?;
        status::enter(st, next, message.into(), now);
        Ok(())
    }

    /// Values of the Secrets and ConfigMaps the Lease's environment refers to.
    async fn references(&self, lease: &Lease) -> Result<FetchedReferences, LeaseError> {
        fetch_references(&self.ctx.client, lease).await
    }

    async fn render(&self, lease: &Lease, revision: i64) -> Result<Result<RenderedLease, String>, LeaseError> {
        let refs = self.references(lease).await?;
        let rc = LeaseRenderContext {
            instance: &self.ctx.instance,
            hash_key: &self.ctx.hash_key,
            config: &self.ctx.config.leases,
            references: &refs,
        };
        Ok(render(lease, revision, &rc).map_err(|e| e.to_string()))
    }

    fn endpoint_of(&self, host: &str) -> String {
        self.hosts.state().iter().find(|h| h.name_any() == host).map(|h| h.spec.endpoint.clone()).unwrap_or_else(|| {
            if host == berth_crds::host::LOCAL_HOST { crate::docker::local_endpoint() } else { String::new() }
        })
    }

    fn retry_due(&self, uid: &str) -> Option<Duration> {
        let nb = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        nb.get(uid).and_then(|t| t.checked_duration_since(Instant::now()))
    }

    fn failed_attempt(&self, lease: &Lease) -> (u32, Duration) {
        let (count, delay) = self.retries.failed(&key(lease));
        self.not_before.lock().unwrap_or_else(|e| e.into_inner()).insert(uid(lease), Instant::now() + delay);
        (count, delay)
    }

    fn succeeded(&self, lease: &Lease) {
        self.retries.succeeded(&key(lease));
        self.not_before.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid(lease));
    }

    /// Queues every Pending Lease: room was freed.
    fn wake_pending(&self) {
        for l in self.leases.state() {
            if l.status.as_ref().and_then(|s| s.phase).is_none_or(|p| p == LeasePhase::Pending) {
                let _ = self.wake.send(ObjectRef::from_obj(l.as_ref()));
            }
        }
    }

    fn forget(&self, lease: &Lease) {
        let u = uid(lease);
        self.tasks.forget(&u);
        self.reservations.lock().unwrap_or_else(|e| e.into_inner()).remove(&u);
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&u);
        self.not_before.lock().unwrap_or_else(|e| e.into_inner()).remove(&u);
        self.retries.succeeded(&key(lease));
    }

    fn callback_records(&self, lease: &Lease) -> Vec<CallbackRecord> {
        let Some(outbox) = &self.outbox else { return vec![] };
        let u = uid(lease);
        [LeasePhase::Ready, LeasePhase::Failed, LeasePhase::Closed, LeasePhase::Retained]
            .into_iter()
            .filter_map(|p| outbox.get(&u, p).map(|r| r.to_status()))
            .collect()
    }

    /// Writes the callback of the phase `st` is in to the outbox (once per Lease and phase).
    async fn enqueue_callback(&self, lease: &Lease, st: &mut LeaseStatus, now: &Time) -> Result<(), LeaseError> {
        let (Some(cb), Some(phase)) = (&lease.spec.callback, st.phase) else { return Ok(()) };
        if !machine::reports(phase) {
            return Ok(());
        }
        let Some(outbox) = &self.outbox else { return Ok(()) };
        let u = uid(lease);
        if outbox.get(&u, phase).is_some() {
            return Ok(());
        }
        let secret = match &cb.secret_ref {
            Some(sel) => {
                let ns = lease.namespace_or_default();
                let s = Api::<Secret>::namespaced(self.ctx.client.clone(), ns)
                    .get_opt(&sel.name)
                    .await
                    .map_err(kube_err(format!("reading Secret {ns}/{}", sel.name)))?;
                s.as_ref().and_then(|s| crate::controllers::stack::references::secret_value(s, &sel.key))
            }
            None => callbacks::operator_secret(&self.ctx.config.leases)
                .map_err(|e| LeaseError::Outbox { lease: key(lease), message: e.to_string() })?,
        };
        let Some(secret) = secret else {
            let why = match &cb.secret_ref {
                Some(sel) => format!(
                    "Secret {}/{} does not exist or has no key {:?}; the {} callback is not sent: create the \
                     Secret with that key",
                    lease.namespace_or_default(),
                    sel.name,
                    sel.key,
                    phase.as_str()
                ),
                None => format!(
                    "no callback secret: set spec.callback.secretRef or the operator config key leases.callbacks.secret; \
                     the {} callback is not sent",
                    phase.as_str()
                ),
            };
            set(st, "CallbackSent", ConditionStatus::False, "NoSecret", &why, lease.metadata.generation, now);
            self.note(lease, Note::warning("CallbackNotSent", "Callback", why));
            return Ok(());
        };
        let body = callbacks::callback_body(lease, st, phase, now.0);
        let timestamp = Timestamp::now().as_second();
        let signature = callbacks::sign(&secret, timestamp, &body);
        let delivery = callbacks::NewDelivery {
            lease_uid: u,
            namespace: lease.namespace_or_default().to_string(),
            name: lease.name().to_string(),
            phase,
            url: cb.url.clone(),
            body,
            timestamp,
            signature,
        };
        // The write is fsynced: off the async workers.
        let outbox2 = outbox.clone();
        tokio::task::spawn_blocking(move || outbox2.enqueue(delivery))
            .await
            .map_err(|e| LeaseError::Outbox { lease: key(lease), message: e.to_string() })?
            .map_err(|e| LeaseError::Outbox { lease: key(lease), message: e.to_string() })?;
        outbox.kick();
        Ok(())
    }

    /// Hosts as placement sees them, with what live Leases hold there.
    fn candidates(&self) -> Vec<Candidate> {
        let leases = self.leases.state();
        let hosts = self.hosts.state();
        let reservations = self.reservations.lock().unwrap_or_else(|e| e.into_inner()).clone();
        placement::candidates(
            leases.iter().map(|l| l.as_ref()),
            hosts.iter().map(|h| h.as_ref()),
            &reservations,
            &host_links(&self.ctx.pool),
            &self.ctx.config.leases.skus,
        )
    }

    /// The host holding retained volumes of Lease `namespace/name`, if a reachable one does.
    async fn retained_host(&self, namespace: &str, name: &str) -> Option<String> {
        retained_host(&self.ctx, namespace, name).await
    }

    fn worker<'a>(
        &'a self,
        handle: &'a HostHandle,
        uid: &'a str,
        naming: &'a LeaseNaming,
        notify: &'a dyn Notify,
        secrets: &'a [String],
        public_host: &'a str,
    ) -> Worker<'a> {
        Worker {
            host: handle,
            instance: &self.ctx.instance,
            uid,
            naming,
            notify,
            secrets,
            public_host,
            options: self.options.clone(),
        }
    }

    /// Starts `op` for `lease` in the background.
    fn spawn(
        &self,
        lease: &Lease,
        op: Op,
        task_key: String,
        handle: Arc<HostHandle>,
        work: impl FnOnce(Worker<'_>) -> futures::future::BoxFuture<'_, Outcome> + Send + 'static,
        secrets: Vec<String>,
    ) {
        let u = uid(lease);
        let naming = LeaseNaming::new(lease.namespace_or_default(), lease.name());
        let notify = self.notify_for(lease);
        let public = public_host(&self.ctx.config.leases, &self.endpoint_of(&handle.name));
        let instance = self.ctx.instance.clone();
        let options = self.options.clone();
        let uid_owned = u.clone();
        let fut = async move {
            let w = Worker {
                host: &handle,
                instance: &instance,
                uid: &uid_owned,
                naming: &naming,
                notify: &notify,
                secrets: &secrets,
                public_host: &public,
                options,
            };
            work(w).await
        };
        self.tasks.spawn(&u, op, task_key, ObjectRef::from_obj(lease), fut);
    }

    /// One reconcile of a Lease that is not being deleted.
    async fn apply(&self, lease: &Lease) -> Result<Requeue, LeaseError> {
        tracing::debug!(lease = %key(lease), phase = ?lease.status.as_ref().and_then(|s| s.phase), "reconcile");
        let now = now();
        let old = self.current_status(lease);
        let mut st = old.clone();
        let generation = lease.metadata.generation;
        let expires = status::expires_at(lease, self.ctx.config.leases.default_duration.0);
        st.expires_at = Some(Time(expires));
        st.callbacks = self.callback_records(lease);

        if st.phase.is_none() {
            self.go(&mut st, LeaseEvent::Admitted, "waiting for a host with room", &now)?;
            set_ready(&mut st, ConditionStatus::False, "Pending", "waiting for a host with room", generation, &now);
        }

        // Close, expiry: everything else stops.
        let closing = if lease.spec.closed {
            Some(("Closed", "spec.closed is true: the Lease is deprovisioned".to_string()))
        } else if now.0 >= expires {
            Some((ev::EXPIRED, format!("the Lease expired at {expires}: it is deprovisioned")))
        } else {
            None
        };
        if let Some((why, message)) = &closing
            && is_live(st.phase)
            && st.phase != Some(LeasePhase::Deprovisioning)
        {
            let u = uid(lease);
            if self.tasks.cancel(&u, CANCEL_WAIT).await {
                self.note(lease, Note::normal(ev::CLOSING, "Cancel", "the running operation was cancelled"));
            }
            self.self_clear_retry(lease);
            self.go(&mut st, LeaseEvent::CloseRequested, message.clone(), &now)?;
            set_ready(&mut st, ConditionStatus::False, ev::CLOSING, message, generation, &now);
            if *why == ev::EXPIRED {
                set(&mut st, "Expired", ConditionStatus::True, ev::EXPIRED, message, generation, &now);
                self.note(lease, Note::normal(ev::EXPIRED, "Expire", message.clone()));
            } else {
                self.note(lease, Note::normal(ev::CLOSING, "Close", message.clone()));
            }
        }

        let requeue = match self.step(lease, &mut st, &now).await {
            Ok(r) => r,
            Err(e) => {
                // Keep what this reconcile learned, then retry.
                let _ = self.finish(lease, &old, &mut st, &now).await;
                return Err(e);
            }
        };
        self.finish(lease, &old, &mut st, &now).await?;
        // A live Lease is looked at again at its expiry at the latest.
        let requeue = match st.phase {
            Some(p) if is_live(Some(p)) && p != LeasePhase::Deprovisioning => {
                let left = Duration::from_secs(u64::try_from(expires.as_second() - now.0.as_second()).unwrap_or(0));
                match requeue {
                    Some(d) => d.min(left),
                    None => left,
                }
            }
            _ => requeue.unwrap_or(Duration::from_secs(3600)),
        };
        Ok(Requeue::requeue(requeue.max(Duration::from_millis(200))))
    }

    fn self_clear_retry(&self, lease: &Lease) {
        self.not_before.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid(lease));
        self.retries.succeeded(&key(lease));
    }

    /// Enqueues the callback of a new reporting phase, then writes status.
    async fn finish(
        &self,
        lease: &Lease,
        old: &LeaseStatus,
        st: &mut LeaseStatus,
        now: &Time,
    ) -> Result<(), LeaseError> {
        st.observed_generation = lease.metadata.generation;
        if st.phase != old.phase {
            self.enqueue_callback(lease, st, now).await?;
            st.callbacks = self.callback_records(lease);
            if !is_live(st.phase) {
                self.reservations.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid(lease));
            }
            if old.allocated.is_some() && st.allocated.is_none() {
                self.wake_pending();
            }
        }
        self.write_status(lease, old, st).await
    }

    /// The phase-specific part of a reconcile; `Some(d)`: look again after `d`.
    async fn step(&self, lease: &Lease, st: &mut LeaseStatus, now: &Time) -> Result<Option<Duration>, LeaseError> {
        let generation = lease.metadata.generation;
        // Each pass but the last makes a transition; the state machine has no cycle longer than this.
        for _ in 0..8 {
            let phase = st.phase.unwrap_or(LeasePhase::Pending);
            let r = match phase {
                LeasePhase::Pending => self.pending(lease, st, now).await?,
                LeasePhase::Provisioning
                | LeasePhase::Updating
                | LeasePhase::Restarting
                | LeasePhase::Deprovisioning => self.operation(lease, st, now).await?,
                LeasePhase::Ready | LeasePhase::Failed => self.settled(lease, st, now).await?,
                LeasePhase::Failing => self.failing(lease, st, now).await?,
                LeasePhase::Retained => self.retained(lease, st, now).await?,
                LeasePhase::Closed => {
                    set_ready(st, ConditionStatus::False, ev::CLOSED, "the Lease is closed", generation, now);
                    Ok(None)
                }
            };
            match r {
                // The phase changed: handle the new one in the same reconcile.
                Err(Stop) if st.phase != Some(phase) => continue,
                Err(Stop) => return Ok(None),
                Ok(d) => return Ok(d),
            }
        }
        Ok(Some(Duration::from_secs(1)))
    }

    /// Pending: find a host. `Err(Stop)` after a transition.
    async fn pending(
        &self,
        lease: &Lease,
        st: &mut LeaseStatus,
        now: &Time,
    ) -> Result<Result<Option<Duration>, Stop>, LeaseError> {
        let generation = lease.metadata.generation;
        let sku = match sku_of(lease, &self.ctx.config.leases) {
            Ok(s) => s,
            Err(e) => {
                set_ready(st, ConditionStatus::False, "UnknownSku", &e.to_string(), generation, now);
                return Ok(Ok(None));
            }
        };
        let request = render::allocation(sku, instance_count(lease));
        let only = match &lease.spec.restore_from {
            Some(from) => match self.retained_host(lease.namespace_or_default(), from).await {
                Some(h) => Some(h),
                None => {
                    let (count, delay) = self.failed_attempt(lease);
                    let message = format!(
                        "restoreFrom {from}: no reachable host holds retained volumes of Lease {}/{from}; retrying in \
                         {}s (attempt {count})",
                        lease.namespace_or_default(),
                        delay.as_secs()
                    );
                    set_ready(st, ConditionStatus::False, "RestoreSourceNotFound", &message, generation, now);
                    return Ok(Ok(Some(delay)));
                }
            },
            None => None,
        };
        let _guard = self.placement.lock().await;
        let candidates = self.candidates();
        match place(&request, lease.spec.host_selector.as_ref(), only.as_deref(), &candidates) {
            Ok(host) => {
                self.reservations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(uid(lease), (host.clone(), request.clone()));
                self.succeeded(lease);
                let message = format!("placed on host {host}; provisioning");
                self.go(st, LeaseEvent::Placed, message.clone(), now)?;
                st.host = Some(host.clone());
                st.allocated = Some(request.clone());
                set(st, "Placed", ConditionStatus::True, ev::PLACED, &format!("host {host}"), generation, now);
                set_ready(st, ConditionStatus::False, "Provisioning", &message, generation, now);
                self.note(
                    lease,
                    Note::normal(
                        ev::PLACED,
                        "Place",
                        format!("placed on host {host} ({} CPUs, {} MiB)", request.cpus, request.memory_mb),
                    ),
                );
                Ok(Err(Stop))
            }
            Err(why) => {
                let (count, delay) = self.retries.failed(&key(lease));
                let message = format!("{why}; retrying in {}s (attempt {count})", delay.as_secs());
                let previous = find_condition(&st.conditions, "Ready").map(|c| c.reason.clone());
                if previous.as_deref() != Some(why.reason()) {
                    self.note(lease, Note::warning(ev::INSUFFICIENT_CAPACITY, "Place", why.to_string()));
                }
                set_ready(st, ConditionStatus::False, why.reason(), &message, generation, now);
                if matches!(why, Unplaceable::InvalidSelector(_)) {
                    return Ok(Ok(None));
                }
                Ok(Ok(Some(delay)))
            }
        }
    }

    /// Provisioning, Updating, Restarting, Deprovisioning: start, watch, or finish the
    /// operation of the phase.
    async fn operation(
        &self,
        lease: &Lease,
        st: &mut LeaseStatus,
        now: &Time,
    ) -> Result<Result<Option<Duration>, Stop>, LeaseError> {
        let phase = st.phase.unwrap_or(LeasePhase::Provisioning);
        let generation = lease.metadata.generation;
        let u = uid(lease);
        let op = match phase {
            LeasePhase::Provisioning => Op::Provision,
            LeasePhase::Updating => Op::Update,
            LeasePhase::Restarting => Op::Restart,
            _ => Op::Deprovision,
        };
        // What the operation must work on; a running one for something else is stale.
        let revision = match op {
            Op::Restart => status::active_release(st).map(|r| r.revision).unwrap_or(1),
            _ => status::next_revision(st),
        };
        let rendered = match op {
            Op::Deprovision => None,
            _ => match self.render(lease, revision).await? {
                Ok(r) => Some(r),
                Err(message) => {
                    let (count, delay) = self.failed_attempt(lease);
                    set_ready(
                        st,
                        ConditionStatus::False,
                        "InvalidSpec",
                        &format!("{message}; retrying in {}s (attempt {count})", delay.as_secs()),
                        generation,
                        now,
                    );
                    return Ok(Ok(Some(delay)));
                }
            },
        };
        let restart_value = lease.annotations().get(RESTART_ANNOTATION).cloned().unwrap_or_default();
        let task_key = match (op, &rendered) {
            (Op::Restart, _) => format!("restart:{restart_value}"),
            (_, Some(r)) => r.config_hash.clone(),
            (_, None) => "deprovision".into(),
        };

        match self.tasks.view(&u) {
            TaskView::Finished(f) if f.op == op && f.key == task_key => {
                self.tasks.take_finished(&u);
                self.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&u);
                return self.apply_outcome(lease, st, *f, revision, rendered.as_ref(), now);
            }
            TaskView::Finished(_) => {
                self.tasks.take_finished(&u);
            }
            TaskView::Running { op: o, key } if o == op && key == task_key => {
                if let Some(p) = self.progress.lock().unwrap_or_else(|e| e.into_inner()).get(&u) {
                    set_ready(st, ConditionStatus::False, phase.as_str(), p, generation, now);
                }
                return Ok(Ok(Some(PROGRESS_INTERVAL)));
            }
            TaskView::Running { .. } => {
                // The spec changed while the operation ran: start over with the new one.
                self.tasks.cancel(&u, CANCEL_WAIT).await;
                self.self_clear_retry(lease);
            }
            TaskView::Idle => {}
        }
        if let Some(wait) = self.retry_due(&u) {
            return Ok(Ok(Some(wait)));
        }

        // Start it.
        let Some(host) = st.host.clone() else {
            if op == Op::Deprovision {
                // Never placed: nothing to remove.
                self.go(st, LeaseEvent::Deprovisioned, "closed before it was placed", now)?;
                st.allocated = None;
                set_ready(st, ConditionStatus::False, ev::CLOSED, "closed before it was placed", generation, now);
                self.note(lease, Note::normal(ev::CLOSED, "Close", "closed before it was placed on a host"));
                return Ok(Err(Stop));
            }
            return Ok(Ok(None));
        };
        let handle = match self.ctx.pool.get(&host) {
            Ok(h) => h,
            Err(r) => {
                let why = match r {
                    Reachability::Unreachable(w) => w,
                    Reachability::Reachable => String::new(),
                };
                let (count, delay) = self.failed_attempt(lease);
                let message = format!(
                    "host {host} does not answer ({why}); {} when it does (next check in {}s, attempt {count})",
                    match op {
                        Op::Deprovision => "the Lease's containers are removed",
                        _ => "the operation starts",
                    },
                    delay.as_secs()
                );
                if find_condition(&st.conditions, "Ready").map(|c| c.reason.as_str()) != Some(ev::HOST_UNREACHABLE) {
                    self.note(lease, Note::warning(ev::HOST_UNREACHABLE, "Reconcile", message.clone()));
                }
                set_ready(st, ConditionStatus::False, ev::HOST_UNREACHABLE, &message, generation, now);
                return Ok(Ok(Some(delay)));
            }
        };
        let secrets = rendered.as_ref().map(|r| r.secrets.clone()).unwrap_or_default();
        match op {
            Op::Provision => {
                let rendered = rendered.expect("rendered above");
                let restore = lease.spec.restore_from.as_ref().map(|from| RestoreSource {
                    namespace: lease.namespace_or_default().to_string(),
                    name: from.clone(),
                    tenant: lease.spec.tenant.clone(),
                });
                self.spawn(
                    lease,
                    op,
                    task_key,
                    handle,
                    move |w| Box::pin(async move { w.provision(&rendered, restore.as_ref()).await }),
                    secrets,
                );
                set_ready(
                    st,
                    ConditionStatus::False,
                    "Provisioning",
                    &format!("provisioning release {revision} on host {host}"),
                    generation,
                    now,
                );
            }
            Op::Update => {
                let rendered = rendered.expect("rendered above");
                let old = status::active_release(st).map(|r| r.revision);
                self.spawn(
                    lease,
                    op,
                    task_key,
                    handle,
                    move |w| Box::pin(async move { w.update(&rendered, old).await }),
                    secrets,
                );
                set_ready(
                    st,
                    ConditionStatus::False,
                    "Updating",
                    &format!("rolling out release {revision} on host {host}"),
                    generation,
                    now,
                );
            }
            Op::Restart => {
                let rendered = rendered.expect("rendered above");
                self.spawn(
                    lease,
                    op,
                    task_key,
                    handle,
                    move |w| Box::pin(async move { w.restart(&rendered).await }),
                    secrets,
                );
                set_ready(st, ConditionStatus::False, "Restarting", "restarting the containers", generation, now);
            }
            Op::Deprovision => {
                let retain = lease.spec.retain_on_close.then(|| Retain {
                    tenant: lease.spec.tenant.clone(),
                    until: now.0.as_second()
                        + i64::try_from(self.ctx.config.leases.retention.grace.0.as_secs()).unwrap_or(i64::MAX / 4),
                });
                let tenant = lease.spec.tenant.clone();
                let images: Vec<String> = lease.spec.services.iter().map(|s| s.image.clone()).collect();
                self.spawn(
                    lease,
                    op,
                    task_key,
                    handle,
                    move |w| Box::pin(async move { w.deprovision(&tenant, &images, retain.as_ref()).await }),
                    secrets,
                );
            }
        }
        Ok(Ok(Some(PROGRESS_INTERVAL)))
    }

    /// Applies a finished operation's outcome through the state machine.
    fn apply_outcome(
        &self,
        lease: &Lease,
        st: &mut LeaseStatus,
        f: Finished,
        revision: i64,
        rendered: Option<&RenderedLease>,
        now: &Time,
    ) -> Result<Result<Option<Duration>, Stop>, LeaseError> {
        let generation = lease.metadata.generation;
        let host = st.host.clone().unwrap_or_default();
        let release = |outcome: &str, message: String| LeaseRelease {
            revision,
            generation: generation.unwrap_or(0),
            config_hash: rendered.map(|r| r.config_hash.clone()).unwrap_or_default(),
            outcome: outcome.into(),
            message,
            started_at: Some(f.started_at.clone()),
        };
        match (f.op, f.outcome) {
            (_, Outcome::Transient(message)) => {
                let (count, delay) = self.failed_attempt(lease);
                let message = format!("{message}; retrying in {}s (attempt {count})", delay.as_secs());
                set_ready(st, ConditionStatus::False, ev::RETRYING, &message, generation, now);
                self.note(lease, Note::warning(ev::RETRYING, "Reconcile", message));
                Ok(Ok(Some(delay)))
            }
            (Op::Provision | Op::Update | Op::Restart, Outcome::Ready(info)) => {
                self.succeeded(lease);
                let (event, what) = match f.op {
                    Op::Provision => (LeaseEvent::Verified, format!("release {revision} is up on host {host}")),
                    Op::Update => (LeaseEvent::Verified, format!("release {revision} replaced the previous one")),
                    _ => (LeaseEvent::Verified, "the containers were restarted and passed their startup check".into()),
                };
                self.go(st, event, what.clone(), now)?;
                self.set_ready_info(st, info);
                st.diagnostics = None;
                match f.op {
                    Op::Restart => {
                        st.restarted_for = f.key.strip_prefix("restart:").map(String::from);
                        self.note(lease, Note::normal(ev::RESTARTED, "Restart", what.clone()));
                    }
                    _ => {
                        if let Some(r) = rendered {
                            st.allocated = Some(r.allocation.clone());
                            if let Some(h) = &st.host {
                                self.reservations
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(uid(lease), (h.clone(), r.allocation.clone()));
                            }
                        }
                        status::record_release(st, release(status::ACTIVE, String::new()));
                        if find_condition(&st.conditions, "RolledBack")
                            .is_some_and(|c| c.status == ConditionStatus::True)
                        {
                            set(st, "RolledBack", ConditionStatus::False, "Updated", &what, generation, now);
                        }
                        self.note(lease, Note::normal(ev::VERIFIED, "Verify", what.clone()));
                    }
                }
                set_ready(st, ConditionStatus::True, ev::VERIFIED, &what, generation, now);
                Ok(Err(Stop))
            }
            (Op::Provision | Op::Update | Op::Restart, Outcome::Failed { message, diagnostics }) => {
                self.succeeded(lease);
                let event = if f.op == Op::Provision { LeaseEvent::ProvisionFailed } else { LeaseEvent::Failed };
                let message = with_diagnostics(&message, diagnostics.as_ref());
                self.go(st, event, message.clone(), now)?;
                st.diagnostics = diagnostics;
                if f.op == Op::Restart {
                    st.restarted_for = f.key.strip_prefix("restart:").map(String::from);
                } else {
                    status::record_release(st, release(status::FAILED, message.clone()));
                }
                set_ready(st, ConditionStatus::False, "StartupCheckFailed", &message, generation, now);
                self.note(lease, Note::warning(ev::FAILED, "Verify", message));
                Ok(Err(Stop))
            }
            (Op::Update, Outcome::RolledBack { cause, diagnostics, ready }) => {
                self.succeeded(lease);
                let previous = status::active_release(st).map(|r| r.revision).unwrap_or(0);
                let cause = with_diagnostics(&cause, diagnostics.as_ref());
                let message = format!(
                    "release {revision} failed its startup check and was rolled back; release {previous} runs again: {cause}"
                );
                self.go(st, LeaseEvent::RolledBack, message.clone(), now)?;
                status::record_release(st, release(status::ROLLED_BACK, cause.clone()));
                // What runs again is what is held.
                if let Ok(sku) = sku_of(lease, &self.ctx.config.leases) {
                    let held = render::allocation(sku, ready.instances.len() as i64);
                    if let Some(h) = &st.host {
                        self.reservations
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(uid(lease), (h.clone(), held.clone()));
                    }
                    st.allocated = Some(held);
                }
                self.set_ready_info(st, ready);
                st.diagnostics = diagnostics;
                set(st, "RolledBack", ConditionStatus::True, "UpdateFailed", &message, generation, now);
                set_ready(st, ConditionStatus::True, ev::ROLLED_BACK, &message, generation, now);
                self.note(lease, Note::warning(ev::ROLLED_BACK, "Rollback", message));
                Ok(Err(Stop))
            }
            (Op::Deprovision, Outcome::Deprovisioned { retained }) => {
                self.succeeded(lease);
                st.instances.clear();
                st.endpoints.clear();
                st.allocated = None;
                if retained.is_empty() {
                    let message = if lease.spec.retain_on_close {
                        "containers removed; the Lease had no volumes to retain".to_string()
                    } else {
                        "containers and volumes removed".to_string()
                    };
                    self.go(st, LeaseEvent::Deprovisioned, message.clone(), now)?;
                    set_ready(st, ConditionStatus::False, ev::CLOSED, &message, generation, now);
                    self.note(lease, Note::normal(ev::CLOSED, "Close", format!("host {host}: {message}")));
                } else {
                    let until = now.0.as_second()
                        + i64::try_from(self.ctx.config.leases.retention.grace.0.as_secs()).unwrap_or(0);
                    let until = Timestamp::from_second(until).unwrap_or(Timestamp::MAX);
                    let message = format!(
                        "containers removed; {} volume(s) retained on host {host} until {until}",
                        retained.len()
                    );
                    self.go(st, LeaseEvent::DeprovisionedRetained, message.clone(), now)?;
                    st.retained_volumes = retained;
                    st.retained_until = Some(Time(until));
                    set_ready(st, ConditionStatus::False, ev::RETAINED, &message, generation, now);
                    self.note(lease, Note::normal(ev::RETAINED, "Retain", message));
                }
                Ok(Err(Stop))
            }
            (op, outcome) => {
                tracing::warn!(lease = %key(lease), op = op.as_str(), ?outcome, "an operation ended with an outcome it cannot have");
                Ok(Ok(Some(Duration::from_secs(1))))
            }
        }
    }

    fn set_ready_info(&self, st: &mut LeaseStatus, info: ReadyInfo) {
        st.instances = info.instances;
        st.endpoints = info.endpoints;
    }

    /// Ready and Failed: roll out spec changes, restart on request, and (Ready) check that
    /// every container still runs.
    async fn settled(
        &self,
        lease: &Lease,
        st: &mut LeaseStatus,
        now: &Time,
    ) -> Result<Result<Option<Duration>, Stop>, LeaseError> {
        let generation = lease.metadata.generation;
        let phase = st.phase.unwrap_or(LeasePhase::Ready);
        let next = status::next_revision(st);
        let rendered = match self.render(lease, next).await? {
            Ok(r) => r,
            Err(message) => {
                set(st, "UpdateBlocked", ConditionStatus::True, "InvalidSpec", &message, generation, now);
                return Ok(Ok(Some(self.ctx.config.resync_interval.0)));
            }
        };
        if status::needs_rollout(st, &rendered.config_hash) {
            // More instances need more room on the Lease's host: reserve it, or wait.
            let held = st.allocated.clone().unwrap_or_default();
            let wanted = rendered.allocation.clone();
            if (wanted.cpus > held.cpus + 1e-9 || wanted.memory_mb > held.memory_mb)
                && let Some(host) = st.host.clone()
            {
                let _guard = self.placement.lock().await;
                let mut candidates = self.candidates();
                for c in candidates.iter_mut().filter(|c| c.name == host) {
                    // The Lease's own share is free for its new release.
                    c.allocated.cpus -= held.cpus;
                    c.allocated.memory_mb -= held.memory_mb;
                }
                if let Err(why) = place(&wanted, None, Some(&host), &candidates) {
                    let (count, delay) = self.retries.failed(&key(lease));
                    let message = format!(
                        "the spec asks for {} CPUs and {} MiB, more than host {host} has free: {why}; the running \
                         release stays (next check in {}s, attempt {count})",
                        wanted.cpus,
                        wanted.memory_mb,
                        delay.as_secs()
                    );
                    set(st, "UpdateBlocked", ConditionStatus::True, "InsufficientCapacity", &message, generation, now);
                    return Ok(Ok(Some(delay)));
                }
                self.reservations.lock().unwrap_or_else(|e| e.into_inner()).insert(uid(lease), (host, wanted.clone()));
            }
            if find_condition(&st.conditions, "UpdateBlocked").is_some_and(|c| c.status == ConditionStatus::True) {
                set(st, "UpdateBlocked", ConditionStatus::False, "Updating", "", generation, now);
            }
            st.allocated = Some(wanted.max_with(&held));
            let message = format!("the spec changed: rolling out release {next}");
            self.go(st, LeaseEvent::UpdateRequested, message.clone(), now)?;
            self.note(lease, Note::normal(ev::UPDATING, "Update", message));
            return Ok(Err(Stop));
        }
        let wanted = lease.annotations().get(RESTART_ANNOTATION).cloned();
        if let Some(w) = &wanted
            && st.restarted_for.as_deref() != Some(w.as_str())
        {
            let message = format!("restart requested ({RESTART_ANNOTATION}={w})");
            self.go(st, LeaseEvent::RestartRequested, message.clone(), now)?;
            self.note(lease, Note::normal(ev::RESTARTED, "Restart", message));
            return Ok(Err(Stop));
        }
        if phase == LeasePhase::Failed {
            return Ok(Ok(None));
        }
        // Ready: every container of the active release must run.
        let Some(host) = st.host.clone() else { return Ok(Ok(None)) };
        let handle = match self.ctx.pool.get(&host) {
            Ok(h) => h,
            Err(r) => {
                let why = match r {
                    Reachability::Unreachable(w) => w,
                    Reachability::Reachable => String::new(),
                };
                let message = format!(
                    "host {host} does not answer ({why}); the Lease's containers cannot be checked: they may still run"
                );
                set_ready(st, ConditionStatus::Unknown, ev::HOST_UNREACHABLE, &message, generation, now);
                return Ok(Ok(Some(Duration::from_secs(30))));
            }
        };
        let active = status::active_release(st).map(|r| r.revision).unwrap_or(1);
        let snapshot = match handle.observe(&self.ctx.instance, self.ctx.config.resync_interval.0).await {
            Ok(s) => s,
            Err(e) => {
                let message = format!("host {host}: listing the Lease's containers failed: {e}");
                set_ready(st, ConditionStatus::Unknown, ev::HOST_UNREACHABLE, &message, generation, now);
                return Ok(Ok(Some(Duration::from_secs(30))));
            }
        };
        let u = uid(lease);
        let mine: Vec<_> = snapshot
            .containers
            .iter()
            .filter(|c| {
                c.labels.get(LABEL_OWNER_UID) == Some(&u)
                    && c.labels.get(LABEL_RELEASE).map(String::as_str) == Some(active.to_string().as_str())
            })
            .collect();
        // A container an event named is inspected: the listing may not show its exit yet.
        let suspects: Vec<String> = {
            let s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
            mine.iter()
                .filter(|c| s.get(&c.id).is_some_and(|t| t.elapsed() < SUSPECT_FOR))
                .map(|c| c.id.clone())
                .collect()
        };
        let mut inspected: HashMap<String, ContainerState> = HashMap::new();
        for id in &suspects {
            if let Ok(d) = handle.docker.inspect_container(id).await {
                inspected.insert(id.clone(), d.summary.state);
            }
        }
        let mut instances = Vec::new();
        let mut down = Vec::new();
        for svc in &lease.spec.services {
            for i in 0..svc.quantity.max(0) {
                let found = mine.iter().find(|c| {
                    c.labels.get(LABEL_SERVICE) == Some(&svc.name)
                        && c.labels.get(LABEL_REPLICA).map(String::as_str) == Some(i.to_string().as_str())
                });
                match found {
                    Some(c) => {
                        let state = inspected.get(&c.id).copied().unwrap_or(c.state);
                        instances.push(LeaseInstanceStatus {
                            service: svc.name.clone(),
                            instance: i,
                            container_id: c.id.chars().take(12).collect(),
                            state: state.as_str().to_string(),
                            health: c.health.map(|h| h.as_str().to_string()).unwrap_or_default(),
                        });
                        if state != ContainerState::Running {
                            down.push((format!("{}-{i}", svc.name), Some(c.id.clone())));
                        }
                    }
                    None => down.push((format!("{}-{i}", svc.name), None)),
                }
            }
        }
        st.instances = instances;
        if down.is_empty() {
            if find_condition(&st.conditions, "Ready").is_none_or(|c| c.status != ConditionStatus::True) {
                let message = format!("release {active} runs on host {host}");
                set_ready(st, ConditionStatus::True, ev::VERIFIED, &message, generation, now);
            }
            if !suspects.is_empty() {
                // An event said a container stopped, yet it runs: look again shortly.
                handle.invalidate();
                return Ok(Ok(Some(Duration::from_millis(500))));
            }
            return Ok(Ok(Some(self.ctx.config.resync_interval.0)));
        }
        let what = down
            .iter()
            .map(|(n, id)| if id.is_some() { format!("{n} stopped") } else { format!("{n} is gone") })
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!("host {host}: {what}; confirming and gathering diagnostics");
        self.go(st, LeaseEvent::ContainerDied, message.clone(), now)?;
        set_ready(st, ConditionStatus::False, ev::FAILING, &message, generation, now);
        self.note(lease, Note::warning(ev::FAILING, "Observe", message));
        Ok(Err(Stop))
    }

    /// Failing: confirm by inspection, gather diagnostics, then Failed (or Ready after all).
    async fn failing(
        &self,
        lease: &Lease,
        st: &mut LeaseStatus,
        now: &Time,
    ) -> Result<Result<Option<Duration>, Stop>, LeaseError> {
        let generation = lease.metadata.generation;
        let Some(host) = st.host.clone() else { return Ok(Ok(None)) };
        let handle = match self.ctx.pool.get(&host) {
            Ok(h) => h,
            Err(_) => {
                set_ready(
                    st,
                    ConditionStatus::Unknown,
                    ev::HOST_UNREACHABLE,
                    &format!("host {host} does not answer; the failure is confirmed when it does"),
                    generation,
                    now,
                );
                return Ok(Ok(Some(Duration::from_secs(10))));
            }
        };
        let active = status::active_release(st).map(|r| r.revision).unwrap_or(1);
        let u = uid(lease);
        let f: LabelFilter = vec![
            (berth_crds::common::LABEL_MANAGED_BY.into(), berth_crds::common::MANAGED_BY_VALUE.into()),
            (berth_crds::common::LABEL_INSTANCE.into(), self.ctx.instance.clone()),
            (LABEL_OWNER_UID.into(), u.clone()),
            (LABEL_RELEASE.into(), active.to_string()),
        ];
        let listed = match handle.docker.list_containers(&f).await {
            Ok(l) => l,
            Err(e) => {
                set_ready(
                    st,
                    ConditionStatus::Unknown,
                    ev::HOST_UNREACHABLE,
                    &format!("host {host}: listing the Lease's containers failed: {e}"),
                    generation,
                    now,
                );
                return Ok(Ok(Some(Duration::from_secs(10))));
            }
        };
        let naming = LeaseNaming::new(lease.namespace_or_default(), lease.name());
        let notify = self.notify_for(lease);
        let public = public_host(&self.ctx.config.leases, &self.endpoint_of(&host));
        let w = self.worker(&handle, &u, &naming, &notify, &[], &public);
        let mut first_failure: Option<LeaseDiagnostics> = None;
        for svc in &lease.spec.services {
            for i in 0..svc.quantity.max(0) {
                let display = format!("{}-{i}", svc.name);
                let c = listed.iter().find(|c| {
                    c.labels.get(LABEL_SERVICE) == Some(&svc.name)
                        && c.labels.get(LABEL_REPLICA).map(String::as_str) == Some(i.to_string().as_str())
                });
                let diag = match c {
                    None => Some(LeaseDiagnostics {
                        container: display,
                        error: "the container was removed from the host".into(),
                        at: Some(now.clone()),
                        ..Default::default()
                    }),
                    Some(c) => {
                        let d = w.diagnose(display, &c.id).await;
                        // Confirmed by inspection: still running means it was a false alarm.
                        match handle.docker.inspect_container(&c.id).await {
                            Ok(x) if x.summary.state == ContainerState::Running => None,
                            _ => Some(d),
                        }
                    }
                };
                if first_failure.is_none() {
                    first_failure = diag;
                }
            }
        }
        match first_failure {
            None => {
                let message = "the containers run after all".to_string();
                self.go(st, LeaseEvent::FalseAlarm, message.clone(), now)?;
                set_ready(st, ConditionStatus::True, ev::VERIFIED, &message, generation, now);
                Ok(Err(Stop))
            }
            Some(d) => {
                let message = with_diagnostics(&format!("host {host}: container {} failed", d.container), Some(&d));
                self.go(st, LeaseEvent::Diagnosed, message.clone(), now)?;
                st.diagnostics = Some(d);
                set_ready(st, ConditionStatus::False, "ContainerFailed", &message, generation, now);
                self.note(lease, Note::warning(ev::FAILED, "Diagnose", message));
                Ok(Err(Stop))
            }
        }
    }

    /// Retained: reap the volumes when the grace period ends.
    async fn retained(
        &self,
        lease: &Lease,
        st: &mut LeaseStatus,
        now: &Time,
    ) -> Result<Result<Option<Duration>, Stop>, LeaseError> {
        let generation = lease.metadata.generation;
        let Some(until) = st.retained_until.clone() else { return Ok(Ok(None)) };
        let left = until.0.as_second() - now.0.as_second();
        if left > 0 {
            return Ok(Ok(Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))));
        }
        let Some(host) = st.host.clone() else { return Ok(Ok(None)) };
        let Ok(handle) = self.ctx.pool.get(&host) else { return Ok(Ok(Some(Duration::from_secs(60)))) };
        for v in &st.retained_volumes {
            if let Err(e) = handle.docker.remove_volume(v).await
                && !e.is_not_found()
            {
                set_ready(
                    st,
                    ConditionStatus::False,
                    ev::RETAINED,
                    &format!("removing retained volume {v} failed: {e}; retrying"),
                    generation,
                    now,
                );
                return Ok(Ok(Some(Duration::from_secs(60))));
            }
        }
        handle.invalidate();
        let message = format!("the retention grace period ended: {} volume(s) removed", st.retained_volumes.len());
        self.go(st, LeaseEvent::Reaped, message.clone(), now)?;
        st.retained_volumes.clear();
        set_ready(st, ConditionStatus::False, ev::CLOSED, &message, generation, now);
        self.note(lease, Note::normal(ev::REAPED, "Reap", message));
        Ok(Err(Stop))
    }

    /// Deletion: cancel, deprovision (retaining volumes when asked), send the callback, then
    /// let the finalizer go.
    async fn cleanup(&self, lease: &Lease) -> Result<Requeue, LeaseError> {
        let now = now();
        let u = uid(lease);
        self.tasks.cancel(&u, CANCEL_WAIT).await;
        let old = self.current_status(lease);
        let mut st = old.clone();
        if is_live(st.phase) {
            if st.phase != Some(LeasePhase::Deprovisioning) {
                self.go(&mut st, LeaseEvent::CloseRequested, "the Lease was deleted: it is deprovisioned", &now)?;
                let _ = self.write_status(lease, &old, &st).await;
            }
            if let Some(host) = st.host.clone() {
                let handle = self.ctx.pool.get(&host).map_err(|r| {
                    let why = match r {
                        Reachability::Unreachable(w) => w,
                        Reachability::Reachable => String::new(),
                    };
                    LeaseError::DeletionBlocked(format!(
                        "host {host} does not answer ({why}); the Lease's containers are removed and its finalizer \
                         dropped when it does"
                    ))
                })?;
                let naming = LeaseNaming::new(lease.namespace_or_default(), lease.name());
                let notify = self.notify_for(lease);
                let public = public_host(&self.ctx.config.leases, &self.endpoint_of(&host));
                let w = self.worker(&handle, &u, &naming, &notify, &[], &public);
                let retain = lease.spec.retain_on_close.then(|| Retain {
                    tenant: lease.spec.tenant.clone(),
                    until: now.0.as_second()
                        + i64::try_from(self.ctx.config.leases.retention.grace.0.as_secs()).unwrap_or(0),
                });
                let images: Vec<String> = lease.spec.services.iter().map(|s| s.image.clone()).collect();
                match w.deprovision(&lease.spec.tenant, &images, retain.as_ref()).await {
                    Outcome::Deprovisioned { retained } => {
                        let (event, message) = if retained.is_empty() {
                            (LeaseEvent::Deprovisioned, "deleted: containers and volumes removed".to_string())
                        } else {
                            st.retained_volumes = retained;
                            (LeaseEvent::DeprovisionedRetained, "deleted: containers removed, volumes retained".into())
                        };
                        self.go(&mut st, event, message, &now)?;
                    }
                    other => {
                        let message = match other {
                            Outcome::Transient(m) | Outcome::Failed { message: m, .. } => m,
                            _ => "deprovisioning did not finish".into(),
                        };
                        return Err(LeaseError::DeletionBlocked(message));
                    }
                }
            } else {
                self.go(&mut st, LeaseEvent::Deprovisioned, "deleted before it was placed", &now)?;
            }
            self.enqueue_callback(lease, &mut st, &now).await?;
        }
        self.note(lease, Note::normal(ev::CLOSED, "Delete", "the Lease was deleted"));
        self.forget(lease);
        self.wake_pending();
        Ok(Requeue::await_change())
    }
}

/// Values of the Secrets and ConfigMaps `lease`'s environment refers to (missing ones are
/// left out: rendering then says which).
pub async fn fetch_references(client: &kube::Client, lease: &Lease) -> Result<FetchedReferences, LeaseError> {
    let ns = lease.namespace_or_default().to_string();
    let mut fetched = FetchedReferences::default();
    let mut secrets = HashSet::new();
    let mut maps = HashSet::new();
    for e in lease.spec.services.iter().flat_map(|s| s.env.iter()) {
        if let Some(src) = &e.value_from {
            if let Some(s) = &src.secret_key_ref {
                secrets.insert(s.name.clone());
            }
            if let Some(c) = &src.config_map_key_ref {
                maps.insert(c.name.clone());
            }
        }
    }
    for name in secrets {
        let got = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading Secret {ns}/{name}")))?;
        if let Some(s) = got {
            fetched.secrets.insert((ns.clone(), name), s);
        }
    }
    for name in maps {
        let got = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading ConfigMap {ns}/{name}")))?;
        if let Some(c) = got {
            fetched.config_maps.insert((ns.clone(), name), c);
        }
    }
    Ok(fetched)
}

/// The host holding retained volumes of Lease `namespace/name`, if a reachable one does.
pub async fn retained_host(ctx: &Context, namespace: &str, name: &str) -> Option<String> {
    for (host, reach) in ctx.pool.hosts() {
        if reach != Reachability::Reachable {
            continue;
        }
        let Ok(handle) = ctx.pool.get(&host) else { continue };
        let Ok(snapshot) = handle.observe(&ctx.instance, Duration::from_secs(5)).await else { continue };
        if snapshot.volumes.iter().any(|v| {
            v.labels.get(LABEL_ROLE).map(String::as_str) == Some(ROLE_RETAINED_VOLUME)
                && v.labels.get(LABEL_OWNER_NAMESPACE).map(String::as_str) == Some(namespace)
                && v.labels.get(LABEL_OWNER_NAME).map(String::as_str) == Some(name)
        }) {
            return Some(host);
        }
    }
    None
}

/// Every host of the pool with whether it answers and its last listing (no Docker call).
pub fn host_links(pool: &crate::controllers::pool::HostPool) -> Vec<placement::HostLink> {
    pool.hosts()
        .into_iter()
        .map(|(name, _)| {
            let handle = pool.get(&name).ok();
            placement::HostLink { reachable: handle.is_some(), last_listing: handle.and_then(|h| h.peek()), name }
        })
        .collect()
}

fn with_diagnostics(message: &str, d: Option<&LeaseDiagnostics>) -> String {
    let Some(d) = d else { return message.to_string() };
    let mut out = message.to_string();
    if let Some(code) = d.exit_code {
        out.push_str(&format!("; exit code {code}"));
    }
    if d.oom_killed {
        out.push_str("; killed by the OOM killer (raise the SKU's memory)");
    }
    if !d.error.is_empty() {
        out.push_str(&format!("; {}", d.error));
    }
    if let Some(last) = d.last_log_lines.last() {
        out.push_str(&format!("; last log line: {last}"));
    }
    out
}

/// Keeps Host `status.allocated` equal to what live Leases hold there.
async fn sync_host_allocations(lc: Arc<LeaseController>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ALLOCATION_SYNC) => {}
        }
        if lc.leases.wait_until_ready().now_or_never().is_none() || lc.hosts.wait_until_ready().now_or_never().is_none()
        {
            continue;
        }
        let sums = {
            let reservations = lc.reservations.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut held: Vec<(String, LeaseAllocation)> = reservations.values().cloned().collect();
            for l in lc.leases.state() {
                if reservations.contains_key(&uid(&l)) {
                    continue;
                }
                let Some(st) = &l.status else { continue };
                if is_live(st.phase)
                    && st.phase != Some(LeasePhase::Pending)
                    && let (Some(h), Some(a)) = (&st.host, &st.allocated)
                {
                    held.push((h.clone(), a.clone()));
                }
            }
            placement::allocations(held.iter().map(|(h, a)| (h.as_str(), a)))
        };
        for h in lc.hosts.state() {
            let name = h.name_any();
            let want = sums.get(&name).map(|a| berth_crds::host::HostCapacity {
                cpus: Some((a.cpus * 1000.0).round() / 1000.0),
                memory_mb: Some(a.memory_mb),
                disk_mb: None,
            });
            let have = h.status.as_ref().and_then(|s| s.allocated.clone());
            let want = want.or_else(|| have.as_ref().map(|_| berth_crds::host::HostCapacity::default()));
            if want == have || (want == Some(Default::default()) && have.is_none()) {
                continue;
            }
            let patch = serde_json::json!({ "status": { "allocated": want } });
            let api: Api<Host> = Api::all(lc.ctx.client.clone());
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                tracing::debug!(host = %name, error = %e, "could not write the Host's allocation");
            }
        }
    }
}

/// Removes retained volumes whose grace period ended and whose Lease no longer tracks them
/// (deleted Leases); Leases in phase Retained reap their own volumes.
async fn reap_retained_volumes(lc: Arc<LeaseController>, shutdown: CancellationToken) {
    let interval = lc.ctx.config.leases.retention.reap_interval.0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval.max(Duration::from_secs(1))) => {}
        }
        if lc.leases.wait_until_ready().now_or_never().is_none() {
            continue;
        }
        let tracked: HashSet<String> = lc
            .leases
            .state()
            .iter()
            .filter(|l| l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Retained))
            .map(|l| uid(l))
            .collect();
        let now = Timestamp::now().as_second();
        for (host, reach) in lc.ctx.pool.hosts() {
            if reach != Reachability::Reachable {
                continue;
            }
            let Ok(handle) = lc.ctx.pool.get(&host) else { continue };
            let f: LabelFilter = vec![
                (berth_crds::common::LABEL_MANAGED_BY.into(), berth_crds::common::MANAGED_BY_VALUE.into()),
                (berth_crds::common::LABEL_INSTANCE.into(), lc.ctx.instance.clone()),
                (LABEL_ROLE.into(), ROLE_RETAINED_VOLUME.into()),
            ];
            let Ok(volumes) = handle.docker.list_volumes(&f).await else { continue };
            for v in volumes {
                let due =
                    v.labels.get(LABEL_RETAINED_UNTIL).and_then(|t| t.parse::<i64>().ok()).is_some_and(|t| t <= now);
                let owner = v.labels.get(LABEL_OWNER_UID).cloned().unwrap_or_default();
                if !due || tracked.contains(&owner) {
                    continue;
                }
                match handle.docker.remove_volume(&v.name).await {
                    Ok(()) => {
                        tracing::info!(host = %host, volume = %v.name, "reaped a retained volume after its grace period")
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        tracing::warn!(host = %host, volume = %v.name, error = %e, "could not reap a retained volume")
                    }
                }
            }
            handle.invalidate();
        }
    }
}

use futures::FutureExt as _;
