//! One reconcile pass of a Stack on one host, without the API: observe (shared listing), plan
//! (pure), keep what the drift policy allows, execute, and observe again so that status reports
//! what the host runs after the pass rather than what berth hoped for. Also the removal of a
//! Stack from a host (deletion, or a host no longer selected).
//!
//! Nothing here touches a host the pool marks unreachable: such a host gets no call at all.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_crds::stack::DriftPolicy;

use super::error::StackError;
use super::events::{Note, Notify, reason as ev};
use super::executor::{ExecOptions, Executor};
use super::observe::{ContainerFacts, ObserveCaches, observe_host};
use super::plan::{Finding, HostPlan, plan, without_drift_corrections};
use super::render::{DesiredState, redact};
use crate::controllers::pool::{HostPool, Reachability};

/// What every pass needs besides the Stack: the hosts and the caches.
#[derive(Debug)]
pub struct PassContext {
    /// Connections and shared snapshots.
    pub pool: Arc<HostPool>,
    /// This installation's instance name.
    pub instance: String,
    /// Image ids and containers changed since their last inspection.
    pub caches: ObserveCaches,
    /// Oldest shared snapshot a pass may use (snapshots are invalidated by Docker events and by
    /// berth's own changes, so this only bounds what a missed event could hide).
    pub max_age: Duration,
}

impl PassContext {
    /// A context over `pool` for `instance`.
    pub fn new(pool: Arc<HostPool>, instance: &str) -> Self {
        Self {
            pool,
            instance: instance.to_string(),
            caches: ObserveCaches::default(),
            max_age: Duration::from_secs(10),
        }
    }
}

/// What a pass may change on a host.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Apply the plan as the drift policy allows.
    Apply {
        /// `Reconcile` or `Report`.
        policy: DriftPolicy,
        /// Rollout settings.
        exec: ExecOptions,
    },
    /// Change nothing (suspended, or a rolled-back configuration waiting for a new spec).
    ObserveOnly,
}

/// The outcome of a pass on one host.
#[derive(Debug, Default)]
pub struct HostResult {
    /// Host name.
    pub host: String,
    /// Why the host could not be reached, if it could not.
    pub unreachable: Option<String>,
    /// What the plan found before anything was changed.
    pub findings: Vec<Finding>,
    /// Whether anything was changed.
    pub mutated: bool,
    /// What failed.
    pub errors: Vec<StackError>,
    /// Services whose new configuration was rolled back.
    pub rolled_back: BTreeSet<String>,
    /// The plan against the host as it is after the pass (what still differs).
    pub remaining: Option<HostPlan>,
    /// The Stack's containers after the pass.
    pub facts: Vec<ContainerFacts>,
}

impl HostResult {
    /// Whether the desired state is applied on this host: reachable, nothing failed, and nothing
    /// but runtime-state corrections (starts, restarts) left to do.
    pub fn applied(&self) -> bool {
        self.unreachable.is_none()
            && self.errors.is_empty()
            && self.remaining.as_ref().is_some_and(|p| without_drift_corrections(p, false).is_converged())
    }
}

/// Runs one pass of the Stack `owner_uid` on `host`.
///
/// `previously_applied`: the desired state is the one applied last (differences are drift).
/// `known_restarts`: restart counts from the last status, by container id.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_host(
    cx: &PassContext,
    owner_uid: &str,
    desired: &DesiredState,
    host: &str,
    mode: &Mode,
    previously_applied: bool,
    known_restarts: &HashMap<String, i64>,
    notify: &dyn Notify,
) -> HostResult {
    let mut result = HostResult { host: host.to_string(), ..Default::default() };
    let handle = match cx.pool.get(host) {
        Ok(h) => h,
        Err(_) => {
            result.unreachable = Some(why_unreachable(cx, host));
            return result;
        }
    };
    let secrets = desired.secret_values();
    let observe = || observe_host(&handle, &cx.instance, owner_uid, desired, cx.max_age, &cx.caches, known_restarts);
    let observed = match observe().await {
        Ok(o) => o,
        Err(e) if e.is_unreachable() => {
            result.unreachable = Some(redact(&e.to_string(), &secrets));
            return result;
        }
        Err(e) => {
            result.errors.push(StackError::docker(host, "listing the host's containers", &e, &secrets));
            return result;
        }
    };
    let found = plan(host, desired, &observed.observation, owner_uid, previously_applied);
    result.findings = found.findings.clone();
    let to_run = match mode {
        Mode::Apply { policy: DriftPolicy::Reconcile, .. } => found.clone(),
        Mode::Apply { policy: DriftPolicy::Report, .. } => without_drift_corrections(&found, previously_applied),
        Mode::ObserveOnly => HostPlan { host: host.to_string(), findings: found.findings.clone(), steps: vec![] },
    };
    let Mode::Apply { exec, .. } = mode else {
        result.remaining = Some(found);
        result.facts = observed.facts;
        return result;
    };
    if to_run.is_converged() {
        result.remaining = Some(found);
        result.facts = observed.facts;
        return result;
    }
    let outcome = Executor::new(&handle, desired, &observed.observation, exec, notify)
        .with_caches(&cx.caches)
        .execute(&to_run)
        .await;
    result.mutated = outcome.mutated;
    result.rolled_back = outcome.rolled_back;
    result.errors = outcome.errors;
    if result.errors.iter().any(StackError::is_unreachable) {
        result.unreachable = result.errors.iter().find(|e| e.is_unreachable()).map(|e| e.to_string());
        result.errors.retain(|e| !e.is_unreachable());
        return result;
    }
    match observe().await {
        Ok(after) => {
            result.remaining = Some(plan(host, desired, &after.observation, owner_uid, true));
            result.facts = after.facts;
        }
        Err(e) if e.is_unreachable() => result.unreachable = Some(redact(&e.to_string(), &secrets)),
        Err(e) => result.errors.push(StackError::docker(host, "listing the host's containers", &e, &secrets)),
    }
    result
}

