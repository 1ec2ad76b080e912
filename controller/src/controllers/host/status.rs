//! The pure computation of a Host's status from what the controller observed: conditions
//! `Reachable`, `Ready` and `OrphansBlocked` (with reasons and messages that say what to do),
//! the daemon's facts, the capacity used for placement, how many Stacks and Leases own
//! containers there, and the last orphan scan. [`needs_write`] decides whether the result
//! differs from what is stored, so that a converged host is never rewritten (no write loops).

use std::collections::BTreeSet;

use berth_crds::common::{Condition, ConditionStatus, find_condition, set_condition};
use berth_crds::host::{DaemonInfo, Host, HostCapacity, HostStatus, OrphanScan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::connection::ConnectionState;
use super::link::LinkView;
use super::orphans::{OrphanGate, OwnerKey};
use crate::controllers::pool::HostSnapshot;
use crate::docker::DaemonFacts;

/// Condition: the daemon answers.
pub const REACHABLE: &str = "Reachable";
/// Condition: the host can take work (reachable, and its API version is new enough).
pub const READY: &str = "Ready";
/// Condition: orphan removal is held back until an operator confirms.
pub const ORPHANS_BLOCKED: &str = "OrphansBlocked";

/// Condition reasons.
pub mod reason {
    /// Reachable: the connection is up.
    pub const CONNECTED: &str = "Connected";
    /// Reachable/Ready: the first connection attempt is under way.
    pub const CONNECTING: &str = "Connecting";
    /// Reachable/Ready: the daemon does not answer.
    pub const UNREACHABLE: &str = "Unreachable";
    /// Ready: all good.
    pub const DAEMON_READY: &str = "DaemonReady";
    /// Ready: the negotiated API version is older than berth supports.
    pub const API_VERSION_TOO_OLD: &str = "ApiVersionTooOld";
    /// OrphansBlocked: gate StoreNotEmpty failed.
    pub const POSSIBLE_STORE_LOSS: &str = "PossibleStoreLoss";
    /// OrphansBlocked: gate BelowThreshold failed.
    pub const THRESHOLD_EXCEEDED: &str = "ThresholdExceeded";
    /// OrphansBlocked: nothing blocks removal.
    pub const NOT_BLOCKED: &str = "NotBlocked";
    /// OrphansBlocked: the policy only reports orphans.
    pub const REPORT_ONLY: &str = "ReportOnly";
    /// OrphansBlocked: the last scan could not look (caches or listing incomplete).
    pub const NOT_SCANNED: &str = "NotScanned";
}

/// Oldest Docker API version berth works with (Docker Engine 20.10).
pub const MIN_API_VERSION: (u32, u32) = (1, 41);

/// Parses `1.41` into `(1, 41)`.
pub fn parse_api_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The Host as last read (its stored status included).
    pub host: &'a Host,
    /// The connection.
    pub link: &'a LinkView,
    /// Stacks and Leases owning containers on the host, when the host was listed.
    pub owner_counts: Option<(i64, i64)>,
    /// This reconcile's orphan scan (stamped with `now`).
    pub scan: OrphanScan,
    /// The clock.
    pub now: Time,
}

/// Distinct Stacks and Leases in the store that own containers in `snapshot`.
pub fn owner_counts(snapshot: &HostSnapshot, owners: &BTreeSet<OwnerKey>) -> (i64, i64) {
    let on_host: BTreeSet<&OwnerKey> = snapshot
        .containers
        .iter()
        .filter_map(|c| OwnerKey::from_labels(&c.labels))
        .filter_map(|k| owners.get(&k))
        .collect();
    let count = |kind: &str| on_host.iter().filter(|k| k.kind == kind).count() as i64;
    (count("Stack"), count("Lease"))
}

fn daemon_info(f: &DaemonFacts) -> DaemonInfo {
    DaemonInfo {
        version: f.version.clone(),
        api_version: f.api_version.clone(),
        os: f.os.clone(),
        arch: f.arch.clone(),
        cpus: f.cpus,
        memory_mb: f.memory_bytes / (1024 * 1024),
        name: f.name.clone(),
    }
}

/// A scan without the parts that change at every scan by themselves (time, ages).
fn scan_findings(scan: &OrphanScan) -> OrphanScan {
    let mut s = scan.clone();
    s.time = None;
    for o in &mut s.orphans {
        o.age_seconds = 0;
    }
    s
}

