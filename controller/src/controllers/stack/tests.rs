//! Wiring-level pure functions of the Stack controller.

use super::*;
use crate::controllers::stack::testutil::{desired_of, sample_stack};

#[test]
fn the_desired_hash_covers_the_hosts() {
    let d = desired_of(&sample_stack("shop", "uid-1"));
    let one = desired_hash(&d, &["local".into()]);
    assert_eq!(one, desired_hash(&d, &["local".into()]));
    assert_ne!(one, desired_hash(&d, &["local".into(), "edge-1".into()]), "a new host is a change to roll out");
    assert_ne!(one, d.hash());
}

#[test]
fn docker_events_that_can_mean_drift_trigger_a_reconcile() {
    let yes = [
        ("container", "die"),
        ("container", "destroy"),
        ("container", "oom"),
        ("container", "health_status: unhealthy"),
        ("container", "health_status: healthy"),
        ("container", "start"),
        ("network", "destroy"),
    ];
    let no = [("container", "exec_start: sh"), ("container", "attach"), ("container", "create"), ("image", "pull")];
    for (k, a) in yes {
        assert!(relevant_event(k, a), "{k} {a}");
    }
    for (k, a) in no {
        assert!(!relevant_event(k, a), "{k} {a}");
    }
}

#[test]
fn spec_findings_are_tiers_0_and_1_without_any_docker_call() {
    let mut s = sample_stack("shop", "uid-1");
    s.metadata.generation = Some(2);
    let old = StackStatus { observed_generation: Some(1), ..Default::default() };
    let f = spec_findings(&s, &old, false);
    assert_eq!(
        f.iter().map(|f| (f.tier, f.reason.as_str())).collect::<Vec<_>>(),
        [(0, "SpecChanged"), (1, "DesiredStateChanged")]
    );
    let same = StackStatus { observed_generation: Some(2), ..Default::default() };
    assert!(spec_findings(&s, &same, true).is_empty());
}
