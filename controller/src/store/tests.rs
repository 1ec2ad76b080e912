//! Tests of the sled store through the [`Store`] trait, with real sled databases in temp dirs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::*;

fn stacks() -> ResourceRef {
    ResourceRef { group: "berth.dev".into(), resource: "stacks".into() }
}

fn hosts() -> ResourceRef {
    ResourceRef { group: "berth.dev".into(), resource: "hosts".into() }
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey { resource: stacks(), namespace: ns.into(), name: name.into() }
}

fn obj(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
           "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels},
           "spec": {"image": "busybox:1"}})
}

fn open_in(dir: &tempfile::TempDir, options: StoreOptions) -> SledStore {
    SledStore::open(&dir.path().join("store"), options).expect("open store")
}

fn names(items: &[StoredObject]) -> Vec<String> {
    items.iter().map(|o| format!("{}/{}", o.key.namespace, o.key.name)).collect()
}

/// Reads the next event of a watch, failing after a generous deadline instead of hanging.
async fn next_event(stream: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a watch event within 30s")
        .expect("the watch stream ended")
}

fn describe(ev: &WatchEvent) -> String {
    let t = match ev.type_ {
        WatchEventType::Added => "ADDED",
        WatchEventType::Modified => "MODIFIED",
        WatchEventType::Deleted => "DELETED",
    };
    format!("{t} {}/{} {}", ev.object.key.namespace, ev.object.key.name, ev.resource_version)
}

