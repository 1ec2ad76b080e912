//! The Stack controller: renders a Stack, observes each selected host with one shared listing,
//! plans with no I/O, executes the plan, and writes status that tells the truth.
//!
//! Wiring ([`run`]): a kube-runtime `Controller<Stack>` over `ctx.client`, triggered by
//! - changes of a Stack's generation, deletion, finalizers or annotations (status writes do not
//!   trigger it, so a failing Stack is retried at its backoff, not in a loop);
//! - changes of the Secrets and ConfigMaps a Stack refers to (a rotated secret rolls out);
//! - changes of Hosts a Stack may select (labels, new hosts);
//! - Docker events of the Stack's containers (a `docker kill` is corrected in about a second);
//! - a host becoming reachable or unreachable (recovery needs no resync);
//! - the resync interval of a converged Stack, or its backoff after a transient failure.
//!
//! One reconcile ([`StackController::apply`]) renders the desired state, computes the drift
//! tiers 0 and 1 without any Docker call, runs [`pass::reconcile_host`] on every selected host in
//! parallel, removes the Stack from hosts it no longer selects, publishes events, and writes
//! status (only when it changed). Deletion goes through the finalizer `berth.dev/stack-cleanup`:
//! containers and networks are removed from every host, volumes only with `retain: false`, and
//! a host that does not answer keeps the finalizer.
//!
//! Drift policy: `Reconcile` corrects and records every tier. `Report` rolls out changes of the
//! desired state (tiers 0 and 1: a spec or referenced-secret change is the operator's intent) but
//! never corrects runtime drift (tiers 2 and 3): it records it (`Drifted=True`, an event,
//! `status.lastDrift` with `corrected: false`) and leaves the containers as they are.

pub mod error;
pub mod events;
pub mod executor;
pub mod hosts;
pub mod observe;
pub mod pass;
pub mod plan;
pub mod references;
pub mod render;
pub mod retry;
pub mod status;

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_crds::Stack;
use berth_crds::common::RetryStatus;
use berth_crds::host::{Host, LOCAL_HOST};
use berth_crds::stack::{DriftPolicy, StackHostPhase, StackHostStatus, StackPhase, StackStatus};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig};
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;

use self::error::StackError;
use self::events::{Note, Notify, reason as ev};
use self::executor::ExecOptions;
use self::pass::{HostResult, Mode, PassContext, reconcile_host, remove_from_host};
use self::plan::{Finding, HostPlan, finding_for, tier, without_drift_corrections};
use self::references::{CachedReferences, FetchedReferences, RefKind, referenced_objects, stacks_referring_to};
use self::render::{DesiredState, RenderContext, redact, render};
use self::status::StatusInput;
use crate::controllers::context::Context;
use crate::controllers::pool::HostHandle;
use crate::controllers::recorder::NoteRecorder;
use crate::docker::{TlsFiles, local_endpoint};

/// Finalizer that keeps a deleted Stack until its containers are gone from every host.
pub const FINALIZER: &str = "berth.dev/stack-cleanup";
/// `reportingController` of the events.
pub const CONTROLLER_NAME: &str = "berth.dev/stack-controller";
/// How long a reconcile waits for the Secret, ConfigMap and Host caches to be filled.
const CACHE_WAIT: Duration = Duration::from_secs(30);
/// Re-check interval while a health check has not passed yet (events usually come first).
const HEALTH_RECHECK: Duration = Duration::from_secs(5);
/// How often the Progressing condition shows pull progress during a long pass.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// The Stack controller's state, shared by every reconcile.
pub struct StackController {
    ctx: Arc<Context>,
    pass: PassContext,
    references: CachedReferences,
    hosts: Store<Host>,
    retries: retry::Retries,
    events: mpsc::UnboundedSender<(ObjectReference, Note)>,
    /// Runtime drift already reported per Stack under `driftPolicy: Report` (reported once).
    reported: Mutex<HashMap<String, BTreeSet<String>>>,
    /// The last status written per Stack uid with the resourceVersion the write produced: the
    /// cache may lag behind the controller's own writes.
    written: Mutex<HashMap<String, (u64, StackStatus)>>,
}

