//! Component tests of the Stack controller: the real controller over the in-process API (a real
//! `kube::Client` over the router and the sled store in a temp dir) against a fake Docker host,
//! checking what a user sees: containers on the host and the Stack's status and events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::apiserver::{self, ApiState};
use berth::config::OperatorConfig;
use berth::controllers::context::Context;
use berth::controllers::host::{self, HostControllerOptions};
use berth::controllers::pool::HostPool;
use berth::controllers::stack;
use berth::docker::fake::{FakeConnector, FakeDocker};
use berth::docker::{ContainerState, local_endpoint};
use berth::metrics::Metrics;
use berth::policy::OperatorPolicy;
use berth::store::{StoreOptions, open as open_store};
use berth_crds::common::{
    ConditionStatus, EnvVar, EnvVarSource, HealthcheckSpec, MountSpec, SecretKeySelector, find_condition,
};
use berth_crds::host::{Host, HostSpec};
use berth_crds::stack::{
    Dependency, DependencyCondition, DriftPolicy, ServiceSpec, Stack, StackPhase, StackSpec, StackStatus, VolumeSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "berth-e2e/busybox:latest";
const INSTANCE: &str = "component";
/// Generous: the machine is shared and loaded.
const DEADLINE: Duration = Duration::from_secs(60);

struct Env {
    _dir: tempfile::TempDir,
    client: Client,
    fake: FakeDocker,
    connector: FakeConnector,
    pool: Arc<HostPool>,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config(text: &str) -> OperatorConfig {
    OperatorConfig::parse(text, "test").unwrap()
}

/// Host controller timing for tests: quick reconnects and pings.
fn fast_hosts() -> HostControllerOptions {
    HostControllerOptions {
        reconnect_min_delay: Duration::from_millis(50),
        reconnect_max_delay: Duration::from_millis(500),
        ping_interval: Duration::from_millis(200),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn env_with(operator: OperatorConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let mut state = ApiState::new(store);
    let operator = Arc::new(operator);
    state.policy = Arc::new(OperatorPolicy::new(operator.clone()));
    let client = Client::new(apiserver::router(state), "default");
    // The Host controller registers `local` for the local endpoint, connects it through the
    // connector, and turns the daemon's events into owner events, as in `berth serve`.
    let connector = FakeConnector::new();
    let fake = connector.daemon(&local_endpoint());
    fake.add_image(IMAGE);
    let pool = Arc::new(HostPool::new());
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: operator,
        instance: INSTANCE.into(),
        hash_key: b"component-test-key".to_vec(),
        pool: pool.clone(),
        connector: Arc::new(connector.clone()),
        metrics: Arc::new(Metrics::new()),
    });
    tokio::spawn(host::run_with(ctx.clone(), shutdown.clone(), fast_hosts()));
    tokio::spawn(stack::run(ctx, shutdown.clone()));
    Env { _dir: dir, client, fake, connector, pool, shutdown }
}

async fn env() -> Env {
    // A long resync: corrections within the test deadline come from Docker events.
    env_with(config("resyncInterval: 300s")).await
}

fn service(name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: IMAGE.into(),
        command: Some(vec!["sleep".into(), "3600".into()]),
        replicas: 1,
        ..Default::default()
    }
}

fn health() -> HealthcheckSpec {
    HealthcheckSpec {
        test: vec!["CMD".into(), "true".into()],
        interval_seconds: Some(1),
        timeout_seconds: Some(1),
        retries: Some(3),
        start_period_seconds: None,
    }
}

/// db (health check, volume) ← api (waits for db Healthy) ← web (waits for api Started).
fn three_services(name: &str) -> Stack {
    let mut db = service("db");
    db.healthcheck = Some(health());
    db.mounts = vec![MountSpec {
        mount_path: "/data".into(),
        volume: Some("data".into()),
        host_path: None,
        tmpfs: None,
        read_only: false,
    }];
    let mut api = service("api");
    api.healthcheck = Some(health());
    api.env = vec![EnvVar { name: "MODE".into(), value: Some("api".into()), value_from: None }];
    api.depends_on = vec![Dependency { service: "db".into(), condition: DependencyCondition::Healthy }];
    let mut web = service("web");
    web.depends_on = vec![Dependency { service: "api".into(), condition: DependencyCondition::Started }];
    Stack::new(
        name,
        StackSpec {
            volumes: vec![
                VolumeSpec { name: "data".into(), retain: true },
                VolumeSpec { name: "scratch".into(), retain: false },
            ],
            services: vec![web, api, db],
            ..Default::default()
        },
    )
}

async fn create(e: &Env, s: &Stack) -> Stack {
    Api::<Stack>::namespaced(e.client.clone(), "default").create(&PostParams::default(), s).await.unwrap()
}

/// Polls the Stack until `check` holds, or fails with the last status seen.
async fn wait_for(e: &Env, name: &str, what: &str, check: impl Fn(&Stack) -> bool) -> Stack {
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    let started = Instant::now();
    loop {
        let s = api.get(name).await.unwrap();
        if check(&s) {
            return s;
        }
        if started.elapsed() > DEADLINE {
            panic!("{name}: not {what} within {DEADLINE:?}; status: {:#?}", s.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until `check` holds on the fake host.
async fn wait_host(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "not {what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(s: &Stack) -> StackStatus {
    s.status.clone().unwrap_or_default()
}

fn cond(s: &Stack, t: &str) -> Option<(ConditionStatus, String, String)> {
    find_condition(&status(s).conditions, t).map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

fn is_ready(s: &Stack) -> bool {
    status(s).phase == Some(StackPhase::Ready)
        && cond(s, "Ready").is_some_and(|c| c.0 == ConditionStatus::True)
        && status(s).observed_generation == s.metadata.generation
}

fn ids(fake: &FakeDocker) -> BTreeMap<String, String> {
    fake.containers().into_iter().map(|(n, c)| (n, c.id)).collect()
}

async fn events_of(e: &Env, name: &str) -> Vec<(String, String)> {
    let list = Api::<Event>::namespaced(e.client.clone(), "default").list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|ev| ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|ev| (ev.reason.unwrap_or_default(), ev.note.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn three_services_with_health_checks_and_dependencies_become_ready() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    let s = wait_for(&e, "shop", "Ready", is_ready).await;
    let st = status(&s);
    assert_eq!(st.hosts_ready.as_deref(), Some("1/1"));
    assert_eq!(st.applied_hash, st.desired_hash);
    assert!(st.applied_hash.is_some());
    assert_eq!(st.hosts[0].containers.len(), 3);
    assert!(st.hosts[0].containers.iter().all(|c| c.state == "running" && !c.container_id.is_empty()));
    assert!(s.finalizers().contains(&stack::FINALIZER.to_string()));
    // Creation order followed dependsOn.
    let created: Vec<String> =
        e.fake.call_log().into_iter().filter_map(|c| c.strip_prefix("create_container ").map(str::to_string)).collect();
    assert_eq!(created, ["shop-db-0", "shop-api-0", "shop-web-0"]);
    let reasons: Vec<String> = events_of(&e, "shop").await.into_iter().map(|(r, _)| r).collect();
    assert!(reasons.iter().filter(|r| *r == "Created").count() >= 3, "{reasons:?}");
}

#[tokio::test]
async fn an_env_change_recreates_only_that_service() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    let before = ids(&e.fake);
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    let mut s = api.get("shop").await.unwrap();
    s.spec.services[1].env[0].value = Some("changed".into());
    api.replace("shop", &PostParams::default(), &s).await.unwrap();
    let s = wait_for(&e, "shop", "Ready at generation 2", |s| is_ready(s) && s.metadata.generation == Some(2)).await;
    let after = ids(&e.fake);
    assert_ne!(before["shop-api-0"], after["shop-api-0"]);
    assert_eq!(before["shop-db-0"], after["shop-db-0"]);
    assert_eq!(before["shop-web-0"], after["shop-web-0"]);
    assert!(e.fake.container("shop-api-0").unwrap().spec.env.contains(&"MODE=changed".to_string()));
    assert_eq!(status(&s).observed_generation, Some(2));
}

#[tokio::test]
async fn a_container_killed_by_hand_is_corrected_through_events() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    let id = e.fake.container("shop-web-0").unwrap().id;
    e.fake.kill_by_hand("shop-web-0");
    // The resync is 300 s away: a correction within the deadline came from the Docker event.
    wait_host("restarted", || {
        e.fake.container("shop-web-0").is_some_and(|c| c.state == ContainerState::Running && c.id == id)
    })
    .await;
    let s = wait_for(&e, "shop", "showing the corrected drift", |s| {
        status(s).last_drift.as_ref().is_some_and(|d| d.reason == "NotRunning" && d.corrected)
    })
    .await;
    assert_eq!(status(&s).last_drift.unwrap().tier, 3);
    wait_for(&e, "shop", "Ready", is_ready).await;
}

#[tokio::test]
async fn a_container_removed_by_hand_is_recreated_through_events() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    let old = e.fake.container("shop-api-0").unwrap().id;
    e.fake.remove_by_hand("shop-api-0");
    wait_host("recreated", || e.fake.container("shop-api-0").is_some_and(|c| c.id != old)).await;
    let s = wait_for(&e, "shop", "showing the corrected drift", |s| {
        status(s).last_drift.as_ref().is_some_and(|d| d.reason == "ContainerMissing" && d.corrected)
    })
    .await;
    assert_eq!(status(&s).last_drift.unwrap().tier, 2);
}

#[tokio::test]
async fn report_policy_leaves_a_killed_container_dead_and_reports_it() {
    let e = env().await;
    let mut s = three_services("shop");
    s.spec.drift_policy = DriftPolicy::Report;
    create(&e, &s).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    e.fake.kill_by_hand("shop-web-0");
    let s = wait_for(&e, "shop", "Drifted", |s| cond(s, "Drifted").is_some_and(|c| c.0 == ConditionStatus::True)).await;
    let drift = status(&s).last_drift.unwrap();
    assert_eq!((drift.tier, drift.reason.as_str(), drift.corrected), (3, "NotRunning", false));
    assert_ne!(status(&s).phase, Some(StackPhase::Ready));
    // Nothing starts it again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(e.fake.container("shop-web-0").unwrap().state, ContainerState::Exited);
    let reasons: Vec<String> = events_of(&e, "shop").await.into_iter().map(|(r, _)| r).collect();
    assert!(reasons.contains(&"DriftDetected".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn a_suspended_stack_changes_nothing_and_says_so() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    api.patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": true}}))).await.unwrap();
    let s = wait_for(&e, "shop", "Suspended", |s| status(s).phase == Some(StackPhase::Suspended)).await;
    assert_eq!(cond(&s, "Suspended").unwrap().0, ConditionStatus::True);
    assert_eq!(cond(&s, "Ready").unwrap().0, ConditionStatus::False);
    e.fake.reset_calls();
    e.fake.kill_by_hand("shop-web-0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(e.fake.container("shop-web-0").unwrap().state, ContainerState::Exited);
    assert_eq!(e.fake.calls("start_container") + e.fake.calls("create_container"), 0);
    let s = api.get("shop").await.unwrap();
    assert_ne!(status(&s).phase, Some(StackPhase::Ready));
    // Resuming converges again.
    api.patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}}))).await.unwrap();
    wait_for(&e, "shop", "Ready after resume", |s| is_ready(s) && s.metadata.generation == Some(3)).await;
}

#[tokio::test]
async fn a_pull_failure_gives_a_clear_condition_and_is_retried() {
    let e = env().await;
    let mut s = Stack::new("pull", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.services[0].image = "registry.invalid/nothing:1".into();
    create(&e, &s).await;
    let s = wait_for(&e, "pull", "retrying", |s| status(s).retry.as_ref().is_some_and(|r| r.count >= 2)).await;
    let (st, reason, message) = cond(&s, "Progressing").unwrap();
    assert_eq!((st, reason.as_str()), (ConditionStatus::True, "Retrying"));
    assert!(message.contains("registry.invalid/nothing:1") && message.contains("pulling"), "{message}");
    let retry = status(&s).retry.unwrap();
    assert!(retry.last_error.contains("pulling image registry.invalid/nothing:1 failed"), "{}", retry.last_error);
    assert_ne!(status(&s).phase, Some(StackPhase::Ready));
    let reasons: Vec<String> = events_of(&e, "pull").await.into_iter().map(|(r, _)| r).collect();
    assert!(reasons.contains(&"PullFailed".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn retry_intervals_grow_while_a_pull_keeps_failing() {
    let e = env().await;
    let mut s = Stack::new("pull2", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.services[0].image = "registry.invalid/nothing:2".into();
    create(&e, &s).await;
    // For each retry count: the delay announced, i.e. nextAttempt minus when the count was first
    // seen (nextAttempt is stored in whole seconds: each delay is known to within a second).
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    let mut delays: BTreeMap<u32, f64> = BTreeMap::new();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(120), "retries seen: {delays:?}");
        let s = api.get("pull2").await.unwrap();
        if let Some(r) = status(&s).retry
            && let Some(t) = r.next_attempt
        {
            let now = k8s_openapi::jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
            delays.entry(r.count).or_insert(t.0.as_second() as f64 - now);
        }
        let (first, last) = (delays.keys().next().copied(), delays.keys().last().copied());
        if let (Some(a), Some(b)) = (first, last)
            && b >= 4
            && b >= a + 2
        {
            // 1 s doubling with jitter (up to double): the delay after failure n lies in
            // [2^(n-1), 2^n) s, so two counts apart the ranges cannot overlap.
            assert!(delays[&b] > delays[&a], "retry intervals do not grow: {delays:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_unreachable_daemon_shows_unreachable_gets_no_destructive_call_and_recovers() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    e.fake.set_unreachable(true);
    e.fake.reset_calls();
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    // A spec change while the host is away: nothing may happen there.
    api.patch("shop", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})))
        .await
        .unwrap();
    let s = wait_for(&e, "shop", "Unreachable", |s| {
        status(s).hosts.first().is_some_and(|h| h.phase == berth_crds::stack::StackHostPhase::Unreachable)
    })
    .await;
    assert_eq!(cond(&s, "Ready").unwrap().1, "HostUnreachable");
    let destructive: Vec<String> = e
        .fake
        .call_log()
        .into_iter()
        .filter(|c| ["stop_", "remove_", "kill_", "create_", "start_"].iter().any(|p| c.starts_with(p)))
        .collect();
    assert!(destructive.is_empty(), "{destructive:?}");
    e.fake.set_unreachable(false);
    wait_for(&e, "shop", "Ready again", is_ready).await;
    assert_eq!(e.fake.containers().len(), 3);
}

#[tokio::test]
async fn deletion_removes_containers_and_networks_but_keeps_retained_volumes() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    assert!(e.fake.volume_names().contains("shop_data") && e.fake.volume_names().contains("shop_scratch"));
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    api.delete("shop", &DeleteParams::default()).await.unwrap();
    let started = Instant::now();
    while api.get_opt("shop").await.unwrap().is_some() {
        assert!(started.elapsed() < DEADLINE, "the Stack was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(e.fake.containers().is_empty(), "{:?}", e.fake.containers().keys());
    assert!(!e.fake.network_names().contains("shop_default"));
    assert!(e.fake.volume_names().contains("shop_data"), "retain: true (the default) keeps the volume");
    assert!(!e.fake.volume_names().contains("shop_scratch"), "retain: false removes it");
}

#[tokio::test]
async fn deletion_waits_for_an_unreachable_host() {
    let e = env().await;
    create(&e, &three_services("shop")).await;
    wait_for(&e, "shop", "Ready", is_ready).await;
    e.fake.set_unreachable(true);
    wait_host("the host seen unreachable", || e.pool.get("local").is_err()).await;
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    api.delete("shop", &DeleteParams::default()).await.unwrap();
    let s = wait_for(&e, "shop", "blocked", |s| cond(s, "Ready").is_some_and(|c| c.1 == "DeletionBlocked")).await;
    assert!(cond(&s, "Ready").unwrap().2.contains("unreachable"), "{:?}", cond(&s, "Ready"));
    assert_eq!(status(&s).phase, Some(StackPhase::Deleting));
    assert_eq!(e.fake.containers().len(), 3, "nothing removed while unreachable");
    e.fake.set_unreachable(false);
    let started = Instant::now();
    while api.get_opt("shop").await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(120), "not deleted after the host came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(e.fake.containers().is_empty());
}

#[tokio::test]
async fn a_same_named_unlabelled_container_is_never_touched_and_is_reported() {
    let e = env().await;
    let foreign = e.fake.add_foreign_container("solo-web-0", "nginx:1", BTreeMap::new());
    let s = Stack::new("solo", StackSpec { services: vec![service("web")], ..Default::default() });
    create(&e, &s).await;
    let s = wait_for(&e, "solo", "Stalled", |s| cond(s, "Stalled").is_some_and(|c| c.0 == ConditionStatus::True)).await;
    let (_, reason, message) = cond(&s, "Stalled").unwrap();
    assert_eq!(reason, "NameConflict");
    assert!(message.contains("solo-web-0") && message.contains("never removes"), "{message}");
    assert_eq!(status(&s).phase, Some(StackPhase::Failed));
    let c = e.fake.container("solo-web-0").unwrap();
    assert_eq!((c.id.as_str(), c.spec.image.as_str(), c.state), (foreign.as_str(), "nginx:1", ContainerState::Running));
    let touched: Vec<String> = e.fake.call_log().into_iter().filter(|l| l.contains(&foreign)).collect();
    assert!(touched.is_empty(), "{touched:?}");
    let reasons: Vec<String> = events_of(&e, "solo").await.into_iter().map(|(r, _)| r).collect();
    assert!(reasons.contains(&"NameConflict".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn a_host_path_outside_the_allowlist_is_refused_at_admission() {
    let e = env_with(config("stacks: {allowedHostPaths: [/srv]}")).await;
    let mut s = Stack::new("paths", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.services[0].mounts = vec![MountSpec {
        mount_path: "/x".into(),
        volume: None,
        host_path: Some("/etc".into()),
        tmpfs: None,
        read_only: true,
    }];
    let err =
        Api::<Stack>::namespaced(e.client.clone(), "default").create(&PostParams::default(), &s).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("{err}") };
    assert_eq!(status.code, 422);
    assert!(status.message.contains("spec.services[0].mounts[0].hostPath"), "{}", status.message);
    assert!(status.message.contains("stacks.allowedHostPaths"), "{}", status.message);
    s.spec.services[0].mounts[0].host_path = Some("/srv/data".into());
    create(&e, &s).await;
}

#[tokio::test]
async fn a_rotated_secret_rolls_out_without_showing_its_value() {
    let e = env().await;
    let secrets = Api::<Secret>::namespaced(e.client.clone(), "default");
    let secret = |v: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"password": v}})).unwrap()
    };
    secrets.create(&PostParams::default(), &secret("first-s3cret")).await.unwrap();
    let mut s = Stack::new("sec", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.services[0].env = vec![EnvVar {
        name: "PASSWORD".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: "db".into(), key: "password".into(), optional: false }),
            config_map_key_ref: None,
        }),
    }];
    create(&e, &s).await;
    let first = wait_for(&e, "sec", "Ready", is_ready).await;
    assert!(e.fake.container("sec-web-0").unwrap().spec.env.contains(&"PASSWORD=first-s3cret".to_string()));
    let old_id = e.fake.container("sec-web-0").unwrap().id;
    secrets.replace("db", &PostParams::default(), &secret("second-s3cret")).await.unwrap();
    wait_host("rolled out", || {
        e.fake
            .container("sec-web-0")
            .is_some_and(|c| c.id != old_id && c.spec.env.contains(&"PASSWORD=second-s3cret".into()))
    })
    .await;
    let s = wait_for(&e, "sec", "Ready with the new hash", |s| {
        is_ready(s) && status(s).applied_hash != status(&first).applied_hash
    })
    .await;
    let shown = serde_json::to_string(&s).unwrap();
    assert!(!shown.contains("s3cret"), "{shown}");
    for (_, note) in events_of(&e, "sec").await {
        assert!(!note.contains("s3cret"), "{note}");
    }
    for c in e.fake.containers().values() {
        assert!(!format!("{:?}", c.spec.labels).contains("s3cret"));
    }
}

#[tokio::test]
async fn a_docker_error_echoing_a_secret_shows_the_value_nowhere() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    const VALUE: &str = "echoed-s3cret-value";
    let e = env().await;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"password": VALUE}})).unwrap();
    Api::<Secret>::namespaced(e.client.clone(), "default").create(&PostParams::default(), &secret).await.unwrap();
    // The daemon refuses the container and quotes its environment, as real errors can.
    e.fake.fail_next(
        "create_container",
        berth::docker::DockerError::Api {
            operation: "create container".into(),
            status: 500,
            message: format!("invalid environment PASSWORD={VALUE}"),
        },
    );
    // Every state of the Stack and every Event, as a client watching them sees them.
    let stacks = Api::<Stack>::namespaced(e.client.clone(), "default");
    let events = Api::<Event>::namespaced(e.client.clone(), "default");
    let params = WatchParams::default().disable_bookmarks().timeout(120);
    let mut stack_stream = stacks.watch(&params, "0").await.unwrap().boxed();
    let mut event_stream = events.watch(&params, "0").await.unwrap().boxed();

    let mut s = Stack::new("leak", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.services[0].env = vec![EnvVar {
        name: "PASSWORD".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: "db".into(), key: "password".into(), optional: false }),
            config_map_key_ref: None,
        }),
    }];
    create(&e, &s).await;

    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        let next = tokio::time::timeout(left, stack_stream.try_next()).await;
        let Ok(Ok(Some(ev))) = next else { panic!("the Stack did not become Ready within {DEADLINE:?}: {next:?}") };
        if let WatchEvent::Added(s) | WatchEvent::Modified(s) = ev {
            seen.push(serde_json::to_string(&s).unwrap());
            if is_ready(&s) {
                break;
            }
        }
    }
    // The failed create is reported, with the value masked; then take whatever else is there.
    let mut notes: Vec<String> = Vec::new();
    let mut reported = false;
    loop {
        let wait = if reported { Duration::from_secs(1) } else { DEADLINE.saturating_sub(started.elapsed()) };
        let Ok(Ok(Some(ev))) = tokio::time::timeout(wait, event_stream.try_next()).await else {
            assert!(reported, "no event reports the failed create with PASSWORD=****: {notes:#?}");
            break;
        };
        if let WatchEvent::Added(ev) | WatchEvent::Modified(ev) = ev {
            let note = ev.note.clone().unwrap_or_default();
            reported |= note.contains("PASSWORD=****");
            notes.push(note);
            seen.push(serde_json::to_string(&ev).unwrap());
        }
    }
    for text in &seen {
        assert!(!text.contains(VALUE), "a secret value reached the API: {text}");
    }
    assert!(e.fake.container("leak-web-0").unwrap().spec.env.contains(&format!("PASSWORD={VALUE}")));
}

