//! A Lease's plan: what the Lease controller would do next, as the `berth.dev/plan/v1` item
//! `kind: Lease` ([`berth_crds::plan::WorkloadPlan`]), without doing it. Pure: [`plan_lease`]
//! decides from the Lease, its status, the clock, the operator's Lease settings, the next
//! release rendered, the placement candidates and a fresh listing of the Lease's host, following
//! the same rules as the reconcile step of each phase ([`super::LeaseController`]):
//!
//! - Pending: the host [`place`] picks (then provisioning of release 1), or why none fits, per
//!   host.
//! - Provisioning, Updating, Restarting, Failing, Deprovisioning: the operation in progress.
//! - Ready and Failed: a rollout of a changed spec (or why it waits), a requested restart, and
//!   (Ready) containers that no longer run, which the controller diagnoses.
//! - Closed, expired or deleted while live: deprovisioning, with or without retained volumes.
//! - Retained: the reaping of the retained volumes once `status.retainedUntil` has passed.
//!
//! Every step of the lifecycle is tier 1 (the desired state is not what runs); dead containers
//! are tier 3 (gone ones tier 2); a spec not yet seen by the controller adds a tier-0 finding.
//! `converged` is true only when nothing is to be done now and nothing waits: what happens later
//! (expiry, the end of retention) is said in `notes`. [`host_to_observe`] tells the caller which
//! host to list before planning.

use berth_crds::Lease;
use berth_crds::common::{ConditionStatus, LABEL_OWNER_UID, LABEL_RELEASE, LABEL_REPLICA, LABEL_SERVICE};
use berth_crds::duration::format_duration;
use berth_crds::lease::{LeasePhase, LeaseStatus, RESTART_ANNOTATION};
use berth_crds::plan::{Finding, HostPlan, PlannedAction, Step, WorkloadPlan};
use jiff::Timestamp;

use super::placement::{Candidate, Unplaceable, place};
use super::render::{self, LeaseNaming, RenderedLease, instance_count, sku_of};
use super::status::{self, active_release, needs_rollout, next_revision};
use crate::config::LeaseConfig;
use crate::controllers::pool::HostSnapshot;
use crate::controllers::stack::plan::{reason as stack_reason, tier};
use crate::docker::{ContainerState, ContainerSummary};

/// Reasons of a Lease plan's findings and actions (besides the Stack planner's
/// `SpecChanged`, `DesiredStateChanged`, `ContainerMissing` and `NotRunning`).
pub mod reason {
    /// The Lease is Pending: no host was chosen yet.
    pub const NOT_PLACED: &str = "NotPlaced";
    /// The Lease is placed but its first release is not up yet.
    pub const NOT_PROVISIONED: &str = "NotProvisioned";
    /// The restart annotation holds a value not acted upon yet.
    pub const RESTART_REQUESTED: &str = "RestartRequested";
    /// A container of the running release is being diagnosed (phase Failing).
    pub const DIAGNOSING: &str = "Diagnosing";
    /// `spec.closed` is true.
    pub const CLOSED: &str = "Closed";
    /// The Lease reached its expiry.
    pub const EXPIRED: &str = "Expired";
    /// The Lease was deleted.
    pub const DELETED: &str = "Deleted";
    /// The retained volumes' grace period ended.
    pub const RETENTION_ENDED: &str = "RetentionEnded";
    /// The Lease's services cannot be rendered (missing Secret or ConfigMap key).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The Lease's SKU is not in the operator config.
    pub const UNKNOWN_SKU: &str = "UnknownSku";
    /// No reachable host holds the volumes `spec.restoreFrom` names.
    pub const RESTORE_SOURCE_NOT_FOUND: &str = "RestoreSourceNotFound";
    /// The Lease's host did not answer the listing.
    pub const HOST_UNREACHABLE: &str = "HostUnreachable";
    /// A container is restarting (Docker's own restart; Lease containers have none).
    pub const RESTARTING: &str = "Restarting";
    /// A container is paused.
    pub const PAUSED: &str = "Paused";
}