impl std::fmt::Debug for StackController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackController").field("instance", &self.ctx.instance).finish()
    }
}

fn key(stack: &Stack) -> String {
    format!("{}/{}", stack.namespace_or_default(), stack.name())
}

fn now() -> Time {
    // Whole seconds, as the API stores them, so that an unchanged status compares equal.
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()))
}

/// Hash of the desired state together with the hosts that run it: adding a host is a change
/// of the desired state to roll out (tier 1), not drift on the new host.
pub fn desired_hash(desired: &DesiredState, hosts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(desired.hash());
    for host in hosts {
        h.update(format!("\nhost {host}"));
    }
    hex::encode(h.finalize())
}

/// The Stack-scoped [`Notify`]: events go to the publisher task, progress to a slot the
/// reconcile shows in the Progressing condition.
struct StackNotify {
    tx: mpsc::UnboundedSender<(ObjectReference, Note)>,
    reference: ObjectReference,
    progress: Mutex<Option<String>>,
}

impl Notify for StackNotify {
    fn note(&self, note: Note) {
        let _ = self.tx.send((self.reference.clone(), note));
    }

    fn progress(&self, message: String) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// Publishes events in order; failures are logged, never fatal. Distinct notes stay distinct
/// Events ([`NoteRecorder`]).
pub(crate) async fn publish_events(
    client: kube::Client,
    reporter: Reporter,
    mut rx: mpsc::UnboundedReceiver<(ObjectReference, Note)>,
) {
    let recorder = NoteRecorder::new(client, reporter);
    while let Some((reference, note)) = rx.recv().await {
        let event = KubeEvent {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.to_string(),
            note: Some(note.message),
            action: note.action.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(event, &reference).await {
            tracing::debug!(error = %e, reason = note.reason, "could not publish an event");
        }
    }
}

/// Runs the Stack controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let (stacks, stack_writer) = reflector::store::<Stack>();
    // Status writes must not trigger reconciles (a failing Stack would loop instead of backing
    // off): only what the controller must react to passes.
    let relevant = |s: &Stack| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.metadata.generation.hash(&mut h);
        s.metadata.deletion_timestamp.is_some().hash(&mut h);
        s.finalizers().hash(&mut h);
        s.metadata.annotations.hash(&mut h);
        s.metadata.uid.hash(&mut h);
        Some(h.finish())
    };
    let stack_stream = watcher(Api::<Stack>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(stack_writer)
        .applied_objects()
        .predicate_filter(relevant, PredicateConfig::default());

    let (secrets, secret_writer) = reflector::store::<Secret>();
    let secret_stream = watcher(Api::<Secret>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(secret_writer)
        .touched_objects();
    let (config_maps, cm_writer) = reflector::store::<ConfigMap>();
    let cm_stream = watcher(Api::<ConfigMap>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(cm_writer)
        .touched_objects();
    let (hosts, host_writer) = reflector::store::<Host>();
    // Only what can change a selection matters (Host status is written all the time; a Host
    // that goes away leaves the pool, which `HostPool::watch_reachability` notices).
    let host_labels = |h: &Host| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        h.metadata.uid.hash(&mut hasher);
        h.metadata.labels.hash(&mut hasher);
        Some(hasher.finish())
    };
    let host_stream = watcher(Api::<Host>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(host_writer)
        .applied_objects()
        .predicate_filter(host_labels, PredicateConfig::default());

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let reporter = Reporter { controller: CONTROLLER_NAME.into(), instance: Some(ctx.instance.clone()) };
    let publisher = tokio::spawn(publish_events(client.clone(), reporter, events_rx));

    let sc = Arc::new(StackController {
        pass: PassContext::new(ctx.pool.clone(), &ctx.instance),
        ctx: ctx.clone(),
        references: CachedReferences { secrets, config_maps },
        hosts,
        retries: retry::Retries::new(),
        events: events_tx,
        reported: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
    });

    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    let watcher_task = tokio::spawn(ctx.pool.clone().watch_reachability(all_tx.clone(), shutdown.clone()));
    let docker_events = owner_event_refs(sc.clone(), all_tx);

    let (s1, s2, s3) = (stacks.clone(), stacks.clone(), stacks.clone());
    Controller::for_stream(stack_stream, stacks)
        .watches_stream(secret_stream, move |s: Secret| {
            stacks_referring_to(&s1, RefKind::Secret, s.namespace().as_deref().unwrap_or("default"), &s.name_any())
        })
        .watches_stream(cm_stream, move |c: ConfigMap| {
            stacks_referring_to(&s2, RefKind::ConfigMap, c.namespace().as_deref().unwrap_or("default"), &c.name_any())
        })
        .watches_stream(host_stream, move |h: Host| {
            let name = h.name_any();
            s3.state()
                .iter()
                .filter(|s| hosts::may_select(&s.spec, &name))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(docker_events)
        .reconcile_all_on(UnboundedReceiverStream::new(all_rx))
        .with_config(ControllerConfig::default().concurrency(16))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, sc)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "stack controller");
            }
            futures::future::ready(())
        })
        .await;
    watcher_task.abort();
    publisher.abort();
}

