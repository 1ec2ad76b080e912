//! `apply` against the real API server in-process (router + sled store in a temp dir): created,
//! unchanged, configured, and a write that loses a race retried on a fresh read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::apiserver::{self, ApiState};
use crate::cli::client::KubeconfigSource;
use crate::cli::manifest::Input;
use crate::store::{StoreOptions, open};

fn session(router: axum::Router) -> Session {
    Session {
        client: kube::Client::new(router, "default"),
        server: "in-process".into(),
        source: KubeconfigSource::Flag("-".into()),
        namespace: "default".into(),
    }
}

fn doc(image: &str) -> Document {
    let text = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {{name: web}}\nspec:\n  services:\n  - {{name: web, image: '{image}'}}\n"
    );
    let rule = NamespaceRule { default: "default".into(), enforce: false };
    manifest::prepare(&[Input { label: "web.yaml".into(), text }], &rule).unwrap().remove(0)
}

#[tokio::test]
async fn created_unchanged_configured_and_status_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState::new(open(dir.path().join("store"), StoreOptions::default()).unwrap());
    let s = session(apiserver::router(state));
    assert_eq!(apply_one(&s, &doc("busybox:1"), None).await.unwrap(), Outcome::Created);
    assert_eq!(apply_one(&s, &doc("busybox:1"), None).await.unwrap(), Outcome::Unchanged);

    let api = resources::api(&s.client, &resources::resolve_one("stack").unwrap(), Some("default"));
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Ready"}})))
        .await
        .unwrap();
    assert_eq!(apply_one(&s, &doc("busybox:1"), Some(DryRun::Server)).await.unwrap(), Outcome::Unchanged);
    assert_eq!(apply_one(&s, &doc("busybox:2"), Some(DryRun::Server)).await.unwrap(), Outcome::Configured);
    assert_eq!(apply_one(&s, &doc("busybox:2"), None).await.unwrap(), Outcome::Configured);
    let live = follow::to_value(api.get("web").await.unwrap());
    assert_eq!(live["spec"]["services"][0]["image"], "busybox:2");
    assert_eq!(live["status"]["phase"], "Ready", "apply keeps status");
    assert_eq!(live["metadata"]["generation"], 2);
}

#[tokio::test]
async fn a_write_that_loses_a_race_is_redone_on_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState::new(open(dir.path().join("store"), StoreOptions::default()).unwrap());
    let inner = apiserver::router(state);
    let raced = Arc::new(AtomicBool::new(false));
    // Before the first PUT of the Stack reaches the server, someone else labels it: the PUT
    // then carries a stale resourceVersion and gets 409 Conflict.
    let (racer, flag) = (inner.clone(), raced.clone());
    let router = inner.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let (racer, flag) = (racer.clone(), flag.clone());
        async move {
            if req.method() == Method::PUT && !flag.swap(true, Ordering::SeqCst) {
                let label = Request::builder()
                    .method(Method::PATCH)
                    .uri("/apis/berth.dev/v1alpha1/namespaces/default/stacks/web")
                    .header("content-type", "application/merge-patch+json")
                    .body(Body::from(r#"{"metadata":{"labels":{"team":"ops"}}}"#))
                    .unwrap();
                let resp = racer.oneshot(label).await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
            next.run(req).await
        }
    }));
    let s = session(router);
    assert_eq!(apply_one(&s, &doc("busybox:1"), None).await.unwrap(), Outcome::Created);
    assert_eq!(apply_one(&s, &doc("busybox:2"), None).await.unwrap(), Outcome::Configured);
    assert!(raced.load(Ordering::SeqCst), "the race was staged");
    let api = resources::api(&s.client, &resources::resolve_one("stack").unwrap(), Some("default"));
    let live: Value = follow::to_value(api.get("web").await.unwrap());
    assert_eq!(live["spec"]["services"][0]["image"], "busybox:2");
    assert_eq!(live["metadata"]["labels"]["team"], "ops", "the other writer's change survives");
}

#[test]
fn documents_without_the_prune_selector_are_found() {
    let text = "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {name: a, labels: {app: shop}}\nspec: {services: [{name: w, image: 'b:1'}]}\n---\napiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {name: b}\nspec: {services: [{name: w, image: 'b:1'}]}\n";
    let rule = NamespaceRule { default: "default".into(), enforce: false };
    let docs = manifest::prepare(&[Input { label: "x.yaml".into(), text: text.into() }], &rule).unwrap();
    let names: Vec<&str> = not_selected(&docs, "app=shop").unwrap().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    assert!(not_selected(&docs, "app in (").is_err());
}
