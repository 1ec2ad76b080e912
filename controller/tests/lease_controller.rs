//! Component tests of the Lease controller: the real Host and Lease controllers over the
//! in-process API (a real `kube::Client` over the router and the sled store in a temp dir)
//! against a fake Docker host, checking what a tenant and an operator see: containers on the
//! host, the Lease's phase, status and events, and the Host's allocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::apiserver::{self, ApiState};
use berth::config::OperatorConfig;
use berth::controllers::context::Context;
use berth::controllers::host::{self, HostControllerOptions};
use berth::controllers::lease::worker::WorkerOptions;
use berth::controllers::lease::{self, LeaseControllerOptions};
use berth::controllers::pool::HostPool;
use berth::docker::fake::{FakeConnector, FakeDocker};
use berth::docker::{ContainerState, LogStream, local_endpoint};
use berth::metrics::Metrics;
use berth::policy::OperatorPolicy;
use berth::store::{StoreOptions, open as open_store};
use berth_crds::common::{ConditionStatus, find_condition};
use berth_crds::host::{Host, HostCapacity};
use berth_crds::lease::{
    Lease, LeasePhase, LeasePort, LeaseService, LeaseSpec, LeaseStatus, LeaseVolume, RESTART_ANNOTATION,
};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "berth-e2e/busybox:latest";
const INSTANCE: &str = "component";
/// Generous: the machine is shared and loaded.
const DEADLINE: Duration = Duration::from_secs(60);
const NS: &str = "default";

const CONFIG: &str = r#"
leases:
  skus:
    small: {cpus: 0.5, memoryMb: 128, pids: 64}
  allowedRegistries: [local, "registry.example:5000"]
  verifyWindow: 1s
  retention: {grace: 1h, reapInterval: 1s}
resyncInterval: 300s
"#;

