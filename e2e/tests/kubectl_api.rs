//! The real kubectl against `berth serve` (HTTPS with its self-signed certificate, no
//! controllers): apply/configure, tables, YAML and JSON output, watches, `wait`, deletion with
//! and without finalizers, `explain`, validation errors, conflicts, Secrets, Events, discovery
//! and server-side apply, each test on a server and data dir of its own.

use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use berth_e2e::Server;
use berth_e2e::kubectl::Kubectl;
use berth_e2e::process::Stream;
use serde_json::{Value, json};

/// Deadline of every wait for a line or an exit of a background kubectl.
const DEADLINE: Duration = Duration::from_secs(120);

struct Env {
    k: Kubectl,
    server: Server,
    // Last: the server stops before its directory is removed.
    _tmp: tempfile::TempDir,
}

fn env() -> Env {
    let tmp = tempfile::Builder::new().prefix("berth-kubectl").tempdir().unwrap();
    let server = Server::start_tls(&tmp.path().join("data"), &[]).unwrap();
    assert!(server.endpoint.server.starts_with("https://"), "kubectl needs TLS to send its token");
    let k = Kubectl::new(&server.kubeconfig()).unwrap();
    Env { k, server, _tmp: tmp }
}

fn stack_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  services:\n  - name: web\n    image: {image}\n    ports:\n    - {{containerPort: 8080}}\n"
    )
}

/// Writes the Ready condition, phase and host count through the `/status` subresource.
fn set_ready(k: &Kubectl, name: &str) -> Result<String> {
    let status = json!({"status": {
        "phase": "Ready",
        "hostsReady": "1/1",
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllServicesReady", "message": "every service runs"}],
    }});
    k.ok(&["patch", "stack", name, "--subresource=status", "--type=merge", "-p", &status.to_string()])
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The CRD berth generates for `kind`, as JSON.
fn crd(kind: &str) -> Value {
    berth_crds::crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .find(|c| c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("berth has no CRD of kind {kind}"))
}

fn squash(text: &str) -> String {
    words(text).join(" ")
}

#[test]
fn apply_creates_then_reapply_configures_and_keeps_status() {
    let e = env();
    let out = e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("web", "berth-e2e/busybox:1")).unwrap();
    assert_eq!(out.trim(), "stack.berth.dev/web created");
    set_ready(&e.k, "web").unwrap();

    let out = e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("web", "berth-e2e/busybox:2")).unwrap();
    assert_eq!(out.trim(), "stack.berth.dev/web configured");
    let obj = e.k.json(&["get", "stack", "web"]).unwrap();
    assert_eq!(obj["metadata"]["generation"], 2, "a spec change bumps the generation: {obj:#}");
    assert_eq!(obj["spec"]["services"][0]["image"], "berth-e2e/busybox:2");
    assert_eq!(obj["status"]["phase"], "Ready", "apply leaves the status alone: {obj:#}");
    assert_eq!(obj["status"]["conditions"][0]["type"], "Ready");
    let last_applied = obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .expect("client-side apply records its configuration");
    assert!(last_applied.contains("berth-e2e/busybox:2"), "{last_applied}");

    // Re-applying the same file: kubectl still sends a patch (it replaces the services list,
    // whose items lack the defaulted `replicas`) and so says "configured", as it does against
    // Kubernetes; the server sees no change and writes nothing.
    let rv = obj["metadata"]["resourceVersion"].clone();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("web", "berth-e2e/busybox:2")).unwrap();
    let again = e.k.json(&["get", "stack", "web"]).unwrap();
    assert_eq!(again["metadata"]["generation"], 2, "{again:#}");
    assert_eq!(again["metadata"]["resourceVersion"], rv, "an unchanged apply writes nothing");
}

