//! The kube-runtime wiring of the Host controller: registration of the `local` Host, the Host
//! informer (whose deletions stop connections), the reconcile function (connection, observation,
//! orphan scan and removal, status, Events) and the error policy (per-Host exponential backoff).
//!
//! Architecture invariant: the reconcile decides with pure functions ([`plan_orphans`],
//! [`status::desired_status`]) and only then acts; status is written only when it changed, and
//! status writes do not trigger reconciles (the informer passes on only spec or annotation
//! changes), so there is no write loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_crds::common::ConditionStatus;
use berth_crds::host::{Host, HostSpec, HostStatus, LOCAL_HOST};
use berth_crds::{Lease, Stack};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, PredicateConfig};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::link::{LinkDeps, Links, Target};
use super::orphans::{CONFIRM_ANNOTATION, Confirmation, Disposition, KnownOwners, OrphanInput, OwnerKey, plan_orphans};
use super::status::{self, ORPHANS_BLOCKED, REACHABLE, StatusInput};
use super::{HostControllerOptions, HostError, prune};
use crate::controllers::context::Context;
use crate::controllers::pool::HostSnapshot;
use crate::controllers::recorder::NoteRecorder;
use crate::docker::local_endpoint;
use crate::metrics::KindLabels;

/// Reasons of the Events the Host controller records.
pub mod event_reason {
    /// The daemon answers (again).
    pub const HOST_CONNECTED: &str = "HostConnected";
    /// The daemon stopped answering.
    pub const HOST_UNREACHABLE: &str = "HostUnreachable";
    /// An orphan was removed.
    pub const ORPHAN_REMOVED: &str = "OrphanRemoved";
    /// Removing an orphan failed or was refused by Docker.
    pub const ORPHAN_REMOVAL_FAILED: &str = "OrphanRemovalFailed";
    /// Orphan removal is blocked until an operator confirms.
    pub const ORPHAN_REMOVAL_BLOCKED: &str = "OrphanRemovalBlocked";
    /// An operator's confirmation was used.
    pub const ORPHAN_PRUNE_CONFIRMED: &str = "OrphanPruneConfirmed";
    /// An operator's confirmation had no effect.
    pub const ORPHAN_PRUNE_CONFIRMATION_IGNORED: &str = "OrphanPruneConfirmationIgnored";
}

/// Name under which the controller reports Events.
const REPORTER: &str = "berth-host-controller";

