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
    client: Client,
    state: ApiState,
    // Last: the store closes before its directory is removed.
    _dir: tempfile::TempDir,
}

fn env_with(opts: StoreOptions) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), opts).unwrap();
    let mut state = ApiState::new(store);
    state.bookmark_interval = Duration::from_millis(200);
    let client = Client::new(apiserver::router(state.clone()), "default");
    Env { client, state, _dir: dir }
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
    // An object that exists before the watcher starts arrives through its initial list.
    api.create(&PostParams::default(), &stack("before", "busybox:0")).await.unwrap();
    let stream = watcher(api.clone(), watcher::Config::default());
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut listed_tx = Some(listed_tx);
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitApply(s) => seen.push(format!("init {}", s.name_any())),
                watcher::Event::InitDone => {
                    if let Some(tx) = listed_tx.take() {
                        tx.send(()).unwrap();
                    }
                }
                watcher::Event::Apply(s) => seen.push(format!("apply {} {}", s.name_any(), s.spec.services[0].image)),
                watcher::Event::Delete(s) => seen.push(format!("delete {}", s.name_any())),
                watcher::Event::Init => {}
            }
            if seen.last().is_some_and(|l| l == "delete s9") {
                break;
            }
        }
        seen
    });
    // Write only once the watcher has finished its initial list.
    tokio::time::timeout(Duration::from_secs(30), listed_rx).await.unwrap().unwrap();
    let mut expected = vec!["init before".to_string()];
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
    let seen = tokio::time::timeout(Duration::from_secs(30), collector).await.unwrap().unwrap();
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
        Some(WatchEvent::Error(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}");
            assert!(s.message.contains("too old resource version"), "{}", s.message);
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_ends_when_its_timeout_seconds_pass() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let created = api.create(&PostParams::default(), &stack("a", "busybox")).await.unwrap();
    let started = std::time::Instant::now();
    let mut events =
        api.watch(&WatchParams::default().timeout(1), &created.resource_version().unwrap()).await.unwrap().boxed();
    // Without the timeout the server would keep the stream open for its default half hour.
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        let mut bookmarks = 0;
        while let Some(ev) = events.try_next().await.unwrap() {
            assert!(matches!(ev, WatchEvent::Bookmark(_)), "nothing changed, yet {ev:?}");
            bookmarks += 1;
        }
        bookmarks
    })
    .await;
    assert!(drained.is_ok(), "the watch with timeoutSeconds=1 was still open after 60 s");
    assert!(started.elapsed() >= Duration::from_secs(1), "the watch ended before its timeout");
}

#[tokio::test]
async fn an_expired_continue_token_is_410_expired() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let e = env_with(StoreOptions { history_capacity: 4, ..Default::default() });
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "default");
    let cm = |name: &str| -> ConfigMap { serde_json::from_value(json!({"metadata": {"name": name}})).unwrap() };
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"))).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    // A change within the history window: the next page can still be served from the snapshot.
    api.create(&PostParams::default(), &cm("d0")).await.unwrap();
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(second.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["c2", "c3"]);
    // More changes than the history holds: the snapshot can no longer be rebuilt.
    for i in 1..6 {
        api.create(&PostParams::default(), &cm(&format!("d{i}"))).await.unwrap();
    }
    let s = api_error(api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}");
    assert!(s.message.contains("without a continue token"), "the message says what to do: {}", s.message);
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
async fn events_are_watchable() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let e = env();
    let stacks: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let s = stacks.create(&PostParams::default(), &stack("watched", "busybox")).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(e.client.clone(), "default");
    let from = events.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut stream =
        events.watch(&WatchParams::default().disable_bookmarks().timeout(60), &from).await.unwrap().boxed();

    let recorder = Recorder::new(e.client.clone(), Reporter { controller: "berth-test".into(), instance: None });
    let ev = Event {
        type_: EventType::Warning,
        reason: "PullFailed".into(),
        note: Some("image not found".into()),
        action: "Pull".into(),
        secondary: None,
    };
    recorder.publish(&ev, &s.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &s.object_ref(&())).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.try_next()).await;
        match next.expect("no event within 30 s").unwrap() {
            Some(WatchEvent::Added(ev)) => seen.push(("ADDED", ev)),
            Some(WatchEvent::Modified(ev)) => seen.push(("MODIFIED", ev)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen[0].0, "ADDED");
    assert_eq!(seen[1].0, "MODIFIED", "a repeated event updates its series");
    let ev = &seen[1].1;
    assert_eq!(ev.reason.as_deref(), Some("PullFailed"));
    assert_eq!(ev.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("watched"));
    assert_eq!(ev.series.as_ref().map(|s| s.count), Some(2));
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

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn stale_writes_get_409_conflict() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let v1 = api.create(&PostParams::default(), &stack("web", "busybox:1")).await.unwrap();
    let mut v2 = v1.clone();
    v2.spec.services[0].image = "busybox:2".into();
    let v2 = api.replace("web", &PostParams::default(), &v2).await.unwrap();

    // Every kind of write that names the old version loses.
    let mut stale = v1.clone();
    stale.spec.services[0].image = "busybox:3".into();
    let s = api_error(api.replace("web", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(s.message.contains("the object has been modified"), "{}", s.message);
    let s = api_error(
        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": v1.resource_version()}, "spec": {"suspend": true}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 409);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions { resource_version: v1.resource_version(), uid: None }),
        ..Default::default()
    };
    let s = api_error(api.delete("web", &dp).await.unwrap_err());
    assert_eq!(s.code, 409);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions { resource_version: None, uid: Some("not-its-uid".into()) }),
        ..Default::default()
    };
    let s = api_error(api.delete("web", &dp).await.unwrap_err());
    assert_eq!(s.code, 409);

    let now = api.get("web").await.unwrap();
    assert_eq!(now.resource_version(), v2.resource_version(), "no refused write changed anything");
    assert_eq!(now.spec.services[0].image, "busybox:2");
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions { resource_version: v2.resource_version(), uid: v2.uid() }),
        ..Default::default()
    };
    api.delete("web", &dp).await.unwrap();
    assert!(api.get_opt("web").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_without_a_version_all_apply() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    api.create(&PostParams::default(), &stack("shared", "busybox:1")).await.unwrap();
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.patch(
                    "shared",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {format!("writer-{i}"): "yes"}}})),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("a patch without resourceVersion never conflicts");
    }
    let s = api.get("shared").await.unwrap();
    assert_eq!(s.labels().len(), 24, "{:?}", s.labels());
    assert_eq!(s.metadata.generation, Some(1), "labels are not spec");
}