#[test]
fn get_prints_the_printer_columns_yaml_and_json() {
    let e = env();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("shop", "berth-e2e/busybox:latest")).unwrap();

    // Before any status: the columns are there, the cells empty.
    let table = e.k.ok(&["get", "stacks"]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(words(lines[0]), ["NAME", "READY", "PHASE", "HOSTS", "AGE"], "{table}");
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(words(lines[1])[0], "shop");
    assert_eq!(words(lines[1]).len(), 2, "only name and age have values yet: {table}");

    set_ready(&e.k, "shop").unwrap();
    let table = e.k.ok(&["get", "stacks"]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(words(lines[0]), ["NAME", "READY", "PHASE", "HOSTS", "AGE"], "{table}");
    let row = words(lines[1]);
    assert_eq!(row[..4], ["shop", "True", "Ready", "1/1"], "{table}");
    assert!(row[4].ends_with('s') || row[4].ends_with('m'), "AGE is a duration like 5s or 2m: {table}");
    // The Drift column has priority 1: only `-o wide` shows it.
    let wide = e.k.ok(&["get", "stacks", "-o", "wide"]).unwrap();
    assert_eq!(words(wide.lines().next().unwrap()), ["NAME", "READY", "PHASE", "HOSTS", "DRIFT", "AGE"], "{wide}");
    // Short names resolve.
    assert_eq!(e.k.ok(&["get", "stk", "-o", "name"]).unwrap().trim(), "stack.berth.dev/shop");

    let yaml = e.k.ok(&["get", "stack", "shop", "-o", "yaml"]).unwrap();
    let obj: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(obj["apiVersion"], "berth.dev/v1alpha1");
    assert_eq!(obj["kind"], "Stack");
    assert_eq!(obj["metadata"]["name"], "shop");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert_eq!(obj["spec"]["services"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(obj["status"]["hostsReady"], "1/1");

    let list = e.k.json(&["get", "stacks"]).unwrap();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0], obj, "-o json and -o yaml show the same object");
    assert!(items[0]["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
}

#[test]
fn get_watch_prints_a_change_made_while_it_runs() {
    let e = env();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("watched", "berth-e2e/busybox:latest")).unwrap();
    let mut watch = e.k.spawn(&["get", "stacks", "-w"]).unwrap();
    let first = watch.expect_line(Stream::Stdout, DEADLINE, |l| l.starts_with("watched ")).unwrap();
    assert!(!first.contains("Ready"), "no status yet: {first}");
    // The watch starts from the list's resourceVersion, so this change reaches it even if the
    // watch request is not open yet.
    set_ready(&e.k, "watched").unwrap();
    let changed = watch.expect_line(Stream::Stdout, DEADLINE, |l| l.starts_with("watched ")).unwrap();
    assert_eq!(words(&changed)[..4], ["watched", "True", "Ready", "1/1"], "{}", watch.transcript());
    drop(watch);

    // A new object shows up too; -v=6 logs the watch request, so the object is created while
    // the watch is open.
    let mut watch = e.k.spawn(&["get", "stacks", "--watch-only", "-v=6"]).unwrap();
    watch.expect_line(Stream::Stderr, DEADLINE, |l| l.contains("watch=true")).unwrap();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("late", "berth-e2e/busybox:latest")).unwrap();
    let added = watch.expect_line(Stream::Stdout, DEADLINE, |l| l.starts_with("late ")).unwrap();
    assert_eq!(words(&added).len(), 2, "name and age only: {added}");
}

#[test]
fn wait_for_ready_succeeds_after_a_status_write() {
    let e = env();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("api", "berth-e2e/busybox:latest")).unwrap();
    // -v=6 logs each request: the watch request shows kubectl has seen the object not Ready.
    let mut wait = e.k.spawn(&["wait", "stack/api", "--for=condition=Ready", "--timeout=300s", "-v=6"]).unwrap();
    wait.expect_line(Stream::Stderr, DEADLINE, |l| l.contains("watch=true")).unwrap();
    assert!(wait.running().unwrap(), "kubectl wait returned before the condition was set:\n{}", wait.transcript());
    set_ready(&e.k, "api").unwrap();
    let (status, output) = wait.wait(DEADLINE).unwrap();
    assert!(status.success(), "{output}");
    assert!(output.contains("stack.berth.dev/api condition met"), "{output}");
}

#[test]
fn wait_for_ready_times_out_without_the_condition() {
    let e = env();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("slow", "berth-e2e/busybox:latest")).unwrap();
    let out = e.k.fails(&["wait", "stack/slow", "--for=condition=Ready", "--timeout=2s"]).unwrap();
    assert!(out.stderr.contains("timed out waiting for the condition on stacks/slow"), "{out}");
}