#[tokio::test]
async fn create_get_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    assert_eq!(store.current_resource_version(), 0);

    let created = store.create(&key("default", "web"), obj("web", &[("app", "web")])).await.unwrap();
    assert_eq!(created.resource_version, 1);
    let mut expected = obj("web", &[("app", "web")]);
    expected["metadata"]["resourceVersion"] = json!("1");
    let served: Value = serde_json::from_slice(&created.bytes).unwrap();
    assert_eq!(served, expected, "bytes are the object as given, with its resourceVersion");
    assert_eq!(created.value(), expected);
    assert_eq!(created.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(store.current_resource_version(), 1);

    let got = store.get(&key("default", "web")).unwrap().expect("stored");
    assert_eq!(got.resource_version, 1);
    assert!(store.get(&key("other", "web")).unwrap().is_none());

    let mut changed = obj("web", &[("app", "web")]);
    changed["spec"]["image"] = json!("busybox:2");
    let updated = store.update(&key("default", "web"), changed, Precondition::ResourceVersion(1)).await.unwrap();
    assert_eq!(updated.resource_version, 2);
    assert_eq!(store.get(&key("default", "web")).unwrap().unwrap().value()["spec"]["image"], "busybox:2");

    let deleted = store.delete(&key("default", "web"), Precondition::None).await.unwrap();
    assert_eq!(deleted.resource_version, 3, "a deletion returns the object with the deletion's version");
    assert_eq!(deleted.value()["metadata"]["resourceVersion"], "3");
    assert_eq!(deleted.value()["spec"]["image"], "busybox:2");
    assert!(store.get(&key("default", "web")).unwrap().is_none());
    assert_eq!(store.current_resource_version(), 3);

    let err = store.delete(&key("default", "web"), Precondition::None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.update(&key("default", "web"), obj("web", &[]), Precondition::None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn conflicts_refuse_stale_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    let k = key("default", "web");
    store.create(&k, obj("web", &[])).await.unwrap();
    let err = store.create(&k, obj("web", &[])).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");

    store.update(&k, obj("web", &[("v", "2")]), Precondition::ResourceVersion(1)).await.unwrap();
    // A writer that read version 1 loses.
    let err = store.update(&k, obj("web", &[("v", "3")]), Precondition::ResourceVersion(1)).await.unwrap_err();
    match &err {
        StoreError::Conflict { expected, actual, .. } => {
            assert_eq!(expected, "resourceVersion 1");
            assert_eq!(actual, "resourceVersion 2");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(store.get(&k).unwrap().unwrap().labels.get("v").map(String::as_str), Some("2"), "nothing changed");

    let err = store.update(&k, obj("web", &[]), Precondition::Uid("someone-else".into())).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    store.update(&k, obj("web", &[]), Precondition::Uid("uid-web".into())).await.unwrap();

    let err = store.delete(&k, Precondition::ResourceVersion(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store.delete(&k, Precondition::Uid("someone-else".into())).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(store.get(&k).unwrap().is_some());
    store.delete(&k, Precondition::ResourceVersion(3)).await.unwrap();
}

#[tokio::test]
async fn concurrent_updates_with_the_same_version_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir, StoreOptions::default()));
    let k = key("default", "contended");
    store.create(&k, obj("contended", &[])).await.unwrap();
    // All writers read version 1; the second one is checked against the first one's write even
    // though that one may not be durable yet.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move {
                store
                    .update(&k, obj("contended", &[("writer", &i.to_string())]), Precondition::ResourceVersion(1))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.get(&k).unwrap().unwrap().resource_version, 2);
}

#[tokio::test]
async fn lists_filter_by_namespace_and_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    for (ns, name, app) in [("b", "x", "web"), ("a", "y", "db"), ("a", "x", "web"), ("c", "z", "web")] {
        store.create(&key(ns, name), obj(name, &[("app", app)])).await.unwrap();
    }
    let host = ObjectKey { resource: hosts(), namespace: String::new(), name: "edge-1".into() };
    store.create(&host, json!({"metadata": {"name": "edge-1"}})).await.unwrap();

    let all = store.list(&stacks(), None, &ListOptions::default()).unwrap();
    assert_eq!(names(&all.items), ["a/x", "a/y", "b/x", "c/z"], "key order: namespace, then name");
    assert_eq!(all.resource_version, 5);
    assert!(all.continue_token.is_none() && all.remaining_item_count.is_none());

    let in_a = store.list(&stacks(), Some("a"), &ListOptions::default()).unwrap();
    assert_eq!(names(&in_a.items), ["a/x", "a/y"]);
    assert!(store.list(&stacks(), Some("nope"), &ListOptions::default()).unwrap().items.is_empty());

    let web = ListOptions { label_selector: Some(LabelSelector::parse("app=web").unwrap()), ..Default::default() };
    assert_eq!(names(&store.list(&stacks(), None, &web).unwrap().items), ["a/x", "b/x", "c/z"]);
    let not_web = ListOptions { label_selector: Some(LabelSelector::parse("app!=web").unwrap()), ..Default::default() };
    assert_eq!(names(&store.list(&stacks(), None, &not_web).unwrap().items), ["a/y"]);
    let named_x =
        ListOptions { field_selector: Some(FieldSelector::parse("metadata.name=x").unwrap()), ..Default::default() };
    assert_eq!(names(&store.list(&stacks(), None, &named_x).unwrap().items), ["a/x", "b/x"]);
    let ns_c = ListOptions {
        field_selector: Some(FieldSelector::parse("metadata.namespace=c").unwrap()),
        ..Default::default()
    };
    assert_eq!(names(&store.list(&stacks(), None, &ns_c).unwrap().items), ["c/z"]);

    let hosts_list = store.list(&hosts(), None, &ListOptions::default()).unwrap();
    assert_eq!(names(&hosts_list.items), ["/edge-1"]);
}

/// Pages through a list, returning every page's names and the list's versions.
fn page_all(store: &SledStore, ns: Option<&str>, opts: ListOptions) -> (Vec<Vec<String>>, Vec<u64>) {
    let mut pages = Vec::new();
    let mut versions = Vec::new();
    let mut opts = opts;
    loop {
        let page = store.list(&stacks(), ns, &opts).unwrap();
        pages.push(names(&page.items));
        versions.push(page.resource_version);
        match page.continue_token {
            Some(c) => opts.continue_token = Some(c),
            None => break,
        }
    }
    (pages, versions)
}

#[tokio::test]
async fn paging_with_continue_is_a_consistent_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    for i in 0..10 {
        let ns = if i < 5 { "a" } else { "b" };
        store.create(&key(ns, &format!("o{i}")), obj(&format!("o{i}"), &[("n", &i.to_string())])).await.unwrap();
    }

    let first = store.list(&stacks(), None, &ListOptions { limit: Some(4), ..Default::default() }).unwrap();
    assert_eq!(names(&first.items), ["a/o0", "a/o1", "a/o2", "a/o3"]);
    assert_eq!(first.remaining_item_count, Some(6));
    let snapshot = first.resource_version;

    // Changes between pages: a new object after the cursor, a deleted one, a modified one.
    store.create(&key("a", "o35"), obj("o35", &[])).await.unwrap();
    store.delete(&key("b", "o7"), Precondition::None).await.unwrap();
    store.update(&key("b", "o8"), obj("o8", &[("changed", "yes")]), Precondition::None).await.unwrap();

    let second = store
        .list(
            &stacks(),
            None,
            &ListOptions { limit: Some(4), continue_token: first.continue_token.clone(), ..Default::default() },
        )
        .unwrap();
    assert_eq!(names(&second.items), ["a/o4", "b/o5", "b/o6", "b/o7"], "the first page's snapshot");
    assert_eq!(second.resource_version, snapshot, "every page reports the first page's version");
    assert_eq!(second.remaining_item_count, Some(2));
    assert!(!second.items[3].value()["metadata"]["labels"].as_object().unwrap().contains_key("changed"));
    let third = store
        .list(
            &stacks(),
            None,
            &ListOptions { limit: Some(4), continue_token: second.continue_token, ..Default::default() },
        )
        .unwrap();
    assert_eq!(names(&third.items), ["b/o8", "b/o9"]);
    assert!(third.items[0].labels.get("changed").is_none(), "o8 as it was at the snapshot");
    assert!(third.continue_token.is_none() && third.remaining_item_count.is_none());

    // A fresh list sees the changes.
    let (pages, _) = page_all(&store, None, ListOptions { limit: Some(3), ..Default::default() });
    assert_eq!(pages.concat(), ["a/o0", "a/o1", "a/o2", "a/o3", "a/o35", "a/o4", "b/o5", "b/o6", "b/o8", "b/o9"]);

    // Paging within a namespace and with a selector (no remainingItemCount then, as in
    // Kubernetes; the continue token is set only when more items match).
    let (pages, versions) = page_all(&store, Some("b"), ListOptions { limit: Some(2), ..Default::default() });
    assert_eq!(pages, [vec!["b/o5", "b/o6"], vec!["b/o8", "b/o9"]]);
    assert!(versions.iter().all(|v| *v == versions[0]));
    let odd = ListOptions {
        label_selector: Some(LabelSelector::parse("n in (1,3,5,9)").unwrap()),
        limit: Some(2),
        ..Default::default()
    };
    let page = store.list(&stacks(), None, &odd).unwrap();
    assert_eq!(names(&page.items), ["a/o1", "a/o3"]);
    assert!(page.continue_token.is_some());
    assert_eq!(page.remaining_item_count, None);
    let (pages, _) = page_all(&store, None, odd);
    assert_eq!(pages.concat(), ["a/o1", "a/o3", "b/o5", "b/o9"]);
}