#[tokio::test]
async fn a_missing_secret_stalls_until_it_is_created() {
    let e = env().await;
    let mut s = Stack::new("late", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.services[0].env = vec![EnvVar {
        name: "TOKEN".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: "late".into(), key: "token".into(), optional: false }),
            config_map_key_ref: None,
        }),
    }];
    create(&e, &s).await;
    let s = wait_for(&e, "late", "Stalled", |s| cond(s, "Stalled").is_some_and(|c| c.1 == "MissingReference")).await;
    assert_eq!(status(&s).phase, Some(StackPhase::Failed));
    assert!(e.fake.containers().is_empty());
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "late"}, "stringData": {"token": "abc123"}})).unwrap();
    Api::<Secret>::namespaced(e.client.clone(), "default").create(&PostParams::default(), &secret).await.unwrap();
    wait_for(&e, "late", "Ready", is_ready).await;
}

#[tokio::test]
async fn a_host_no_longer_selected_is_cleaned_up() {
    let e = env().await;
    let edge = e.connector.daemon("tcp://edge.test:2375");
    edge.add_image(IMAGE);
    let host = Host::new("edge", HostSpec { endpoint: "tcp://edge.test:2375".into(), ..Default::default() });
    Api::<Host>::all(e.client.clone()).create(&PostParams::default(), &host).await.unwrap();
    let mut s = Stack::new("multi", StackSpec { services: vec![service("web")], ..Default::default() });
    s.spec.hosts =
        Some(berth_crds::stack::HostSelection { names: vec!["local".into(), "edge".into()], selector: None });
    create(&e, &s).await;
    let st = wait_for(&e, "multi", "Ready on both hosts", is_ready).await;
    assert_eq!(status(&st).hosts_ready.as_deref(), Some("2/2"));
    assert!(edge.container("multi-web-0").is_some() && e.fake.container("multi-web-0").is_some());
    let api = Api::<Stack>::namespaced(e.client.clone(), "default");
    api.patch("multi", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hosts": {"names": ["local"]}}})))
        .await
        .unwrap();
    let st = wait_for(&e, "multi", "Ready on local only", |s| is_ready(s) && s.metadata.generation == Some(2)).await;
    assert_eq!(status(&st).hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), ["local"]);
    assert!(edge.containers().is_empty(), "{:?}", edge.containers().keys());
    assert!(e.fake.container("multi-web-0").is_some());
}

