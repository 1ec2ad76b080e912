//! HTTP-level tests of the API router with `oneshot`: discovery, OpenAPI, tables, status codes,
//! body limits and authentication, as kubectl and other clients see them.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use berth::apiserver::auth::{AuthMode, Tokens};
use berth::apiserver::{self, ApiState};
use berth::store::{StoreOptions, open as open_store};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

fn setup() -> (tempfile::TempDir, ApiState) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    (dir, ApiState::new(store))
}

fn authed(state: ApiState) -> Router {
    let tokens = Tokens::parse(&format!("{ADMIN},alice,admin\n{VIEWER},bob,read-only\n"), "test").unwrap();
    apiserver::with_auth(apiserver::router(state), AuthMode::Tokens(Arc::new(tokens)))
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = match body {
        Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

fn stack_json(name: &str) -> Value {
    json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": name},
        "spec": {"services": [{"name": "web", "image": "busybox"}]}})
}

#[tokio::test]
async fn discovery_lists_kinds_with_short_names_categories_and_status() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    let (code, _, groups) = call(&app, "GET", "/apis", None, &[], None).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["berth.dev", "events.k8s.io"]);
    let (_, _, list) = call(&app, "GET", "/apis/berth.dev/v1alpha1", None, &[], None).await;
    let stacks = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "stacks").unwrap();
    assert_eq!(stacks["namespaced"], true);
    assert_eq!(stacks["shortNames"], json!(["stk", "st"]));
    assert_eq!(stacks["categories"], json!(["berth"]));
    assert!(list["resources"].as_array().unwrap().iter().any(|r| r["name"] == "stacks/status"));
    let hosts = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "hosts").unwrap();
    assert_eq!(hosts["namespaced"], false);
    let (_, _, core) = call(&app, "GET", "/api/v1", None, &[], None).await;
    assert!(core["resources"].as_array().unwrap().iter().any(|r| r["name"] == "secrets"));
    let (code, _, version) = call(&app, "GET", "/version", None, &[], None).await;
    assert_eq!(code, 200);
    assert_eq!(version["major"], "1");
}

#[tokio::test]
async fn openapi_index_points_at_group_documents() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    let (_, _, idx) = call(&app, "GET", "/openapi/v3", None, &[], None).await;
    let url = idx["paths"]["apis/berth.dev/v1alpha1"]["serverRelativeURL"].as_str().unwrap().to_string();
    let (code, _, doc) = call(&app, "GET", &url, None, &[], None).await;
    assert_eq!(code, 200);
    assert!(doc["components"]["schemas"]["dev.berth.v1alpha1.Lease"].is_object());
}