#[tokio::test]
async fn continue_tokens_expire_with_the_history_and_reject_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions { history_capacity: 3, ..Default::default() });
    for i in 0..6 {
        store.create(&key("a", &format!("o{i}")), obj(&format!("o{i}"), &[])).await.unwrap();
    }
    let first = store.list(&stacks(), None, &ListOptions { limit: Some(2), ..Default::default() }).unwrap();
    for i in 0..4 {
        store.create(&key("z", &format!("n{i}")), obj(&format!("n{i}"), &[])).await.unwrap();
    }
    let err = store
        .list(
            &stacks(),
            None,
            &ListOptions { limit: Some(2), continue_token: first.continue_token, ..Default::default() },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::ContinueExpired { .. }), "{err}");
    let err = store
        .list(&stacks(), None, &ListOptions { continue_token: Some("not a token!".into()), ..Default::default() })
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidContinue { .. }), "{err}");
}

#[tokio::test]
async fn watch_delivers_changes_in_order_with_deletion_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    let mut w = store.watch(&stacks(), None, 0).unwrap();
    store.create(&key("a", "x"), obj("x", &[])).await.unwrap();
    store.update(&key("a", "x"), obj("x", &[("l", "1")]), Precondition::None).await.unwrap();
    store.create(&key("b", "y"), obj("y", &[])).await.unwrap();
    store.delete(&key("a", "x"), Precondition::None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut w).await.unwrap());
    }
    let described: Vec<String> = seen.iter().map(describe).collect();
    assert_eq!(described, ["ADDED a/x 1", "MODIFIED a/x 2", "ADDED b/y 3", "DELETED a/x 4"]);
    let deleted = &seen[3];
    assert_eq!(deleted.object.value()["metadata"]["resourceVersion"], "4");
    assert_eq!(deleted.object.labels.get("l").map(String::as_str), Some("1"), "the last state");
    assert_eq!(deleted.previous.as_ref().map(|p| p.resource_version), Some(2));
    assert_eq!(seen[1].previous.as_ref().map(|p| p.resource_version), Some(1));
    assert!(seen[0].previous.is_none());
}