#[tokio::test]
async fn finalizers_hold_deletion_and_watchers_see_each_step() {
    let e = env();
    let api: Api<Stack> = Api::namespaced(e.client.clone(), "default");
    let mut s = stack("held", "busybox");
    s.metadata.finalizers = Some(vec!["berth.dev/cleanup".into()]);
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    let mut events =
        api.watch(&WatchParams::default().timeout(30), &created.resource_version().unwrap()).await.unwrap().boxed();

    api.delete("held", &DeleteParams::default()).await.unwrap();
    // Deleting again while marked changes nothing.
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(1));
    // Status writes still work while deleting (a controller reports its cleanup).
    api.patch_status("held", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Deleting"}})))
        .await
        .unwrap();
    api.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": []}}))).await.unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none());

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.try_next()).await.unwrap().unwrap().unwrap();
        match ev {
            WatchEvent::Modified(s) => seen.push(format!(
                "MODIFIED deleting={} phase={:?}",
                s.metadata.deletion_timestamp.is_some(),
                s.status.and_then(|st| st.phase)
            )),
            WatchEvent::Deleted(s) => {
                seen.push(format!("DELETED deleting={}", s.metadata.deletion_timestamp.is_some()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        ["MODIFIED deleting=true phase=None", "MODIFIED deleting=true phase=Some(Deleting)", "DELETED deleting=true",]
    );
}

#[tokio::test]
async fn list_pages_are_a_consistent_snapshot() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let e = env();
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
    };
    for i in 0..12 {
        api.create(&PostParams::default(), &cm(&format!("c{i:02}"))).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(5)).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(7));
    let token = first.metadata.continue_.clone().unwrap();
    // Changes between pages do not show in the rest of this list.
    api.create(&PostParams::default(), &cm("c99")).await.unwrap();
    api.delete("c10", &DeleteParams::default()).await.unwrap();
    let mut names: Vec<String> = first.items.iter().map(|c| c.name_any()).collect();
    let mut lp = ListParams::default().limit(5).continue_token(&token);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert_eq!(page.metadata.resource_version, first.metadata.resource_version, "one snapshot");
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(5).continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, (0..12).map(|i| format!("c{i:02}")).collect::<Vec<_>>());
    let fresh: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|c| c.name_any()).collect();
    assert!(fresh.contains(&"c99".to_string()) && !fresh.contains(&"c10".to_string()));

    let s = api_error(api.list(&ListParams::default().continue_token("garbage")).await.unwrap_err());
    assert_eq!(s.code, 400);
    let s = api_error(api.list(&ListParams::default().labels("app in (")).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    let s = api_error(api.list(&ListParams::default().fields("data.k=v")).await.unwrap_err());
    assert!(s.message.contains("metadata.name"), "{}", s.message);
}

#[tokio::test]
async fn deletecollection_honours_the_label_selector() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let e = env();
    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "default");
    let other_ns: Api<ConfigMap> = Api::namespaced(e.client.clone(), "other");
    for (name, tier) in [("a", "cache"), ("b", "cache"), ("c", "db"), ("d", "cache")] {
        let mut cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": tier}}})).unwrap();
        if name == "d" {
            cm.metadata.finalizers = Some(vec!["berth.dev/keep".into()]);
        }
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let elsewhere: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "a", "labels": {"tier": "cache"}}})).unwrap();
    other_ns.create(&PostParams::default(), &elsewhere).await.unwrap();

    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=cache")).await.unwrap();
    let left: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|c| c.name_any()).collect();
    assert_eq!(left, ["c", "d"], "only the selected objects go; one with a finalizer stays, marked");
    assert!(api.get("d").await.unwrap().metadata.deletion_timestamp.is_some());
    assert!(api.get("c").await.unwrap().metadata.deletion_timestamp.is_none());
    assert!(other_ns.get_opt("a").await.unwrap().is_some(), "other namespaces are untouched");
}
