//! Component tests of the computed subresources `stacks/plan` and `stacks/log`: the router with
//! token authentication, the controllers' views over a fake Docker host, and what a client sees
//! (status codes, messages, the plan document, the NDJSON log records).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use berth::apiserver::auth::{AuthMode, Tokens};
use berth::apiserver::{self, ApiState};
use berth::config::OperatorConfig;
use berth::controllers::context::Context;
use berth::controllers::pool::HostPool;
use berth::controllers::views::ControllerViews;
use berth::docker::LogStream;
use berth::docker::fake::{FakeConnector, FakeDocker};
use berth::metrics::Metrics;
use berth::store::{StoreOptions, open as open_store};
use berth_crds::common::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID,
    LABEL_REPLICA, LABEL_SERVICE, MANAGED_BY_VALUE,
};
use berth_crds::logs::{LogRecord, LogRecordType, LogStreamName};
use berth_crds::plan::{PlanItem, PlanList};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const INSTANCE: &str = "views";
const IMAGE: &str = "berth-e2e/busybox:latest";

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    fake: FakeDocker,
}

fn setup(with_views: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let state = ApiState::new(store);
    let fake = FakeDocker::new("fake:///local");
    fake.add_image(IMAGE);
    if with_views {
        let pool = Arc::new(HostPool::new());
        pool.set_connected("local", Arc::new(fake.clone()));
        let ctx = Arc::new(Context {
            client: kube::Client::new(apiserver::router(state.clone()), "default"),
            config: Arc::new(OperatorConfig::default()),
            instance: INSTANCE.into(),
            hash_key: b"views-test-key".to_vec(),
            pool,
            connector: Arc::new(FakeConnector::new()),
            metrics: Arc::new(Metrics::new()),
        });
        let _ = state.views.set(Arc::new(ControllerViews::new(ctx)));
    }
    let tokens = Tokens::parse(&format!("{ADMIN},alice,admin\n{VIEWER},bob,read-only\n"), "test").unwrap();
    let app = apiserver::with_auth(apiserver::router(state.clone()), AuthMode::Tokens(Arc::new(tokens)));
    Env { _dir: dir, app, fake }
}

async fn call(app: &Router, method: &str, uri: &str, token: &str, body: Option<Value>) -> (StatusCode, String) {
    let b = Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    let req = match body {
        Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

const STACKS: &str = "/apis/berth.dev/v1alpha1/namespaces/default/stacks";

async fn create_stack(e: &Env) -> String {
    let stack = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "shop"},
    "spec": {"services": [
        {"name": "web", "image": IMAGE, "replicas": 2},
        {"name": "db", "image": IMAGE}
    ]}});
    let (code, body) = call(&e.app, "POST", STACKS, ADMIN, Some(stack)).await;
    assert_eq!(code, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

fn owned_container(fake: &FakeDocker, name: &str, uid: &str, service: &str, replica: i32) {
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_INSTANCE.to_string(), INSTANCE.to_string()),
        (LABEL_OWNER_KIND.to_string(), "Stack".to_string()),
        (LABEL_OWNER_NAMESPACE.to_string(), "default".to_string()),
        (LABEL_OWNER_NAME.to_string(), "shop".to_string()),
        (LABEL_OWNER_UID.to_string(), uid.to_string()),
        (LABEL_SERVICE.to_string(), service.to_string()),
        (LABEL_REPLICA.to_string(), replica.to_string()),
    ]);
    fake.add_foreign_container(name, IMAGE, labels);
}

fn records(body: &str) -> Vec<LogRecord> {
    body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test]
async fn discovery_lists_the_computed_subresources_read_only_when_controllers_serve_them() {
    let listed = |body: &str| -> Vec<(String, Value)> {
        let list: Value = serde_json::from_str(body).unwrap();
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == "stacks/plan" || r["name"] == "stacks/log")
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["verbs"].clone()))
            .collect()
    };
    let (_, body) = call(&setup(true).app, "GET", "/apis/berth.dev/v1alpha1", ADMIN, None).await;
    assert_eq!(
        listed(&body),
        [("stacks/plan".to_string(), json!(["get"])), ("stacks/log".to_string(), json!(["get"]))]
    );
    let (_, body) = call(&setup(false).app, "GET", "/apis/berth.dev/v1alpha1", ADMIN, None).await;
    assert!(listed(&body).is_empty(), "{body}");
}

#[tokio::test]
async fn without_controllers_plan_and_log_answer_404_saying_why() {
    let e = setup(false);
    create_stack(&e).await;
    for sub in ["plan", "log"] {
        let (code, body) = call(&e.app, "GET", &format!("{STACKS}/shop/{sub}"), ADMIN, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("runs no controllers") && body.contains("--no-controllers"), "{body}");
    }
}