fn why_unreachable(cx: &PassContext, host: &str) -> String {
    match cx.pool.get(host) {
        Err(Reachability::Unreachable(why)) => why,
        _ => format!("host {host} is not connected"),
    }
}

/// Removes everything of Stack `owner_uid` from `host`: containers (stopped gracefully) and
/// networks, and the volumes named in `remove_volumes` (those with `retain: false`); other
/// volumes are kept and reported. An unreachable host is left alone and reported as
/// [`StackError::DeletionBlocked`].
pub async fn remove_from_host(
    cx: &PassContext,
    owner_uid: &str,
    host: &str,
    remove_volumes: &[String],
    keep_volumes: &[String],
    notify: &dyn Notify,
) -> Result<(), StackError> {
    let blocked = |message: String| StackError::DeletionBlocked {
        host: host.to_string(),
        message: format!(
            "{message}; berth keeps the Stack (and its finalizer) until the host answers, then removes its \
             containers. To abandon them instead, remove the finalizer berth.dev/stack-cleanup by hand"
        ),
    };
    let handle = match cx.pool.get(host) {
        Ok(h) => h,
        Err(_) => return Err(blocked(why_unreachable(cx, host))),
    };
    let empty = DesiredState { networks: vec![], volumes: vec![], services: vec![] };
    let observed =
        match observe_host(&handle, &cx.instance, owner_uid, &empty, Duration::ZERO, &cx.caches, &HashMap::new()).await
        {
            Ok(o) => o,
            Err(e) if e.is_unreachable() => return Err(blocked(e.to_string())),
            Err(e) => return Err(StackError::docker(host, "listing the host's containers", &e, &[])),
        };
    let removal = plan(host, &empty, &observed.observation, owner_uid, false);
    let opts = ExecOptions::default();
    let outcome = Executor::new(&handle, &empty, &observed.observation, &opts, notify).execute(&removal).await;
    if let Some(e) = outcome.errors.into_iter().next() {
        return Err(if e.is_unreachable() { blocked(e.to_string()) } else { e });
    }
    for v in remove_volumes {
        // Only a volume berth (this installation) created: a same-named volume made by hand is
        // never removed.
        if !observed.observation.volumes.iter().any(|o| &o.name == v) {
            continue;
        }
        match handle.docker.remove_volume(v).await {
            Ok(()) => {
                handle.invalidate();
                notify.note(Note::normal(
                    ev::VOLUME_REMOVED,
                    "Remove",
                    format!("host {host}: removed volume {v} (retain: false)"),
                ));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_unreachable() => return Err(blocked(e.to_string())),
            Err(e) => return Err(StackError::docker(host, format!("removing volume {v}"), &e, &[])),
        }
    }
    for v in keep_volumes {
        if observed.observation.volumes.iter().any(|o| &o.name == v) {
            notify.note(Note::normal(
                ev::VOLUME_RETAINED,
                "Keep",
                format!("host {host}: kept volume {v} (retain: true)"),
            ));
        }
    }
    if outcome.mutated {
        notify.note(Note::normal(
            ev::CLEANED_UP,
            "Remove",
            format!("host {host}: removed the Stack's containers and networks"),
        ));
    }
    Ok(())
}
