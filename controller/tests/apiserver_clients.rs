//! Component tests of API server behaviour that real clients (kubectl, the Python `kubernetes`
//! client) depend on, found while running them against `berth serve` (see `e2e/tests/`): each
//! test pins one such behaviour through a real `kube::Client` over the in-process router.

use berth::apiserver::{self, ApiState};
use berth::store::{StoreOptions, open as open_store};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

struct Env {
    client: Client,
    // Last: the store closes before its directory is removed.
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let client = Client::new(apiserver::router(ApiState::new(store)), "default");
    Env { client, _dir: dir }
}

/// The Python client creates Secrets without `type` and reads back `Opaque`, as Kubernetes
/// defaults it; the same holds for updates and server-side apply.
#[tokio::test]
async fn secret_type_defaults_to_opaque() {
    let e = env();
    let api: Api<Secret> = Api::namespaced(e.client.clone(), "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"k": "v"}})).unwrap();
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(api.get("db").await.unwrap().type_.as_deref(), Some("Opaque"));

    // A replace that drops `type` keeps the default.
    let mut again = api.get("db").await.unwrap();
    again.type_ = None;
    let replaced = api.replace("db", &PostParams::default(), &again).await.unwrap();
    assert_eq!(replaced.type_.as_deref(), Some("Opaque"));

    // An explicit type is kept.
    let tls: Secret =
        serde_json::from_value(json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {}})).unwrap();
    assert_eq!(api.create(&PostParams::default(), &tls).await.unwrap().type_.as_deref(), Some("kubernetes.io/tls"));

    // Server-side apply creating a Secret defaults it too.
    let applied = api
        .patch(
            "applied",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.type_.as_deref(), Some("Opaque"));
}

/// kubectl's client-side apply sends merge patches that replace whole lists with the user's
/// items, which lack the fields the schema defaults (`replicas`). Re-applying an unchanged file
/// must not bump `generation` nor write a new version: the defaulted object is compared.
#[tokio::test]
async fn a_patch_omitting_defaulted_fields_changes_nothing() {
    use berth_crds::Stack;
    use kube::ResourceExt;
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let stack: Stack = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "web"},
        "spec": {"services": [{"name": "web", "image": "busybox:1"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &stack).await.unwrap();
    let apply = |image: &str| Patch::Merge(json!({"spec": {"services": [{"name": "web", "image": image}]}}));

    let changed = api.patch("web", &PatchParams::default(), &apply("busybox:2")).await.unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.spec.services[0].replicas, 1, "the schema default is filled in");

    let again = api.patch("web", &PatchParams::default(), &apply("busybox:2")).await.unwrap();
    assert_eq!(again.metadata.generation, Some(2), "no spec change, no new generation");
    assert_eq!(again.resource_version(), changed.resource_version(), "nothing was written");
}

/// `kubectl create namespace` POSTs a protobuf Namespace (captured from kubectl 1.32).
#[tokio::test]
async fn kubectl_create_namespace_protobuf_body_is_accepted() {
    use k8s_openapi::api::core::v1::Namespace;
    let e = env();
    let body = hex::decode(concat!(
        "6b3873000a0f0a02763112094e616d657370616365",
        "121e0a160a067465616d2d6112001a0022002a003200380042001200",
        "1a020a001a002200",
    ))
    .unwrap();
    let req = http::Request::post("/api/v1/namespaces?fieldManager=kubectl-create&fieldValidation=Strict")
        .header(http::header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf")
        .header(http::header::ACCEPT, "application/vnd.kubernetes.protobuf,application/json")
        .body(body)
        .unwrap();
    let created: Namespace = e.client.request(req).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("team-a"));
    let api: Api<Namespace> = Api::all(e.client.clone());
    let got = api.get("team-a").await.unwrap();
    assert_eq!(got.status.and_then(|s| s.phase).as_deref(), Some("Active"));
}

/// `kubectl apply --server-side --field-manager=ci` next to plain `kubectl apply --server-side`:
/// a manager dropping a field removes it only when no other applier owns it.
#[tokio::test]
async fn server_side_apply_keeps_fields_other_appliers_own() {
    use berth_crds::Stack;
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let kubectl = json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
        "metadata": {"name": "web", "labels": {"team": "a", "shared": "1"}},
        "spec": {"services": [{"name": "web", "image": "busybox:1"}]}
    });
    api.patch("web", &PatchParams::apply("kubectl"), &Patch::Apply(&kubectl)).await.unwrap();
    let ci = |labels: serde_json::Value| json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "web", "labels": labels}});
    api.patch("web", &PatchParams::apply("ci"), &Patch::Apply(ci(json!({"shared": "1", "ci": "yes", "x": "1"}))))
        .await
        .unwrap();
    let after = api.patch("web", &PatchParams::apply("ci"), &Patch::Apply(ci(json!({"x": "1"})))).await.unwrap();
    let labels = after.metadata.labels.unwrap();
    assert_eq!(
        labels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["shared", "team", "x"],
        "ci dropped `ci` (its own) and `shared` (kubectl's too)"
    );
    assert_eq!(after.spec.services[0].image, "busybox:1");
}

/// The Python client's `VersionApi().get_code()` GETs `/version/` (with the slash).
#[tokio::test]
async fn version_is_served_with_and_without_a_trailing_slash() {
    let e = env();
    for path in ["/version", "/version/"] {
        let text = e.client.request_text(http::Request::get(path).body(Vec::new()).unwrap()).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["gitVersion"].as_str().is_some_and(|g| g.starts_with("v1.")), "{path}: {v}");
    }
}

/// GitOps tools re-apply unchanged configurations all the time: with several appliers, such an
/// apply must write nothing (no new resourceVersion, no watch event).
#[tokio::test]
async fn reapplying_an_unchanged_configuration_writes_nothing() {
    use berth_crds::Stack;
    use kube::ResourceExt;
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let kubectl = json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"services": [{"name": "web", "image": "busybox:1"}]}
    });
    let ci = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "web", "labels": {"ci": "1"}}});
    api.patch("web", &PatchParams::apply("kubectl"), &Patch::Apply(&kubectl)).await.unwrap();
    let before = api.patch("web", &PatchParams::apply("ci"), &Patch::Apply(&ci)).await.unwrap();
    let after = api.patch("web", &PatchParams::apply("kubectl"), &Patch::Apply(&kubectl)).await.unwrap();
    assert_eq!(after.resource_version(), before.resource_version());
    assert_eq!(after.metadata.managed_fields, before.metadata.managed_fields);
}
