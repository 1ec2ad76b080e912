//! Pure pieces of Lease status: when a Lease expires, which conditions a phase implies, the
//! release history, and the merge patch that turns the stored status into the new one.

use std::time::Duration;

use berth_crds::Lease;
use berth_crds::common::{Condition, ConditionStatus, set_condition};
use berth_crds::duration::parse_duration;
use berth_crds::lease::{LeasePhase, LeaseRelease, LeaseStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

/// Release outcome: the release runs.
pub const ACTIVE: &str = "Active";
/// Release outcome: replaced by a newer one.
pub const SUPERSEDED: &str = "Superseded";
/// Release outcome: failed its startup check (nothing to go back to).
pub const FAILED: &str = "Failed";
/// Release outcome: failed its startup check; the previous release was put back.
pub const ROLLED_BACK: &str = "RolledBack";
/// Releases kept in status.
pub const MAX_RELEASES: usize = 10;

/// When `lease` expires: `spec.expiresAt`, else its creation plus `spec.duration`, else its
/// creation plus the operator's default duration.
pub fn expires_at(lease: &Lease, default: Duration) -> Timestamp {
    if let Some(t) = &lease.spec.expires_at {
        return t.0;
    }
    let created = lease.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let d = lease.spec.duration.as_deref().and_then(|d| parse_duration(d).ok()).unwrap_or(default);
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
    created.checked_add(jiff::SignedDuration::from_secs(secs)).unwrap_or(Timestamp::MAX)
}

/// The `Ready` condition of a phase (reason and message given by the caller where the phase
/// alone does not say why).
pub fn set_ready(
    st: &mut LeaseStatus,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let mut c = Condition::new("Ready", status, reason, message);
    c.observed_generation = generation;
    set_condition(&mut st.conditions, c, now.clone());
}

/// Sets a condition other than `Ready`.
pub fn set(
    st: &mut LeaseStatus,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let mut c = Condition::new(type_, status, reason, message);
    c.observed_generation = generation;
    set_condition(&mut st.conditions, c, now.clone());
}

/// The release that runs (the last one with outcome Active), if any.
pub fn active_release(st: &LeaseStatus) -> Option<&LeaseRelease> {
    st.releases.iter().rev().find(|r| r.outcome == ACTIVE)
}

/// The number the next release gets.
pub fn next_revision(st: &LeaseStatus) -> i64 {
    st.releases.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Records the outcome of a rollout: the new release with `outcome`; when it became Active, the
/// previous Active one is Superseded. Keeps the last [`MAX_RELEASES`].
pub fn record_release(st: &mut LeaseStatus, release: LeaseRelease) {
    if release.outcome == ACTIVE {
        for r in st.releases.iter_mut().filter(|r| r.outcome == ACTIVE) {
            r.outcome = SUPERSEDED.into();
        }
    }
    st.releases.retain(|r| r.revision != release.revision);
    st.releases.push(release);
    st.releases.sort_by_key(|r| r.revision);
    let excess = st.releases.len().saturating_sub(MAX_RELEASES);
    st.releases.drain(..excess);
}

/// Whether the Lease's services changed since the last rollout was attempted: a new config
/// hash that no release has tried yet. A hash that failed (or was rolled back) is not retried
/// until the spec changes again.
pub fn needs_rollout(st: &LeaseStatus, desired_hash: &str) -> bool {
    match st.releases.last() {
        Some(last) => last.config_hash != desired_hash,
        None => true,
    }
}

/// Sets the phase and when it was entered.
pub fn enter(st: &mut LeaseStatus, phase: LeasePhase, message: String, now: &Time) {
    if st.phase != Some(phase) {
        st.phase_since = Some(now.clone());
    }
    st.phase = Some(phase);
    st.message = message;
}

/// The JSON merge patch (RFC 7386) turning `old` into `new`, under `status`; `None` when equal.
pub fn patch(old: &LeaseStatus, new: &LeaseStatus) -> Option<Value> {
    if old == new {
        return None;
    }
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    Some(serde_json::json!({ "status": merge_diff(&old, &new) }))
}

/// The merge patch from `old` to `new`: objects recursively, removed keys as null, everything
/// else replaced.
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        out.insert(k.clone(), merge_diff(ov, nv));
                    }
                    _ => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use berth_crds::LeaseSpec;
    use berth_crds::lease::LeaseAllocation;
    use serde_json::json;

    use super::*;

    fn lease(duration: Option<&str>, expires: Option<&str>) -> Lease {
        let mut l = Lease::new(
            "l",
            LeaseSpec {
                duration: duration.map(String::from),
                expires_at: expires.map(|e| Time(e.parse().unwrap())),
                ..Default::default()
            },
        );
        l.metadata.creation_timestamp = Some(Time("2026-12-01T10:00:00Z".parse().unwrap()));
        l
    }

    #[test]
    fn expiry_comes_from_expires_at_duration_or_the_default() {
        let hour = Duration::from_secs(3600);
        assert_eq!(expires_at(&lease(Some("90m"), None), hour).to_string(), "2026-12-01T11:30:00Z");
        assert_eq!(expires_at(&lease(None, Some("2026-12-02T00:00:00Z")), hour).to_string(), "2026-12-02T00:00:00Z");
        assert_eq!(expires_at(&lease(None, None), hour).to_string(), "2026-12-01T11:00:00Z");
    }

    fn release(revision: i64, hash: &str, outcome: &str) -> LeaseRelease {
        LeaseRelease {
            revision,
            generation: revision,
            config_hash: hash.into(),
            outcome: outcome.into(),
            message: String::new(),
            started_at: None,
        }
    }

    #[test]
    fn releases_supersede_each_other_and_failed_hashes_are_not_retried() {
        let mut st = LeaseStatus::default();
        assert!(needs_rollout(&st, "a"));
        record_release(&mut st, release(1, "a", ACTIVE));
        assert!(!needs_rollout(&st, "a"));
        assert!(needs_rollout(&st, "b"));
        record_release(&mut st, release(2, "b", ROLLED_BACK));
        assert_eq!(active_release(&st).unwrap().revision, 1, "a rolled-back release leaves the old one active");
        assert!(!needs_rollout(&st, "b"), "the rolled-back hash waits for a spec change");
        record_release(&mut st, release(3, "c", ACTIVE));
        assert_eq!(
            st.releases.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
            [SUPERSEDED, ROLLED_BACK, ACTIVE]
        );
        assert_eq!(next_revision(&st), 4);
        for r in 4..20 {
            record_release(&mut st, release(r, "x", ACTIVE));
        }
        assert_eq!(st.releases.len(), MAX_RELEASES);
        assert_eq!(st.releases.last().unwrap().revision, 19);
    }

    #[test]
    fn the_patch_nulls_what_disappeared_at_every_depth() {
        let old = LeaseStatus {
            host: Some("h".into()),
            allocated: Some(LeaseAllocation { cpus: 1.0, memory_mb: 5 }),
            message: "x".into(),
            ..Default::default()
        };
        let new = LeaseStatus { allocated: Some(LeaseAllocation { cpus: 2.0, memory_mb: 5 }), ..Default::default() };
        assert_eq!(
            patch(&old, &new).unwrap(),
            json!({"status": {"host": null, "message": null, "allocated": {"cpus": 2.0}}})
        );
        assert_eq!(patch(&new, &new), None);
        assert_eq!(merge_diff(&json!({"a": {"b": 1}}), &json!({"a": 3})), json!({"a": 3}));
    }
}