struct Env {
    _dir: tempfile::TempDir,
    client: Client,
    fake: FakeDocker,
    connector: FakeConnector,
    shutdown: CancellationToken,
    store: Arc<dyn berth::store::Store>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn fast_hosts() -> HostControllerOptions {
    HostControllerOptions {
        reconnect_min_delay: Duration::from_millis(50),
        reconnect_max_delay: Duration::from_millis(500),
        ping_interval: Duration::from_millis(200),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn worker_options() -> WorkerOptions {
    WorkerOptions {
        poll: Duration::from_millis(50),
        verify_window: Duration::from_secs(1),
        health_timeout: Duration::from_secs(10),
    }
}

/// Starts the Host and Lease controllers over `store` (a second call after `stop` is a restart
/// of berth on the same store and the same daemon).
pub fn start(
    store: Arc<dyn berth::store::Store>,
    connector: &FakeConnector,
    config: &str,
    outbox: Option<std::path::PathBuf>,
) -> (Client, CancellationToken) {
    let mut state = ApiState::new(store);
    let operator = Arc::new(OperatorConfig::parse(config, "test").unwrap());
    state.policy = Arc::new(OperatorPolicy::new(operator.clone()));
    let client = Client::new(apiserver::router(state), "default");
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: operator,
        instance: INSTANCE.into(),
        hash_key: b"component-test-key".to_vec(),
        pool: Arc::new(HostPool::new()),
        connector: Arc::new(connector.clone()),
        metrics: Arc::new(Metrics::new()),
    });
    tokio::spawn(host::run_with(ctx.clone(), shutdown.clone(), fast_hosts()));
    let options = LeaseControllerOptions { outbox_dir: outbox, worker: Some(worker_options()) };
    tokio::spawn(lease::run(ctx, options, shutdown.clone()));
    (client, shutdown)
}

async fn env_with(config: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let connector = FakeConnector::new();
    let fake = connector.daemon(&local_endpoint());
    fake.add_image(IMAGE);
    let (client, shutdown) = start(store.clone(), &connector, config, None);
    let e = Env { _dir: dir, client, fake, connector, shutdown, store };
    // The `local` Host, with a known capacity for placement.
    set_capacity(&e, 2.0, 1024).await;
    e
}

async fn env() -> Env {
    env_with(CONFIG).await
}

async fn set_capacity(e: &Env, cpus: f64, memory_mb: i64) {
    let hosts = Api::<Host>::all(e.client.clone());
    let started = Instant::now();
    loop {
        if hosts.get_opt("local").await.unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the local Host was not registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let capacity = HostCapacity { cpus: Some(cpus), memory_mb: Some(memory_mb), disk_mb: None };
    hosts
        .patch("local", &PatchParams::default(), &Patch::Merge(json!({"spec": {"capacity": capacity}})))
        .await
        .unwrap();
    // Placement needs the Host Ready with that capacity in status.
    let started = Instant::now();
    loop {
        let h = hosts.get("local").await.unwrap();
        let st = h.status.clone().unwrap_or_default();
        let ready = find_condition(&st.conditions, "Ready").is_some_and(|c| c.status == ConditionStatus::True);
        if ready && st.capacity.as_ref().and_then(|c| c.cpus) == Some(cpus) {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "the local Host did not become Ready: {st:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn service(name: &str, quantity: i32) -> LeaseService {
    LeaseService {
        name: name.into(),
        image: IMAGE.into(),
        command: Some(vec!["httpd".into(), "-f".into(), "-p".into(), "8080".into()]),
        ports: vec![LeasePort { container_port: 8080, protocol: Default::default() }],
        quantity,
        ..Default::default()
    }
}

fn lease(name: &str, services: Vec<LeaseService>) -> Lease {
    Lease::new(
        name,
        LeaseSpec {
            tenant: "acme".into(),
            sku: "small".into(),
            duration: Some("1h".into()),
            services,
            ..Default::default()
        },
    )
}

async fn create(e: &Env, l: &Lease) -> Lease {
    Api::<Lease>::namespaced(e.client.clone(), NS).create(&PostParams::default(), l).await.unwrap()
}

fn status(l: &Lease) -> LeaseStatus {
    l.status.clone().unwrap_or_default()
}

fn phase(l: &Lease) -> Option<LeasePhase> {
    status(l).phase
}

fn cond(l: &Lease, t: &str) -> Option<(ConditionStatus, String, String)> {
    find_condition(&status(l).conditions, t).map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

/// Polls the Lease until `check` holds, or fails with the last status seen.
async fn wait_for(e: &Env, name: &str, what: &str, check: impl Fn(&Lease) -> bool) -> Lease {
    let api = Api::<Lease>::namespaced(e.client.clone(), NS);
    let started = Instant::now();
    loop {
        if let Some(l) = api.get_opt(name).await.unwrap() {
            if check(&l) {
                return l;
            }
            if started.elapsed() > DEADLINE {
                panic!("{name}: not {what} within {DEADLINE:?}; status: {:#?}", l.status);
            }
        } else if started.elapsed() > DEADLINE {
            panic!("{name}: gone before it was {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_phase(e: &Env, name: &str, p: LeasePhase) -> Lease {
    wait_for(e, name, p.as_str(), |l| phase(l) == Some(p)).await
}

async fn wait_host(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "not {what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lease_containers(fake: &FakeDocker, name: &str) -> Vec<(String, berth::docker::fake::FakeContainer)> {
    let prefix = format!("lease.{NS}.{name}.");
    fake.containers().into_iter().filter(|(n, _)| n.starts_with(&prefix)).collect()
}

async fn events_of(e: &Env, name: &str) -> Vec<(String, String)> {
    let list = Api::<Event>::namespaced(e.client.clone(), NS).list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|ev| ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|ev| (ev.reason.unwrap_or_default(), ev.note.unwrap_or_default()))
        .collect()
}

async fn patch_spec(e: &Env, name: &str, spec: serde_json::Value) {
    Api::<Lease>::namespaced(e.client.clone(), NS)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lease_with_two_services_becomes_ready_hardened_with_endpoints() {
    let e = env().await;
    create(&e, &lease("pr-1", vec![service("app", 1), service("worker", 2)])).await;
    let l = wait_phase(&e, "pr-1", LeasePhase::Ready).await;
    let st = status(&l);
    assert_eq!(st.host.as_deref(), Some("local"));
    assert!(st.expires_at.is_some(), "expiresAt is always shown");
    assert_eq!(cond(&l, "Ready").unwrap().0, ConditionStatus::True);
    assert_eq!(st.instances.len(), 3);
    assert!(st.instances.iter().all(|i| i.state == "running" && !i.container_id.is_empty()));
    assert_eq!(st.endpoints.len(), 3, "{:?}", st.endpoints);
    assert!(st.endpoints.iter().all(|p| p.host_port > 0 && p.url.starts_with("http://localhost:")));
    assert_eq!(st.releases.len(), 1);
    assert_eq!(st.releases[0].outcome, "Active");
    let alloc = st.allocated.clone().unwrap();
    assert_eq!((alloc.cpus, alloc.memory_mb), (1.5, 384));
    for (_, c) in lease_containers(&e.fake, "pr-1") {
        assert_eq!(c.state, ContainerState::Running);
        assert_eq!(c.spec.cap_drop, ["ALL"]);
        assert!(c.spec.read_only_root_filesystem && c.spec.no_new_privileges);
        assert_eq!(c.spec.restart_policy, "no");
        assert_eq!(c.spec.pids_limit, Some(64));
        assert_eq!(c.spec.memory_swap_bytes, c.spec.memory_bytes);
        assert_eq!(c.spec.networks[0].network, "berth-component-tenant-acme");
    }
    assert!(e.fake.network_names().contains("berth-component-tenant-acme"));
    // The Host shows what Leases hold there.
    let hosts = Api::<Host>::all(e.client.clone());
    let started = Instant::now();
    loop {
        let h = hosts.get("local").await.unwrap();
        if h.status.and_then(|s| s.allocated).is_some_and(|a| a.cpus == Some(1.5) && a.memory_mb == Some(384)) {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "Host status.allocated not updated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reasons: Vec<String> = events_of(&e, "pr-1").await.into_iter().map(|(r, _)| r).collect();
    for want in ["Placed", "Created", "Verified"] {
        assert!(reasons.iter().any(|r| r == want), "{want} missing from {reasons:?}");
    }
}

#[tokio::test]
async fn a_lease_expires_by_itself_and_leaves_nothing_behind() {
    let e = env().await;
    let mut l = lease("short", vec![service("app", 1)]);
    l.spec.duration = Some("4s".into());
    l.spec.services[0].volumes = vec![LeaseVolume { name: "data".into(), mount_path: "/data".into() }];
    create(&e, &l).await;
    wait_phase(&e, "short", LeasePhase::Ready).await;
    assert_eq!(lease_containers(&e.fake, "short").len(), 1);
    let l = wait_phase(&e, "short", LeasePhase::Closed).await;
    assert_eq!(cond(&l, "Expired").map(|c| c.0), Some(ConditionStatus::True));
    assert!(lease_containers(&e.fake, "short").is_empty());
    assert!(!e.fake.volume_names().iter().any(|v| v.contains(".short.")), "{:?}", e.fake.volume_names());
    assert!(!e.fake.network_names().contains("berth-component-tenant-acme"), "the tenant's last Lease is gone");
    assert!(status(&l).allocated.is_none());
}

#[tokio::test]
async fn a_lease_over_capacity_stays_pending_until_room_frees() {
    let e = env().await;
    set_capacity(&e, 1.0, 1024).await;
    create(&e, &lease("first", vec![service("app", 2)])).await; // 1.0 CPU
    wait_phase(&e, "first", LeasePhase::Ready).await;
    create(&e, &lease("second", vec![service("app", 1)])).await;
    let l = wait_for(&e, "second", "Pending for capacity", |l| {
        cond(l, "Ready").is_some_and(|c| c.1 == "InsufficientCapacity")
    })
    .await;
    assert_eq!(phase(&l), Some(LeasePhase::Pending));
    assert!(cond(&l, "Ready").unwrap().2.contains("local has 0.00 of 1.00 CPUs"), "{:?}", cond(&l, "Ready"));
    assert!(lease_containers(&e.fake, "second").is_empty());
    patch_spec(&e, "first", json!({"closed": true})).await;
    wait_phase(&e, "first", LeasePhase::Closed).await;
    wait_phase(&e, "second", LeasePhase::Ready).await;
}

#[tokio::test]
async fn allocations_survive_a_restart_so_nothing_is_double_booked() {
    let e = env().await;
    set_capacity(&e, 1.0, 1024).await;
    create(&e, &lease("first", vec![service("app", 2)])).await;
    wait_phase(&e, "first", LeasePhase::Ready).await;
    // berth restarts: new controllers, same store, same daemon.
    e.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (client, shutdown) = start(e.store.clone(), &e.connector, CONFIG, None);
    let e2 = Env {
        _dir: tempfile::tempdir().unwrap(),
        client,
        fake: e.fake.clone(),
        connector: e.connector.clone(),
        shutdown,
        store: e.store.clone(),
    };
    create(&e2, &lease("second", vec![service("app", 1)])).await;
    let l = wait_for(&e2, "second", "Pending for capacity", |l| {
        cond(l, "Ready").is_some_and(|c| c.1 == "InsufficientCapacity")
    })
    .await;
    assert_eq!(phase(&l), Some(LeasePhase::Pending));
    let first = Api::<Lease>::namespaced(e2.client.clone(), NS).get("first").await.unwrap();
    assert_eq!(phase(&first), Some(LeasePhase::Ready), "the running Lease is untouched by the restart");
    drop(e);
}

#[tokio::test]
async fn a_container_that_dies_drives_failing_then_failed_with_diagnostics() {
    let e = env().await;
    create(&e, &lease("crashy", vec![service("app", 1)])).await;
    wait_phase(&e, "crashy", LeasePhase::Ready).await;
    let (name, _) = lease_containers(&e.fake, "crashy").pop().unwrap();
    for i in 0..60 {
        e.fake.push_log(&name, if i % 2 == 0 { LogStream::Stdout } else { LogStream::Stderr }, &format!("line {i}"));
    }
    e.fake.stop_by_hand(&name, 3, false);
    let l = wait_phase(&e, "crashy", LeasePhase::Failed).await;
    let d = status(&l).diagnostics.unwrap();
    assert_eq!(d.exit_code, Some(3));
    assert!(!d.oom_killed);
    assert_eq!(d.last_log_lines.len(), 50, "the last 50 lines");
    assert_eq!(d.last_log_lines.last().map(String::as_str), Some("line 59"));
    assert_eq!(d.container, "app-0");
    let ready = cond(&l, "Ready").unwrap();
    assert_eq!((ready.0, ready.1.as_str()), (ConditionStatus::False, "ContainerFailed"));
    assert!(ready.2.contains("exit code 3") && ready.2.contains("line 59"), "{}", ready.2);
    // The container stays for inspection.
    assert_eq!(e.fake.container(&name).unwrap().state, ContainerState::Exited);
    let events = events_of(&e, "crashy").await;
    assert!(events.iter().any(|(r, n)| r == "Failed" && n.contains("exit code 3")), "{events:?}");
    assert!(events.iter().any(|(r, _)| r == "Failing"), "{events:?}");
}

#[tokio::test]
async fn a_bad_update_rolls_back_and_says_so() {
    let e = env().await;
    create(&e, &lease("web", vec![service("app", 1)])).await;
    let l = wait_phase(&e, "web", LeasePhase::Ready).await;
    let old_id = status(&l).instances[0].container_id.clone();
    patch_spec(&e, "web", json!({"services": [{"name": "app", "image": IMAGE, "command": ["false"], "quantity": 1}]}))
        .await;
    // The new release's container dies during its verification window.
    let new_name = format!("lease.{NS}.web.app-0.r2");
    wait_host("release 2 started", || e.fake.container(&new_name).is_some_and(|c| c.state == ContainerState::Running))
        .await;
    e.fake.push_log(&new_name, LogStream::Stderr, "config error: no such file");
    e.fake.stop_by_hand(&new_name, 1, false);
    let l = wait_for(&e, "web", "rolled back", |l| {
        phase(l) == Some(LeasePhase::Ready) && cond(l, "RolledBack").is_some_and(|c| c.0 == ConditionStatus::True)
    })
    .await;
    let st = status(&l);
    let ready = cond(&l, "Ready").unwrap();
    assert_eq!(ready.1, "RolledBack", "never reported as plain success");
    assert!(ready.2.contains("rolled back") && ready.2.contains("release 1 runs again"), "{}", ready.2);
    assert_eq!(
        st.releases.iter().map(|r| (r.revision, r.outcome.as_str())).collect::<Vec<_>>(),
        [(1, "Active"), (2, "RolledBack")]
    );
    assert!(st.releases[1].message.contains("exit code 1"), "{}", st.releases[1].message);
    assert_eq!(st.instances[0].container_id, old_id, "release 1's container runs again");
    assert!(e.fake.container(&new_name).is_none(), "the failed release's container is removed");
    let events = events_of(&e, "web").await;
    assert!(events.iter().any(|(r, _)| r == "RolledBack"), "{events:?}");
    // The failed configuration is not retried in a loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let l = Api::<Lease>::namespaced(e.client.clone(), NS).get("web").await.unwrap();
    assert_eq!(status(&l).releases.len(), 2);
}

#[tokio::test]
async fn a_restart_is_requested_by_annotation_and_recorded() {
    let e = env().await;
    create(&e, &lease("web", vec![service("app", 1)])).await;
    wait_phase(&e, "web", LeasePhase::Ready).await;
    let (name, before) = lease_containers(&e.fake, "web").pop().unwrap();
    Api::<Lease>::namespaced(e.client.clone(), NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {RESTART_ANNOTATION: "2026-12-05T12:00:00Z"}}})),
        )
        .await
        .unwrap();
    let l = wait_for(&e, "web", "restarted", |l| {
        phase(l) == Some(LeasePhase::Ready) && status(l).restarted_for.as_deref() == Some("2026-12-05T12:00:00Z")
    })
    .await;
    let after = e.fake.container(&name).unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(after.restart_count, before.restart_count + 1);
    assert_eq!(status(&l).releases.len(), 1, "a restart is not a new release");
}

#[tokio::test]
async fn close_with_retention_then_restore_into_a_new_lease_finds_the_data() {
    let e = env().await;
    let mut l = lease("old", vec![service("db", 1)]);
    l.spec.retain_on_close = true;
    l.spec.services[0].volumes = vec![LeaseVolume { name: "data".into(), mount_path: "/data".into() }];
    create(&e, &l).await;
    wait_phase(&e, "old", LeasePhase::Ready).await;
    e.fake.write_volume_file(&format!("lease.{NS}.old.db-0.data"), "state.txt", "order 42\n");
    patch_spec(&e, "old", json!({"closed": true})).await;
    let closed = wait_phase(&e, "old", LeasePhase::Retained).await;
    let retained = format!("retained.{NS}.old.db-0.data");
    assert_eq!(status(&closed).retained_volumes, std::slice::from_ref(&retained));
    assert!(status(&closed).retained_until.is_some());
    assert_eq!(e.fake.volume_file(&retained, "state.txt").as_deref(), Some("order 42\n"));
    let labels = e.fake.volume_labels(&retained).unwrap();
    assert_eq!(labels["berth.dev/tenant"], "acme");
    assert_eq!(labels["berth.dev/owner-name"], "old");
    assert!(labels["berth.dev/retained-until"].parse::<i64>().unwrap() > 0);
    assert!(!e.fake.volume_names().contains(&format!("lease.{NS}.old.db-0.data")));
    assert!(lease_containers(&e.fake, "old").iter().all(|(n, _)| !n.contains(".r")), "containers removed");

    // Another tenant may not adopt acme's data: refused at admission while the old Lease
    // exists, and by the controller (from the volumes' labels) once it is deleted.
    let mut thief = l.clone();
    thief.metadata = Default::default();
    thief.metadata.name = Some("thief".into());
    thief.spec.tenant = "mallory".into();
    thief.spec.retain_on_close = false;
    thief.spec.restore_from = Some("old".into());
    let refused = Api::<Lease>::namespaced(e.client.clone(), NS).create(&PostParams::default(), &thief).await;
    match refused {
        Err(kube::Error::Api(s)) => assert!(s.code == 422 && s.message.contains("acme"), "{s:?}"),
        other => panic!("admitted: {other:?}"),
    }
    Api::<Lease>::namespaced(e.client.clone(), NS).delete("old", &DeleteParams::default()).await.unwrap();
    let started = Instant::now();
    while Api::<Lease>::namespaced(e.client.clone(), NS).get_opt("old").await.unwrap().is_some() {
        assert!(started.elapsed() < DEADLINE, "the Retained Lease was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(e.fake.volume_file(&retained, "state.txt").as_deref(), Some("order 42\n"), "deleting keeps it");
    create(&e, &thief).await;
    let t = wait_for(&e, "thief", "refused", |l| {
        matches!(phase(l), Some(LeasePhase::Failed)) || cond(l, "Ready").is_some_and(|c| c.2.contains("mallory"))
    })
    .await;
    assert!(cond(&t, "Ready").unwrap().2.contains("belong to tenant acme"), "{:?}", cond(&t, "Ready"));
    assert_eq!(e.fake.volume_file(&retained, "state.txt").as_deref(), Some("order 42\n"), "untouched");
    Api::<Lease>::namespaced(e.client.clone(), NS).delete("thief", &DeleteParams::default()).await.unwrap();

    let mut new = l.clone();
    new.metadata = Default::default();
    new.metadata.name = Some("new".into());
    new.spec.retain_on_close = false;
    new.spec.restore_from = Some("old".into());
    create(&e, &new).await;
    wait_phase(&e, "new", LeasePhase::Ready).await;
    assert_eq!(e.fake.volume_file(&format!("lease.{NS}.new.db-0.data"), "state.txt").as_deref(), Some("order 42\n"));
    assert!(!e.fake.volume_names().contains(&retained), "the adopted volume is no longer retained");
    let events = events_of(&e, "new").await;
    assert!(events.iter().any(|(r, _)| r == "Restored"), "{events:?}");
}

#[tokio::test]
async fn a_delete_during_a_hanging_pull_finishes_within_seconds() {
    let e = env().await;
    e.fake.set_pull_hangs(true);
    let mut l = lease("slow", vec![service("app", 1)]);
    l.spec.services[0].image = "registry.example:5000/never/arrives:1".into();
    create(&e, &l).await;
    wait_for(&e, "slow", "pulling", |l| phase(l) == Some(LeasePhase::Provisioning)).await;
    wait_host("pulling", || e.fake.calls("pull_image") > 0).await;
    let api = Api::<Lease>::namespaced(e.client.clone(), NS);
    let started = Instant::now();
    api.delete("slow", &DeleteParams::default()).await.unwrap();
    while api.get_opt("slow").await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(10), "the delete waited for the pull");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("deleted {:?} after the request", started.elapsed());
    assert!(lease_containers(&e.fake, "slow").is_empty());
}

#[tokio::test]
async fn a_pull_that_fails_keeps_provisioning_with_a_clear_condition_and_growing_retries() {
    let e = env().await;
    let mut l = lease("nopull", vec![service("app", 1)]);
    l.spec.services[0].image = "registry.example:5000/missing/image:1".into();
    create(&e, &l).await;
    let l = wait_for(&e, "nopull", "retrying", |l| cond(l, "Ready").is_some_and(|c| c.1 == "Retrying")).await;
    assert_eq!(phase(&l), Some(LeasePhase::Provisioning));
    let msg = cond(&l, "Ready").unwrap().2;
    assert!(msg.contains("registry.example:5000/missing/image:1") && msg.contains("retrying in"), "{msg}");
    wait_host("a second attempt", || e.fake.calls("pull_image") >= 2).await;
    let l = wait_for(&e, "nopull", "attempt 2", |l| cond(l, "Ready").is_some_and(|c| c.2.contains("attempt 2"))).await;
    assert_eq!(phase(&l), Some(LeasePhase::Provisioning));
}

#[tokio::test]
async fn deleting_a_ready_lease_removes_its_containers_and_the_finalizer() {
    let e = env().await;
    create(&e, &lease("gone", vec![service("app", 2)])).await;
    let l = wait_phase(&e, "gone", LeasePhase::Ready).await;
    assert!(l.finalizers().contains(&lease::FINALIZER.to_string()));
    Api::<Lease>::namespaced(e.client.clone(), NS).delete("gone", &DeleteParams::default()).await.unwrap();
    let api = Api::<Lease>::namespaced(e.client.clone(), NS);
    let started = Instant::now();
    while api.get_opt("gone").await.unwrap().is_some() {
        assert!(started.elapsed() < DEADLINE, "not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lease_containers(&e.fake, "gone").is_empty());
}

/// A local HTTP receiver of callbacks that answers `status` (shared, changeable) and keeps every
/// request's headers and body.
struct Receiver {
    url: String,
    got: Arc<std::sync::Mutex<Vec<(http::HeaderMap, String)>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
}

async fn receiver() -> Receiver {
    use axum::extract::State;
    type Shared = (Arc<std::sync::Mutex<Vec<(http::HeaderMap, String)>>>, Arc<std::sync::atomic::AtomicU16>);
    async fn hook(State((got, status)): State<Shared>, headers: http::HeaderMap, body: String) -> http::StatusCode {
        got.lock().unwrap().push((headers, body));
        http::StatusCode::from_u16(status.load(std::sync::atomic::Ordering::SeqCst)).unwrap()
    }
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state((got.clone(), status.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, got, status }
}

const CALLBACK_CONFIG: &str = r#"
leases:
  skus:
    small: {cpus: 0.5, memoryMb: 128, pids: 64}
  allowedRegistries: [local]
  verifyWindow: 1s
  callbacks: {secret: "operator-test-secret"}
resyncInterval: 300s
"#;

fn phases_received(r: &Receiver) -> Vec<String> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(body).unwrap()["phase"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn terminal_transitions_send_signed_callbacks_exactly_once_even_across_a_restart() {
    use berth::controllers::lease::callbacks;
    let r = receiver().await;
    r.status.store(503, std::sync::atomic::Ordering::SeqCst); // the receiver is down at first
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let connector = FakeConnector::new();
    let fake = connector.daemon(&local_endpoint());
    fake.add_image(IMAGE);
    let outbox = dir.path().join("callbacks");
    let (client, shutdown) = start(store.clone(), &connector, CALLBACK_CONFIG, Some(outbox.clone()));
    let e = Env { _dir: dir, client, fake, connector, shutdown, store };
    set_capacity(&e, 2.0, 1024).await;
    let mut l = lease("hooked", vec![service("app", 1)]);
    l.spec.callback = Some(berth_crds::lease::CallbackSpec { url: r.url.clone(), secret_ref: None });
    create(&e, &l).await;
    wait_phase(&e, "hooked", LeasePhase::Ready).await;
    wait_host("a first (failed) delivery attempt", || !r.got.lock().unwrap().is_empty()).await;
    let l = wait_for(&e, "hooked", "showing the pending callback", |l| {
        status(l).callbacks.iter().any(|c| c.state == "Pending" && c.attempts >= 1 && c.last_error.contains("503"))
    })
    .await;
    assert_eq!(status(&l).callbacks.len(), 1);

    // berth restarts while the callback is still pending; the receiver comes back.
    e.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.status.store(200, std::sync::atomic::Ordering::SeqCst);
    let (client, shutdown) = start(e.store.clone(), &e.connector, CALLBACK_CONFIG, Some(outbox.clone()));
    let e = Env {
        _dir: tempfile::tempdir().unwrap(),
        client,
        fake: e.fake.clone(),
        connector: e.connector.clone(),
        shutdown,
        store: e.store.clone(),
    };
    wait_for(&e, "hooked", "showing the delivered callback", |l| {
        status(l).callbacks.iter().any(|c| c.phase == LeasePhase::Ready && c.state == "Delivered")
    })
    .await;
    patch_spec(&e, "hooked", json!({"closed": true})).await;
    wait_phase(&e, "hooked", LeasePhase::Closed).await;
    wait_host("the Closed callback", || phases_received(&r).contains(&"Closed".to_string())).await;

    // Once more a restart: nothing is sent again.
    e.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (client, shutdown) = start(e.store.clone(), &e.connector, CALLBACK_CONFIG, Some(outbox));
    let e = Env {
        _dir: tempfile::tempdir().unwrap(),
        client,
        fake: e.fake.clone(),
        connector: e.connector.clone(),
        shutdown,
        store: e.store.clone(),
    };
    wait_for(&e, "hooked", "both callbacks delivered", |l| {
        status(l).callbacks.len() == 2 && status(l).callbacks.iter().all(|c| c.state == "Delivered")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let got = r.got.lock().unwrap().clone();
    let phases = phases_received(&r);
    // Attempts against the 503 repeat the Ready callback; after that, exactly one Ready 200 and one Closed.
    assert_eq!(phases.iter().filter(|p| *p == "Closed").count(), 1, "{phases:?}");
    assert_eq!(phases.last().map(String::as_str), Some("Closed"));
    for (headers, body) in &got {
        let ts: i64 = headers[callbacks::TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
        let sig = headers[callbacks::SIGNATURE_HEADER].to_str().unwrap();
        assert!(callbacks::verify(b"operator-test-secret", ts, body.as_bytes(), sig), "bad signature on {body}");
        assert!(!callbacks::verify(b"wrong-secret", ts, body.as_bytes(), sig));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["lease"]["name"], "hooked");
        assert_eq!(v["tenant"], "acme");
    }
    // Every Ready attempt is the same delivery (same id, same signature).
    let ready_ids: std::collections::BTreeSet<String> = got
        .iter()
        .filter(|(_, b)| b.contains("\"phase\":\"Ready\""))
        .map(|(h, _)| format!("{:?}{:?}", h[callbacks::DELIVERY_HEADER], h[callbacks::SIGNATURE_HEADER]))
        .collect();
    assert_eq!(ready_ids.len(), 1, "{ready_ids:?}");
}

#[tokio::test]
async fn scaling_up_needs_room_on_the_host_and_updates_the_allocation() {
    let e = env().await;
    set_capacity(&e, 1.0, 1024).await;
    create(&e, &lease("grow", vec![service("app", 1)])).await;
    let l = wait_phase(&e, "grow", LeasePhase::Ready).await;
    assert_eq!(status(&l).allocated.unwrap().cpus, 0.5);
    // 3 × 0.5 CPUs do not fit in 1 CPU: the running release stays and the status says why.
    patch_spec(
        &e,
        "grow",
        json!({"services": [{"name": "app", "image": IMAGE, "command": ["httpd", "-f"], "quantity": 3}]}),
    )
    .await;
    let l = wait_for(&e, "grow", "blocked", |l| cond(l, "UpdateBlocked").is_some_and(|c| c.0 == ConditionStatus::True))
        .await;
    assert_eq!(phase(&l), Some(LeasePhase::Ready));
    assert!(
        cond(&l, "UpdateBlocked").unwrap().2.contains("more than host local has free"),
        "{:?}",
        cond(&l, "UpdateBlocked")
    );
    assert_eq!(lease_containers(&e.fake, "grow").len(), 1);
    // 2 × 0.5 fit.
    patch_spec(
        &e,
        "grow",
        json!({"services": [{"name": "app", "image": IMAGE, "command": ["httpd", "-f"], "quantity": 2}]}),
    )
    .await;
    let l = wait_for(&e, "grow", "release 2 active", |l| {
        phase(l) == Some(LeasePhase::Ready)
            && status(l).releases.last().is_some_and(|r| r.revision == 2 && r.outcome == "Active")
    })
    .await;
    assert_eq!(status(&l).allocated.unwrap().cpus, 1.0);
    assert_eq!(cond(&l, "UpdateBlocked").map(|c| c.0), Some(ConditionStatus::False));
    assert_eq!(status(&l).instances.len(), 2);
}

#[tokio::test]
async fn retained_volumes_are_reaped_after_the_grace_period() {
    let e = env_with(&CONFIG.replace("grace: 1h", "grace: 3s")).await;
    let mut l = lease("brief", vec![service("db", 1)]);
    l.spec.retain_on_close = true;
    l.spec.services[0].volumes = vec![LeaseVolume { name: "data".into(), mount_path: "/data".into() }];
    create(&e, &l).await;
    wait_phase(&e, "brief", LeasePhase::Ready).await;
    patch_spec(&e, "brief", json!({"closed": true})).await;
    wait_phase(&e, "brief", LeasePhase::Retained).await;
    let retained = format!("retained.{NS}.brief.db-0.data");
    assert!(e.fake.volume_names().contains(&retained));
    let l = wait_phase(&e, "brief", LeasePhase::Closed).await;
    assert!(!e.fake.volume_names().contains(&retained), "reaped");
    assert!(status(&l).retained_volumes.is_empty());
    let events = events_of(&e, "brief").await;
    assert!(events.iter().any(|(r, _)| r == "Reaped"), "{events:?}");
}

#[tokio::test]
async fn a_callback_is_signed_with_the_secret_the_lease_names() {
    use berth::controllers::lease::callbacks;
    let r = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let connector = FakeConnector::new();
    let fake = connector.daemon(&local_endpoint());
    fake.add_image(IMAGE);
    let (client, shutdown) = start(store.clone(), &connector, CONFIG, Some(dir.path().join("callbacks")));
    let e = Env { _dir: dir, client, fake, connector, shutdown, store };
    set_capacity(&e, 2.0, 1024).await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acme-hooks"},
        "stringData": {"hmac": "tenant-own-secret"}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(e.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut l = lease("signed", vec![service("app", 1)]);
    l.spec.callback = Some(berth_crds::lease::CallbackSpec {
        url: r.url.clone(),
        secret_ref: Some(berth_crds::common::SecretKeySelector {
            name: "acme-hooks".into(),
            key: "hmac".into(),
            optional: false,
        }),
    });
    create(&e, &l).await;
    wait_phase(&e, "signed", LeasePhase::Ready).await;
    wait_host("the Ready callback", || !r.got.lock().unwrap().is_empty()).await;
    let (headers, body) = r.got.lock().unwrap()[0].clone();
    let ts: i64 = headers[callbacks::TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
    let sig = headers[callbacks::SIGNATURE_HEADER].to_str().unwrap();
    assert!(callbacks::verify(b"tenant-own-secret", ts, body.as_bytes(), sig));
    assert!(!body.contains("tenant-own-secret"));
}