/// The status the Host should have.
pub fn desired_status(input: &StatusInput<'_>) -> HostStatus {
    let old = input.host.status.clone().unwrap_or_default();
    let generation = input.host.metadata.generation;
    let endpoint = &input.link.endpoint;
    let mut conditions = old.conditions.clone();
    let mut set = |mut c: Condition| {
        c.observed_generation = generation;
        set_condition(&mut conditions, c, input.now.clone());
    };

    let daemon = input.link.facts.as_ref().map(daemon_info).or(old.daemon.clone());
    match (&input.link.state, input.link.state.error()) {
        (ConnectionState::Connected, _) => {
            let facts = input.link.facts.as_ref();
            let version = facts.map(|f| f.version.as_str()).unwrap_or("?");
            set(Condition::new(
                REACHABLE,
                ConditionStatus::True,
                reason::CONNECTED,
                format!("Docker Engine {version} answers at {endpoint}"),
            ));
            let api = facts.map(|f| f.api_version.as_str()).unwrap_or("");
            match parse_api_version(api) {
                Some(v) if v >= MIN_API_VERSION => set(Condition::new(
                    READY,
                    ConditionStatus::True,
                    reason::DAEMON_READY,
                    format!("the daemon speaks Docker API {api}; the host takes work"),
                )),
                _ => set(Condition::new(
                    READY,
                    ConditionStatus::False,
                    reason::API_VERSION_TOO_OLD,
                    format!(
                        "the daemon negotiated Docker API {api:?}, older than the {}.{} berth needs: upgrade Docker \
                         Engine on this host to 20.10 or newer",
                        MIN_API_VERSION.0, MIN_API_VERSION.1
                    ),
                )),
            }
        }
        (_, Some(error)) => {
            set(Condition::new(
                REACHABLE,
                ConditionStatus::False,
                reason::UNREACHABLE,
                format!("{error}; berth keeps retrying with backoff"),
            ));
            set(Condition::new(
                READY,
                ConditionStatus::False,
                reason::UNREACHABLE,
                format!("the daemon at {endpoint} does not answer (see condition Reachable); no work is placed here"),
            ));
        }
        (_, None) => {
            let msg = format!("connecting to the daemon at {endpoint}");
            set(Condition::new(REACHABLE, ConditionStatus::Unknown, reason::CONNECTING, msg.clone()));
            set(Condition::new(READY, ConditionStatus::Unknown, reason::CONNECTING, msg));
        }
    }

    set(orphans_blocked(&input.scan));

    let (stacks, leases) = input.owner_counts.unwrap_or((old.stacks, old.leases));
    let capacity = capacity(input.host.spec.capacity.as_ref(), daemon.as_ref());
    // Keep the stored scan when its findings are the same, so that a converged host's status
    // stays byte-identical across resyncs.
    let scan = match &old.orphan_scan {
        Some(prev) if scan_findings(prev) == scan_findings(&input.scan) => prev.clone(),
        _ => input.scan.clone(),
    };
    HostStatus {
        observed_generation: generation,
        conditions,
        daemon,
        capacity,
        allocated: old.allocated.clone(),
        stacks,
        leases,
        orphan_scan: Some(scan),
    }
}

fn orphans_blocked(scan: &OrphanScan) -> Condition {
    let gate = |g: OrphanGate| scan.gates.iter().find(|r| r.gate == g.as_str());
    let failed = |g: OrphanGate| gate(g).filter(|r| !r.passed);
    if let Some(r) = failed(OrphanGate::CachesSynced).or(failed(OrphanGate::ListingComplete)) {
        return Condition::new(ORPHANS_BLOCKED, ConditionStatus::Unknown, reason::NOT_SCANNED, r.message.clone());
    }
    if scan.requested_action == "Report" {
        return Condition::new(
            ORPHANS_BLOCKED,
            ConditionStatus::False,
            reason::REPORT_ONLY,
            format!(
                "orphans.action is Report: {} orphans are reported, none is removed (see status.orphanScan)",
                scan.orphans.len()
            ),
        );
    }
    if let Some(r) = failed(OrphanGate::StoreNotEmpty) {
        return Condition::new(ORPHANS_BLOCKED, ConditionStatus::True, reason::POSSIBLE_STORE_LOSS, r.message.clone());
    }
    if let Some(r) = failed(OrphanGate::BelowThreshold) {
        return Condition::new(ORPHANS_BLOCKED, ConditionStatus::True, reason::THRESHOLD_EXCEEDED, r.message.clone());
    }
    Condition::new(ORPHANS_BLOCKED, ConditionStatus::False, reason::NOT_BLOCKED, "no orphan removal is blocked")
}

