//! Component tests of `leases/plan` and `leases/log`: the real Host and Lease controllers over
//! the in-process API and a fake Docker host, the controllers' views behind the router with
//! token authentication, and what a client sees: the plan of a Ready Lease (converged, computed
//! with the same hash key as the controller's release), of a Lease waiting for room (why, per
//! host), and the log records of a Lease's containers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use berth::apiserver::auth::{AuthMode, Tokens};
use berth::apiserver::{self, ApiState};
use berth::config::OperatorConfig;
use berth::controllers::context::Context;
use berth::controllers::host::{self, HostControllerOptions};
use berth::controllers::lease::worker::WorkerOptions;
use berth::controllers::lease::{self, LeaseControllerOptions};
use berth::controllers::pool::HostPool;
use berth::controllers::views::ControllerViews;
use berth::docker::fake::{FakeConnector, FakeDocker};
use berth::docker::{LogStream, local_endpoint};
use berth::metrics::Metrics;
use berth::policy::OperatorPolicy;
use berth::store::{StoreOptions, open as open_store};
use berth_crds::common::{ConditionStatus, find_condition};
use berth_crds::host::{Host, HostCapacity};
use berth_crds::lease::{Lease, LeasePhase, LeaseService, LeaseSpec};
use berth_crds::logs::{LogRecord, LogRecordType};
use berth_crds::plan::{PlanItem, PlanList, WorkloadPlan};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const IMAGE: &str = "berth-e2e/busybox:latest";
const DEADLINE: Duration = Duration::from_secs(60);
const LEASES: &str = "/apis/berth.dev/v1alpha1/namespaces/default/leases";

const CONFIG: &str = r#"
leases:
  skus:
    small: {cpus: 0.5, memoryMb: 128, pids: 64}
  allowedRegistries: [local]
  verifyWindow: 1s
resyncInterval: 300s
"#;

struct Env {
    _dir: tempfile::TempDir,
    client: Client,
    app: Router,
    fake: FakeDocker,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let connector = FakeConnector::new();
    let fake = connector.daemon(&local_endpoint());
    fake.add_image(IMAGE);
    let mut state = ApiState::new(store);
    let operator = Arc::new(OperatorConfig::parse(CONFIG, "test").unwrap());
    state.policy = Arc::new(OperatorPolicy::new(operator.clone()));
    let client = Client::new(apiserver::router(state.clone()), "default");
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: operator,
        instance: "lease-views".into(),
        hash_key: b"lease-views-key".to_vec(),
        pool: Arc::new(HostPool::new()),
        connector: Arc::new(connector.clone()),
        metrics: Arc::new(Metrics::new()),
    });
    let hosts = HostControllerOptions {
        reconnect_min_delay: Duration::from_millis(50),
        reconnect_max_delay: Duration::from_millis(500),
        ping_interval: Duration::from_millis(200),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    tokio::spawn(host::run_with(ctx.clone(), shutdown.clone(), hosts));
    let worker = WorkerOptions {
        poll: Duration::from_millis(50),
        verify_window: Duration::from_secs(1),
        health_timeout: Duration::from_secs(10),
    };
    let options = LeaseControllerOptions { outbox_dir: None, worker: Some(worker) };
    tokio::spawn(lease::run(ctx.clone(), options, shutdown.clone()));
    let _ = state.views.set(Arc::new(ControllerViews::new(ctx)));
    let tokens = Tokens::parse(&format!("{ADMIN},alice,admin\n{VIEWER},bob,read-only\n"), "test").unwrap();
    let app = apiserver::with_auth(apiserver::router(state), AuthMode::Tokens(Arc::new(tokens)));
    let e = Env { _dir: dir, client, app, fake, shutdown };
    set_capacity(&e, 1.0, 1024).await;
    e
}

