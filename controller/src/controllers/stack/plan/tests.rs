//! Table-driven tests of the pure planner: each case is a desired Stack, what the host shows,
//! and the exact actions and findings expected.

use std::collections::BTreeMap;

use berth_crds::common::{LABEL_CONFIG_HASH, LABEL_OWNER_UID, LABEL_REPLICA, LABEL_SERVICE};
use berth_crds::stack::{Dependency, NetworkSpec, ServiceSpec, Stack, StackSpec, VolumeSpec};

use super::*;
use crate::controllers::stack::render::{References, RenderContext, render};

struct NoRefs;
impl References for NoRefs {
    fn secret(&self, _: &str, _: &str, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn config_map(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
}

const UID: &str = "uid-shop";

fn stack(web_replicas: i32, web_image: &str) -> Stack {
    let mut s = Stack::new(
        "shop",
        StackSpec {
            networks: vec![NetworkSpec { name: "back".into(), internal: false }],
            volumes: vec![VolumeSpec { name: "data".into(), retain: true }],
            services: vec![
                ServiceSpec { name: "db".into(), image: "img/db:1".into(), replicas: 1, ..Default::default() },
                ServiceSpec {
                    name: "web".into(),
                    image: web_image.into(),
                    replicas: web_replicas,
                    depends_on: vec![Dependency { service: "db".into(), condition: Default::default() }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("default".into());
    s.metadata.uid = Some(UID.into());
    s
}

fn desired(s: &Stack) -> DesiredState {
    render(s, &RenderContext { instance: "i", hash_key: b"k", allowed_host_paths: &[], references: &NoRefs }).unwrap()
}

/// Everything the desired state wants, running, as a converged host would show it.
fn converged(d: &DesiredState) -> Observation {
    let mut o = Observation::default();
    for c in d.containers() {
        o.containers.push(container(&c.name, &c.service, c.replica, &c.config_hash, RunState::Running));
    }
    for n in &d.networks {
        o.networks.push(ObservedNetwork { id: format!("net-{}", n.name), name: n.name.clone(), labels: owned() });
    }
    for v in &d.volumes {
        o.volumes.push(ObservedVolume { name: v.name.clone(), labels: owned() });
    }
    o
}

fn owned() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_OWNER_UID.to_string(), UID.to_string())])
}

fn container(name: &str, service: &str, replica: i32, hash: &str, state: RunState) -> ObservedContainer {
    let mut labels = owned();
    labels.insert(LABEL_SERVICE.into(), service.into());
    labels.insert(LABEL_REPLICA.into(), replica.to_string());
    labels.insert(LABEL_CONFIG_HASH.into(), hash.into());
    ObservedContainer {
        id: format!("id-{name}"),
        name: name.into(),
        labels,
        state,
        health: None,
        oom_killed: false,
        exit_code: None,
        image_id: "sha256:aaaa".into(),
    }
}

/// `(action, container-or-name)` pairs of a plan, for compact expectations.
fn summary(p: &HostPlan) -> Vec<String> {
    p.actions()
        .map(|a| match a {
            Action::CreateNetwork { name, .. } => format!("createNetwork {name}"),
            Action::CreateVolume { name } => format!("createVolume {name}"),
            Action::EnsureImage { image, .. } => format!("ensureImage {image}"),
            Action::Create { container, .. } => format!("create {container}"),
            Action::Recreate { container, reason, .. } => format!("recreate {container} {reason}"),
            Action::Start { container, reason, .. } => format!("start {container} {reason}"),
            Action::Restart { container, .. } => format!("restart {container}"),
            Action::Remove { container, reason, .. } => format!("remove {container} {reason}"),
            Action::Connect { network, container, .. } => format!("connect {container} {network}"),
            Action::RemoveNetwork { name, .. } => format!("removeNetwork {name}"),
        })
        .collect()
}

fn tiers(p: &HostPlan) -> Vec<(u8, String)> {
    p.findings.iter().map(|f| (f.tier, f.reason.clone())).collect()
}

fn check(d: &DesiredState, o: &Observation, previously_applied: bool, actions: &[&str], findings: &[(u8, &str)]) {
    let p = plan("local", d, o, UID, previously_applied);
    assert_eq!(summary(&p), actions, "actions");
    let want: Vec<(u8, String)> = findings.iter().map(|(t, r)| (*t, r.to_string())).collect();
    assert_eq!(tiers(&p), want, "findings");
}

#[test]
fn empty_host_gets_everything_in_dependency_order() {
    let d = desired(&stack(2, "img/web:1"));
    check(
        &d,
        &Observation::default(),
        false,
        &[
            "createNetwork shop_back",
            "createNetwork shop_default",
            "createVolume shop_data",
            "ensureImage img/db:1",
            "create shop-db-0",
            "ensureImage img/web:1",
            "create shop-web-0",
            "create shop-web-1",
        ],
        &[],
    );
}

#[test]
fn converged_host_needs_nothing() {
    let d = desired(&stack(2, "img/web:1"));
    let p = plan("local", &d, &converged(&d), UID, true);
    assert!(p.is_converged());
    assert!(p.steps.is_empty() && p.findings.is_empty());
}

#[test]
fn changed_service_recreates_only_that_service() {
    let old = desired(&stack(2, "img/web:1"));
    let new = desired(&stack(2, "img/web:2"));
    check(
        &new,
        &converged(&old),
        false,
        &[
            "ensureImage img/web:2",
            "recreate shop-web-0 DesiredStateChanged",
            "recreate shop-web-1 DesiredStateChanged",
        ],
        &[],
    );
}

#[test]
fn scaling_down_removes_surplus_replicas_first() {
    let old = desired(&stack(3, "img/web:1"));
    let new = desired(&stack(1, "img/web:1"));
    check(
        &new,
        &converged(&old),
        false,
        &["remove shop-web-1 SurplusReplica", "remove shop-web-2 SurplusReplica"],
        &[],
    );
}

#[test]
fn killed_container_is_tier_3_and_started() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.containers[1].state = RunState::Exited;
    o.containers[1].exit_code = Some(137);
    check(&d, &o, true, &["start shop-web-0 NotRunning"], &[(3, "NotRunning")]);
}

#[test]
fn oom_killed_container_says_so() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.containers[0].state = RunState::Exited;
    o.containers[0].oom_killed = true;
    let p = plan("local", &d, &o, UID, true);
    assert_eq!(tiers(&p), [(3, "OOMKilled".to_string())]);
    assert!(p.findings[0].message.contains("memoryMb"));
}

#[test]
fn removed_container_is_tier_2_and_recreated() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.containers.retain(|c| c.name != "shop-web-0");
    check(&d, &o, true, &["ensureImage img/web:1", "create shop-web-0"], &[(2, "ContainerMissing")]);
}