/// Placement capacity: each field of the override when set, else what the daemon reports.
pub fn capacity(spec: Option<&HostCapacity>, daemon: Option<&DaemonInfo>) -> Option<HostCapacity> {
    let spec = spec.cloned().unwrap_or_default();
    let c = HostCapacity {
        cpus: spec.cpus.or(daemon.filter(|d| d.cpus > 0).map(|d| d.cpus as f64)),
        memory_mb: spec.memory_mb.or(daemon.filter(|d| d.memory_mb > 0).map(|d| d.memory_mb)),
        disk_mb: spec.disk_mb,
    };
    (c != HostCapacity::default()).then_some(c)
}

/// Whether `new` differs from the stored status (so a write is needed).
pub fn needs_write(old: Option<&HostStatus>, new: &HostStatus) -> bool {
    old != Some(new)
}

/// The JSON merge patch (RFC 7386) that turns the stored status into `new`, with only what
/// differs: changed fields, and an explicit `null` for every field the stored status has and
/// `new` lacks (berth omits empty fields when it serializes). Unchanged fields are left out, so
/// a field another controller maintains (`allocated`, written by the Lease controller) is never
/// overwritten with an older value.
pub fn status_patch(old: Option<&HostStatus>, new: &HostStatus) -> serde_json::Value {
    let new = serde_json::to_value(new).unwrap_or_default();
    let old = old.and_then(|o| serde_json::to_value(o).ok()).unwrap_or(serde_json::Value::Null);
    serde_json::json!({ "status": merge_diff(&old, &new).unwrap_or_else(|| serde_json::json!({})) })
}

/// What changes `old` into `new` as a merge patch; `None` when they are equal.
fn merge_diff(old: &serde_json::Value, new: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, nv) in n {
                let diff = match o.get(k) {
                    Some(ov) => merge_diff(ov, nv),
                    None => Some(nv.clone()),
                };
                if let Some(d) = diff {
                    out.insert(k.clone(), d);
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Some(Value::Object(out))
        }
        _ => Some(new.clone()),
    }
}

/// The condition of a type, for event decisions.
pub fn condition<'a>(status: Option<&'a HostStatus>, type_: &str) -> Option<&'a Condition> {
    status.and_then(|s| find_condition(&s.conditions, type_))
}

#[cfg(test)]
mod tests {
    use berth_crds::host::{GateResult, HostSpec};
    use jiff::Timestamp;

    use super::*;

    fn host(status: Option<HostStatus>, capacity: Option<HostCapacity>) -> Host {
        let mut h =
            Host::new("edge-1", HostSpec { endpoint: "tcp://10.0.0.5:2376".into(), capacity, ..Default::default() });
        h.metadata.generation = Some(3);
        h.status = status;
        h
    }

    fn facts(api: &str) -> DaemonFacts {
        DaemonFacts {
            version: "20.10.24".into(),
            api_version: api.into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpus: 8,
            memory_bytes: 16 * 1024 * 1024 * 1024,
            name: "edge-1".into(),
        }
    }

    fn link(state: ConnectionState, api: Option<&str>) -> LinkView {
        LinkView { endpoint: "tcp://10.0.0.5:2376".into(), state, facts: api.map(facts) }
    }

    fn scan(gates: &[(&str, bool)], action: &str) -> OrphanScan {
        OrphanScan {
            requested_action: action.into(),
            effective_action: "None".into(),
            gates: gates
                .iter()
                .map(|(g, p)| GateResult { gate: g.to_string(), passed: *p, message: format!("{g} says so") })
                .collect(),
            ..Default::default()
        }
    }

    fn all_pass() -> OrphanScan {
        scan(
            &[
                ("CachesSynced", true),
                ("ListingComplete", true),
                ("StoreNotEmpty", true),
                ("BelowThreshold", true),
                ("MinAge", true),
                ("VolumesKept", true),
            ],
            "Remove",
        )
    }

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn compute(h: &Host, l: &LinkView, scan: OrphanScan, now: i64) -> HostStatus {
        desired_status(&StatusInput { host: h, link: l, owner_counts: Some((2, 1)), scan, now: t(now) })
    }

    fn cond(s: &HostStatus, ty: &str) -> (ConditionStatus, String) {
        let c = find_condition(&s.conditions, ty).unwrap();
        (c.status, c.reason.clone())
    }