#[test]
fn delete_without_a_finalizer_removes_the_object() {
    let e = env();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("gone", "berth-e2e/busybox:latest")).unwrap();
    let out = e.k.ok(&["delete", "stack", "gone"]).unwrap();
    assert_eq!(out.trim(), "stack.berth.dev \"gone\" deleted");
    let out = e.k.fails(&["get", "stack", "gone"]).unwrap();
    assert!(out.stderr.contains("Error from server (NotFound): stacks.berth.dev \"gone\" not found"), "{out}");
}

#[test]
fn delete_with_a_finalizer_waits_until_the_finalizer_is_removed() {
    let e = env();
    let yaml = stack_yaml("held", "berth-e2e/busybox:latest")
        .replace("metadata:\n", "metadata:\n  finalizers: [berth.dev/e2e-test]\n");
    e.k.ok_stdin(&["apply", "-f", "-"], &yaml).unwrap();
    // kubectl delete waits for the object to be gone.
    let mut delete = e.k.spawn(&["delete", "stack", "held", "--timeout=300s"]).unwrap();
    delete.expect_line(Stream::Stdout, DEADLINE, |l| l.contains("\"held\" deleted")).unwrap();

    let obj = e.k.json(&["get", "stack", "held"]).unwrap();
    assert!(obj["metadata"]["deletionTimestamp"].is_string(), "marked for deletion: {obj:#}");
    assert_eq!(obj["metadata"]["finalizers"], json!(["berth.dev/e2e-test"]));
    assert!(delete.running().unwrap(), "kubectl delete returned while the object exists:\n{}", delete.transcript());

    // Adding a finalizer to an object being deleted is refused.
    let out =
        e.k.fails(&[
            "patch",
            "stack",
            "held",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/finalizers/-","value":"berth.dev/another"}]"#,
        ])
        .unwrap();
    assert!(out.stderr.contains("no new finalizers can be added"), "{out}");

    e.k.ok(&["patch", "stack", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]).unwrap();
    let (status, output) = delete.wait(DEADLINE).unwrap();
    assert!(status.success(), "{output}");
    let out = e.k.fails(&["get", "stack", "held"]).unwrap();
    assert!(out.stderr.contains("(NotFound)"), "{out}");
}

#[test]
fn explain_prints_the_field_docs() {
    let e = env();
    let schema = crd("Stack")["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let spec = &schema["properties"]["spec"];
    let services = &spec["properties"]["services"]["items"];
    for (path, node) in [("stack.spec", spec), ("stack.spec.services", services)] {
        let out = e.k.ok(&["explain", path]).unwrap();
        assert!(out.contains("KIND:       Stack") && out.contains("GROUP:      berth.dev"), "{out}");
        let flat = squash(&out);
        let props = node["properties"].as_object().unwrap();
        assert!(props.len() > 3, "{path} documents its fields");
        for (field, prop) in props {
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(&format!("{field}\t"))),
                "{path}: {field} missing:\n{out}"
            );
            let doc = prop["description"].as_str().unwrap_or_else(|| panic!("{path}.{field} has no description"));
            assert!(flat.contains(&squash(doc)), "{path}.{field}: description {doc:?} missing:\n{out}");
        }
        for required in node["required"].as_array().into_iter().flatten() {
            let field = required.as_str().unwrap();
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(&format!("{field}\t")) && l.ends_with("-required-")),
                "{path}: {field} is not marked required:\n{out}"
            );
        }
    }
}

#[test]
fn an_invalid_object_gets_one_readable_cause_per_bad_field() {
    let e = env();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/samples/invalid/stack-invalid.yaml");
    let out = e.k.fails(&["apply", "-f", file, "-v=6"]).unwrap();
    assert!(out.stderr.contains("422 Unprocessable Entity"), "{out}");
    assert!(out.stderr.contains("The Stack \"broken\" is invalid:"), "{out}");
    let causes: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("* ")).collect();
    let fields: Vec<&str> = causes.iter().map(|c| c[2..].split(": ").next().unwrap()).collect();
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "spec.services[0].dependsOn[0].service",
            "spec.services[0].mounts[0]",
            "spec.services[0].mounts[0].volume",
            "spec.services[0].ports[0].containerPort",
            "spec.services[0].replicas",
            "spec.services[1].name",
        ],
        "{out}"
    );
    assert!(causes.iter().all(|c| c.split(": ").nth(1).is_some_and(|m| m.len() > 10)), "every cause says why: {out}");
    let out = e.k.fails(&["get", "stack", "broken"]).unwrap();
    assert!(out.stderr.contains("(NotFound)"), "nothing was stored: {out}");
}

