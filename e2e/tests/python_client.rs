//! The official Python `kubernetes` client against `berth serve` (HTTPS, the kubeconfig berth
//! wrote): `e2e/python/client_check.py` creates, lists, gets, watches, status-patches, patches
//! and deletes a Stack with `CustomObjectsApi` (plus a stale replace and a label selector),
//! writes a Secret and a ConfigMap with `CoreV1Api` and reads `VersionApi`, printing what it got
//! back as JSON lines that this test checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use berth_e2e::Server;
use berth_e2e::process;
use serde_json::{Value, json};

/// The virtualenv `hack/ensure-test-tools.sh` installs the client into.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run hack/ensure-test-tools.sh to install the Python kubernetes client",
        python.display()
    );
    let probe = process::run(
        {
            let mut c = Command::new(&python);
            c.args(["-c", "import kubernetes"]);
            c
        },
        None,
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(
        probe.success(),
        "the kubernetes package is not importable from {}: run hack/ensure-test-tools.sh\n{probe}",
        python.display()
    );
    python
}

#[test]
fn the_python_client_works_unmodified() {
    let python = python();
    let tmp = tempfile::Builder::new().prefix("berth-python").tempdir().unwrap();
    let server = Server::start_tls(&tmp.path().join("data"), &[]).unwrap();
    let secret_value = format!("py-s3cret-{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_check.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(server.kubeconfig()).arg("default").arg(&secret_value);
    // The script bounds each call to 60 s; this bounds the whole run.
    let out = process::run(cmd, None, Duration::from_secs(600)).unwrap();
    assert!(out.success(), "{out}\nserver log:\n{}", server.log_tail());

    let steps: BTreeMap<String, Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{out}")))
        .map(|v| (v["step"].as_str().unwrap().to_string(), v))
        .collect();
    let step = |name: &str| steps.get(name).unwrap_or_else(|| panic!("step {name} missing:\n{out}"));
    assert!(steps.contains_key("done"), "{out}");

    assert_eq!(step("config")["host"], server.endpoint.server.as_str(), "the client read berth's kubeconfig");

    assert!(step("version")["gitVersion"].as_str().is_some_and(|v| v.starts_with("v1.")), "{}", step("version"));

    let created = step("create");
    assert_eq!(created["metadata"]["name"], "py-web");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{created}");
    assert_eq!(created["spec"]["services"], json!([{"name": "web", "image": "berth-e2e/busybox:1", "replicas": 1}]));

    let listed = step("list");
    assert_eq!(listed["kind"], "StackList");
    assert_eq!(listed["names"], json!(["py-web"]));
    assert_eq!(listed["resourceVersion"], created["metadata"]["resourceVersion"]);

    assert_eq!(step("get")["metadata"], created["metadata"]);
    assert_eq!(step("get")["spec"], created["spec"]);

    let status = step("patch_status");
    assert_eq!(status["status"]["phase"], "Ready");
    assert_eq!(status["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(status["metadata"]["generation"], 1, "a status write is no spec change");

    let watched = step("watch");
    assert_eq!(watched["finished"], true, "{watched}");
    assert_eq!(watched["error"], Value::Null, "{watched}");
    let events: Vec<(&str, &str)> = watched["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["name"].as_str().unwrap()))
        .collect();
    assert_eq!(events, [("ADDED", "py-second"), ("MODIFIED", "py-web")], "{watched}");
    let modified = &watched["events"][1];
    assert_eq!(modified["phase"], "Ready");
    assert_eq!(modified["resourceVersion"], status["metadata"]["resourceVersion"]);

    let patched = step("patch");
    assert_eq!(patched["metadata"]["labels"], json!({"app": "py-web", "tier": "front"}));
    assert_eq!(patched["spec"]["services"][0]["image"], "berth-e2e/busybox:2");
    assert_eq!(patched["metadata"]["generation"], 2);
    assert_eq!(patched["status"]["phase"], "Ready", "a spec patch keeps the status");

    assert_eq!(step("stale_replace")["error"], json!({"status": 409, "reason": "Conflict"}));
    assert_eq!(step("label_selector")["names"], json!(["py-second"]));

    let deleted = step("delete");
    assert_eq!(deleted["get_after"]["status"], 404, "{deleted}");
    assert_eq!(deleted["get_after"]["body"]["reason"], "NotFound");

    let secret = step("secret");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&secret_value);
    assert_eq!(secret["data"], json!({"password": encoded}), "stringData is stored base64 in data");
    assert_eq!(secret["created_data"], secret["data"]);
    assert_eq!(secret["string_data"], Value::Null);
    assert_eq!(secret["type"], "Opaque");

    let cm = step("configmap");
    assert_eq!(cm["data"], json!({"mode": "fast"}));
    assert_eq!(cm["labels"], json!({"app": "py"}));

    let log = server.log_text().unwrap();
    assert!(log.contains("/api/v1/namespaces/default/secrets"), "the log records the requests:\n{log}");
    assert!(!log.contains(&secret_value) && !log.contains(&encoded), "a secret value is in the server log:\n{log}");
}