    #[test]
    fn reachable_and_ready_follow_the_connection_and_the_api_version() {
        use ConditionStatus::*;
        let cases = [
            (link(ConnectionState::Connected, Some("1.41")), (True, "Connected"), (True, "DaemonReady")),
            (link(ConnectionState::Connected, Some("1.43")), (True, "Connected"), (True, "DaemonReady")),
            (link(ConnectionState::Connected, Some("1.40")), (True, "Connected"), (False, "ApiVersionTooOld")),
            (link(ConnectionState::Disconnected, None), (Unknown, "Connecting"), (Unknown, "Connecting")),
            (
                link(ConnectionState::Connecting { attempt: 1, last_error: None }, None),
                (Unknown, "Connecting"),
                (Unknown, "Connecting"),
            ),
            (
                link(ConnectionState::Failed { attempt: 1, error: "connection refused".into() }, None),
                (False, "Unreachable"),
                (False, "Unreachable"),
            ),
            (
                link(ConnectionState::Lost { error: "ping failed".into() }, Some("1.41")),
                (False, "Unreachable"),
                (False, "Unreachable"),
            ),
            (
                link(ConnectionState::Connecting { attempt: 4, last_error: Some("refused".into()) }, None),
                (False, "Unreachable"),
                (False, "Unreachable"),
            ),
        ];
        for (l, reachable, ready) in cases {
            let s = compute(&host(None, None), &l, all_pass(), 100);
            assert_eq!(cond(&s, REACHABLE), (reachable.0, reachable.1.to_string()), "{:?}", l.state);
            assert_eq!(cond(&s, READY), (ready.0, ready.1.to_string()), "{:?}", l.state);
            assert_eq!(s.observed_generation, Some(3));
        }
        let s = compute(
            &host(None, None),
            &link(ConnectionState::Lost { error: "ping failed: timeout".into() }, None),
            all_pass(),
            1,
        );
        let msg = &find_condition(&s.conditions, REACHABLE).unwrap().message;
        assert!(msg.contains("ping failed: timeout") && msg.contains("retrying"), "{msg}");
        let s = compute(&host(None, None), &link(ConnectionState::Connected, Some("1.40")), all_pass(), 1);
        let msg = &find_condition(&s.conditions, READY).unwrap().message;
        assert!(msg.contains("upgrade Docker"), "{msg}");
    }

    #[test]
    fn facts_and_capacity_come_from_the_daemon_unless_overridden_and_survive_an_outage() {
        let s = compute(&host(None, None), &link(ConnectionState::Connected, Some("1.41")), all_pass(), 1);
        let d = s.daemon.clone().unwrap();
        assert_eq!((d.version.as_str(), d.api_version.as_str(), d.cpus, d.memory_mb), ("20.10.24", "1.41", 8, 16384));
        assert_eq!(s.capacity, Some(HostCapacity { cpus: Some(8.0), memory_mb: Some(16384), disk_mb: None }));
        assert_eq!((s.stacks, s.leases), (2, 1));

        let over = HostCapacity { cpus: Some(2.0), memory_mb: None, disk_mb: Some(1000) };
        let s2 =
            compute(&host(Some(s.clone()), Some(over)), &link(ConnectionState::Connected, Some("1.41")), all_pass(), 2);
        assert_eq!(s2.capacity, Some(HostCapacity { cpus: Some(2.0), memory_mb: Some(16384), disk_mb: Some(1000) }));

        // Unreachable now: the facts of the last connection and the last counts stay.
        let lost = link(ConnectionState::Lost { error: "gone".into() }, None);
        let s3 = desired_status(&StatusInput {
            host: &host(Some(s.clone()), None),
            link: &lost,
            owner_counts: None,
            scan: all_pass(),
            now: t(3),
        });
        assert_eq!(s3.daemon, s.daemon);
        assert_eq!((s3.stacks, s3.leases), (2, 1));
    }

    #[test]
    fn orphans_blocked_says_why() {
        use ConditionStatus::*;
        let gates = |failing: &str| -> Vec<(&str, bool)> {
            ["CachesSynced", "ListingComplete", "StoreNotEmpty", "BelowThreshold", "MinAge", "VolumesKept"]
                .into_iter()
                .map(|g| (g, g != failing))
                .collect()
        };
        let cases = [
            ("", "Remove", (False, "NotBlocked")),
            ("MinAge", "Remove", (False, "NotBlocked")),
            ("StoreNotEmpty", "Remove", (True, "PossibleStoreLoss")),
            ("BelowThreshold", "Remove", (True, "ThresholdExceeded")),
            ("BelowThreshold", "Report", (False, "ReportOnly")),
            ("CachesSynced", "Remove", (Unknown, "NotScanned")),
            ("ListingComplete", "Report", (Unknown, "NotScanned")),
        ];
        for (failing, action, want) in cases {
            let s = compute(
                &host(None, None),
                &link(ConnectionState::Connected, Some("1.41")),
                scan(&gates(failing), action),
                1,
            );
            assert_eq!(cond(&s, ORPHANS_BLOCKED), (want.0, want.1.to_string()), "{failing} {action}");
        }
    }