/// The controller's shared state.
struct Runtime {
    ctx: Arc<Context>,
    options: HostControllerOptions,
    links: Links,
    hosts: reflector::Store<Host>,
    recorder: NoteRecorder,
    /// The Host informer completed its first list.
    hosts_synced: AtomicBool,
    /// Per host: when scans first saw orphans whose creation time Docker does not report.
    first_seen: Mutex<BTreeMap<String, BTreeMap<String, Timestamp>>>,
    /// Per host: the retry delays of a failing reconcile.
    failures: Mutex<BTreeMap<String, backon::ExponentialBackoff>>,
    /// Per host: the status this controller last wrote, with the resourceVersion of that write.
    /// A reconcile can start before the informer delivers the controller's own write; then this
    /// copy, not the informer's older one, is what the new status is compared with.
    last_written: Mutex<BTreeMap<String, (u64, HostStatus)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runtime {
    /// Forgets what the controller keeps about a deleted Host.
    fn forget(&self, name: &str) {
        lock(&self.first_seen).remove(name);
        lock(&self.failures).remove(name);
        lock(&self.last_written).remove(name);
    }

    /// Reacts to the Host informer: a deleted Host loses its connection; after a (re)list,
    /// connections of Hosts that vanished meanwhile are stopped too.
    async fn on_watch_event(&self, event: &watcher::Event<Host>) {
        match event {
            watcher::Event::Delete(host) => {
                let name = host.name_any();
                self.links.stop(&name).await;
                self.forget(&name);
            }
            watcher::Event::InitDone => {
                self.hosts_synced.store(true, Ordering::SeqCst);
                let keep: BTreeSet<String> = self.hosts.state().iter().map(|h| h.name_any()).collect();
                self.links.retain(&keep).await;
            }
            _ => {}
        }
    }

    async fn publish(&self, host: &Host, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(event, &host.object_ref(&())).await {
            tracing::warn!(host = %host.name_any(), reason, error = %e, "recording an Event failed");
        }
    }
}

pub(super) async fn run(ctx: Arc<Context>, shutdown: CancellationToken, options: HostControllerOptions) {
    if !register_local_host(&ctx, &shutdown, &options).await {
        return;
    }
    let (notify, notify_rx) = mpsc::unbounded_channel::<String>();
    let (reader, writer) = reflector::store::<Host>();
    let links = Links::new(LinkDeps {
        connector: ctx.connector.clone(),
        pool: ctx.pool.clone(),
        instance: ctx.instance.clone(),
        metrics: ctx.metrics.clone(),
        options: options.clone(),
        notify,
    });
    let recorder = NoteRecorder::new(
        ctx.client.clone(),
        Reporter { controller: REPORTER.into(), instance: Some(ctx.instance.clone()) },
    );
    let rt = Arc::new(Runtime {
        ctx: ctx.clone(),
        options,
        links,
        hosts: reader.clone(),
        recorder,
        hosts_synced: AtomicBool::new(false),
        first_seen: Mutex::default(),
        failures: Mutex::default(),
        last_written: Mutex::default(),
    });

    let api: Api<Host> = Api::all(ctx.client.clone());
    let watch_rt = rt.clone();
    let hosts = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .then(move |event| {
            let rt = watch_rt.clone();
            async move {
                if let Ok(e) = &event {
                    rt.on_watch_event(e).await;
                }
                event
            }
        })
        .applied_objects()
        // Status writes change neither generation nor annotations: they do not come back as
        // reconciles. Reachability changes arrive through `reconcile_on` instead.
        .predicate_filter(predicates::generation.combine(predicates::annotations), PredicateConfig::default());
    let reachability_changes = UnboundedReceiverStream::new(notify_rx).map(|name| ObjectRef::<Host>::new(&name));

    Controller::for_stream(hosts, reader)
        .reconcile_on(reachability_changes)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, rt.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "Host reconcile did not complete");
            }
        })
        .await;
    rt.links.stop_all().await;
}

