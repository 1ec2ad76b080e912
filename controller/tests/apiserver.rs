//! Component tests of the API server: a real `kube::Client` over the in-process router (no
//! socket) against the real sled store in a temp dir.

use std::time::Duration;

use berth::apiserver::{self, ApiState};
use berth::store::{StoreOptions, open as open_store};
use berth_crds::{Stack, StackSpec, stack::ServiceSpec};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

struct Env {
    _dir: tempfile::TempDir,
    client: Client,
    state: ApiState,
}

fn env_with(opts: StoreOptions) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("store"), opts).unwrap();
    let mut state = ApiState::new(store);
    state.bookmark_interval = Duration::from_millis(200);
    let client = Client::new(apiserver::router(state.clone()), "default");
    Env { _dir: dir, client, state }
}

fn env() -> Env {
    env_with(StoreOptions::default())
}

fn stack(name: &str, image: &str) -> Stack {
    Stack::new(
        name,
        StackSpec {
            services: vec![ServiceSpec { name: "web".into(), image: image.into(), replicas: 1, ..Default::default() }],
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn create_get_patch_replace_delete() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let created = api.create(&PostParams::default(), &stack("web", "busybox:1")).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    // A spec change bumps generation; the status is untouched.
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"services": [{"name": "web", "image": "busybox:2"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.spec.services[0].image, "busybox:2");
    assert!(patched.resource_version().unwrap().parse::<u64>().unwrap() > rv1);

    // A status write changes neither spec nor generation.
    let with_status = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready", "spec": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(2));
    assert_eq!(with_status.status.unwrap().phase, Some(berth_crds::StackPhase::Ready));

    // A spec write cannot change status.
    let mut changed = api.get("web").await.unwrap();
    changed.status = None;
    changed.metadata.labels = Some([("tier".to_string(), "front".to_string())].into());
    let replaced = api.replace("web", &PostParams::default(), &changed).await.unwrap();
    assert!(replaced.status.is_some(), "status survives a main-resource replace");
    assert_eq!(replaced.metadata.generation, Some(2), "labels are metadata, not spec");

    // A stale update is a 409 Conflict.
    let err = api.replace("web", &PostParams::default(), &created).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);

    api.delete("web", &DeleteParams::default()).await.unwrap();
    let err = api.get("web").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"));
}

#[tokio::test]
async fn invalid_objects_are_refused_with_one_cause_per_field() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let mut s = stack("bad", "busybox");
    s.spec.services[0].replicas = -1;
    s.spec.services.push(ServiceSpec {
        name: "web".into(),
        image: "busybox".into(),
        replicas: 1,
        ..Default::default()
    });
    let err = api.create(&PostParams::default(), &s).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("expected an API error") };
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert!(status.message.contains("spec.services[0].replicas"), "{}", status.message);
    assert!(status.message.contains("spec.services[1].name"), "{}", status.message);
    assert!(api.get_opt("bad").await.unwrap().is_none(), "an invalid object is never stored");

    let already = api.create(&PostParams::default(), &stack("dup", "busybox")).await.unwrap();
    let err = api.create(&PostParams::default(), &already).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let mut s = stack("held", "busybox");
    s.metadata.finalizers = Some(vec!["berth.dev/cleanup".into()]);
    api.create(&PostParams::default(), &s).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());

    // No new finalizers while deleting.
    let err = api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["berth.dev/cleanup", "x.dev/more"]}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));

    api.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none(), "removing the last finalizer deletes the object");
}

#[tokio::test]
async fn json_patch_and_server_side_apply() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let applied = api
        .patch(
            "ssa",
            &PatchParams::apply("test-manager"),
            &Patch::Apply(json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "ssa", "labels": {"a": "1"}},
                "spec": {"services": [{"name": "web", "image": "busybox:1"}]}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.labels().get("a").map(String::as_str), Some("1"));
    let reapplied = api
        .patch(
            "ssa",
            &PatchParams::apply("test-manager"),
            &Patch::Apply(json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "ssa"},
                "spec": {"services": [{"name": "web", "image": "busybox:2"}]}
            })),
        )
        .await
        .unwrap();
    assert!(reapplied.labels().get("a").is_none(), "a label the manager stopped applying is removed");
    assert_eq!(reapplied.spec.services[0].image, "busybox:2");

    let p: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/services/0/image", "value": "busybox:2"},
        {"op": "replace", "path": "/spec/services/0/image", "value": "busybox:3"}
    ]))
    .unwrap();
    let out = api.patch("ssa", &PatchParams::default(), &Patch::<()>::Json(p)).await.unwrap();
    assert_eq!(out.spec.services[0].image, "busybox:3");
}