#[test]
fn a_stale_replace_gets_409_conflict() {
    let e = env();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("racy", "berth-e2e/busybox:1")).unwrap();
    let stale = e.k.ok(&["get", "stack", "racy", "-o", "yaml"]).unwrap();
    e.k.ok(&["label", "stack", "racy", "touched=yes"]).unwrap();
    let edited = stale.replace("berth-e2e/busybox:1", "berth-e2e/busybox:2");
    let out = e.k.fails_stdin(&["replace", "-f", "-", "-v=6"], &edited).unwrap();
    assert!(out.stderr.contains("409 Conflict"), "{out}");
    assert!(
        out.stderr.contains("Error from server (Conflict)")
            && out.stderr.contains("the object has been modified; please apply your changes to the latest version"),
        "{out}"
    );
    let obj = e.k.json(&["get", "stack", "racy"]).unwrap();
    assert_eq!(obj["spec"]["services"][0]["image"], "berth-e2e/busybox:1", "the stale write changed nothing");
    assert_eq!(obj["metadata"]["labels"]["touched"], "yes");

    // With the current resourceVersion the same replace goes through.
    let fresh =
        e.k.ok(&["get", "stack", "racy", "-o", "yaml"]).unwrap().replace("berth-e2e/busybox:1", "berth-e2e/busybox:2");
    assert_eq!(e.k.ok_stdin(&["replace", "-f", "-"], &fresh).unwrap().trim(), "stack.berth.dev/racy replaced");
}

#[test]
fn secrets_are_stored_base64_and_never_logged() {
    let e = env();
    // Unique per run, so a match in the log can only come from this test.
    let value = format!("s3cret-{}", std::process::id());
    let out = e.k.ok(&["create", "secret", "generic", "db", &format!("--from-literal=password={value}")]).unwrap();
    assert_eq!(out.trim(), "secret/db created");
    let secret = e.k.json(&["get", "secret", "db"]).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
    assert_eq!(secret["data"]["password"], encoded.as_str(), "{secret:#}");
    assert_eq!(secret["type"], "Opaque");
    let table = e.k.ok(&["get", "secrets"]).unwrap();
    assert_eq!(words(table.lines().nth(1).unwrap())[..3], ["db", "Opaque", "1"], "{table}");

    // A refused Secret does not echo its values in the error either.
    let bad = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: bad}}\nstringData:\n  \"bad key!\": {value}\n");
    let out = e.k.fails_stdin(&["apply", "-f", "-"], &bad).unwrap();
    assert!(out.stderr.contains("bad key!"), "the error names the key: {out}");
    assert!(!out.stderr.contains(&value), "the error shows the value: {out}");

    let log = e.server.log_text().unwrap();
    assert!(log.contains("/api/v1/namespaces/default/secrets"), "the log records the requests:\n{log}");
    assert!(!log.contains(&value) && !log.contains(&encoded), "a secret value is in the server log:\n{log}");
}

