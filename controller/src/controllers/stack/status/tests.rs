//! Status from real passes over a fake host: what a user reads in `kubectl get stack -o yaml`.

use std::collections::HashMap;
use std::time::Duration;

use berth_crds::common::{ConditionStatus, EnvVar, find_condition};
use berth_crds::stack::{DriftPolicy, StackHostPhase, StackPhase, StackStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::controllers::stack::desired_hash;
use crate::controllers::stack::events::Collect;
use crate::controllers::stack::executor::ExecOptions;
use crate::controllers::stack::pass::{HostResult, Mode, reconcile_host};
use crate::controllers::stack::render::{DesiredState, RenderError};
use crate::controllers::stack::testutil::{FakeHost, desired_of, fast, known, sample_stack};

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn input<'a>(
    desired: &'a DesiredState,
    selected: &'a [String],
    hosts: &'a [HostResult],
    policy: DriftPolicy,
    suspended: bool,
) -> StatusInput<'a> {
    StatusInput {
        generation: Some(1),
        desired: Some(desired),
        desired_hash: Some(desired_hash(desired, selected)),
        selected,
        hosts,
        leaving: vec![],
        spec_findings: vec![],
        suspended,
        policy,
        spec_error: None,
        holding_rolled_back: false,
        retry: None,
        now: at(1_000),
    }
}

fn condition<'a>(s: &'a StackStatus, t: &str) -> (&'a str, ConditionStatus, &'a str) {
    let c = find_condition(&s.conditions, t).unwrap_or_else(|| panic!("no condition {t}"));
    (c.reason.as_str(), c.status, c.message.as_str())
}

fn local() -> Vec<String> {
    vec!["local".to_string()]
}

#[tokio::test]
async fn a_converged_stack_is_ready_with_every_container_fact() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    let d = desired_of(&s);
    let sel = local();
    let results = [r];
    let st = build(&StackStatus::default(), &input(&d, &sel, &results, DriftPolicy::Reconcile, false));
    assert_eq!(st.phase, Some(StackPhase::Ready));
    assert_eq!(condition(&st, condition::READY).1, ConditionStatus::True);
    assert_eq!(condition(&st, condition::PROGRESSING).0, "Converged");
    assert_eq!(st.hosts_ready.as_deref(), Some("1/1"));
    assert_eq!(st.applied_hash, st.desired_hash);
    assert_eq!(st.observed_generation, Some(1));
    let db = st.hosts[0].containers.iter().find(|c| c.service == "db").unwrap();
    assert_eq!((db.state.as_str(), db.health.as_str()), ("running", "healthy"));
    assert_eq!(db.name, "shop-db-0");
    assert!(!db.container_id.is_empty() && db.image_id.starts_with("sha256:") && !db.config_hash.is_empty());
    assert_eq!(st.hosts[0].containers.len(), 3);
}

#[tokio::test]
async fn a_suspended_stack_is_never_ready() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let _ = h.pass(&s, false).await;
    let d = desired_of(&s);
    let r = reconcile_host(&h.cx, "uid-1", &d, "local", &Mode::ObserveOnly, true, &HashMap::new(), &Collect::default())
        .await;
    let sel = local();
    let results = [r];
    let st = build(&StackStatus::default(), &input(&d, &sel, &results, DriftPolicy::Reconcile, true));
    assert_eq!(st.phase, Some(StackPhase::Suspended));
    assert_eq!(condition(&st, condition::READY).1, ConditionStatus::False);
    assert_eq!(condition(&st, condition::READY).0, "Suspended");
    assert_eq!(condition(&st, condition::SUSPENDED).1, ConditionStatus::True);
    assert!(condition(&st, condition::SUSPENDED).2.contains("set it to false"));
}

#[tokio::test]
async fn an_unreachable_host_is_shown_and_keeps_the_stack_from_ready() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (first, _) = h.pass(&s, false).await;
    let d = desired_of(&s);
    let sel = local();
    let ready = build(&StackStatus::default(), &input(&d, &sel, &[first], DriftPolicy::Reconcile, false));
    h.pool.set_unreachable("local", "connection refused");
    let (r, _) = h.pass(&s, true).await;
    let results = [r];
    let st = build(&ready, &input(&d, &sel, &results, DriftPolicy::Reconcile, false));
    assert_eq!(st.hosts[0].phase, StackHostPhase::Unreachable);
    assert!(st.hosts[0].message.contains("connection refused"));
    assert_eq!(condition(&st, condition::READY).0, "HostUnreachable");
    assert_eq!(st.phase, Some(StackPhase::Degraded));
    assert_eq!(st.hosts_ready.as_deref(), Some("0/1"));
    assert_eq!(st.applied_hash, ready.applied_hash, "the applied hash stays what it was");
}

#[tokio::test]
async fn report_policy_shows_uncorrected_drift() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.kill_by_hand("shop-web-0");
    h.pool.handle("local").unwrap().invalidate();
    let (r, _) = h.pass_with(&s, DriftPolicy::Report, fast(), true, &known(&r)).await;
    let d = desired_of(&s);
    let sel = local();
    let results = [r];
    let st = build(&StackStatus::default(), &input(&d, &sel, &results, DriftPolicy::Report, false));
    let (reason, status, message) = condition(&st, condition::DRIFTED);
    assert_eq!((reason, status), ("NotRunning", ConditionStatus::True));
    assert!(message.contains("driftPolicy is Report"), "{message}");
    let drift = st.last_drift.clone().unwrap();
    assert_eq!((drift.tier, drift.reason.as_str(), drift.corrected), (3, "NotRunning", false));
    assert_eq!(drift.host, "local");
    assert_eq!(st.phase, Some(StackPhase::Degraded));
    assert_eq!(st.hosts[0].phase, StackHostPhase::Degraded);
    assert!(st.hosts[0].message.contains("shop-web-0 (exited with code 137)"), "{}", st.hosts[0].message);

    // Seen again later: same record, same detection time, so no status write.
    let mut later = input(&d, &sel, &results, DriftPolicy::Report, false);
    later.now = at(2_000);
    let again = build(&st, &later);
    assert_eq!(again, st);
    assert!(patch(&st, &again).is_none());
}