#[tokio::test]
async fn watcher_sees_every_event_in_order() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let stream = watcher(api.clone(), watcher::Config::default());
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.try_next().await.unwrap() {
            match ev {
                watcher::Event::Apply(s) => seen.push(format!("apply {} {}", s.name_any(), s.spec.services[0].image)),
                watcher::Event::Delete(s) => seen.push(format!("delete {}", s.name_any())),
                _ => {}
            }
            if seen.last().is_some_and(|l| l == "delete s9") {
                break;
            }
        }
        seen
    });
    // Let the watcher finish its initial list before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut expected = Vec::new();
    for i in 0..10 {
        api.create(&PostParams::default(), &stack(&format!("s{i}"), "busybox:1")).await.unwrap();
        expected.push(format!("apply s{i} busybox:1"));
    }
    for i in 0..10 {
        api.patch(
            &format!("s{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"services": [{"name": "web", "image": "busybox:2"}]}})),
        )
        .await
        .unwrap();
        expected.push(format!("apply s{i} busybox:2"));
    }
    for i in 0..10 {
        api.delete(&format!("s{i}"), &DeleteParams::default()).await.unwrap();
        expected.push(format!("delete s{i}"));
    }
    let seen = tokio::time::timeout(Duration::from_secs(20), collector).await.unwrap().unwrap();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn raw_watch_resumes_and_expires() {
    let e = env_with(StoreOptions { history_capacity: 5, ..Default::default() });
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let first = api.create(&PostParams::default(), &stack("a", "busybox")).await.unwrap();
    let rv = first.resource_version().unwrap();
    api.create(&PostParams::default(), &stack("b", "busybox")).await.unwrap();

    // Resume from `a`'s version: exactly `b` follows.
    let mut events = api.watch(&WatchParams::default().timeout(2), &rv).await.unwrap().boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(s)) => assert_eq!(s.name_any(), "b"),
        other => panic!("expected ADDED b, got {other:?}"),
    }

    // Push the window past `rv`: resuming from it is 410 Expired.
    for i in 0..10 {
        api.create(&PostParams::default(), &stack(&format!("c{i}"), "busybox")).await.unwrap();
    }
    let mut events = api.watch(&WatchParams::default().timeout(2), &rv).await.unwrap().boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Error(s)) => assert_eq!(s.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_are_sent_when_asked() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let created = api.create(&PostParams::default(), &stack("a", "busybox")).await.unwrap();
    let rv = created.resource_version().unwrap();
    let mut events = api.watch(&WatchParams::default().timeout(3), &rv).await.unwrap().boxed();
    let ev = tokio::time::timeout(Duration::from_secs(3), events.try_next()).await.unwrap().unwrap();
    assert!(matches!(ev, Some(WatchEvent::Bookmark(_))), "{ev:?}");
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    for i in 0..25 {
        let mut s = stack(&format!("p{i:02}"), "busybox");
        s.metadata.labels =
            Some([("parity".to_string(), (if i % 2 == 0 { "even" } else { "odd" }).to_string())].into());
        api.create(&PostParams::default(), &s).await.unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    loop {
        let page = api.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|s| s.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected);
    let even = api.list(&ListParams::default().labels("parity=even")).await.unwrap();
    assert_eq!(even.items.len(), 13);
    let one = api.list(&ListParams::default().fields("metadata.name=p07")).await.unwrap();
    assert_eq!(one.items.len(), 1);
}

#[tokio::test]
async fn secrets_fold_string_data_and_keep_values_out_of_errors() {
    let e = env();
    let api: Api<Secret> = Api::namespaced(e.client.clone(), "default");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db"}, "stringData": {"password": "hunter2"}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.data.unwrap()["password"].0, b"hunter2");
    assert!(created.string_data.is_none());
    let bad: Secret =
        serde_json::from_value(json!({"metadata": {"name": "bad"}, "stringData": {"bad key!": "hunter3"}})).unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(!format!("{err:?}").contains("hunter3"));
}

#[tokio::test]
async fn event_recorder_publishes_events() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let s = api.create(&PostParams::default(), &stack("ev", "busybox")).await.unwrap();
    let recorder = Recorder::new(e.client.clone(), Reporter { controller: "berth-test".into(), instance: None });
    let reference = s.object_ref(&());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Created".into(),
        note: Some("made it".into()),
        action: "Create".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap(); // a series: patched, not duplicated
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(e.client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let gone = apiserver::events_gc::collect_once(
        &*e.state.store,
        Duration::from_secs(3600),
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2),
    )
    .await;
    assert_eq!(gone, 1);
}

#[tokio::test]
async fn cluster_scoped_hosts_work() {
    let e = env();
    let api: Api<berth_crds::Host> = Api::all(e.client.clone());
    let h = berth_crds::Host::new(
        "edge-1",
        berth_crds::HostSpec { endpoint: "tcp://10.0.0.5:2376".into(), ..Default::default() },
    );
    let created = api.create(&PostParams::default(), &h).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);
}