#[tokio::test]
async fn tables_carry_printer_columns() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    call(&app, "POST", "/apis/berth.dev/v1alpha1/namespaces/default/stacks", None, &[], Some(stack_json("web"))).await;
    let accept = [("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")];
    let (code, _, t) =
        call(&app, "GET", "/apis/berth.dev/v1alpha1/namespaces/default/stacks", None, &accept, None).await;
    assert_eq!(code, 200);
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> =
        t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Name", "Ready", "Phase", "Hosts", "Drift", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "web");
    let (_, _, one) =
        call(&app, "GET", "/apis/berth.dev/v1alpha1/namespaces/default/stacks/web", None, &accept, None).await;
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn status_codes_and_reasons() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    let base = "/apis/berth.dev/v1alpha1/namespaces/default/stacks";
    let (code, _, s) = call(&app, "GET", &format!("{base}/nope"), None, &[], None).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (404, "NotFound"));
    let (code, _, s) = call(
        &app,
        "POST",
        base,
        None,
        &[],
        Some(json!({"kind": "Stack", "metadata": {"name": "x"}, "spec": {"services": "nope"}})),
    )
    .await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (422, "Invalid"));
    assert_eq!(s["details"]["causes"][0]["field"], "spec.services");
    let (code, _, s) = call(&app, "POST", &format!("{base}?fieldValidation=Strict"), None, &[], Some(json!({"kind": "Stack", "metadata": {"name": "x"}, "spec": {"services": [{"name": "a", "image": "b"}], "extra": 1}}))).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (400, "BadRequest"));
    assert!(s["message"].as_str().unwrap().contains("unknown field \"spec.extra\""));
    let (code, headers, _) = call(&app, "POST", &format!("{base}?fieldValidation=Warn"), None, &[], Some(json!({"kind": "Stack", "metadata": {"name": "x"}, "spec": {"services": [{"name": "a", "image": "b"}], "extra": 1}}))).await;
    assert_eq!(code, 201);
    assert!(headers.get("warning").unwrap().to_str().unwrap().contains("spec.extra"));
    let (code, _, s) =
        call(&app, "POST", base, None, &[], Some(json!({"kind": "Lease", "metadata": {"name": "x"}}))).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (400, "BadRequest"));
    let (code, _, s) = call(
        &app,
        "PATCH",
        &format!("{base}/x"),
        None,
        &[("content-type", "application/strategic-merge-patch+json")],
        None,
    )
    .await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (415, "UnsupportedMediaType"));
    let (code, _, _) = call(&app, "GET", "/apis/berth.dev/v1alpha1/namespaces/default/widgets", None, &[], None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let (_d, mut state) = setup();
    state.body_limit = 1024;
    let app = apiserver::router(state);
    let mut big = stack_json("big");
    big["metadata"]["annotations"] = json!({"x": "y".repeat(4096)});
    let (code, _, s) =
        call(&app, "POST", "/apis/berth.dev/v1alpha1/namespaces/default/stacks", None, &[], Some(big)).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (413, "RequestEntityTooLarge"));
}

#[tokio::test]
async fn a_4_mib_body_is_413_with_the_default_limit() {
    let (_d, state) = setup();
    assert_eq!(state.body_limit, 3 * 1024 * 1024);
    let app = apiserver::router(state);
    let base = "/api/v1/namespaces/default/configmaps";
    let cm = |name: &str, bytes: usize| json!({"metadata": {"name": name}, "data": {"blob": "x".repeat(bytes)}});
    let (code, _, s) = call(&app, "POST", base, None, &[], Some(cm("huge", 4 * 1024 * 1024))).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (413, "RequestEntityTooLarge"));
    assert!(s["message"].as_str().unwrap().contains("--max-body-bytes"), "{s}");
    let (code, _, _) = call(&app, "GET", &format!("{base}/huge"), None, &[], None).await;
    assert_eq!(code, 404, "nothing was stored");
    // Just under the limit is fine.
    let (code, _, _) = call(&app, "POST", base, None, &[], Some(cm("big", 2 * 1024 * 1024))).await;
    assert_eq!(code, 201);
}

#[tokio::test]
async fn an_invalid_stack_gets_one_cause_per_bad_field() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    let base = "/apis/berth.dev/v1alpha1/namespaces/default/stacks";
    let bad = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "bad"},
    "spec": {"driftPolicy": "Sometimes", "services": [
        {"name": "web", "image": "busybox", "ports": [{"containerPort": "eighty"}]},
        {"name": "db", "replicas": 1}
    ]}});
    let (code, _, s) = call(&app, "POST", base, None, &[], Some(bad)).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (422, "Invalid"));
    let mut fields: Vec<&str> =
        s["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["spec.driftPolicy", "spec.services[0].ports[0].containerPort", "spec.services[1].image"]);
    assert_eq!(s["details"]["name"], "bad");
    let (code, _, _) = call(&app, "GET", &format!("{base}/bad"), None, &[], None).await;
    assert_eq!(code, 404, "an invalid object is never stored");
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let (_d, state) = setup();
    let app = authed(state);
    let base = "/apis/berth.dev/v1alpha1/namespaces/default/stacks";
    let (code, _, s) = call(&app, "GET", base, None, &[], None).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (401, "Unauthorized"));
    let (code, _, _) = call(&app, "GET", base, Some("wrong-token-0123456789"), &[], None).await;
    assert_eq!(code, 401);
    let (code, _, _) = call(&app, "GET", "/healthz", None, &[], None).await;
    assert_eq!(code, 200, "health is public");
    let (code, _, _) = call(&app, "GET", base, Some(VIEWER), &[], None).await;
    assert_eq!(code, 200);
    let (code, _, s) = call(&app, "POST", base, Some(VIEWER), &[], Some(stack_json("v"))).await;
    assert_eq!((code.as_u16(), s["reason"].as_str().unwrap()), (403, "Forbidden"));
    let (code, _, _) = call(&app, "POST", base, Some(ADMIN), &[], Some(stack_json("v"))).await;
    assert_eq!(code, 201);
}