/// Creates the `local` Host when no Host exists; retries until it succeeds or berth stops.
/// Returns false when stopped first.
async fn register_local_host(ctx: &Context, shutdown: &CancellationToken, options: &HostControllerOptions) -> bool {
    let api: Api<Host> = Api::all(ctx.client.clone());
    let mut delays = options.retry_backoff();
    loop {
        let attempt = async {
            if !api.list(&ListParams::default().limit(1)).await?.items.is_empty() {
                return Ok(());
            }
            let host = Host::new(LOCAL_HOST, HostSpec { endpoint: local_endpoint(), ..Default::default() });
            match api.create(&PostParams::default(), &host).await {
                Ok(h) => {
                    tracing::info!(endpoint = %h.spec.endpoint, "no Host existed; registered Host {LOCAL_HOST}");
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        };
        let error = match attempt.await {
            Ok(()) => return true,
            Err(e) => e,
        };
        let delay = delays.next().unwrap_or(options.retry_max_delay);
        tracing::warn!(error = %error, retry_in = ?delay, "registering the local Host failed; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Every Stack and Lease in the store (all namespaces, every page). Objects are read without
/// their spec types, so one malformed object cannot hide every owner.
async fn list_owners(client: &Client) -> Result<KnownOwners, kube::Error> {
    let mut owners = KnownOwners::new();
    for (kind, resource) in [("Stack", ApiResource::erase::<Stack>(&())), ("Lease", ApiResource::erase::<Lease>(&()))] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            for o in &page.items {
                if let (Some(namespace), Some(name), Some(uid)) =
                    (&o.metadata.namespace, &o.metadata.name, &o.metadata.uid)
                {
                    owners.insert(OwnerKey {
                        kind: kind.into(),
                        namespace: namespace.clone(),
                        name: name.clone(),
                        uid: uid.clone(),
                    });
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(owners)
}

async fn reconcile(host: Arc<Host>, rt: Arc<Runtime>) -> Result<Action, HostError> {
    let kind = KindLabels { kind: "Host".into() };
    let started = std::time::Instant::now();
    let result = reconcile_host(&host, &rt).await;
    // Counted when done, so that a count tells how many reconciles have completed.
    rt.ctx.metrics.reconcile_seconds.get_or_create(&kind).observe(started.elapsed().as_secs_f64());
    rt.ctx.metrics.reconciles.get_or_create(&kind).inc();
    if result.is_ok() {
        lock(&rt.failures).remove(&host.name_any());
    }
    result
}

fn error_policy(host: Arc<Host>, error: &HostError, rt: Arc<Runtime>) -> Action {
    rt.ctx.metrics.reconcile_errors.get_or_create(&KindLabels { kind: "Host".into() }).inc();
    let name = host.name_any();
    let delay = lock(&rt.failures)
        .entry(name.clone())
        .or_insert_with(|| rt.options.retry_backoff())
        .next()
        .unwrap_or(rt.options.retry_max_delay);
    tracing::warn!(host = %name, error = %error, retry_in = ?delay, "Host reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_host(host: &Host, rt: &Runtime) -> Result<Action, HostError> {
    let name = host.name_any();
    let api: Api<Host> = Api::all(rt.ctx.client.clone());
    if host.meta().deletion_timestamp.is_some() {
        rt.links.stop(&name).await;
        rt.forget(&name);
        return Ok(Action::await_change());
    }

    // 1. The connection (started, or restarted when the endpoint or TLS material changed).
    let uid = host.uid();
    let still_there = || rt.hosts.get(&ObjectRef::new(&name)).is_some_and(|h| h.uid() == uid);
    let Some(link) = rt.links.ensure(&name, &Target::of(&host.spec), still_there).await else {
        return Ok(Action::await_change()); // deleted while we looked
    };

    // 2. Observe: the shared snapshot of the host, then the owners in the store. The order
    //    matters: every container in the snapshot was created for an owner that was stored
    //    before the snapshot was taken, so a later owner list cannot miss it (unless it was
    //    deleted since, and then the container is an orphan indeed).
    let handle =
        if link.state == super::connection::ConnectionState::Connected { rt.ctx.pool.get(&name).ok() } else { None };
    let observed: Result<Arc<HostSnapshot>, String> = match &handle {
        Some(h) => h.observe(&rt.ctx.instance, rt.options.observe_max_age).await.map_err(|e| e.to_string()),
        None => Err(link
            .state
            .error()
            .map(str::to_string)
            .unwrap_or_else(|| format!("not connected to the daemon at {} yet", link.endpoint))),
    };
    let owners = list_owners(&rt.ctx.client).await.map_err(|source| HostError::ListOwners { source })?;

    // 3. Plan the orphan scan (pure).
    let confirmation = host.annotations().get(CONFIRM_ANNOTATION).cloned();
    let first_seen = lock(&rt.first_seen).get(&name).cloned().unwrap_or_default();
    let now = Timestamp::now();
    let mut plan = plan_orphans(&OrphanInput {
        host: &name,
        instance: &rt.ctx.instance,
        listing: observed.as_deref().map_err(String::as_str),
        owners: &owners,
        caches_synced: rt.hosts_synced.load(Ordering::SeqCst),
        config: &rt.ctx.config.orphans,
        now,
        confirmation: confirmation.as_deref(),
        first_seen: &first_seen,
    });
    if observed.is_ok() {
        // A failed listing sees nothing; keep the earlier sightings for the next good one.
        lock(&rt.first_seen).insert(name.clone(), plan.first_seen.clone());
    }

    // 4. Spend the confirmation before acting on it: if removing the annotation fails (or it
    //    changed meanwhile), this scan removes nothing and the next one decides again.
    if let Some(value) = confirmation.as_deref().filter(|_| plan.confirmation.consumed()) {
        remove_confirmation(&api, &name, value).await?;
        let (type_, reason) = match plan.confirmation {
            Confirmation::Used(_) => (EventType::Normal, event_reason::ORPHAN_PRUNE_CONFIRMED),
            _ => (EventType::Warning, event_reason::ORPHAN_PRUNE_CONFIRMATION_IGNORED),
        };
        rt.publish(host, type_, reason, "ConfirmOrphanPrune", plan.confirmation.describe()).await;
    }

    // 5. Execute the removals the gates allow.
    if let Some(h) = handle.as_ref().filter(|_| !plan.removals().is_empty()) {
        let acted = prune::execute(&mut plan, &*h.docker).await;
        h.invalidate();
        for i in acted {
            let o = &plan.orphans[i];
            let owner = o.owner.as_ref().map(|k| format!("{} (uid {})", k.display(), k.uid)).unwrap_or_default();
            let what = format!("{} {} ({})", o.kind.as_str(), o.name, o.id);
            let (type_, reason, note) = match &o.disposition {
                Disposition::Removed | Disposition::AlreadyGone => (
                    EventType::Normal,
                    event_reason::ORPHAN_REMOVED,
                    format!("removed orphan {what} of {owner}, which is no longer in the store"),
                ),
                other => (
                    EventType::Warning,
                    event_reason::ORPHAN_REMOVAL_FAILED,
                    format!("orphan {what} of {owner} was not removed: {}", other.describe(plan.min_age)),
                ),
            };
            rt.publish(host, type_, reason, "RemoveOrphan", note).await;
        }
    }

    // 6. Status (pure), written only when it changed; Events for transitions.
    let cached_rv = host.resource_version().and_then(|v| v.parse::<u64>().ok());
    let mut current = host.clone();
    if let Some((rv, written)) = lock(&rt.last_written).get(&name)
        && cached_rv.is_none_or(|cached| cached < *rv)
    {
        current.status = Some(written.clone());
    }
    let time = Time(now);
    let new_status = status::desired_status(&StatusInput {
        host: &current,
        link: &link,
        owner_counts: observed.as_ref().ok().map(|s| status::owner_counts(s, &owners)),
        scan: plan.to_scan(Some(time.clone())),
        now: time,
    });
    let old_status = current.status.as_ref();
    if status::needs_write(old_status, &new_status) {
        let written = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status::status_patch(old_status, &new_status)))
            .await
            .map_err(|source| HostError::WriteStatus { host: name.clone(), source })?;
        if let Some(rv) = written.resource_version().and_then(|v| v.parse::<u64>().ok()) {
            lock(&rt.last_written).insert(name.clone(), (rv, written.status.unwrap_or_else(|| new_status.clone())));
        }
    }
    transition_events(rt, host, old_status, &new_status).await;
    Ok(Action::requeue(rt.ctx.config.resync_interval.0))
}

/// Removes the confirmation annotation, but only if it still holds the value this scan read
/// (a JSON patch `test` guards it), so a newer confirmation is never swallowed.
async fn remove_confirmation(api: &Api<Host>, name: &str, value: &str) -> Result<(), HostError> {
    let path = format!("/metadata/annotations/{}", CONFIRM_ANNOTATION.replace('~', "~0").replace('/', "~1"));
    let ops = serde_json::json!([
        {"op": "test", "path": path, "value": value},
        {"op": "remove", "path": path},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("a well-formed JSON patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map(|_| ()).map_err(|source| {
        HostError::RemoveConfirmation { host: name.to_string(), annotation: CONFIRM_ANNOTATION, source }
    })
}

async fn transition_events(rt: &Runtime, host: &Host, old: Option<&HostStatus>, new: &HostStatus) {
    let before = status::condition(old, REACHABLE).map(|c| c.status);
    if let Some(now) = status::condition(Some(new), REACHABLE)
        && Some(now.status) != before
    {
        match now.status {
            ConditionStatus::True => {
                rt.publish(host, EventType::Normal, event_reason::HOST_CONNECTED, "Connect", now.message.clone()).await
            }
            ConditionStatus::False => {
                rt.publish(host, EventType::Warning, event_reason::HOST_UNREACHABLE, "Connect", now.message.clone())
                    .await
            }
            ConditionStatus::Unknown => {}
        }
    }
    let blocked_before = status::condition(old, ORPHANS_BLOCKED).filter(|c| c.status == ConditionStatus::True);
    if let Some(now) = status::condition(Some(new), ORPHANS_BLOCKED).filter(|c| c.status == ConditionStatus::True)
        && blocked_before.map(|c| &c.reason) != Some(&now.reason)
    {
        rt.publish(host, EventType::Warning, event_reason::ORPHAN_REMOVAL_BLOCKED, "ScanOrphans", now.message.clone())
            .await;
    }
}
