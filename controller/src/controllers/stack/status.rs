//! Status: what a pass found and did, turned into the Stack's `status` (phase, conditions,
//! hashes, per-host and per-replica facts, the last drift, retry state) by a pure function, and
//! the merge patch that writes it only when something changed.
//!
//! Conditions (`Ready`, `Progressing`, `Drifted`, `Degraded`, `Suspended`, `Stalled`) always say
//! why with a CamelCase reason and, when something is wrong, what to do. A suspended Stack is
//! never `Ready`; a rolled-back configuration is never reported as success.

use berth_crds::common::{
    Condition, ConditionStatus, LABEL_CONFIG_HASH, LABEL_REPLICA, LABEL_SERVICE, RetryStatus, set_condition,
};
use berth_crds::stack::{
    ContainerStatus, DriftPolicy, DriftRecord, PublishedPort, StackHostPhase, StackHostStatus, StackPhase, StackStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

use super::error::StackError;
use super::observe::ContainerFacts;
use super::pass::HostResult;
use super::plan::{Finding, tier, without_drift_corrections};
use super::render::DesiredState;
use crate::docker::{ContainerState, HealthState};

/// Condition types.
pub mod condition {
    /// Every service runs as specified on every selected host.
    pub const READY: &str = "Ready";
    /// Changes are being applied (or retried).
    pub const PROGRESSING: &str = "Progressing";
    /// Runtime drift is present (found and not corrected).
    pub const DRIFTED: &str = "Drifted";
    /// Something runs, but not everything as specified.
    pub const DEGRADED: &str = "Degraded";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// A permanent error: berth waits for a change.
    pub const STALLED: &str = "Stalled";
}

/// Everything a status is computed from.
#[derive(Debug)]
pub struct StatusInput<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The rendered desired state (None when rendering failed).
    pub desired: Option<&'a DesiredState>,
    /// Its hash (with the host set).
    pub desired_hash: Option<String>,
    /// Hosts selected.
    pub selected: &'a [String],
    /// Results of the pass, one per selected host.
    pub hosts: &'a [HostResult],
    /// Hosts no longer selected that still run the Stack (berth removes it there when they answer).
    pub leaving: Vec<StackHostStatus>,
    /// Tier-0/1 findings of this pass.
    pub spec_findings: Vec<Finding>,
    /// `spec.suspend`.
    pub suspended: bool,
    /// `spec.driftPolicy`.
    pub policy: DriftPolicy,
    /// A permanent error that prevented the pass (render, selector).
    pub spec_error: Option<&'a StackError>,
    /// The desired configuration was rolled back earlier and is not retried.
    pub holding_rolled_back: bool,
    /// Retry state to show.
    pub retry: Option<RetryStatus>,
    /// Now.
    pub now: Time,
}

fn cond(type_: &str, status: bool, reason: &str, message: impl Into<String>, generation: Option<i64>) -> Condition {
    let mut c = Condition::new(type_, ConditionStatus::from_bool(status), reason, message);
    c.observed_generation = generation;
    c
}

fn container_status(service: &str, replica: i32, name: &str, f: Option<&ContainerFacts>) -> ContainerStatus {
    let Some(f) = f else {
        return ContainerStatus {
            service: service.into(),
            replica,
            name: name.into(),
            state: "missing".into(),
            ..Default::default()
        };
    };
    let s = &f.summary;
    ContainerStatus {
        service: service.into(),
        replica,
        name: s.name.clone(),
        container_id: s.id.clone(),
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        state: s.state.as_str().into(),
        health: s.health.map(|h| h.as_str().to_string()).unwrap_or_default(),
        config_hash: s.labels.get(LABEL_CONFIG_HASH).cloned().unwrap_or_default(),
        restarts: f.restarts,
        ports: s
            .ports
            .iter()
            .map(|p| PublishedPort {
                container_port: p.container_port as i32,
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
                host_port: p.host_port as i32,
            })
            .collect(),
    }
}

/// Readiness of one container as the status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Starting,
    NotReady,
}

fn readiness(f: Option<&ContainerFacts>, has_healthcheck: bool) -> Readiness {
    let Some(f) = f else { return Readiness::NotReady };
    match (f.summary.state, f.summary.health) {
        (ContainerState::Running, _) if !has_healthcheck => Readiness::Ready,
        (ContainerState::Running, Some(HealthState::Healthy)) => Readiness::Ready,
        (ContainerState::Running, Some(HealthState::Starting) | None) => Readiness::Starting,
        _ => Readiness::NotReady,
    }
}