/// What the caller saw on the host the plan is about.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// No host to look at (the Lease is on none, or it does not matter).
    Nothing,
    /// A listing of this installation's objects on the host, taken for the plan.
    Listing(&'a HostSnapshot),
    /// The host could not be listed; why.
    Unreachable(&'a str),
}

/// Everything a Lease's plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct LeasePlanInput<'a> {
    /// The Lease, with its status.
    pub lease: &'a Lease,
    /// Now.
    pub now: Timestamp,
    /// The operator's Lease settings.
    pub config: &'a LeaseConfig,
    /// Release [`next_revision`] rendered, or why it cannot be.
    pub rendered: Result<&'a RenderedLease, &'a str>,
    /// The hosts as placement sees them ([`super::placement::candidates`]).
    pub candidates: &'a [Candidate],
    /// For a Lease with `spec.restoreFrom`: the reachable host holding the volumes it adopts.
    pub restore_host: Option<&'a str>,
    /// The listing of [`host_to_observe`]'s host.
    pub observed: Observed<'a>,
}

/// Why a live Lease is being closed, if it is.
fn closing(lease: &Lease, now: Timestamp, expires: Timestamp) -> Option<(&'static str, String)> {
    if lease.metadata.deletion_timestamp.is_some() {
        Some((reason::DELETED, "the Lease was deleted: it is deprovisioned, then its finalizer released".into()))
    } else if lease.spec.closed {
        Some((reason::CLOSED, "spec.closed is true: the Lease is deprovisioned".into()))
    } else if now >= expires {
        Some((reason::EXPIRED, format!("the Lease expired at {expires}: it is deprovisioned")))
    } else {
        None
    }
}

/// The host whose listing [`plan_lease`] needs: the Lease's own (`status.host`), or for a
/// Pending Lease the one placement would pick; none for a Closed Lease or one placed nowhere.
pub fn host_to_observe(
    lease: &Lease,
    config: &LeaseConfig,
    candidates: &[Candidate],
    restore_host: Option<&str>,
) -> Option<String> {
    let st = lease.status.clone().unwrap_or_default();
    match st.phase {
        Some(LeasePhase::Closed) => None,
        Some(LeasePhase::Pending) | None if st.host.is_none() => {
            if lease.metadata.deletion_timestamp.is_some() || lease.spec.closed {
                return None;
            }
            let sku = sku_of(lease, config).ok()?;
            if lease.spec.restore_from.is_some() && restore_host.is_none() {
                return None;
            }
            let request = render::allocation(sku, instance_count(lease));
            place(&request, lease.spec.host_selector.as_ref(), restore_host, candidates).ok()
        }
        _ => st.host.clone(),
    }
}

fn finding(tier: u8, reason: &str, message: impl Into<String>) -> Finding {
    Finding { tier, reason: reason.into(), service: None, object: None, message: message.into() }
}

fn action(name: &str, tier: u8, reason: &str) -> PlannedAction {
    PlannedAction { action: name.into(), tier, reason: reason.into(), ..Default::default() }
}

fn step(phase: &str, actions: Vec<PlannedAction>) -> Step {
    Step { phase: phase.into(), service: None, wait_for: vec![], actions }
}

