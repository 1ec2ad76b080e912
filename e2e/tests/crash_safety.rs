//! Crash safety of the real binary: concurrent clients create ConfigMaps over HTTP, the server is
//! killed with SIGKILL at a random moment, restarted on the same data directory, and every write
//! it acknowledged must be there, intact, with the resourceVersion it was acknowledged with;
//! writes after the restart get larger resourceVersions. Several rounds on one directory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_e2e::{Client, Server};
use rand::Rng;
use serde_json::{Value, json};

const ROUNDS: usize = 4;
const WRITERS: usize = 8;
/// Bounds each writer even if the kill never comes.
const MAX_WRITES_PER_WRITER: usize = 400;
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The content of a ConfigMap, derived from its name so any object can be checked for tearing,
/// acknowledged or not. About 2 KiB, so a torn write would show.
fn payload(name: &str) -> String {
    let unit = format!("{name};");
    unit.repeat(2048 / unit.len() + 1)
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"test": "crash-safety"}},
           "data": {"payload": payload(name)}})
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {obj}"))
}

/// Checks every acknowledged object and every object present; returns the list's
/// resourceVersion (the store's current version after the restart).
fn verify(client: &Client, acked: &BTreeMap<String, u64>, server: &Server) -> u64 {
    let list = client.get(&format!("{CONFIGMAPS}?labelSelector=test%3Dcrash-safety")).expect("list after restart");
    assert_eq!(list.status, 200, "{:?}\nlog:\n{}", list.body, server.log_tail());
    let list_rv = rv_of(&list.body);
    let mut present = BTreeMap::new();
    for item in list.body["items"].as_array().expect("items") {
        let name = item["metadata"]["name"].as_str().expect("name").to_string();
        // Acknowledged or not (a write in flight at the kill may or may not have landed), an
        // object is never torn.
        assert_eq!(item["data"]["payload"].as_str(), Some(payload(&name).as_str()), "{name} is torn");
        assert!(rv_of(item) <= list_rv, "{name} is newer than the list");
        present.insert(name, rv_of(item));
    }
    for (name, rv) in acked {
        match present.get(name) {
            None => panic!("acknowledged write {name} (resourceVersion {rv}) was lost"),
            Some(found) => assert_eq!(found, rv, "{name} changed its resourceVersion"),
        }
    }
    if let Some(max) = acked.values().max() {
        assert!(list_rv >= *max, "the store's version {list_rv} is behind an acknowledged write {max}");
    }
    // The single-object path serves the same bytes.
    for (name, rv) in acked.iter().step_by((acked.len() / 20).max(1)) {
        let got = client.get(&format!("{CONFIGMAPS}/{name}")).expect("get");
        assert_eq!(got.status, 200, "{name}: {:?}", got.body);
        assert_eq!(rv_of(&got.body), *rv);
        assert_eq!(got.body["data"]["payload"].as_str(), Some(payload(name).as_str()));
    }
    list_rv
}

/// Runs `WRITERS` clients creating ConfigMaps until the server dies or they reach their bound;
/// kills the server with SIGKILL once `kill_after` writes were acknowledged. Returns what was
/// acknowledged.
fn write_until_killed(server: Server, round: usize, kill_after: usize) -> Vec<(String, u64)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let client = server.client();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, acked, count) = (client.clone(), acked.clone(), count.clone());
                scope.spawn(move || {
                    for j in 0..MAX_WRITES_PER_WRITER {
                        let name = format!("r{round}-w{w}-{j}");
                        match client.post(CONFIGMAPS, &configmap(&name)) {
                            Ok(reply) if reply.status == 201 => {
                                assert_eq!(reply.body["data"]["payload"].as_str(), Some(payload(&name).as_str()));
                                acked.lock().unwrap().push((name, rv_of(&reply.body)));
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(reply) => panic!("create {name}: unexpected {} {:?}", reply.status, reply.body),
                            // The server is gone: the outcome of this write is unknown.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        while count.load(Ordering::SeqCst) < kill_after
            && !writers.iter().all(|w| w.is_finished())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        server.kill9().expect("kill -9");
        for w in writers {
            w.join().expect("writer thread");
        }
    });
    Arc::try_unwrap(acked).expect("writers are done").into_inner().unwrap()
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = rand::rng();
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let server = Server::start(&data, &[]).expect("start berth serve");
        let client = server.client();
        let floor = verify(&client, &acked, &server);
        let kill_after = rng.random_range(20..=300);
        let new = write_until_killed(server, round, kill_after);
        eprintln!(
            "round {round}: killed after {} acknowledged writes (aimed at {kill_after}); store was at {floor}",
            new.len()
        );
        assert!(!new.is_empty(), "round {round} acknowledged nothing");
        for (name, rv) in new {
            assert!(rv > floor, "{name} got resourceVersion {rv}, not above {floor} from before the restart");
            assert!(acked.insert(name, rv).is_none());
        }
        let mut versions: Vec<u64> = acked.values().copied().collect();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(versions.len(), acked.len(), "two acknowledged writes share a resourceVersion");
    }
    // A last restart: everything is there, a new write goes above it all, and a clean stop works.
    let server = Server::start(&data, &[]).expect("start berth serve");
    let client = server.client();
    let floor = verify(&client, &acked, &server);
    let reply = client.post(CONFIGMAPS, &configmap("after-the-crashes")).unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert!(rv_of(&reply.body) > floor);
    server.stop().expect("clean stop");
}
