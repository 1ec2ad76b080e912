//! Component test of Lease admission through the HTTP API: the operator policy of a config
//! refuses an unknown SKU, an image outside the allowlist and a change of tenant with 422
//! (`metav1.Status` reason `Invalid` with field causes), and a Lease over the tenant quota with
//! 403 (reason `Forbidden`, naming the quota key); a Lease that reaches phase Closed frees its
//! slot, and creates racing for the last slot are admitted no more often than the quota allows.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use berth::apiserver::{self, ApiState};
use berth::config::OperatorConfig;
use berth::policy::OperatorPolicy;
use berth::store::{StoreOptions, open as open_store};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const CONFIG: &str = "
leases:
  skus:
    small: {cpus: 0.5, memoryMb: 256}
  allowedRegistries: [ghcr.io, local]
  tenantQuotas: {acme: {maxLeases: 2}}
";

const BASE: &str = "/apis/berth.dev/v1alpha1/namespaces/previews/leases";

fn app() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let mut state = ApiState::new(store);
    state.policy = Arc::new(OperatorPolicy::new(Arc::new(OperatorConfig::parse(CONFIG, "test").unwrap())));
    (dir, apiserver::router(state))
}

async fn call(app: &Router, method: &str, uri: &str, content_type: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn lease(name: &str, sku: &str, image: &str) -> Value {
    json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Lease", "metadata": {"name": name},
        "spec": {"tenant": "acme", "sku": sku, "duration": "1h",
                 "services": [{"name": "app", "image": image}]}})
}

fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["field"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn lease_admission_answers_422_for_fields_and_403_for_quota() {
    let (_dir, app) = app();
    let json = "application/json";

    // Unknown SKU and an image from a registry the operator does not allow: one 422, two causes.
    let (code, status) = call(&app, "POST", BASE, json, lease("a", "huge", "quay.io/x/y:1")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["code"], 422);
    assert_eq!(
        causes(&status),
        [
            ("spec.sku".to_string(), "FieldValueNotSupported".to_string()),
            ("spec.services[0].image".to_string(), "FieldValueForbidden".to_string())
        ]
    );
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("leases.skus") && message.contains("leases.allowedRegistries"), "{message}");

    // Two Leases fill acme's quota; an image with no registry is admitted by `local`.
    for name in ["a", "b"] {
        let (code, status) = call(&app, "POST", BASE, json, lease(name, "small", "berth-e2e/busybox:latest")).await;
        assert_eq!(code, StatusCode::CREATED, "{status}");
    }
    let (code, status) = call(&app, "POST", BASE, json, lease("c", "small", "ghcr.io/acme/app:1")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["code"], 403);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("leases.berth.dev \"c\" is forbidden: exceeded quota: ")
            && message.contains("leases.tenantQuotas.acme.maxLeases: tenant acme has 2 live Leases, the most allowed"),
        "{message}"
    );
    assert_eq!(causes(&status), [("spec.tenant".to_string(), "FieldValueForbidden".to_string())]);

    // The tenant cannot be changed by a patch.
    let merge = "application/merge-patch+json";
    let (code, status) = call(&app, "PATCH", &format!("{BASE}/a"), merge, json!({"spec": {"tenant": "globex"}})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(causes(&status), [("spec.tenant".to_string(), "FieldValueInvalid".to_string())]);
    assert!(status["message"].as_str().unwrap().contains("field is immutable"), "{status}");

    // Once the controller records a Lease as Closed, it no longer counts.
    let (code, status) =
        call(&app, "PATCH", &format!("{BASE}/a/status"), merge, json!({"status": {"phase": "Closed"}})).await;
    assert_eq!(code, StatusCode::OK, "{status}");
    let (code, status) = call(&app, "POST", BASE, json, lease("c", "small", "ghcr.io/acme/app:1")).await;
    assert_eq!(code, StatusCode::CREATED, "{status}");
}

/// Creates racing for a tenant's last slots: the quota check and the write are ordered, so
/// exactly as many are admitted as the quota allows, however many arrive at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_exceed_the_quota() {
    let (_dir, app) = app();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = lease(&format!("racer-{i}"), "small", "ghcr.io/acme/app:1");
                call(&app, "POST", BASE, "application/json", body).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (code, status) = task.await.unwrap();
        match code {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => assert_eq!(status["reason"], "Forbidden", "{status}"),
            other => panic!("unexpected {other}: {status}"),
        }
    }
    assert_eq!(created, 2, "acme's quota is 2 Leases");
    let (_, list) = call(&app, "GET", BASE, "application/json", Value::Null).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
}