fn facts_for<'f>(facts: &'f [ContainerFacts], service: &str, replica: i32, name: &str) -> Option<&'f ContainerFacts> {
    facts.iter().find(|f| f.summary.name == name).or_else(|| {
        facts.iter().find(|f| {
            f.summary.labels.get(LABEL_SERVICE).map(String::as_str) == Some(service)
                && f.summary.labels.get(LABEL_REPLICA).map(String::as_str) == Some(&replica.to_string())
        })
    })
}

/// The status of one host after a pass.
pub fn host_status(r: &HostResult, desired: Option<&DesiredState>, policy: DriftPolicy) -> StackHostStatus {
    let mut containers = Vec::new();
    let mut starting = Vec::new();
    let mut not_ready = Vec::new();
    if let Some(d) = desired {
        for svc in &d.services {
            for c in &svc.containers {
                let f = facts_for(&r.facts, &svc.name, c.replica, &c.name);
                let cs = container_status(&svc.name, c.replica, &c.name, f);
                match readiness(f, svc.has_healthcheck) {
                    Readiness::Ready => {}
                    Readiness::Starting => {
                        starting.push(format!("{} ({})", cs.name, non_empty(&cs.health, "starting")))
                    }
                    Readiness::NotReady => not_ready.push(format!("{} ({})", cs.name, describe(&cs, f))),
                }
                containers.push(cs);
            }
        }
    }
    let (phase, message) = if let Some(why) = &r.unreachable {
        (
            StackHostPhase::Unreachable,
            format!("{why}; berth changes nothing on this host until it answers again, then catches up by itself"),
        )
    } else if let Some(e) = r.errors.iter().find(|e| e.is_permanent()) {
        (StackHostPhase::Failed, e.to_string())
    } else if let Some(e) = r.errors.first() {
        (StackHostPhase::Progressing, format!("{e}; berth retries with backoff"))
    } else if r.remaining.is_none() {
        (StackHostPhase::Pending, String::new())
    } else if pending_changes(r, policy) {
        (StackHostPhase::Progressing, "changes remain to be applied".into())
    } else if !not_ready.is_empty() {
        let hint = match policy {
            DriftPolicy::Report => "; driftPolicy is Report, so berth does not correct it",
            DriftPolicy::Reconcile => "",
        };
        (StackHostPhase::Degraded, format!("not ready: {}{hint}", not_ready.join(", ")))
    } else if !starting.is_empty() {
        (StackHostPhase::Progressing, format!("waiting for health checks: {}", starting.join(", ")))
    } else {
        (StackHostPhase::Ready, String::new())
    };
    StackHostStatus { host: r.host.clone(), phase, message, containers }
}

fn non_empty<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn describe(cs: &ContainerStatus, f: Option<&ContainerFacts>) -> String {
    match f {
        None => "missing".into(),
        Some(f) if f.oom_killed && f.summary.state != ContainerState::Running => "OOM-killed".into(),
        Some(f) => match (f.summary.state, f.exit_code) {
            (ContainerState::Exited, Some(code)) => format!("exited with code {code}"),
            (ContainerState::Running, _) => format!("running, {}", non_empty(&cs.health, "no health")),
            (state, _) => state.as_str().into(),
        },
    }
}

fn pending_changes(r: &HostResult, policy: DriftPolicy) -> bool {
    let Some(p) = &r.remaining else { return false };
    match policy {
        DriftPolicy::Reconcile => !p.is_converged(),
        DriftPolicy::Report => !without_drift_corrections(p, false).is_converged(),
    }
}

/// Whether some container is still starting (its health check has not passed yet): the
/// controller then looks again soon rather than at the resync interval.
pub fn waiting_for_health(status: &StackStatus) -> bool {
    status.hosts.iter().any(|h| h.containers.iter().any(|c| c.state == "running" && c.health == "starting"))
}

fn drift_record(f: &Finding, host: &str, corrected: bool, now: &Time) -> DriftRecord {
    DriftRecord {
        tier: f.tier,
        reason: f.reason.clone(),
        message: f.message.clone(),
        host: host.to_string(),
        service: f.service.clone().unwrap_or_default(),
        corrected,
        detected_at: Some(now.clone()),
    }
}