#[tokio::test]
async fn metrics_count_requests() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    call(&app, "GET", "/apis/berth.dev/v1alpha1/namespaces/default/stacks", None, &[], None).await;
    let resp = app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("berth_apiserver_requests_total{verb=\"list\",resource=\"stacks\",code=\"200\"} 1"),
        "{text}"
    );
}

async fn get_text(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    let mut b = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app.clone().oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let content_type =
        resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, content_type, body)
}

/// Checks the structure of the Prometheus text format 0.0.4: every sample belongs to the family
/// of the `# TYPE` line before it (a histogram's samples carry `_bucket`, `_sum` or `_count`).
fn check_prometheus_text(text: &str) {
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            family = Some((name.to_string(), kind.to_string()));
        } else if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "only HELP and TYPE comments are expected: {line}");
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let (fam, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{fam}{s}")),
                _ => name == fam,
            };
            assert!(ok, "sample {name} does not belong to the family {fam} ({kind})");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "{line}");
        }
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_unless_openmetrics_is_asked_for() {
    let (_d, state) = setup();
    let app = authed(state);
    call(&app, "GET", "/apis/berth.dev/v1alpha1/namespaces/default/stacks", Some(ADMIN), &[], None).await;
    let (code, content_type, text) = get_text(&app, "/metrics", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(text.contains("# TYPE berth_apiserver_requests_total counter"), "{text}");
    assert!(text.contains("berth_apiserver_request_duration_seconds_bucket{"), "{text}");
    check_prometheus_text(&text);

    // What Prometheus sends when it prefers OpenMetrics.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (code, content_type, text) = get_text(&app, "/metrics", &[("accept", accept)]).await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    let (code, _, _) = call(&app, "GET", "/metrics", None, &[], None).await;
    assert_eq!(code, 401, "metrics need a token");
}

#[tokio::test]
async fn health_endpoints_answer_and_readyz_fails_while_shutting_down() {
    let (_d, state) = setup();
    let app = authed(state.clone());
    for path in ["/healthz", "/livez", "/readyz"] {
        let (code, _, v) = call(&app, "GET", path, None, &[], None).await;
        assert_eq!((code.as_u16(), v), (200, json!("ok")), "{path} without a token");
    }
    state.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    let (code, _, _) = call(&app, "GET", "/readyz", None, &[], None).await;
    assert_eq!(code, 503, "not ready");
    state.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    state.shutdown.cancel();
    let (code, _, v) = call(&app, "GET", "/readyz", None, &[], None).await;
    assert_eq!(code, 503, "shutting down: {v}");
    let (code, _, _) = call(&app, "GET", "/livez", None, &[], None).await;
    assert_eq!(code, 200, "a server that is shutting down is still alive");
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let (_d, state) = setup();
    let app = apiserver::router(state);
    let base = "/apis/berth.dev/v1alpha1/namespaces/default/stacks";
    let (code, _, obj) = call(&app, "POST", &format!("{base}?dryRun=All"), None, &[], Some(stack_json("dry"))).await;
    assert_eq!(code, 201);
    assert_eq!(obj["metadata"]["name"], "dry");
    let (code, _, _) = call(&app, "GET", &format!("{base}/dry"), None, &[], None).await;
    assert_eq!(code, 404);
}