/// The Lease's containers in a listing, by service, instance and name.
fn owned<'a>(observed: Observed<'a>, uid: &str) -> Vec<&'a ContainerSummary> {
    let Observed::Listing(listing) = observed else { return vec![] };
    let mut out: Vec<&ContainerSummary> =
        listing.containers.iter().filter(|c| c.labels.get(LABEL_OWNER_UID).map(String::as_str) == Some(uid)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn release_of(c: &ContainerSummary) -> Option<i64> {
    c.labels.get(LABEL_RELEASE).and_then(|r| r.parse().ok())
}

/// `remove` of an existing container.
fn remove(c: &ContainerSummary, reason: &str) -> PlannedAction {
    PlannedAction {
        container: Some(c.name.clone()),
        id: Some(c.id.clone()),
        service: c.labels.get(LABEL_SERVICE).cloned(),
        release: release_of(c),
        ..action("remove", tier::DESIRED, reason)
    }
}

/// The Docker work of bringing `rendered` up on a host whose listing is `observed`: images,
/// the tenant network and volumes that are missing, then one container per instance.
fn release_actions(rendered: &RenderedLease, revision: i64, observed: Observed<'_>, why: &str) -> Vec<PlannedAction> {
    let mut out = Vec::new();
    let mut images: Vec<&str> = rendered.instances.iter().map(|i| i.spec.image.as_str()).collect();
    images.sort();
    images.dedup();
    for image in images {
        out.push(PlannedAction {
            image: Some(image.into()),
            pull_policy: Some("IfNotPresent".into()),
            ..action("ensureImage", tier::DESIRED, why)
        });
    }
    let listing = match observed {
        Observed::Listing(l) => Some(l),
        _ => None,
    };
    if !listing.is_some_and(|l| l.networks.iter().any(|n| n.name == rendered.network.name)) {
        out.push(PlannedAction {
            network: Some(rendered.network.name.clone()),
            internal: Some(rendered.network.internal),
            ..action("createNetwork", tier::DESIRED, why)
        });
    }
    for v in &rendered.volumes {
        if !listing.is_some_and(|l| l.volumes.iter().any(|o| o.name == v.name)) {
            out.push(PlannedAction { volume: Some(v.name.clone()), ..action("createVolume", tier::DESIRED, why) });
        }
    }
    for i in &rendered.instances {
        out.push(PlannedAction {
            container: Some(i.spec.name.clone()),
            service: Some(i.service.clone()),
            release: Some(revision),
            ..action("create", tier::DESIRED, why)
        });
    }
    out
}

/// What happens when the Lease expires, in words.
fn expiry_note(lease: &Lease, config: &LeaseConfig, expires: Timestamp) -> String {
    let volumes = if lease.spec.retain_on_close {
        format!("its volumes are kept for {}", format_duration(config.retention.grace.0))
    } else {
        "its volumes are removed".to_string()
    };
    format!("expires at {expires}: then it is deprovisioned and {volumes}")
}

/// Builds the plan item.
struct Draft {
    plan: WorkloadPlan,
}

impl Draft {
    fn object(&mut self, f: Finding) {
        self.plan.findings.push(f);
    }

    fn note(&mut self, n: impl Into<String>) {
        self.plan.notes.push(n.into());
    }

    /// The plan of `host` (created on first use).
    fn host(&mut self, host: &str) -> &mut HostPlan {
        if let Some(i) = self.plan.hosts.iter().position(|h| h.host == host) {
            return &mut self.plan.hosts[i];
        }
        self.plan.hosts.push(HostPlan { host: host.into(), converged: true, ..Default::default() });
        self.plan.hosts.last_mut().expect("just pushed")
    }

    /// Adds `observed`'s failure as a finding of `host`.
    fn unreachable(&mut self, host: &str, observed: Observed<'_>, consequence: &str) {
        if let Observed::Unreachable(why) = observed {
            let message = format!("host {host} could not be listed ({why}); {consequence}");
            self.host(host).findings.push(finding(tier::RUNTIME_CONFIG, reason::HOST_UNREACHABLE, message));
        }
    }

    /// Done: hosts with a mutating action are not converged; the item is converged when
    /// `converged` says nothing waits and no host changes.
    fn finish(mut self, converged: bool) -> WorkloadPlan {
        for h in &mut self.plan.hosts {
            h.converged = converged && !h.steps.iter().flat_map(|s| &s.actions).any(PlannedAction::is_mutation);
        }
        self.plan.converged = converged && self.plan.hosts.iter().all(|h| h.converged);
        self.plan
    }
}

/// What the Lease controller would do next for `input.lease`.
pub fn plan_lease(input: &LeasePlanInput<'_>) -> WorkloadPlan {
    let lease = input.lease;
    let st = lease.status.clone().unwrap_or_default();
    let phase = st.phase;
    let mut d = Draft {
        plan: WorkloadPlan {
            namespace: lease.namespace_or_default().to_string(),
            name: lease.name().to_string(),
            uid: lease.metadata.uid.clone().unwrap_or_default(),
            generation: lease.metadata.generation,
            phase: Some(phase.unwrap_or(LeasePhase::Pending).as_str().to_string()),
            ..Default::default()
        },
    };
    if phase.is_some() && lease.metadata.generation.is_some() && lease.metadata.generation != st.observed_generation {
        d.object(finding(
            tier::SPEC,
            stack_reason::SPEC_CHANGED,
            format!(
                "generation {} differs from observedGeneration {}: the controller has not acted on this spec yet",
                lease.metadata.generation.unwrap_or(0),
                st.observed_generation.map(|g| g.to_string()).unwrap_or_else(|| "(none)".into())
            ),
        ));
    }
    let expires = status::expires_at(lease, input.config.default_duration.0);
    match phase {
        Some(LeasePhase::Closed) => {
            d.note("the Lease is closed: nothing of it runs or is kept; delete it when it is no longer needed");
            return d.finish(true);
        }
        Some(LeasePhase::Retained) => return retained(d, input, &st),
        _ => {}
    }
    if let Some((why, message)) = closing(lease, input.now, expires) {
        return deprovision(d, input, &st, why, message);
    }
    match phase {
        None | Some(LeasePhase::Pending) => pending(d, input, &st, phase.is_none()),
        Some(p @ (LeasePhase::Provisioning | LeasePhase::Updating | LeasePhase::Restarting | LeasePhase::Failing)) => {
            d.note(expiry_note(lease, input.config, expires));
            in_progress(d, input, &st, p)
        }
        // Closing for a reason `closing` no longer sees (it cannot be undone).
        Some(LeasePhase::Deprovisioning) => deprovision(d, input, &st, reason::CLOSED, String::new()),
        Some(p @ (LeasePhase::Ready | LeasePhase::Failed)) => {
            d.note(expiry_note(lease, input.config, expires));
            settled(d, input, &st, p)
        }
        Some(LeasePhase::Closed | LeasePhase::Retained) => unreachable!("handled above"),
    }
}

/// Retained: volumes wait for the end of their grace period, then are removed.
fn retained(mut d: Draft, input: &LeasePlanInput<'_>, st: &LeaseStatus) -> WorkloadPlan {
    let host = st.host.clone().unwrap_or_default();
    if !host.is_empty() {
        d.host(&host);
    }
    let volumes = st.retained_volumes.join(", ");
    let Some(until) = st.retained_until.as_ref().map(|t| t.0) else {
        d.note(format!("closed; volumes retained on host {host}: {volumes}"));
        return d.finish(true);
    };
    if until > input.now {
        d.note(format!(
            "closed; {} volume(s) retained on host {host} until {until} ({volumes}): then they are removed",
            st.retained_volumes.len()
        ));
        return d.finish(true);
    }
    let message = format!("the retention grace period ended at {until}: the retained volumes are removed");
    let h = d.host(&host);
    h.findings.push(finding(tier::DESIRED, reason::RETENTION_ENDED, message));
    let reaps: Vec<PlannedAction> = st
        .retained_volumes
        .iter()
        .map(|v| PlannedAction { volume: Some(v.clone()), ..action("reap", tier::DESIRED, reason::RETENTION_ENDED) })
        .collect();
    h.steps.push(step("reap", reaps));
    d.unreachable(&host, input.observed, "they are removed when it answers");
    d.finish(false)
}

/// Closed, expired or deleted: the containers go, the volumes go or are kept.
fn deprovision(
    mut d: Draft,
    input: &LeasePlanInput<'_>,
    st: &LeaseStatus,
    why: &'static str,
    message: String,
) -> WorkloadPlan {
    let lease = input.lease;
    let running = st.phase == Some(LeasePhase::Deprovisioning);
    let Some(host) = st.host.clone() else {
        let message = if message.is_empty() { "the Lease is being closed".to_string() } else { message };
        d.object(finding(
            tier::DESIRED,
            why,
            format!("{message}; it was never placed on a host, so it becomes Closed at once"),
        ));
        return d.finish(false);
    };
    if !message.is_empty() {
        d.object(finding(tier::DESIRED, why, message));
    }
    if matches!(st.phase, Some(LeasePhase::Provisioning | LeasePhase::Updating | LeasePhase::Restarting)) {
        d.note(format!(
            "the running {} operation is cancelled first",
            st.phase.map(|p| p.as_str().to_lowercase()).unwrap_or_default()
        ));
    }
    let volumes = if lease.spec.retain_on_close {
        format!(
            "its volumes are copied to retained volumes kept for {} (a Lease of the same tenant with restoreFrom: {} \
             can adopt them)",
            format_duration(input.config.retention.grace.0),
            lease.name()
        )
    } else {
        "its volumes are removed".to_string()
    };
    d.note(format!("the containers are stopped and removed on host {host}; {volumes}"));
    if running && !st.message.is_empty() {
        d.note(format!("in progress: {}", st.message));
    }
    let mut actions = vec![PlannedAction {
        release: active_release(st).map(|r| r.revision),
        retain_volumes: Some(lease.spec.retain_on_close),
        in_progress: running,
        ..action("deprovision", tier::DESIRED, why)
    }];
    let uid = lease.metadata.uid.clone().unwrap_or_default();
    actions.extend(owned(input.observed, &uid).into_iter().map(|c| remove(c, why)));
    d.host(&host).steps.push(step("deprovision", actions));
    d.unreachable(&host, input.observed, "the containers are removed when it answers");
    d.finish(false)
}

/// Pending: where the Lease goes and what provisioning creates there, or why it waits.
fn pending(mut d: Draft, input: &LeasePlanInput<'_>, st: &LeaseStatus, unseen: bool) -> WorkloadPlan {
    let lease = input.lease;
    if unseen {
        d.note("the controller has not taken up this Lease yet");
    }
    let sku = match sku_of(lease, input.config) {
        Ok(s) => s,
        Err(e) => {
            d.object(finding(tier::DESIRED, reason::UNKNOWN_SKU, e.to_string()));
            return d.finish(false);
        }
    };
    if let Some(from) = &lease.spec.restore_from
        && input.restore_host.is_none()
    {
        d.object(finding(
            tier::DESIRED,
            reason::RESTORE_SOURCE_NOT_FOUND,
            format!(
                "restoreFrom {from}: no reachable host holds retained volumes of Lease {}/{from}; the controller \
                 retries with backoff",
                lease.namespace_or_default()
            ),
        ));
        return d.finish(false);
    }
    let request = render::allocation(sku, instance_count(lease));
    match place(&request, lease.spec.host_selector.as_ref(), input.restore_host, input.candidates) {
        Ok(host) => {
            d.object(finding(
                tier::DESIRED,
                reason::NOT_PLACED,
                format!(
                    "the Lease is Pending: it goes to host {host}, the least loaded matching host with room for {} \
                     CPUs and {} MiB",
                    request.cpus, request.memory_mb
                ),
            ));
            if let Some(from) = &lease.spec.restore_from {
                d.note(format!(
                    "the retained volumes of Lease {from} on host {host} are adopted before the containers start"
                ));
            }
            let revision = next_revision(st);
            let mut provision = vec![PlannedAction {
                release: Some(revision),
                ..action("provision", tier::DESIRED, reason::NOT_PROVISIONED)
            }];
            match input.rendered {
                Ok(r) => provision.extend(release_actions(r, revision, input.observed, reason::NOT_PROVISIONED)),
                Err(why) => d.object(finding(
                    tier::DESIRED,
                    reason::INVALID_SPEC,
                    format!("{why}; provisioning retries with backoff until the Lease can be rendered"),
                )),
            }
            let h = d.host(&host);
            h.steps.push(step("place", vec![action("place", tier::DESIRED, reason::NOT_PLACED)]));
            h.steps.push(step("provision", provision));
            d.unreachable(&host, input.observed, "provisioning starts when it answers");
            d.finish(false)
        }
        Err(why) => {
            d.object(finding(tier::DESIRED, why.reason(), why.to_string()));
            if let Unplaceable::InsufficientCapacity { rejected, .. } = &why {
                for r in rejected {
                    d.host(&r.host).findings.push(finding(tier::DESIRED, r.reason.as_str(), r.message.clone()));
                }
            }
            if !matches!(why, Unplaceable::InvalidSelector(_)) {
                d.note(
                    "the Lease stays Pending: the controller tries again with backoff, and at once when a Host or \
                     another Lease changes",
                );
            }
            d.finish(false)
        }
    }
}

/// Provisioning, Updating, Restarting, Failing: the operation goes on.
fn in_progress(mut d: Draft, input: &LeasePlanInput<'_>, st: &LeaseStatus, phase: LeasePhase) -> WorkloadPlan {
    let host = st.host.clone().unwrap_or_default();
    let (name, t, why, release, what) = match phase {
        LeasePhase::Provisioning => (
            "provision",
            tier::DESIRED,
            reason::NOT_PROVISIONED,
            Some(next_revision(st)),
            format!("release {} is being provisioned", next_revision(st)),
        ),
        LeasePhase::Updating => (
            "update",
            tier::DESIRED,
            stack_reason::DESIRED_STATE_CHANGED,
            Some(next_revision(st)),
            format!("release {} is being rolled out", next_revision(st)),
        ),
        LeasePhase::Restarting => {
            let r = active_release(st).map(|r| r.revision).unwrap_or(1);
            ("restart", tier::DESIRED, reason::RESTART_REQUESTED, Some(r), format!("release {r} is being restarted"))
        }
        _ => (
            "diagnose",
            tier::RUNTIME_STATE,
            reason::DIAGNOSING,
            active_release(st).map(|r| r.revision),
            "a container stopped: the failure is being confirmed and diagnosed".to_string(),
        ),
    };
    let progress = berth_crds::common::find_condition(&st.conditions, "Ready")
        .filter(|c| c.status != ConditionStatus::True && !c.message.is_empty() && c.message != st.message)
        .map(|c| c.message.clone());
    let mut message = what;
    if !st.message.is_empty() {
        message.push_str(&format!(": {}", st.message));
    }
    if let Some(p) = progress {
        d.note(format!("progress: {p}"));
    }
    let h = d.host(&host);
    h.findings.push(finding(t, why, message));
    h.steps.push(step(name, vec![PlannedAction { release, in_progress: true, ..action(name, t, why) }]));
    d.unreachable(&host, input.observed, "the operation goes on when it answers");
    d.finish(false)
}

/// Ready and Failed: rollout, restart, and (Ready) the containers' health.
fn settled(mut d: Draft, input: &LeasePlanInput<'_>, st: &LeaseStatus, phase: LeasePhase) -> WorkloadPlan {
    let lease = input.lease;
    let host = st.host.clone().unwrap_or_default();
    if !host.is_empty() {
        d.host(&host);
    }
    let active = active_release(st).map(|r| r.revision);
    let uid = lease.metadata.uid.clone().unwrap_or_default();
    let rendered = match input.rendered {
        Ok(r) => r,
        Err(why) => {
            d.object(finding(
                tier::DESIRED,
                reason::INVALID_SPEC,
                format!("{why}; the running release stays until the Lease can be rendered (condition UpdateBlocked)"),
            ));
            return d.finish(false);
        }
    };
    let next = next_revision(st);
    if needs_rollout(st, &rendered.config_hash) {
        let short = |h: &str| h.chars().take(12).collect::<String>();
        let was = match active.and_then(|a| st.releases.iter().find(|r| r.revision == a)) {
            Some(r) => format!("differs from release {}'s {}", r.revision, short(&r.config_hash)),
            None => "no release runs".to_string(),
        };
        let message = format!("the Lease's services changed: configuration {} {was}", short(&rendered.config_hash));
        // More instances need more room on the Lease's own host.
        let held = st.allocated.clone().unwrap_or_default();
        let wanted = rendered.allocation.clone();
        if wanted.cpus > held.cpus + 1e-9 || wanted.memory_mb > held.memory_mb {
            let mut candidates = input.candidates.to_vec();
            for c in candidates.iter_mut().filter(|c| c.name == host) {
                c.allocated.cpus -= held.cpus;
                c.allocated.memory_mb -= held.memory_mb;
            }
            if let Err(why) = place(&wanted, None, Some(&host), &candidates) {
                let h = d.host(&host);
                h.findings.push(finding(tier::DESIRED, stack_reason::DESIRED_STATE_CHANGED, message));
                h.findings.push(finding(
                    tier::DESIRED,
                    "InsufficientCapacity",
                    format!(
                        "release {next} asks for {} CPUs and {} MiB, more than host {host} has free: {why}; the \
                         running release stays (condition UpdateBlocked) and the controller tries again with backoff",
                        wanted.cpus, wanted.memory_mb
                    ),
                ));
                return d.finish(false);
            }
        }
        let why = stack_reason::DESIRED_STATE_CHANGED;
        let mut actions = vec![PlannedAction { release: Some(next), ..action("update", tier::DESIRED, why) }];
        actions.extend(release_actions(rendered, next, input.observed, why));
        actions.extend(
            owned(input.observed, &uid).into_iter().filter(|c| release_of(c) != Some(next)).map(|c| remove(c, why)),
        );
        d.note(format!(
            "the running release is stopped first; if release {next} fails its startup check it is removed and the \
             previous release started again (RolledBack)"
        ));
        let h = d.host(&host);
        h.findings.push(finding(tier::DESIRED, why, message));
        h.steps.push(step("update", actions));
        d.unreachable(&host, input.observed, "the update starts when it answers");
        return d.finish(false);
    }
    if let Some(last) = st.releases.last()
        && last.config_hash == rendered.config_hash
        && last.outcome != status::ACTIVE
        && last.outcome != status::SUPERSEDED
    {
        d.note(format!(
            "release {} of this configuration ended {}: it is not tried again until the spec changes",
            last.revision, last.outcome
        ));
    }
    if let Some(wanted) = lease.metadata.annotations.as_ref().and_then(|a| a.get(RESTART_ANNOTATION))
        && st.restarted_for.as_deref() != Some(wanted.as_str())
    {
        let r = active.unwrap_or(1);
        let h = d.host(&host);
        h.findings.push(finding(
            tier::DESIRED,
            reason::RESTART_REQUESTED,
            format!("restart requested ({RESTART_ANNOTATION}={wanted}): the containers of release {r} are restarted"),
        ));
        h.steps.push(step(
            "restart",
            vec![PlannedAction { release: Some(r), ..action("restart", tier::DESIRED, reason::RESTART_REQUESTED) }],
        ));
        d.unreachable(&host, input.observed, "the restart starts when it answers");
        return d.finish(false);
    }
    if phase == LeasePhase::Failed {
        d.note(format!(
            "Failed: {}; the containers are kept for inspection until the Lease is closed or expires; update its \
             services or set the {RESTART_ANNOTATION} annotation to run it again",
            if st.message.is_empty() { "see berth describe" } else { st.message.as_str() }
        ));
        return d.finish(true);
    }
    // Ready: every container of the active release must run.
    let listing = match input.observed {
        Observed::Listing(_) => input.observed,
        Observed::Unreachable(_) => {
            d.unreachable(&host, input.observed, "the containers cannot be checked: they may still run");
            return d.finish(false);
        }
        Observed::Nothing => {
            d.host(&host).findings.push(finding(
                tier::RUNTIME_CONFIG,
                reason::HOST_UNREACHABLE,
                format!("host {host} was not listed; the containers cannot be checked"),
            ));
            return d.finish(false);
        }
    };
    let r = active.unwrap_or(1);
    let mine: Vec<&ContainerSummary> = owned(listing, &uid).into_iter().filter(|c| release_of(c) == Some(r)).collect();
    let naming = LeaseNaming::new(lease.namespace_or_default(), lease.name());
    let mut findings = Vec::new();
    let mut actions = Vec::new();
    for svc in &lease.spec.services {
        for i in 0..svc.quantity.max(0) {
            let found = mine.iter().find(|c| {
                c.labels.get(LABEL_SERVICE) == Some(&svc.name)
                    && c.labels.get(LABEL_REPLICA).map(String::as_str) == Some(i.to_string().as_str())
            });
            let (t, why, object, id, state) = match found {
                Some(c) if c.state == ContainerState::Running => continue,
                Some(c) => {
                    let why = match c.state {
                        ContainerState::Restarting => reason::RESTARTING,
                        ContainerState::Paused => reason::PAUSED,
                        _ => stack_reason::NOT_RUNNING,
                    };
                    (tier::RUNTIME_STATE, why, c.name.clone(), Some(c.id.clone()), c.state.as_str().to_string())
                }
                None => (
                    tier::RUNTIME_CONFIG,
                    stack_reason::CONTAINER_MISSING,
                    naming.container(&svc.name, i, r),
                    None,
                    "gone".to_string(),
                ),
            };
            findings.push(Finding {
                service: Some(svc.name.clone()),
                object: Some(object.clone()),
                ..finding(t, why, format!("container {object} of {}-{i} is {state}", svc.name))
            });
            actions.push(PlannedAction {
                container: Some(object),
                id,
                service: Some(svc.name.clone()),
                release: Some(r),
                ..action("diagnose", t, why)
            });
        }
    }
    if actions.is_empty() {
        d.note(format!("release {r} runs on host {host}"));
        return d.finish(true);
    }
    d.note(
        "the controller marks the Lease Failing, confirms by inspection, gathers diagnostics (exit code, OOM, last log \
         lines) and marks it Failed; it does not restart containers by itself: update the Lease or set the \
         berth.dev/restart annotation",
    );
    let h = d.host(&host);
    h.findings.extend(findings);
    h.steps.push(step("diagnose", actions));
    d.finish(false)
}

#[cfg(test)]
mod tests;