/// Runtime (tier 2/3) findings of a pass, with their host.
pub fn runtime_findings(hosts: &[HostResult]) -> Vec<(&str, &Finding)> {
    hosts
        .iter()
        .flat_map(|h| h.findings.iter().filter(|f| f.tier >= tier::RUNTIME_CONFIG).map(move |f| (h.host.as_str(), f)))
        .collect()
}

/// Whether the drift found on host `r` was corrected by the pass.
pub fn corrected(r: &HostResult, policy: DriftPolicy, suspended: bool) -> bool {
    policy == DriftPolicy::Reconcile && !suspended && r.unreachable.is_none() && r.errors.is_empty()
}

/// Computes the new status from the old one and a pass.
pub fn build(old: &StackStatus, input: &StatusInput<'_>) -> StackStatus {
    let g = input.generation;
    let now = input.now.clone();
    let mut s = StackStatus {
        observed_generation: g,
        conditions: old.conditions.clone(),
        desired_hash: input.desired_hash.clone().or_else(|| old.desired_hash.clone()),
        applied_hash: old.applied_hash.clone(),
        last_drift: old.last_drift.clone(),
        rolled_back_hash: old.rolled_back_hash.clone(),
        retry: input.retry.clone(),
        ..Default::default()
    };

    let mut hosts: Vec<StackHostStatus> =
        input.hosts.iter().map(|r| host_status(r, input.desired, input.policy)).collect();
    let ready_hosts = hosts.iter().filter(|h| h.phase == StackHostPhase::Ready).count();
    let selected = input.selected.len();
    s.hosts_ready = Some(format!("{ready_hosts}/{selected}"));
    hosts.extend(input.leaving.iter().cloned());

    let host_errors: Vec<&StackError> = input.hosts.iter().flat_map(|h| h.errors.iter()).collect();
    let permanent: Option<&StackError> =
        input.spec_error.or_else(|| host_errors.iter().copied().find(|e| e.is_permanent()));
    let transient: Option<&StackError> = host_errors.iter().copied().find(|e| !e.is_permanent());
    let unreachable: Vec<&HostResult> = input.hosts.iter().filter(|h| h.unreachable.is_some()).collect();
    let rolled_back = input.holding_rolled_back || input.hosts.iter().any(|h| !h.rolled_back.is_empty());
    let all_applied = selected > 0 && input.hosts.iter().all(HostResult::applied);

    // Hashes.
    if let Some(hash) = &input.desired_hash {
        if input.hosts.iter().any(|h| !h.rolled_back.is_empty()) {
            s.rolled_back_hash = Some(hash.clone());
        } else if old.rolled_back_hash.as_ref() != Some(hash) {
            s.rolled_back_hash = None;
        }
        if all_applied && permanent.is_none() && !input.suspended && !rolled_back {
            s.applied_hash = Some(hash.clone());
        }
    }

    // Drift: runtime drift first, else the spec change of this pass; kept when nothing new.
    let runtime = runtime_findings(input.hosts);
    let new_record = if let Some((host, f)) = runtime.first() {
        let r = input.hosts.iter().find(|h| h.host == *host);
        Some(drift_record(f, host, r.is_some_and(|r| corrected(r, input.policy, input.suspended)), &now))
    } else {
        input.spec_findings.first().map(|f| drift_record(f, "", all_applied, &now))
    };
    if let Some(mut rec) = new_record {
        // The same drift seen again keeps its first detection time (and causes no write).
        if let Some(prev) = &old.last_drift {
            let same = prev.tier == rec.tier
                && prev.reason == rec.reason
                && prev.host == rec.host
                && prev.service == rec.service
                && prev.message == rec.message
                && prev.corrected == rec.corrected;
            if same {
                rec.detected_at = prev.detected_at.clone();
            }
        }
        s.last_drift = Some(rec);
    }
    let uncorrected: Vec<String> = runtime
        .iter()
        .filter(|(host, _)| {
            input.hosts.iter().find(|h| h.host == *host).is_none_or(|r| !corrected(r, input.policy, input.suspended))
        })
        .map(|(host, f)| format!("{host}: {} (tier {})", f.message, f.tier))
        .collect();

    // Conditions.
    let c = &mut s.conditions;
    let suspended_msg = "spec.suspend is true: berth changes nothing on the hosts and does not correct drift; set it to false to resume";
    set_condition(
        c,
        if input.suspended {
            cond(condition::SUSPENDED, true, "Suspended", suspended_msg, g)
        } else {
            cond(condition::SUSPENDED, false, "NotSuspended", "", g)
        },
        now.clone(),
    );
    set_condition(
        c,
        match permanent {
            Some(e) => cond(condition::STALLED, true, e.reason(), e.to_string(), g),
            None if input.holding_rolled_back => cond(
                condition::STALLED,
                true,
                "RolledBack",
                "this configuration was rolled back because it did not become ready; berth does not retry it. \
                 Change the spec (or a referenced Secret/ConfigMap) to try again",
                g,
            ),
            None => cond(condition::STALLED, false, "NotStalled", "", g),
        },
        now.clone(),
    );
    let drifted = if uncorrected.is_empty() {
        match (&runtime.first(), input.policy) {
            (Some((host, f)), _) => cond(
                condition::DRIFTED,
                false,
                "DriftCorrected",
                format!("{host}: {} (tier {}) was corrected", f.message, f.tier),
                g,
            ),
            (None, _) => cond(condition::DRIFTED, false, "NoDrift", "", g),
        }
    } else {
        let reason = runtime.first().map(|(_, f)| f.reason.clone()).unwrap_or_else(|| "Drift".into());
        let hint = if input.suspended {
            "; the Stack is suspended, so berth does not correct it"
        } else if input.policy == DriftPolicy::Report {
            "; driftPolicy is Report, so berth only reports it: correct it by hand or set driftPolicy: Reconcile"
        } else {
            "; berth retries the correction"
        };
        cond(condition::DRIFTED, true, &reason, format!("{}{hint}", uncorrected.join("; ")), g)
    };
    set_condition(c, drifted, now.clone());

    let not_ready_hosts: Vec<String> = hosts
        .iter()
        .filter(|h| h.phase != StackHostPhase::Ready)
        .map(|h| {
            if h.message.is_empty() {
                format!("{}: {:?}", h.host, h.phase)
            } else {
                format!("{}: {}", h.host, h.message)
            }
        })
        .collect();
    let degraded = !unreachable.is_empty()
        || rolled_back
        || hosts.iter().any(|h| {
            matches!(h.phase, StackHostPhase::Degraded | StackHostPhase::Failed | StackHostPhase::Unreachable)
        });
    set_condition(
        c,
        if degraded {
            let reason = if rolled_back {
                "RolledBack"
            } else if !unreachable.is_empty() {
                "HostUnreachable"
            } else {
                "ContainersNotReady"
            };
            cond(condition::DEGRADED, true, reason, not_ready_hosts.join("; "), g)
        } else {
            cond(condition::DEGRADED, false, "NotDegraded", "", g)
        },
        now.clone(),
    );

    let in_progress = !input.suspended
        && permanent.is_none()
        && !input.holding_rolled_back
        && (transient.is_some()
            || !unreachable.is_empty()
            || hosts.iter().any(|h| matches!(h.phase, StackHostPhase::Progressing | StackHostPhase::Pending)));
    set_condition(
        c,
        if input.suspended {
            cond(condition::PROGRESSING, false, "Suspended", "", g)
        } else if permanent.is_some() || input.holding_rolled_back {
            cond(condition::PROGRESSING, false, "Stalled", "berth waits for a change; see the Stalled condition", g)
        } else if let Some(e) = transient {
            cond(
                condition::PROGRESSING,
                true,
                "Retrying",
                format!("{e}; berth retries with backoff (see status.retry)"),
                g,
            )
        } else if !unreachable.is_empty() {
            cond(condition::PROGRESSING, true, "HostUnreachable", not_ready_hosts.join("; "), g)
        } else if in_progress {
            cond(condition::PROGRESSING, true, "Applying", not_ready_hosts.join("; "), g)
        } else {
            cond(condition::PROGRESSING, false, "Converged", "", g)
        },
        now.clone(),
    );

    let all_ready = selected > 0 && ready_hosts == selected && input.leaving.is_empty();
    let ready = if input.suspended {
        cond(condition::READY, false, "Suspended", suspended_msg, g)
    } else if let Some(e) = permanent {
        cond(condition::READY, false, e.reason(), e.to_string(), g)
    } else if rolled_back {
        cond(
            condition::READY,
            false,
            "RolledBack",
            format!("the new configuration did not become ready and was rolled back; {}", not_ready_hosts.join("; ")),
            g,
        )
    } else if selected == 0 {
        cond(
            condition::READY,
            false,
            "NoHosts",
            "spec.hosts selects no host; label a Host to match spec.hosts.selector or name hosts in spec.hosts.names",
            g,
        )
    } else if all_ready {
        cond(
            condition::READY,
            true,
            "AllHostsReady",
            format!("{ready_hosts}/{selected} hosts run every service as specified"),
            g,
        )
    } else if !unreachable.is_empty() {
        cond(condition::READY, false, "HostUnreachable", not_ready_hosts.join("; "), g)
    } else if degraded {
        cond(condition::READY, false, "Degraded", not_ready_hosts.join("; "), g)
    } else {
        cond(condition::READY, false, "Progressing", not_ready_hosts.join("; "), g)
    };
    set_condition(c, ready, now.clone());

    s.phase = Some(if input.suspended {
        StackPhase::Suspended
    } else if permanent.is_some() && !rolled_back {
        StackPhase::Failed
    } else if all_ready {
        StackPhase::Ready
    } else if rolled_back || !unreachable.is_empty() || (degraded && !in_progress) {
        StackPhase::Degraded
    } else if selected == 0 {
        StackPhase::Pending
    } else {
        StackPhase::Progressing
    });
    s.hosts = hosts;
    s
}