/// Docker events of Stack containers, as reconcile requests of their owners. The container is
/// marked for re-inspection and the host's snapshot invalidated, so the pass sees the change.
fn owner_event_refs(
    sc: Arc<StackController>,
    all: mpsc::UnboundedSender<()>,
) -> impl futures::Stream<Item = ObjectRef<Stack>> + Send + 'static {
    BroadcastStream::new(sc.ctx.pool.subscribe()).filter_map(move |item| {
        let out = match item {
            Ok(ev) if ev.owner_kind == "Stack" && relevant_event(&ev.event.kind, &ev.event.action) => {
                if ev.event.kind == "container" {
                    sc.pass.caches.mark_dirty(&ev.event.id);
                }
                if let Some(h) = sc.ctx.pool.handle(&ev.host) {
                    h.invalidate();
                }
                Some(ObjectRef::<Stack>::new(&ev.name).within(&ev.namespace))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "Docker events came faster than they were handled; re-checking every Stack");
                let _ = all.send(());
                None
            }
        };
        futures::future::ready(out)
    })
}

/// Whether a Docker event can mean that a Stack's containers differ from what berth last saw.
fn relevant_event(kind: &str, action: &str) -> bool {
    match kind {
        "container" => {
            matches!(
                action,
                "die"
                    | "destroy"
                    | "oom"
                    | "kill"
                    | "stop"
                    | "start"
                    | "pause"
                    | "unpause"
                    | "restart"
                    | "rename"
                    | "update"
            ) || action.starts_with("health_status")
        }
        "network" => matches!(action, "destroy" | "disconnect"),
        "volume" => action == "destroy",
        _ => false,
    }
}

async fn reconcile(stack: Arc<Stack>, sc: Arc<StackController>) -> Result<Requeue, StackError> {
    let api: Api<Stack> = Api::namespaced(sc.ctx.client.clone(), stack.namespace_or_default());
    let run = finalizer(&api, FINALIZER, stack, |event| async {
        match event {
            FinalizerEvent::Apply(s) => sc.apply(&s).await,
            FinalizerEvent::Cleanup(s) => sc.cleanup(&s).await,
        }
    });
    sc.ctx.metrics.observe_reconcile("Stack", run).await.map_err(|e| StackError::Finalizer(Box::new(e)))
}

fn error_policy(stack: Arc<Stack>, err: &StackError, sc: Arc<StackController>) -> Requeue {
    let (count, delay) = sc.retries.failed(&key(&stack));
    tracing::warn!(stack = %key(&stack), attempt = count, retry_in = ?delay, error = %err, "reconcile failed");
    Requeue::requeue(delay)
}

impl StackController {
    fn notify_for(&self, stack: &Stack) -> StackNotify {
        StackNotify { tx: self.events.clone(), reference: stack.object_ref(&()), progress: Mutex::new(None) }
    }