#[test]
fn hand_edited_container_is_a_config_mismatch() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.containers[0].labels.insert(LABEL_CONFIG_HASH.into(), "something-else".into());
    check(
        &d,
        &o,
        true,
        &["ensureImage img/db:1", "recreate shop-db-0 ConfigHashMismatch"],
        &[(2, "ConfigHashMismatch")],
    );
}

#[test]
fn unhealthy_container_is_restarted_and_restarting_is_left_to_docker() {
    let d = desired(&stack(2, "img/web:1"));
    let mut o = converged(&d);
    o.containers[1].health = Some(Health::Unhealthy);
    o.containers[2].state = RunState::Restarting;
    check(&d, &o, true, &["restart shop-web-0"], &[(3, "Unhealthy"), (3, "Restarting")]);
}

#[test]
fn deleted_network_is_recreated_and_containers_reconnected() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.networks.retain(|n| n.name != "shop_default");
    check(
        &d,
        &o,
        true,
        &["createNetwork shop_default", "connect shop-db-0 shop_default", "connect shop-web-0 shop_default"],
        &[(2, "NetworkMissing")],
    );
}

#[test]
fn other_owners_objects_are_invisible() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    let mut stranger = container("other-web-0", "web", 0, "h", RunState::Exited);
    stranger.labels.insert(LABEL_OWNER_UID.into(), "someone-else".into());
    o.containers.push(stranger);
    o.networks.push(ObservedNetwork { id: "n".into(), name: "other_default".into(), labels: BTreeMap::new() });
    let p = plan("local", &d, &o, UID, true);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
}