#[tokio::test]
async fn the_plan_of_a_new_stack_creates_every_container_without_touching_the_host() {
    let e = setup(true);
    create_stack(&e).await;
    // Read-only tokens may read plans (secret values never appear in them).
    let (code, body) = call(&e.app, "GET", &format!("{STACKS}/shop/plan"), VIEWER, None).await;
    assert_eq!(code, 200, "{body}");
    let doc: PlanList = serde_json::from_str(&body).unwrap();
    assert_eq!(doc.api_version, "berth.dev/plan/v1");
    let [PlanItem::Stack(p)] = doc.items.as_slice() else { panic!("{body}") };
    assert_eq!((p.namespace.as_str(), p.name.as_str(), p.converged), ("default", "shop", false));
    let creates: Vec<(String, u8, String)> = p.hosts[0]
        .steps
        .iter()
        .flat_map(|s| &s.actions)
        .filter(|a| a.action == "create")
        .map(|a| (a.container.clone().unwrap(), a.tier, a.reason.clone()))
        .collect();
    assert_eq!(creates.len(), 3, "{body}");
    assert!(creates.iter().all(|(_, tier, reason)| *tier == 1 && reason == "ContainerMissing"), "{creates:?}");
    assert!(e.fake.containers().is_empty(), "planning created containers");

    let (code, body) = call(&e.app, "GET", &format!("{STACKS}/nope/plan"), ADMIN, None).await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = call(&e.app, "POST", &format!("{STACKS}/shop/plan"), ADMIN, Some(json!({}))).await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn logs_need_the_admin_role_and_select_by_service_and_replica() {
    let e = setup(true);
    let uid = create_stack(&e).await;
    owned_container(&e.fake, "default.shop-web-0", &uid, "web", 0);
    owned_container(&e.fake, "default.shop-web-1", &uid, "web", 1);
    owned_container(&e.fake, "default.shop-db-0", &uid, "db", 0);
    owned_container(&e.fake, "default.other-web-0", "another-uid", "web", 0);
    e.fake.push_log("default.shop-web-0", LogStream::Stdout, "web0 out");
    e.fake.push_log("default.shop-web-0", LogStream::Stderr, "web0 err");
    e.fake.push_log("default.shop-web-1", LogStream::Stdout, "web1 out");
    e.fake.push_log("default.shop-db-0", LogStream::Stdout, "db out");
    e.fake.push_log("default.other-web-0", LogStream::Stdout, "not ours");

    let (code, body) = call(&e.app, "GET", &format!("{STACKS}/shop/log"), VIEWER, None).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read-only") && body.contains("admin token"), "{body}");

    let (code, body) = call(&e.app, "GET", &format!("{STACKS}/shop/log"), ADMIN, None).await;
    assert_eq!(code, 200, "{body}");
    let all = records(&body);
    let announced: Vec<&str> =
        all.iter().filter(|r| r.type_ == LogRecordType::Container).map(|r| r.container.as_str()).collect();
    assert_eq!(announced, ["default.shop-db-0", "default.shop-web-0", "default.shop-web-1"]);
    let lines: Vec<(&str, i32, Option<LogStreamName>, &str)> = all
        .iter()
        .filter(|r| r.type_ == LogRecordType::Line)
        .map(|r| (r.service.as_str(), r.replica, r.stream, r.text.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("db", 0, Some(LogStreamName::Stdout), "db out"),
            ("web", 0, Some(LogStreamName::Stdout), "web0 out"),
            ("web", 0, Some(LogStreamName::Stderr), "web0 err"),
            ("web", 1, Some(LogStreamName::Stdout), "web1 out"),
        ]
    );

    let (_, body) =
        call(&e.app, "GET", &format!("{STACKS}/shop/log?service=web&replica=1&tailLines=1"), ADMIN, None).await;
    let texts: Vec<String> =
        records(&body).into_iter().filter(|r| r.type_ == LogRecordType::Line).map(|r| r.text).collect();
    assert_eq!(texts, ["web1 out"]);

    let (code, body) = call(&e.app, "GET", &format!("{STACKS}/shop/log?service=api"), ADMIN, None).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no service \\\"api\\\"") && body.contains("db, web"), "{body}");
    let (code, body) = call(&e.app, "GET", &format!("{STACKS}/shop/log?replica=x"), ADMIN, None).await;
    assert_eq!(code, 400, "{body}");
}