#[tokio::test]
async fn plan_stack_shows_what_a_reconcile_would_do_without_doing_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let client = Client::new(apiserver::router(ApiState::new(store)), "default");
    let fake = FakeDocker::new("fake:///local");
    fake.add_image(IMAGE);
    let pool = Arc::new(HostPool::new());
    pool.set_connected("local", Arc::new(fake.clone()));
    let ctx = Context {
        client: client.clone(),
        config: Arc::new(OperatorConfig::default()),
        instance: INSTANCE.into(),
        hash_key: b"k".to_vec(),
        pool,
        connector: Arc::new(FakeConnector::new()),
        metrics: Arc::new(Metrics::new()),
    };
    let created = Api::<Stack>::namespaced(client, "default")
        .create(&PostParams::default(), &three_services("shop"))
        .await
        .unwrap();
    let plans = stack::plan_stack(&ctx, &created).await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].host, "local");
    let json = serde_json::to_value(&plans[0]).unwrap();
    let actions: Vec<String> = plans[0]
        .steps
        .iter()
        .flat_map(|s| s.actions.iter())
        .map(|a| serde_json::to_value(a).unwrap()["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "create").count(), 3, "{json:#}");
    assert!(actions.contains(&"createNetwork".to_string()) && actions.contains(&"createVolume".to_string()));
    assert!(json["findings"].as_array().unwrap().iter().any(|f| f["tier"] == 1), "{json:#}");
    let mutations: Vec<String> =
        fake.call_log().into_iter().filter(|c| c.starts_with("create") || c.starts_with("start")).collect();
    assert!(mutations.is_empty(), "planning changed the host: {mutations:?}");
}