    /// The status to start from: the cache's, unless this controller wrote a newer one.
    fn current_status(&self, stack: &Stack) -> StackStatus {
        let cached = stack.status.clone().unwrap_or_default();
        let uid = stack.metadata.uid.clone().unwrap_or_default();
        let rv: Option<u64> = stack.metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match (written.get(&uid), rv) {
            (Some((w_rv, w_status)), Some(rv)) if *w_rv > rv => w_status.clone(),
            _ => cached,
        }
    }

    async fn write_status(&self, stack: &Stack, old: &StackStatus, new: &StackStatus) -> Result<(), StackError> {
        let Some(patch) = status::patch(old, new) else { return Ok(()) };
        let api: Api<Stack> = Api::namespaced(self.ctx.client.clone(), stack.namespace_or_default());
        let updated =
            api.patch_status(stack.name(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|source| {
                StackError::Kube {
                    operation: format!("writing the status of Stack {}", key(stack)),
                    source: Box::new(source),
                }
            })?;
        if let (Some(uid), Some(rv)) =
            (updated.metadata.uid.clone(), updated.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()))
        {
            self.written.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, (rv, new.clone()));
        }
        Ok(())
    }

    async fn caches_ready(&self) -> Result<(), StackError> {
        let ready = async {
            let _ = self.references.secrets.wait_until_ready().await;
            let _ = self.references.config_maps.wait_until_ready().await;
            let _ = self.hosts.wait_until_ready().await;
        };
        tokio::time::timeout(CACHE_WAIT, ready).await.map_err(|_| StackError::Docker {
            host: String::new(),
            operation: "reading Secrets, ConfigMaps and Hosts".into(),
            message: "the caches did not fill within 30s; is the API server answering?".into(),
            transient: true,
        })
    }

    /// One reconcile of a Stack that is not being deleted.
    async fn apply(&self, stack: &Stack) -> Result<Requeue, StackError> {
        let old = self.current_status(stack);
        let notify = self.notify_for(stack);
        let stack_key = key(stack);
        if let Err(e) = self.caches_ready().await {
            return self.transient_failure(stack, &old, e).await;
        }
        let selected = match hosts::selected_hosts(&stack.spec, self.hosts.state().iter().map(|h| h.as_ref())) {
            Ok(s) => s,
            Err(e) => return self.permanent_failure(stack, &old, &[], e, &notify).await,
        };
        let rc = RenderContext {
            instance: &self.ctx.instance,
            hash_key: &self.ctx.hash_key,
            allowed_host_paths: &self.ctx.config.stacks.allowed_host_paths,
            references: &self.references,
        };
        let desired = match render(stack, &rc) {
            Ok(d) => d,
            Err(e) => return self.permanent_failure(stack, &old, &selected, e.into(), &notify).await,
        };
        let hash = desired_hash(&desired, &selected);
        let previously_applied = old.applied_hash.as_deref() == Some(hash.as_str());
        let holding_rolled_back = old.rolled_back_hash.as_deref() == Some(hash.as_str());
        let spec_findings = spec_findings(stack, &old, previously_applied);
        let uid = stack.metadata.uid.clone().unwrap_or_default();
        let mode = if stack.spec.suspend || holding_rolled_back {
            Mode::ObserveOnly
        } else {
            Mode::Apply { policy: stack.spec.drift_policy, exec: ExecOptions::from_spec(&stack.spec) }
        };
        if stack.spec.suspend != (old.phase == Some(StackPhase::Suspended)) && old.phase.is_some() {
            let note = if stack.spec.suspend {
                Note::normal(ev::SUSPENDED, "Suspend", "spec.suspend is true: berth changes nothing until it is false")
            } else {
                Note::normal(ev::RESUMED, "Resume", "spec.suspend is false again: berth converges the hosts")
            };
            notify.note(note);
        }

        let known_restarts: HashMap<String, i64> = old
            .hosts
            .iter()
            .flat_map(|h| h.containers.iter())
            .filter(|c| !c.container_id.is_empty())
            .map(|c| (c.container_id.clone(), c.restarts))
            .collect();

        // A rollout is about to start: say so before it runs (health waits can take a minute).
        let mut old = old;
        if matches!(mode, Mode::Apply { .. }) && !previously_applied {
            let starting = status::rolling_out(&old, stack.metadata.generation, selected.len(), now());
            if self.write_status(stack, &old, &starting).await.is_ok() {
                old = starting;
            }
        }

        // Every host in parallel; while it runs, long pulls show in the Progressing condition.
        let passes = futures::future::join_all(selected.iter().map(|host| {
            reconcile_host(&self.pass, &uid, &desired, host, &mode, previously_applied, &known_restarts, &notify)
        }));
        // `old` becomes what was last written (progress may have been shown meanwhile).
        let (results, old) = self.with_progress(stack, old, &notify, passes).await;

        // Hosts the Stack no longer selects: remove it there (a spec change, so under any policy).
        let mut leaving = Vec::new();
        let mut leaving_errors = Vec::new();
        for h in old.hosts.iter().filter(|h| !selected.contains(&h.host)) {
            if stack.spec.suspend {
                leaving.push(h.clone());
                continue;
            }
            let keep: Vec<String> = desired.volumes.iter().map(|v| v.name.clone()).collect();
            if let Err(e) = remove_from_host(&self.pass, &uid, &h.host, &[], &keep, &notify).await {
                leaving.push(StackHostStatus {
                    host: h.host.clone(),
                    phase: if matches!(e, StackError::DeletionBlocked { .. }) {
                        StackHostPhase::Unreachable
                    } else {
                        StackHostPhase::Progressing
                    },
                    message: format!("no longer selected; {e}"),
                    containers: h.containers.clone(),
                });
                leaving_errors.push(e);
            }
        }

        self.report_drift(stack, &stack_key, &results, &notify);

        let transient = results
            .iter()
            .flat_map(|r| r.errors.iter())
            .find(|e| !e.is_permanent())
            .map(|e| e.to_string())
            .or_else(|| results.iter().find_map(|r| r.unreachable.as_ref().map(|u| format!("host {}: {u}", r.host))))
            .or_else(|| leaving_errors.first().map(|e| e.to_string()));
        let permanent = results.iter().flat_map(|r| r.errors.iter()).find(|e| e.is_permanent());
        let now = now();
        let (retry, mut requeue) = match &transient {
            Some(message) => {
                let (count, delay) = self.retries.failed(&stack_key);
                let next = Timestamp::now().checked_add(delay).unwrap_or_else(|_| Timestamp::now());
                let next = Time(Timestamp::from_second(next.as_second()).unwrap_or(next));
                (Some(RetryStatus { count, last_error: message.clone(), next_attempt: Some(next) }), delay)
            }
            None => {
                self.retries.succeeded(&stack_key);
                (None, self.ctx.config.resync_interval.0)
            }
        };
        for e in results.iter().flat_map(|r| r.errors.iter()) {
            let warn = Note::warning(
                if e.is_permanent() { e.reason() } else { ev::RECONCILE_FAILED },
                "Reconcile",
                e.to_string(),
            );
            // Rollbacks and failed pulls were noted where they happened.
            if !matches!(e, StackError::RolledBack { .. } | StackError::PullFailed { .. } | StackError::NotReady { .. })
            {
                notify.note(warn);
            }
        }
        for r in &results {
            let was_unreachable = old.hosts.iter().any(|h| h.host == r.host && h.phase == StackHostPhase::Unreachable);
            if let Some(u) = &r.unreachable
                && !was_unreachable
            {
                notify.note(Note::warning(ev::HOST_UNREACHABLE, "Reconcile", format!("host {}: {u}", r.host)));
            }
        }

        let input = StatusInput {
            generation: stack.metadata.generation,
            desired: Some(&desired),
            desired_hash: Some(hash),
            selected: &selected,
            hosts: &results,
            leaving,
            spec_findings,
            suspended: stack.spec.suspend,
            policy: stack.spec.drift_policy,
            spec_error: None,
            holding_rolled_back,
            retry,
            now,
        };
        let new = status::build(&old, &input);
        if new.phase == Some(StackPhase::Ready) && old.phase != Some(StackPhase::Ready) {
            notify.note(Note::normal(
                ev::READY,
                "Reconcile",
                format!("every service runs as specified on {} host(s)", selected.len()),
            ));
        }
        self.write_status(stack, &old, &new).await?;
        if permanent.is_some() || holding_rolled_back {
            requeue = self.ctx.config.resync_interval.0;
        } else if transient.is_none() && status::waiting_for_health(&new) {
            requeue = requeue.min(HEALTH_RECHECK);
        }
        Ok(Requeue::requeue(requeue))
    }

    /// Runs `passes` while showing pull progress in the Progressing condition; returns their
    /// results and the status last written.
    async fn with_progress<F: std::future::Future<Output = Vec<HostResult>>>(
        &self,
        stack: &Stack,
        old: StackStatus,
        notify: &StackNotify,
        passes: F,
    ) -> (Vec<HostResult>, StackStatus) {
        let mut passes = std::pin::pin!(passes.fuse());
        let mut shown: Option<String> = None;
        let mut base = old;
        loop {
            tokio::select! {
                results = &mut passes => return (results, base),
                _ = tokio::time::sleep(PROGRESS_INTERVAL) => {
                    let current = notify.progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(message) = current && shown.as_ref() != Some(&message) {
                        let mut next = base.clone();
                        berth_crds::common::set_condition(
                            &mut next.conditions,
                            berth_crds::common::Condition::new(
                                status::condition::PROGRESSING,
                                berth_crds::common::ConditionStatus::True,
                                "Pulling",
                                message.clone(),
                            ),
                            now(),
                        );
                        if self.write_status(stack, &base, &next).await.is_ok() {
                            base = next;
                        }
                        shown = Some(message);
                    }
                }
            }
        }
    }

    /// Publishes drift events: every correction under Reconcile; each new finding once under
    /// Report (the same drift seen again is not a new event).
    fn report_drift(&self, stack: &Stack, stack_key: &str, results: &[HostResult], notify: &dyn Notify) {
        let policy = stack.spec.drift_policy;
        let mut now_found = BTreeSet::new();
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let before = reported.get(stack_key).cloned().unwrap_or_default();
        for r in results {
            let fixed = status::corrected(r, policy, stack.spec.suspend);
            for f in r.findings.iter().filter(|f| f.tier >= tier::RUNTIME_CONFIG) {
                let id = format!("{}/{}/{}", r.host, f.reason, f.object.as_deref().unwrap_or(""));
                now_found.insert(id.clone());
                if fixed || !before.contains(&id) {
                    let what = if fixed { "corrected" } else { "reported, not corrected" };
                    notify.note(Note::warning(
                        ev::DRIFT_DETECTED,
                        "DetectDrift",
                        format!("host {}: tier {} {}: {} ({what})", r.host, f.tier, f.reason, f.message),
                    ));
                }
            }
        }
        if now_found.is_empty() {
            reported.remove(stack_key);
        } else {
            reported.insert(stack_key.to_string(), now_found);
        }
    }

    async fn permanent_failure(
        &self,
        stack: &Stack,
        old: &StackStatus,
        selected: &[String],
        err: StackError,
        notify: &dyn Notify,
    ) -> Result<Requeue, StackError> {
        self.retries.succeeded(&key(stack));
        let input = StatusInput {
            generation: stack.metadata.generation,
            desired: None,
            desired_hash: None,
            selected,
            hosts: &[],
            leaving: old.hosts.clone(),
            spec_findings: vec![],
            suspended: stack.spec.suspend,
            policy: stack.spec.drift_policy,
            spec_error: Some(&err),
            holding_rolled_back: false,
            retry: None,
            now: now(),
        };
        let mut new = status::build(old, &input);
        // Keep what the hosts ran last: nothing was observed, nothing changed.
        new.hosts = old.hosts.clone();
        new.hosts_ready = old.hosts_ready.clone();
        let already = old.conditions.iter().any(|c| {
            c.type_ == status::condition::STALLED
                && c.message == err.to_string()
                && c.status == berth_crds::common::ConditionStatus::True
        });
        if !already {
            notify.note(Note::warning(ev::INVALID_SPEC, "Reconcile", err.to_string()));
        }
        self.write_status(stack, old, &new).await?;
        // A missing Secret or a changed spec triggers a reconcile by itself.
        Ok(Requeue::await_change())
    }

    async fn transient_failure(
        &self,
        stack: &Stack,
        old: &StackStatus,
        err: StackError,
    ) -> Result<Requeue, StackError> {
        let (count, delay) = self.retries.failed(&key(stack));
        let mut new = old.clone();
        let next = Timestamp::now().checked_add(delay).unwrap_or_else(|_| Timestamp::now());
        new.retry = Some(RetryStatus {
            count,
            last_error: err.to_string(),
            next_attempt: Some(Time(Timestamp::from_second(next.as_second()).unwrap_or(next))),
        });
        self.write_status(stack, old, &new).await?;
        Ok(Requeue::requeue(delay))
    }

    /// Removes a deleted Stack from every host it may run on. Returns an error (keeping the
    /// finalizer) while a host cannot be cleaned.
    async fn cleanup(&self, stack: &Stack) -> Result<Requeue, StackError> {
        let old = self.current_status(stack);
        let notify = self.notify_for(stack);
        let uid = stack.metadata.uid.clone().unwrap_or_default();
        let mut targets: BTreeSet<String> = old.hosts.iter().map(|h| h.host.clone()).collect();
        if let Ok(selected) = hosts::selected_hosts(&stack.spec, self.hosts.state().iter().map(|h| h.as_ref())) {
            targets.extend(selected);
        }
        let namer = render::Naming::new(stack.namespace_or_default(), stack.name());
        let remove: Vec<String> =
            stack.spec.volumes.iter().filter(|v| !v.retain).map(|v| namer.volume(&v.name)).collect();
        let keep: Vec<String> = stack.spec.volumes.iter().filter(|v| v.retain).map(|v| namer.volume(&v.name)).collect();
        let deleting = status::deleting(&old, stack.metadata.generation, None, now());
        let _ = self.write_status(stack, &old, &deleting).await;
        let mut first_error = None;
        for host in &targets {
            if let Err(e) = remove_from_host(&self.pass, &uid, host, &remove, &keep, &notify).await {
                let reason = if matches!(e, StackError::DeletionBlocked { .. }) {
                    ev::DELETION_BLOCKED
                } else {
                    ev::RECONCILE_FAILED
                };
                notify.note(Note::warning(reason, "Delete", e.to_string()));
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            let blocked = status::deleting(&old, stack.metadata.generation, Some(&e), now());
            let _ = self.write_status(stack, &deleting, &blocked).await;
            return Err(e);
        }
        self.retries.succeeded(&key(stack));
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(stack));
        self.written.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
        Ok(Requeue::await_change())
    }
}