#[test]
fn get_events_lists_events() {
    let e = env();
    let nothing = e.k.run(&["get", "events"]).unwrap();
    assert!(
        nothing.success()
            && nothing.stdout.is_empty()
            && nothing.stderr.contains("No resources found in default namespace."),
        "{nothing}"
    );
    let event = r#"apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: web.1, namespace: default}
eventTime: "2026-01-02T03:04:05.000000Z"
reportingController: berth.dev/e2e
reportingInstance: e2e
action: Apply
reason: Applied
note: applied 2 containers
type: Normal
regarding: {apiVersion: berth.dev/v1alpha1, kind: Stack, name: web, namespace: default}
"#;
    assert_eq!(e.k.ok_stdin(&["create", "-f", "-"], event).unwrap().trim(), "event.events.k8s.io/web.1 created");
    let table = e.k.ok(&["get", "events"]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(words(lines[0]), ["NAME", "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{table}");
    let row = words(lines[1]);
    assert_eq!(row[0], "web.1", "{table}");
    assert_eq!(row[2..], ["Normal", "Applied", "stack/web", "applied", "2", "containers"], "{table}");
    let list = e.k.json(&["get", "events"]).unwrap();
    assert_eq!(list["items"][0]["note"], "applied 2 containers");
}

#[test]
fn api_resources_lists_short_names_and_categories_and_get_berth_works() {
    let e = env();
    let out = e.k.ok(&["api-resources", "-o", "wide"]).unwrap();
    let header = out.lines().next().unwrap();
    let col = |name: &str| header.find(name).unwrap_or_else(|| panic!("no {name} column:\n{out}"));
    let (short_at, categories_at) = (col("SHORTNAMES"), col("CATEGORIES"));
    let (namespaced_at, kind_at) = (col("NAMESPACED"), col("KIND"));
    for kind in ["Stack", "Lease", "Host"] {
        let crd = crd(kind);
        let names = &crd["spec"]["names"];
        let plural = names["plural"].as_str().unwrap();
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(plural))
            .unwrap_or_else(|| panic!("{plural} missing:\n{out}"));
        let cell = |at: usize| words(&row[at..]).first().map(|s| s.to_string()).unwrap_or_default();
        let short: Vec<&str> = names["shortNames"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(cell(short_at), short.join(","), "{plural}:\n{out}");
        let categories: Vec<&str> =
            names["categories"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(categories, ["berth"]);
        assert_eq!(row[categories_at..].trim(), categories.join(","), "{plural}:\n{out}");
        assert_eq!(cell(namespaced_at), (crd["spec"]["scope"] == "Namespaced").to_string(), "{plural}:\n{out}");
        assert_eq!(cell(kind_at), kind);
        assert!(row.contains("berth.dev/v1alpha1"), "{row}");
    }
    let berth_only = e.k.ok(&["api-resources", "--categories=berth", "-o", "name"]).unwrap();
    let mut names: Vec<&str> = berth_only.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["hosts.berth.dev", "leases.berth.dev", "stacks.berth.dev"], "{berth_only}");

    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("cat", "berth-e2e/busybox:latest")).unwrap();
    let host = "apiVersion: berth.dev/v1alpha1\nkind: Host\nmetadata: {name: edge-1}\nspec: {endpoint: \"tcp://10.0.0.5:2376\"}\n";
    e.k.ok_stdin(&["apply", "-f", "-"], host).unwrap();
    let out = e.k.ok(&["get", "berth", "-o", "name"]).unwrap();
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["host.berth.dev/edge-1", "stack.berth.dev/cat"], "{out}");
    let table = e.k.ok(&["get", "berth"]).unwrap();
    assert!(table.lines().any(|l| words(l).first() == Some(&"stack.berth.dev/cat")), "{table}");
    assert!(table.lines().any(|l| words(l)[..2] == ["host.berth.dev/edge-1", "tcp://10.0.0.5:2376"]), "{table}");
}