#[tokio::test]
async fn corrected_drift_is_recorded_as_corrected() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.remove_by_hand("shop-web-0");
    h.pool.handle("local").unwrap().invalidate();
    let (r, _) = h.pass_with(&s, DriftPolicy::Reconcile, fast(), true, &known(&r)).await;
    let d = desired_of(&s);
    let sel = local();
    let results = [r];
    let st = build(&StackStatus::default(), &input(&d, &sel, &results, DriftPolicy::Reconcile, false));
    assert_eq!(condition(&st, condition::DRIFTED).1, ConditionStatus::False);
    assert_eq!(condition(&st, condition::DRIFTED).0, "DriftCorrected");
    let drift = st.last_drift.unwrap();
    assert_eq!((drift.tier, drift.reason.as_str(), drift.corrected), (2, "ContainerMissing", true));
    assert_eq!(st.phase, Some(StackPhase::Ready));
}

#[tokio::test]
async fn a_rollback_is_never_success() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    let d0 = desired_of(&s);
    let sel = local();
    let before = build(&StackStatus::default(), &input(&d0, &sel, &[r], DriftPolicy::Reconcile, false));
    let mut changed = s.clone();
    changed.spec.services[2].env.push(EnvVar { name: "X".into(), value: Some("1".into()), value_from: None });
    h.fake.set_auto_healthy(false);
    let opts = ExecOptions { auto_rollback: true, health_timeout: Duration::from_millis(200), ..fast() };
    let (r, _) = h.pass_with(&changed, DriftPolicy::Reconcile, opts, false, &HashMap::new()).await;
    let d = desired_of(&changed);
    let results = [r];
    let st = build(&before, &input(&d, &sel, &results, DriftPolicy::Reconcile, false));
    assert_ne!(st.phase, Some(StackPhase::Ready));
    assert_eq!(st.phase, Some(StackPhase::Degraded));
    assert_eq!(condition(&st, condition::READY).0, "RolledBack");
    assert_eq!(condition(&st, condition::STALLED).0, "RolledBack");
    assert_eq!(condition(&st, condition::DEGRADED).0, "RolledBack");
    assert_eq!(st.rolled_back_hash, Some(desired_hash(&d, &sel)));
    assert_eq!(st.applied_hash, before.applied_hash, "the new configuration is not the applied one");
}

#[test]
fn a_permanent_error_stalls_with_what_to_do() {
    let err = StackError::Render(RenderError::MissingReference {
        kind: "Secret",
        namespace: "default".into(),
        name: "db".into(),
        key: "password".into(),
    });
    let sel = local();
    let input = StatusInput {
        generation: Some(3),
        desired: None,
        desired_hash: None,
        selected: &sel,
        hosts: &[],
        leaving: vec![],
        spec_findings: vec![],
        suspended: false,
        policy: DriftPolicy::Reconcile,
        spec_error: Some(&err),
        holding_rolled_back: false,
        retry: None,
        now: at(5),
    };
    let st = build(&StackStatus::default(), &input);
    assert_eq!(st.phase, Some(StackPhase::Failed));
    let (reason, status, message) = condition(&st, condition::STALLED);
    assert_eq!((reason, status), ("MissingReference", ConditionStatus::True));
    assert!(message.contains("create it or mark the reference optional"), "{message}");
    assert_eq!(condition(&st, condition::READY).1, ConditionStatus::False);
    assert_eq!(condition(&st, condition::PROGRESSING).1, ConditionStatus::False);
    assert_eq!(st.observed_generation, Some(3));
}

#[test]
fn no_selected_host_is_not_ready_and_says_why() {
    let d = DesiredState { networks: vec![], volumes: vec![], services: vec![] };
    let st = build(&StackStatus::default(), &input(&d, &[], &[], DriftPolicy::Reconcile, false));
    assert_eq!(condition(&st, condition::READY).0, "NoHosts");
    assert_eq!(st.phase, Some(StackPhase::Pending));
    assert_eq!(st.applied_hash, None);
}

#[test]
fn patches_null_what_disappeared_and_skip_unchanged_status() {
    let mut old = StackStatus { phase: Some(StackPhase::Progressing), ..Default::default() };
    old.retry = Some(berth_crds::common::RetryStatus { count: 2, last_error: "x".into(), next_attempt: None });
    let new = StackStatus { phase: Some(StackPhase::Ready), ..Default::default() };
    let p = patch(&old, &new).unwrap();
    assert_eq!(p["status"]["phase"], "Ready");
    assert!(p["status"]["retry"].is_null() && p["status"].as_object().unwrap().contains_key("retry"));
    assert!(patch(&new, &new.clone()).is_none());
}

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let d = DesiredState { networks: vec![], volumes: vec![], services: vec![] };
    let first = build(&StackStatus::default(), &input(&d, &[], &[], DriftPolicy::Reconcile, false));
    let mut later = input(&d, &[], &[], DriftPolicy::Reconcile, false);
    later.now = at(9_999);
    let second = build(&first, &later);
    assert_eq!(first, second);
}