fn spec_findings(stack: &Stack, old: &StackStatus, previously_applied: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if stack.metadata.generation != old.observed_generation {
        out.push(finding_for(
            tier::SPEC,
            plan::reason::SPEC_CHANGED,
            format!(
                "generation {} differs from observedGeneration {}",
                stack.metadata.generation.unwrap_or(0),
                old.observed_generation.map_or("none".into(), |g| g.to_string())
            ),
        ));
    }
    if !previously_applied {
        out.push(finding_for(
            tier::DESIRED,
            plan::reason::DESIRED_STATE_CHANGED,
            "the rendered desired state (spec, referenced Secrets and ConfigMaps, hosts) differs from the one applied last"
                .to_string(),
        ));
    }
    out
}

/// Errors of [`plan_stack`].
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The Stack cannot be planned.
    #[error("{0}")]
    Stack(#[from] StackError),
}

/// The plans `berth plan` shows: what a reconcile of `stack` would do on each of its hosts now,
/// computed with the same render, observation and planner as the controller but without
/// executing anything (and honouring `driftPolicy`, `suspend` and a held rollback). Referenced
/// Secrets, ConfigMaps and Hosts are read through `ctx.client`; hosts not in `ctx.pool` are
/// connected with `ctx.connector` for the duration of the call. A host that cannot be reached
/// yields a plan with no steps and a `HostUnreachable` finding.
pub async fn plan_stack(ctx: &Context, stack: &Stack) -> Result<Vec<HostPlan>, PlanError> {
    let client = ctx.client.clone();
    let ns = stack.namespace_or_default().to_string();
    let host_objects = Api::<Host>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|source| StackError::Kube { operation: "listing Hosts".into(), source: Box::new(source) })?
        .items;
    let selected = hosts::selected_hosts(&stack.spec, host_objects.iter())?;
    let mut fetched = FetchedReferences::default();
    for (kind, name) in referenced_objects(stack) {
        let k = (ns.clone(), name.clone());
        match kind {
            RefKind::Secret => {
                let got = Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&name).await.map_err(|source| {
                    StackError::Kube { operation: format!("reading Secret {ns}/{name}"), source: Box::new(source) }
                })?;
                if let Some(s) = got {
                    fetched.secrets.insert(k, s);
                }
            }
            RefKind::ConfigMap => {
                let got = Api::<ConfigMap>::namespaced(client.clone(), &ns).get_opt(&name).await.map_err(|source| {
                    StackError::Kube { operation: format!("reading ConfigMap {ns}/{name}"), source: Box::new(source) }
                })?;
                if let Some(c) = got {
                    fetched.config_maps.insert(k, c);
                }
            }
        }
    }
    let rc = RenderContext {
        instance: &ctx.instance,
        hash_key: &ctx.hash_key,
        allowed_host_paths: &ctx.config.stacks.allowed_host_paths,
        references: &fetched,
    };
    let desired = render(stack, &rc).map_err(StackError::from)?;
    let old = stack.status.clone().unwrap_or_default();
    let hash = desired_hash(&desired, &selected);
    let previously_applied = old.applied_hash.as_deref() == Some(hash.as_str());
    let holding = old.rolled_back_hash.as_deref() == Some(hash.as_str());
    let spec = spec_findings(stack, &old, previously_applied);
    let uid = stack.metadata.uid.clone().unwrap_or_default();
    let pass = PassContext::new(ctx.pool.clone(), &ctx.instance);
    let secrets = desired.secret_values();
    let mut plans = Vec::new();
    for host in &selected {
        let mut findings = spec.clone();
        let handle = match ctx.pool.get(host) {
            Ok(h) => Ok(h),
            Err(_) => connect_for_plan(ctx, host, &host_objects).await,
        };
        let observed = match handle {
            Ok(h) => {
                observe::observe_host(&h, &ctx.instance, &uid, &desired, Duration::ZERO, &pass.caches, &HashMap::new())
                    .await
                    .map_err(|e| redact(&e.to_string(), &secrets))
            }
            Err(e) => Err(e),
        };
        let p = match observed {
            Ok(o) => {
                let full = plan::plan(host, &desired, &o.observation, &uid, previously_applied);
                findings.extend(full.findings.iter().cloned());
                let steps = if stack.spec.suspend || holding {
                    vec![]
                } else if stack.spec.drift_policy == DriftPolicy::Report {
                    without_drift_corrections(&full, previously_applied).steps
                } else {
                    full.steps
                };
                HostPlan { host: host.clone(), findings, steps }
            }
            Err(message) => {
                findings.push(finding_for(tier::RUNTIME_CONFIG, "HostUnreachable", message));
                HostPlan { host: host.clone(), findings, steps: vec![] }
            }
        };
        plans.push(p);
    }
    Ok(plans)
}

async fn connect_for_plan(ctx: &Context, host: &str, hosts: &[Host]) -> Result<Arc<HostHandle>, String> {
    let (endpoint, tls) = match hosts.iter().find(|h| h.name_any() == host) {
        Some(h) => (
            h.spec.endpoint.clone(),
            h.spec.tls.as_ref().map(|t| TlsFiles {
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            }),
        ),
        None if host == LOCAL_HOST => (local_endpoint(), None),
        None => return Err(format!("there is no Host named {host}; create it or fix spec.hosts")),
    };
    let docker = ctx.connector.connect(&endpoint, tls.as_ref()).await.map_err(|e| e.to_string())?;
    Ok(Arc::new(HostHandle::new(host, docker)))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