#[test]
fn server_side_apply_creates_updates_and_drops_what_the_manager_dropped() {
    let e = env();
    let first = "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata:\n  name: ssa\n  labels: {team: a, tier: web}\nspec:\n  services:\n  - {name: web, image: berth-e2e/busybox:1}\n  - {name: db, image: berth-e2e/busybox:1}\n";
    let out = e.k.ok_stdin(&["apply", "--server-side", "-f", "-"], first).unwrap();
    assert_eq!(out.trim(), "stack.berth.dev/ssa serverside-applied");
    let obj = e.k.json(&["get", "stack", "ssa", "--show-managed-fields"]).unwrap();
    assert_eq!(obj["metadata"]["generation"], 1);
    let managed = obj["metadata"]["managedFields"].as_array().expect("managedFields recorded");
    assert_eq!(managed.len(), 1, "{obj:#}");
    assert_eq!(managed[0]["manager"], "kubectl");
    assert_eq!(managed[0]["operation"], "Apply");
    assert_eq!(
        managed[0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:team": {}, "f:tier": {}}}, "f:spec": {"f:services": {}}})
    );
    assert!(obj.get("status").is_none());
    // Without --show-managed-fields kubectl hides them, as with Kubernetes.
    assert!(e.k.json(&["get", "stack", "ssa"]).unwrap()["metadata"].get("managedFields").is_none());

    // Another writer adds a label; the applier then drops `tier` and the `db` service.
    e.k.ok(&["label", "stack", "ssa", "owner=ops"]).unwrap();
    let second = "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata:\n  name: ssa\n  labels: {team: b}\nspec:\n  services:\n  - {name: web, image: berth-e2e/busybox:2}\n";
    let out = e.k.ok_stdin(&["apply", "--server-side", "-f", "-"], second).unwrap();
    assert_eq!(out.trim(), "stack.berth.dev/ssa serverside-applied");
    let obj = e.k.json(&["get", "stack", "ssa", "--show-managed-fields"]).unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"team": "b", "owner": "ops"}), "{obj:#}");
    let services = obj["spec"]["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "lists are atomic: the applied list replaces the old one: {obj:#}");
    assert_eq!(services[0]["image"], "berth-e2e/busybox:2");
    assert_eq!(obj["metadata"]["generation"], 2);
    let managed = obj["metadata"]["managedFields"].as_array().unwrap();
    let apply = managed.iter().find(|m| m["operation"] == "Apply").unwrap();
    assert_eq!(apply["fieldsV1"], json!({"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:services": {}}}));

    // The same configuration again changes nothing.
    let rv = obj["metadata"]["resourceVersion"].clone();
    e.k.ok_stdin(&["apply", "--server-side", "-f", "-"], second).unwrap();
    assert_eq!(e.k.json(&["get", "stack", "ssa"]).unwrap()["metadata"]["resourceVersion"], rv);

    // Each manager owns what it applied: `ci` applies a label of its own and kubectl's `team`,
    // then drops both: its own label goes, `team` stays (kubectl still applies it).
    let ci = |labels: &str| format!("apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata:\n  name: ssa\n{labels}");
    let out = e.k.ok_stdin(
        &["apply", "--server-side", "--field-manager=ci", "-f", "-"],
        &ci("  labels: {built-by: ci, team: b}\n"),
    );
    assert_eq!(out.unwrap().trim(), "stack.berth.dev/ssa serverside-applied");
    let obj = e.k.json(&["get", "stack", "ssa", "--show-managed-fields"]).unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"team": "b", "owner": "ops", "built-by": "ci"}), "{obj:#}");
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["operation"] == "Apply")
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["kubectl", "ci"], "{obj:#}");
    e.k.ok_stdin(&["apply", "--server-side", "--field-manager=ci", "-f", "-"], &ci("")).unwrap();
    let obj = e.k.json(&["get", "stack", "ssa"]).unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"team": "b", "owner": "ops"}), "{obj:#}");
    assert_eq!(obj["spec"]["services"][0]["image"], "berth-e2e/busybox:2", "ci never applied the spec");

    // Server-side dry run changes nothing.
    let third = second.replace("busybox:2", "busybox:3");
    let out = e.k.ok_stdin(&["apply", "--server-side", "--dry-run=server", "-f", "-"], &third).unwrap();
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    assert_eq!(e.k.json(&["get", "stack", "ssa"]).unwrap()["spec"]["services"][0]["image"], "berth-e2e/busybox:2");
}

#[test]
fn namespaces_created_by_kubectl_hold_stacks() {
    let e = env();
    // kubectl sends this Namespace protobuf-encoded.
    assert_eq!(e.k.ok(&["create", "namespace", "team-a"]).unwrap().trim(), "namespace/team-a created");
    let table = e.k.ok(&["get", "namespace", "team-a"]).unwrap();
    assert_eq!(words(table.lines().nth(1).unwrap())[..2], ["team-a", "Active"], "{table}");
    e.k.ok_stdin(&["apply", "-n", "team-a", "-f", "-"], &stack_yaml("edge", "berth-e2e/busybox:latest")).unwrap();
    e.k.ok_stdin(&["apply", "-f", "-"], &stack_yaml("home", "berth-e2e/busybox:latest")).unwrap();

    let all = e.k.ok(&["get", "stacks", "-A"]).unwrap();
    let rows: Vec<Vec<&str>> = all.lines().skip(1).map(|l| words(l)[..2].to_vec()).collect();
    assert_eq!(rows, [["default", "home"], ["team-a", "edge"]], "{all}");
    assert_eq!(e.k.ok(&["get", "stacks", "-n", "team-a", "-o", "name"]).unwrap().trim(), "stack.berth.dev/edge");
    assert_eq!(
        e.k.ok(&["get", "stacks", "-A", "-l", "app=home", "-o", "name"]).unwrap().trim(),
        "stack.berth.dev/home"
    );
}