#[tokio::test]
async fn watch_resumes_from_a_recent_version_and_expires_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions { history_capacity: 5, ..Default::default() });
    for i in 1..=4 {
        store.create(&key("a", &format!("o{i}")), obj(&format!("o{i}"), &[])).await.unwrap();
    }
    // Resume after version 2: exactly 3 and 4, then live changes.
    let mut w = store.watch(&stacks(), None, 2).unwrap();
    store.create(&key("a", "o5"), obj("o5", &[])).await.unwrap();
    let got: Vec<u64> = [next_event(&mut w).await, next_event(&mut w).await, next_event(&mut w).await]
        .into_iter()
        .map(|e| e.unwrap().resource_version)
        .collect();
    assert_eq!(got, [3, 4, 5]);

    for i in 6..=10 {
        store.create(&key("a", &format!("o{i}")), obj(&format!("o{i}"), &[])).await.unwrap();
    }
    // The window holds 6..=10: 5 is still a valid starting point, 4 is not.
    let mut w = store.watch(&stacks(), None, 5).unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().resource_version, 6);
    match store.watch(&stacks(), None, 4) {
        Err(StoreError::Expired { requested, oldest }) => assert_eq!((requested, oldest), (4, 5)),
        Err(other) => panic!("expected Expired, got {other}"),
        Ok(_) => panic!("expected Expired, got a stream"),
    }
}

#[tokio::test]
async fn watch_from_now_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    store.create(&key("a", "old"), obj("old", &[])).await.unwrap();
    let mut w = store.watch(&stacks(), None, 0).unwrap();
    store.create(&key("a", "new"), obj("new", &[])).await.unwrap();
    assert_eq!(describe(&next_event(&mut w).await.unwrap()), "ADDED a/new 2");
}