    #[test]
    fn a_rescan_with_the_same_findings_writes_nothing() {
        let l = link(ConnectionState::Connected, Some("1.41"));
        let mut first_scan = all_pass();
        first_scan.time = Some(t(100));
        first_scan.orphans.push(berth_crds::host::OrphanRecord {
            object: "container".into(),
            name: "shop-web-0".into(),
            id: "c1".into(),
            owner: "Stack/default/shop".into(),
            owner_uid: "u".into(),
            age_seconds: 10,
            action: "Reported".into(),
        });
        let first = compute(&host(None, None), &l, first_scan.clone(), 100);
        assert!(needs_write(None, &first));
        let stored = host(Some(first.clone()), None);

        // Later: same findings, older objects, new scan time.
        let mut again = first_scan.clone();
        again.time = Some(t(160));
        again.orphans[0].age_seconds = 70;
        let second = compute(&stored, &l, again.clone(), 160);
        assert!(!needs_write(stored.status.as_ref(), &second), "{second:#?}");

        // Different findings: written, with the new time, and the Reachable transition time kept.
        again.orphans[0].action = "Removed".into();
        let third = compute(&stored, &l, again, 220);
        assert!(needs_write(stored.status.as_ref(), &third));
        assert_eq!(third.orphan_scan.as_ref().unwrap().time, Some(t(160)));
        assert_eq!(find_condition(&third.conditions, REACHABLE).unwrap().last_transition_time, Some(t(100)));
    }

    #[test]
    fn the_status_patch_holds_only_changes_and_clears_fields_that_disappeared() {
        let allocated = Some(HostCapacity { cpus: Some(1.0), ..Default::default() });
        let mut old = HostStatus { stacks: 3, leases: 1, allocated: allocated.clone(), ..Default::default() };
        old.orphan_scan = Some(OrphanScan { blocked_by: "BelowThreshold".into(), removed: 2, ..all_pass() });
        let new = HostStatus { leases: 1, allocated, orphan_scan: Some(all_pass()), ..Default::default() };
        let patch = status_patch(Some(&old), &new);
        assert_eq!(
            patch,
            serde_json::json!({"status": {"stacks": null, "orphanScan": {"blockedBy": null, "removed": null}}}),
            "unchanged fields (leases, allocated, gates) are left out"
        );
        // Applying it to the old status yields exactly the new one.
        let mut doc = serde_json::json!({ "status": serde_json::to_value(&old).unwrap() });
        json_patch::merge(&mut doc, &patch);
        assert_eq!(serde_json::from_value::<HostStatus>(doc["status"].clone()).unwrap(), new);
        // From nothing: the whole status.
        assert_eq!(status_patch(None, &new)["status"], serde_json::to_value(&new).unwrap());
    }

    #[test]
    fn owners_are_counted_once_per_kind_and_only_when_known() {
        use std::collections::BTreeMap;

        use berth_crds::common::{LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID};
        let c = |kind: &str, name: &str| crate::docker::ContainerSummary {
            id: format!("{kind}-{name}"),
            name: name.into(),
            image: String::new(),
            image_id: String::new(),
            labels: BTreeMap::from([
                (LABEL_OWNER_KIND.to_string(), kind.to_string()),
                (LABEL_OWNER_NAMESPACE.to_string(), "ns".to_string()),
                (LABEL_OWNER_NAME.to_string(), name.to_string()),
                (LABEL_OWNER_UID.to_string(), format!("uid-{name}")),
            ]),
            state: crate::docker::ContainerState::Running,
            health: None,
            created: 0,
            ports: vec![],
        };
        let snapshot = HostSnapshot {
            containers: vec![c("Stack", "a"), c("Stack", "a"), c("Stack", "b"), c("Lease", "l"), c("Stack", "gone")],
            ..Default::default()
        };
        let key = |kind: &str, name: &str| OwnerKey {
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        };
        let owners =
            [key("Stack", "a"), key("Stack", "b"), key("Lease", "l"), key("Stack", "elsewhere")].into_iter().collect();
        assert_eq!(owner_counts(&snapshot, &owners), (2, 1));
    }
}