/// The status shown while a changed desired state is being rolled out (before the pass says
/// how it went): `Progressing`, and not `Ready` for the new generation yet. Unchanged when the
/// Stack already shows a rollout in progress.
pub fn rolling_out(old: &StackStatus, generation: Option<i64>, hosts: usize, now: Time) -> StackStatus {
    let progressing =
        old.conditions.iter().any(|c| c.type_ == condition::PROGRESSING && c.status == ConditionStatus::True);
    if progressing && old.phase == Some(StackPhase::Progressing) && old.observed_generation == generation {
        return old.clone();
    }
    let mut s = old.clone();
    s.observed_generation = generation;
    s.phase = Some(StackPhase::Progressing);
    let message = format!("applying generation {} on {hosts} host(s)", generation.unwrap_or(0));
    set_condition(
        &mut s.conditions,
        cond(condition::PROGRESSING, true, "Applying", message.clone(), generation),
        now.clone(),
    );
    set_condition(&mut s.conditions, cond(condition::READY, false, "Progressing", message, generation), now);
    s
}

/// The status a Stack being deleted shows: phase `Deleting`, and, when a host blocks the
/// removal, why.
pub fn deleting(old: &StackStatus, generation: Option<i64>, blocked: Option<&StackError>, now: Time) -> StackStatus {
    let mut s = old.clone();
    s.phase = Some(StackPhase::Deleting);
    let c = match blocked {
        Some(e) => cond(condition::READY, false, "DeletionBlocked", e.to_string(), generation),
        None => cond(condition::READY, false, "Deleting", "berth is removing the Stack from its hosts", generation),
    };
    set_condition(&mut s.conditions, c, now.clone());
    let p = match blocked {
        Some(e) => cond(condition::PROGRESSING, true, "DeletionBlocked", e.to_string(), generation),
        None => cond(condition::PROGRESSING, true, "Deleting", "removing containers and networks", generation),
    };
    set_condition(&mut s.conditions, p, now);
    s
}

/// The merge patch that turns `old` into `new` (fields that disappear are set to null), or
/// `None` when nothing changed.
pub fn patch(old: &StackStatus, new: &StackStatus) -> Option<Value> {
    if old == new {
        return None;
    }
    let old_v = serde_json::to_value(old).unwrap_or(Value::Null);
    let mut new_v = serde_json::to_value(new).unwrap_or_else(|_| Value::Object(Map::new()));
    if let (Value::Object(o), Value::Object(n)) = (&old_v, &mut new_v) {
        for k in o.keys() {
            if !n.contains_key(k) {
                n.insert(k.clone(), Value::Null);
            }
        }
    }
    Some(serde_json::json!({ "status": new_v }))
}

#[cfg(test)]
mod tests;