#[tokio::test]
async fn watchers_see_only_their_namespace_and_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    let mut in_a = store.watch(&stacks(), Some("a"), 0).unwrap();
    let mut in_b = store.watch(&stacks(), Some("b"), 0).unwrap();
    let mut everywhere = store.watch(&stacks(), None, 0).unwrap();
    let mut host_watch = store.watch(&hosts(), None, 0).unwrap();
    store.create(&key("a", "x"), obj("x", &[])).await.unwrap();
    store.create(&key("b", "y"), obj("y", &[])).await.unwrap();
    let host = ObjectKey { resource: hosts(), namespace: String::new(), name: "h".into() };
    store.create(&host, json!({"metadata": {"name": "h"}})).await.unwrap();
    store.create(&key("a", "z"), obj("z", &[])).await.unwrap();

    assert_eq!(describe(&next_event(&mut in_a).await.unwrap()), "ADDED a/x 1");
    assert_eq!(describe(&next_event(&mut in_a).await.unwrap()), "ADDED a/z 4");
    assert_eq!(describe(&next_event(&mut in_b).await.unwrap()), "ADDED b/y 2");
    let all: Vec<String> = [
        next_event(&mut everywhere).await.unwrap(),
        next_event(&mut everywhere).await.unwrap(),
        next_event(&mut everywhere).await.unwrap(),
    ]
    .iter()
    .map(describe)
    .collect();
    assert_eq!(all, ["ADDED a/x 1", "ADDED b/y 2", "ADDED a/z 4"]);
    assert_eq!(describe(&next_event(&mut host_watch).await.unwrap()), "ADDED /h 3");

    // History replay filters the same way.
    let mut replay_b = store.watch(&stacks(), Some("b"), 1).unwrap();
    store.create(&key("b", "w"), obj("w", &[])).await.unwrap();
    assert_eq!(describe(&next_event(&mut replay_b).await.unwrap()), "ADDED b/y 2");
    assert_eq!(describe(&next_event(&mut replay_b).await.unwrap()), "ADDED b/w 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_started_during_writes_has_no_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir, StoreOptions::default()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..40 {
                    let name = format!("w{w}-{i}");
                    acked.push(store.create(&key("a", &name), obj(&name, &[])).await.unwrap().resource_version);
                }
                acked
            })
        })
        .collect();
    // List and watch from the list's version while the writers run, as an informer does.
    tokio::task::yield_now().await;
    let listed = store.list(&stacks(), None, &ListOptions::default()).unwrap();
    let mut w = store.watch(&stacks(), None, listed.resource_version).unwrap();
    let mut acked: Vec<u64> = Vec::new();
    for t in writers {
        acked.extend(t.await.unwrap());
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=320).collect::<Vec<u64>>(), "one version per write, no gaps");
    let listed_versions: BTreeSet<u64> = listed.items.iter().map(|o| o.resource_version).collect();
    assert_eq!(listed_versions, (1..=listed.resource_version).collect(), "the list is exactly the prefix");
    let mut watched = Vec::new();
    while watched.len() < (320 - listed.resource_version) as usize {
        watched.push(next_event(&mut w).await.unwrap().resource_version);
    }
    assert_eq!(watched, ((listed.resource_version + 1)..=320).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_lagging_watcher_does_not_block_writers_and_is_told_to_relist() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions { watcher_buffer: 4, ..Default::default() });
    let mut stalled = store.watch(&stacks(), None, 0).unwrap();
    let mut reading = store.watch(&stacks(), None, 0).unwrap();
    // Nobody reads `stalled` while 50 writes complete.
    for i in 0..50 {
        let name = format!("o{i}");
        tokio::time::timeout(Duration::from_secs(30), store.create(&key("a", &name), obj(&name, &[])))
            .await
            .expect("a write completes although a watcher is stalled")
            .unwrap();
        assert_eq!(next_event(&mut reading).await.unwrap().resource_version, i + 1, "a reading watcher keeps up");
    }
    let mut delivered = Vec::new();
    let err = loop {
        match next_event(&mut stalled).await {
            Ok(ev) => delivered.push(ev.resource_version),
            Err(e) => break e,
        }
    };
    assert_eq!(delivered, [1, 2, 3, 4], "what fit in the buffer, in order");
    match err {
        StoreError::WatcherTooSlow { resource_version, capacity } => assert_eq!((resource_version, capacity), (4, 4)),
        other => panic!("expected WatcherTooSlow, got {other}"),
    }
    assert!(stalled.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn data_and_versions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, last) = {
        let store = open_in(&dir, StoreOptions::default());
        let a = store.create(&key("a", "keep"), obj("keep", &[("x", "1")])).await.unwrap();
        store.create(&key("a", "gone"), obj("gone", &[])).await.unwrap();
        store
            .update(&key("a", "keep"), obj("keep", &[("x", "2")]), Precondition::ResourceVersion(a.resource_version))
            .await
            .unwrap();
        // The newest version belongs to a deletion: no object carries it.
        let d = store.delete(&key("a", "gone"), Precondition::None).await.unwrap();
        (store.get(&key("a", "keep")).unwrap().unwrap(), d.resource_version)
    };
    assert_eq!(last, 4);
    let store = open_in(&dir, StoreOptions::default());
    let back = store.get(&key("a", "keep")).unwrap().expect("survives");
    assert_eq!(back.resource_version, kept.resource_version);
    assert_eq!(back.bytes, kept.bytes, "byte for byte");
    assert_eq!(back.labels.get("x").map(String::as_str), Some("2"));
    assert!(store.get(&key("a", "gone")).unwrap().is_none());
    assert_eq!(store.current_resource_version(), 4);
    let next = store.create(&key("a", "new"), obj("new", &[])).await.unwrap();
    assert_eq!(next.resource_version, 5, "versions continue after the last issued, deletions included");

    // History starts empty after a restart: older versions must relist.
    assert!(matches!(store.watch(&stacks(), None, 3), Err(StoreError::Expired { .. })));
    assert!(store.watch(&stacks(), None, 4).is_ok());
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open_in(&dir, StoreOptions::default());
    let err = SledStore::open(&dir.path().join("store"), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("no other berth"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_all_acknowledged_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Vec<(String, u64)> = {
        let store = Arc::new(open_in(&dir, StoreOptions::default()));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for j in 0..8 {
                        let name = format!("t{i}-{j}");
                        let o = store.create(&key("load", &name), obj(&name, &[])).await.unwrap();
                        acked.push((name, o.resource_version));
                    }
                    acked
                })
            })
            .collect();
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        let stats = store.commit_stats();
        let flushes = stats.flushes.load(std::sync::atomic::Ordering::Relaxed);
        let writes = stats.writes.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(writes, 512);
        eprintln!("group commit: 512 writes from 64 tasks in {flushes} flushes");
        // Each writer waits for its acknowledgement before its next write, so one flush per
        // write is what a store without group commit would do.
        assert!(flushes < writes, "concurrent writers shared no flush: {flushes} flushes for {writes} writes");
        acked
    };
    let versions: BTreeSet<u64> = acked.iter().map(|(_, rv)| *rv).collect();
    assert_eq!(versions.len(), 512, "every write got its own version");
    let store = open_in(&dir, StoreOptions::default());
    for (name, rv) in &acked {
        let o = store.get(&key("load", name)).unwrap().unwrap_or_else(|| panic!("{name} lost"));
        assert_eq!(o.resource_version, *rv, "{name}");
    }
    assert_eq!(store.list(&stacks(), Some("load"), &ListOptions::default()).unwrap().items.len(), 512);
}

#[tokio::test]
async fn flush_waits_for_issued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir, StoreOptions::default()));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.create(&key("a", "x"), obj("x", &[])).await })
    };
    writer.await.unwrap().unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.current_resource_version(), 1);
}

#[tokio::test]
async fn non_objects_and_nul_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    let err = store.create(&key("a", "x"), json!([1, 2])).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidObject { .. }), "{err}");
    let err = store.create(&key("a", "x\0y"), obj("x", &[])).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidObject { .. }), "{err}");
    assert_eq!(store.current_resource_version(), 0, "a refused write takes no version");
}