#[test]
fn duplicate_replica_keeps_the_correctly_named_one() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    let hash = o.containers[1].labels[LABEL_CONFIG_HASH].clone();
    o.containers.insert(1, container("shop-web-0-copy", "web", 0, &hash, RunState::Running));
    check(&d, &o, true, &["remove shop-web-0-copy DuplicateReplica"], &[(2, "DuplicateReplica")]);
}

#[test]
fn removed_service_and_network_are_cleaned_up() {
    let old = desired(&stack(1, "img/web:1"));
    let mut s = stack(1, "img/web:1");
    s.spec.services.remove(1);
    s.spec.networks.clear();
    s.spec.services[0].networks = vec![];
    let new = desired(&s);
    check(&new, &converged(&old), false, &["remove shop-web-0 ServiceRemoved", "removeNetwork shop_back"], &[]);
}

#[test]
fn service_steps_carry_their_dependencies() {
    let d = desired(&stack(1, "img/web:1"));
    let p = plan("local", &d, &Observation::default(), UID, false);
    let web = p.steps.iter().find(|s| s.service.as_deref() == Some("web")).unwrap();
    assert_eq!(web.wait_for, [WaitFor { service: "db".into(), condition: Default::default() }]);
}

#[test]
fn plan_json_is_stable() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.containers[1].state = RunState::Exited;
    let p = plan("local", &d, &o, UID, true);
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["host"], "local");
    assert_eq!(v["findings"][0]["tier"], 3);
    assert_eq!(v["findings"][0]["reason"], "NotRunning");
    assert_eq!(v["steps"][0]["phase"], "service");
    assert_eq!(v["steps"][0]["actions"][0]["action"], "start");
    assert_eq!(v["steps"][0]["actions"][0]["container"], "shop-web-0");
}

#[test]
fn dependency_order_puts_dependencies_first_whatever_the_spec_order() {
    let mut s = stack(1, "img/web:1");
    s.spec.services.reverse();
    let d = desired(&s);
    let order: Vec<&str> = service_order(&d).into_iter().map(|i| d.services[i].name.as_str()).collect();
    assert_eq!(order, ["db", "web"]);
}

#[test]
fn retagged_image_is_tier_2_and_recreates_only_its_users() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.images.insert("img/db:1".into(), "sha256:aaaa".into());
    o.images.insert("img/web:1".into(), "sha256:bbbb".into());
    check(&d, &o, true, &["ensureImage img/web:1", "recreate shop-web-0 ImageChanged"], &[(2, "ImageChanged")]);
    // An image the host does not have (yet) is no evidence of drift.
    o.images.clear();
    assert!(plan("local", &d, &o, UID, true).is_converged());
}

#[test]
fn retained_volume_of_an_earlier_owner_is_reused() {
    let d = desired(&stack(1, "img/web:1"));
    let mut o = converged(&d);
    o.volumes[0].labels.insert(LABEL_OWNER_UID.into(), "uid-of-a-deleted-stack".into());
    assert!(plan("local", &d, &o, UID, true).is_converged());
}

#[test]
fn report_policy_rolls_out_spec_changes_but_leaves_runtime_drift() {
    let old = desired(&stack(1, "img/web:1"));
    let new = desired(&stack(2, "img/web:2"));
    let mut o = converged(&old);
    o.containers[0].state = RunState::Exited; // db killed by hand
    let full = plan("local", &new, &o, UID, false);
    assert!(summary(&full).contains(&"start shop-db-0 NotRunning".to_string()));
    let reported = without_drift_corrections(&full, false);
    assert_eq!(
        summary(&reported),
        ["ensureImage img/web:2", "recreate shop-web-0 DesiredStateChanged", "create shop-web-1"]
    );
    assert_eq!(reported.findings, full.findings, "findings are still reported");

    // Desired state unchanged: nothing at all is executed, the findings stay.
    let p = plan("local", &old, &o, UID, true);
    let reported = without_drift_corrections(&p, true);
    assert!(reported.steps.is_empty());
    assert_eq!(tiers(&reported), [(3, "NotRunning".to_string())]);
}