/// Gives the `local` Host a capacity and waits until it is Ready with it.
async fn set_capacity(e: &Env, cpus: f64, memory_mb: i64) {
    let hosts = Api::<Host>::all(e.client.clone());
    poll("the local Host registered", || async { hosts.get_opt("local").await.unwrap().is_some() }).await;
    let capacity = HostCapacity { cpus: Some(cpus), memory_mb: Some(memory_mb), disk_mb: None };
    hosts
        .patch("local", &PatchParams::default(), &Patch::Merge(json!({"spec": {"capacity": capacity}})))
        .await
        .unwrap();
    poll("the local Host Ready with its capacity", || async {
        let st = hosts.get("local").await.unwrap().status.unwrap_or_default();
        find_condition(&st.conditions, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
            && st.capacity.as_ref().and_then(|c| c.cpus) == Some(cpus)
    })
    .await;
}

async fn poll<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < DEADLINE, "not {what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(e: &Env, name: &str, quantity: i32) {
    let l = Lease::new(
        name,
        LeaseSpec {
            tenant: "acme".into(),
            sku: "small".into(),
            duration: Some("1h".into()),
            services: vec![LeaseService {
                name: "app".into(),
                image: IMAGE.into(),
                command: Some(vec!["sleep".into(), "3600".into()]),
                quantity,
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    Api::<Lease>::namespaced(e.client.clone(), "default").create(&PostParams::default(), &l).await.unwrap();
}

async fn wait_lease(e: &Env, name: &str, what: &str, check: impl Fn(&Lease) -> bool) -> Lease {
    let api = Api::<Lease>::namespaced(e.client.clone(), "default");
    let started = Instant::now();
    loop {
        let l = api.get(name).await.unwrap();
        if check(&l) {
            return l;
        }
        assert!(started.elapsed() < DEADLINE, "{name}: not {what} within {DEADLINE:?}: {:#?}", l.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(e: &Env, uri: &str, token: &str) -> (StatusCode, String) {
    let req = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap();
    let resp = e.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn plan(e: &Env, name: &str) -> WorkloadPlan {
    let (code, body) = call(e, &format!("{LEASES}/{name}/plan"), VIEWER).await;
    assert_eq!(code, 200, "{body}");
    let doc: PlanList = serde_json::from_str(&body).unwrap();
    match <[PlanItem; 1]>::try_from(doc.items) {
        Ok([PlanItem::Lease(p)]) => p,
        other => panic!("not one Lease item: {other:?}"),
    }
}

fn records(body: &str) -> Vec<LogRecord> {
    body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("{err}: {l}"))).collect()
}

fn lines(body: &str) -> Vec<(String, i32, String)> {
    records(body)
        .into_iter()
        .filter(|r| r.type_ == LogRecordType::Line)
        .map(|r| (r.service, r.replica, r.text))
        .collect()
}

#[tokio::test]
async fn a_ready_lease_plans_converged_and_one_without_room_says_why_per_host() {
    let e = env().await;
    create(&e, "first", 2).await; // 1.0 CPU: the whole host
    wait_lease(&e, "first", "Ready", |l| l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Ready)).await;

    let containers_before = e.fake.containers();
    let creates_before = e.fake.calls("create_container");
    let p = plan(&e, "first").await;
    // Converged: the view renders the next release with the controller's own hash key, and
    // finds the hash of the release that runs.
    assert!(p.converged, "{p:#?}");
    assert_eq!((p.namespace.as_str(), p.name.as_str(), p.phase.as_deref()), ("default", "first", Some("Ready")));
    assert_eq!(p.hosts.len(), 1);
    assert_eq!((p.hosts[0].host.as_str(), p.hosts[0].converged), ("local", true));
    assert!(p.findings.is_empty() && p.hosts[0].steps.is_empty(), "{p:#?}");
    assert!(p.notes.iter().any(|n| n.contains("release 1 runs on host local")), "{:?}", p.notes);

    create(&e, "second", 1).await;
    wait_lease(&e, "second", "Pending for capacity", |l| {
        l.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "InsufficientCapacity")
    })
    .await;
    let p = plan(&e, "second").await;
    assert!(!p.converged, "{p:#?}");
    assert_eq!(p.phase.as_deref(), Some("Pending"));
    let object: Vec<(u8, &str)> = p.findings.iter().map(|f| (f.tier, f.reason.as_str())).collect();
    assert_eq!(object, [(1, "InsufficientCapacity")], "{p:#?}");
    assert!(p.findings[0].message.contains("no matching Host has room for 0.5 CPUs and 128 MiB"), "{p:#?}");
    let per_host: Vec<(&str, &str, &str)> = p
        .hosts
        .iter()
        .flat_map(|h| h.findings.iter().map(move |f| (h.host.as_str(), f.reason.as_str(), f.message.as_str())))
        .collect();
    assert_eq!(per_host, [("local", "InsufficientCapacity", "local has 0.00 of 1.00 CPUs and 768 of 1024 MiB free")]);
    assert!(p.hosts.iter().all(|h| h.steps.is_empty()), "nothing can be done now: {p:#?}");

    // Planning changed nothing on the host.
    assert_eq!(e.fake.calls("create_container"), creates_before);
    assert_eq!(e.fake.containers().keys().collect::<Vec<_>>(), containers_before.keys().collect::<Vec<_>>());

    let (code, body) = call(&e, &format!("{LEASES}/nope/plan"), VIEWER).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("leases.berth.dev \\\"nope\\\" not found"), "{body}");
}

#[tokio::test]
async fn lease_logs_are_the_active_releases_by_instance_and_need_the_admin_role() {
    let e = env().await;
    create(&e, "chatty", 2).await;
    let l =
        wait_lease(&e, "chatty", "Ready", |l| l.status.as_ref().and_then(|s| s.phase) == Some(LeasePhase::Ready)).await;
    assert_eq!(l.status.unwrap().releases[0].revision, 1);
    e.fake.push_log("lease.default.chatty.app-0.r1", LogStream::Stdout, "app 0 says hello");
    e.fake.push_log("lease.default.chatty.app-1.r1", LogStream::Stderr, "app 1 complains");

    let (code, body) = call(&e, &format!("{LEASES}/chatty/log"), VIEWER).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read-only") && body.contains("admin token"), "{body}");

    let (code, body) = call(&e, &format!("{LEASES}/chatty/log"), ADMIN).await;
    assert_eq!(code, 200, "{body}");
    let announced: Vec<(String, String, i32)> = records(&body)
        .into_iter()
        .filter(|r| r.type_ == LogRecordType::Container)
        .map(|r| (r.host, r.container, r.replica))
        .collect();
    assert_eq!(
        announced,
        [
            ("local".to_string(), "lease.default.chatty.app-0.r1".to_string(), 0),
            ("local".to_string(), "lease.default.chatty.app-1.r1".to_string(), 1)
        ]
    );
    assert_eq!(
        lines(&body),
        [("app".to_string(), 0, "app 0 says hello".to_string()), ("app".to_string(), 1, "app 1 complains".to_string())]
    );
    let (_, body) = call(&e, &format!("{LEASES}/chatty/log?service=app&replica=1"), ADMIN).await;
    assert_eq!(lines(&body), [("app".to_string(), 1, "app 1 complains".to_string())]);
    let (code, body) = call(&e, &format!("{LEASES}/chatty/log?service=web"), ADMIN).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("Lease default/chatty has no service \\\"web\\\"; its services are: app"), "{body}");

    // A Lease not placed anywhere has no logs, and says where to look instead.
    set_capacity(&e, 0.5, 1024).await;
    create(&e, "waiting", 2).await;
    wait_lease(&e, "waiting", "Pending", |l| {
        l.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "InsufficientCapacity")
    })
    .await;
    let (code, body) = call(&e, &format!("{LEASES}/waiting/log"), ADMIN).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not placed on a host yet") && body.contains("berth plan lease/waiting"), "{body}");
}

#[tokio::test]
async fn discovery_lists_the_lease_subresources() {
    let e = env().await;
    let (_, body) = call(&e, "/apis/berth.dev/v1alpha1", ADMIN).await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: BTreeMap<String, serde_json::Value> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("leases/")))
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["verbs"].clone()))
        .collect();
    assert_eq!(names.get("leases/plan"), Some(&json!(["get"])), "{body}");
    assert_eq!(names.get("leases/log"), Some(&json!(["get"])), "{body}");
}
