//! The `berth` command line end to end: the real binary against a real `berth serve
//! --no-controllers` (so status is written here, through the API, where a controller would), and
//! the real kubectl doing the same things.

use std::time::Duration;

use berth_e2e::cli_support::{Server, Streaming, repo_root, write};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

fn stack(name: &str, labels: &str, image: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  services:\n  - name: web\n    image: {image}\n"
    )
}

fn configmap(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\ndata:\n  k: v\n")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn names(server: &Server, kind: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["get", kind, "-o", "name"];
    args.extend_from_slice(extra);
    let mut v: Vec<String> = server.berth(&args).ok().stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Writes a status through the status subresource, as a controller would.
fn set_ready(server: &Server, name: &str, status: &str, reason: &str, message: &str) {
    let live = json(&server.berth(&["get", "stack", name, "-o", "json"]).ok().stdout);
    let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
    let patch = serde_json::json!({"status": {
        "observedGeneration": generation,
        "phase": if status == "True" { "Ready" } else { "Progressing" },
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": generation}]
    }});
    server.kubectl(&["patch", "stack", name, "--subresource=status", "--type=merge", "-p", &patch.to_string()]).ok();
}

#[test]
fn applying_the_samples_twice_reports_unchanged_the_second_time() {
    let server = Server::start();
    let samples = repo_root().join("manifests/samples");
    let first = server.berth(&["apply", "-f", samples.to_str().unwrap()]).ok();
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert!(lines.len() >= 4, "{}", first.stdout);
    assert!(lines.iter().all(|l| l.ends_with(" created")), "{}", first.stdout);
    // Hosts first (Stacks and Leases are placed on them).
    assert!(lines[0].starts_with("host.berth.dev/"), "{}", first.stdout);
    assert!(lines.contains(&"stack.berth.dev/shop created"), "{}", first.stdout);

    let second = server.berth(&["apply", "-f", samples.to_str().unwrap()]).ok();
    let again: Vec<&str> = second.stdout.lines().collect();
    assert_eq!(again.len(), lines.len(), "{}", second.stdout);
    assert!(again.iter().all(|l| l.ends_with(" unchanged")), "{}", second.stdout);

    // The invalid sample sits in a subdirectory: only -R reads it, and then nothing is applied.
    let r = server.berth(&["apply", "-f", samples.to_str().unwrap(), "-R"]).expect(1);
    assert!(r.stderr.contains("stack-invalid.yaml: document 1 (stack.berth.dev/broken)"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn gitops_prune_deletes_exactly_what_left_the_repository_and_refuses_wipes() {
    let server = Server::start();
    let repo = tempfile::tempdir().unwrap();
    write(repo.path(), "a.yaml", &stack("a", "app: shop", "busybox:1"));
    let b = write(repo.path(), "b.yaml", &stack("b", "app: shop", "busybox:1"));
    write(repo.path(), "config.yaml", &configmap("c", "app: shop"));
    // Not part of the repository: another selector, must survive every prune.
    server.berth_stdin(&["apply", "-f", "-"], &stack("other", "app: other", "busybox:1")).ok();
    let dir = repo.path().to_str().unwrap();

    let r = server.berth(&["apply", "-f", dir, "--prune", "-l", "app=shop"]).ok();
    assert!(!r.stdout.contains("pruned"), "{}", r.stdout);
    std::fs::remove_file(b).unwrap();
    let r = server.berth(&["apply", "-f", dir, "--prune", "-l", "app=shop"]).ok();
    let pruned: Vec<&str> = r.stdout.lines().filter(|l| l.contains("pruned")).collect();
    assert_eq!(pruned, ["stack.berth.dev/b (namespace default) pruned"], "{}", r.stdout);
    assert_eq!(names(&server, "stacks", &[]), ["stack.berth.dev/a", "stack.berth.dev/other"]);
    assert_eq!(names(&server, "cm", &[]), ["configmap/c"]);

    // An empty checkout is refused and deletes nothing.
    let empty = tempfile::tempdir().unwrap();
    let r = server.berth(&["apply", "-f", empty.path().to_str().unwrap(), "--prune", "-l", "app=shop"]).expect(1);
    assert!(r.stderr.contains("holds no object"), "{}", r.stderr);
    assert_eq!(names(&server, "stacks", &[]), ["stack.berth.dev/a", "stack.berth.dev/other"]);

    // More than --prune-max deletions are refused without --force, and nothing is applied.
    for n in ["x1", "x2", "x3"] {
        server.berth_stdin(&["apply", "-f", "-"], &stack(n, "app: shop", "busybox:1")).ok();
    }
    write(repo.path(), "a.yaml", &stack("a", "app: shop", "busybox:2"));
    let r = server.berth(&["apply", "-f", dir, "--prune", "-l", "app=shop", "--prune-max", "2"]).expect(1);
    assert!(r.stderr.contains("refusing to prune 3 objects"), "{}", r.stderr);
    assert!(r.stderr.contains("stack.berth.dev/x1"), "{}", r.stderr);
    let a = json(&server.berth(&["get", "stack", "a", "-o", "json"]).ok().stdout);
    assert_eq!(a["spec"]["services"][0]["image"], "busybox:1", "a refused apply changes nothing");
    assert_eq!(names(&server, "stacks", &["-l", "app=shop"]).len(), 4);

    let r = server.berth(&["apply", "-f", dir, "--prune", "-l", "app=shop", "--prune-max", "2", "--force"]).ok();
    assert!(r.stdout.contains("stack.berth.dev/a configured"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().filter(|l| l.ends_with(" pruned")).count(), 3, "{}", r.stdout);
    // What goes is listed before the first deletion.
    let announced = "pruning 3 objects labelled app=shop that the input no longer holds:\n  \
                     stack.berth.dev/x1 (namespace default)\n  stack.berth.dev/x2 (namespace default)\n  \
                     stack.berth.dev/x3 (namespace default)\nstack.berth.dev/x1 (namespace default) pruned\n";
    assert!(r.stdout.contains(announced), "{}", r.stdout);
    assert_eq!(names(&server, "stacks", &[]), ["stack.berth.dev/a", "stack.berth.dev/other"]);

    // An object in the repository without the selector's labels is applied, with a warning that
    // prune will never remove it.
    write(repo.path(), "loose.yaml", &stack("loose", "app: loose", "busybox:1"));
    let r = server.berth(&["apply", "-f", dir, "--prune", "-l", "app=shop"]).ok();
    assert!(r.stdout.contains("stack.berth.dev/loose created"), "{}", r.stdout);
    assert!(
        r.stderr.contains("warning: stack.berth.dev/loose does not match the prune selector app=shop"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_bad_document_among_good_ones_applies_nothing_and_names_file_document_and_field() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1-good.yaml", &stack("good", "app: t", "busybox:1"));
    let bad = stack("broken", "app: t", "busybox:1").replace("image: busybox:1", "image: busybox:1\n    replicas: -1");
    write(dir.path(), "2-mixed.yaml", &format!("{}---\n{bad}", configmap("fine", "app: t")));
    let r = server.berth(&["apply", "-f", dir.path().to_str().unwrap()]).expect(1);
    assert!(
        r.stderr.contains("2-mixed.yaml: document 2 (stack.berth.dev/broken): spec.services[0].replicas"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was sent"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let r = server.berth(&["get", "stacks,cm"]).ok();
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("No resources found"), "{}", r.stderr);
}

#[test]
fn get_prints_every_output_format() {
    let server = Server::start();
    let samples = repo_root().join("manifests/samples");
    server.berth(&["apply", "-f", samples.to_str().unwrap()]).ok();
    set_ready(&server, "shop", "True", "Verified", "all running");

    let table = server.berth(&["get", "stacks"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAME", "READY", "PHASE", "HOSTS", "AGE"]);
    let shop: Vec<&str> = lines.iter().find(|l| l.starts_with("shop ")).unwrap().split_whitespace().collect();
    assert_eq!(&shop[..3], ["shop", "True", "Ready"]);

    let wide = server.berth(&["get", "st", "-o", "wide"]).ok().stdout;
    assert!(wide.lines().next().unwrap().contains("DRIFT"), "{wide}");

    let all = server.berth(&["get", "leases", "-A"]).ok().stdout;
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(all.contains("previews ") && all.contains("pr-1234"), "{all}");

    let yaml = server.berth(&["get", "stack", "shop", "-o", "yaml"]).ok().stdout;
    assert!(yaml.contains("kind: Stack") && yaml.contains("name: shop"), "{yaml}");
    let one = json(&server.berth(&["get", "stack/shop", "-o", "json"]).ok().stdout);
    assert_eq!(one["status"]["phase"], "Ready");
    let list = json(&server.berth(&["get", "stacks", "-o", "json"]).ok().stdout);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(names(&server, "berth", &["-l", "app=shop"]), ["stack.berth.dev/shop"]);
    assert_eq!(names(&server, "hosts", &[]), ["host.berth.dev/edge-1"]);

    let r = server.berth(&["get", "stack", "nope"]).expect(1);
    assert!(r.stderr.contains("Error from server (NotFound)") && r.stderr.contains("nope"), "{}", r.stderr);
    let r = server.berth(&["get", "pods"]).expect(1);
    assert!(r.stderr.contains("doesn't have a resource type \"pods\""), "{}", r.stderr);
    server.berth(&["get"]).expect(2);
}

#[test]
fn get_watch_prints_changes() {
    let server = Server::start();
    server.berth_stdin(&["apply", "-f", "-"], &stack("w", "app: w", "busybox:1")).ok();
    let mut cmd = server.berth_cmd();
    cmd.args(["get", "stacks", "-w"]);
    let mut watch = Streaming::spawn(cmd);
    watch.wait_for_line(LONG, |l| l.starts_with("w "));
    server.berth_stdin(&["apply", "-f", "-"], &stack("w2", "app: w", "busybox:1")).ok();
    watch.wait_for_line(LONG, |l| l.starts_with("w2 "));
    set_ready(&server, "w", "True", "Verified", "ok");
    let line = watch.wait_for_line(LONG, |l| l.starts_with("w ") && l.contains("True"));
    assert!(line.contains("Ready"), "{line}");
}

#[test]
fn describe_shows_conditions_and_events() {
    let server = Server::start();
    server.berth_stdin(&["apply", "-f", "-"], &stack("d", "app: d", "busybox:1")).ok();
    set_ready(&server, "d", "False", "ImagePullFailed", "pulling busybox:1 failed: no registry");
    let uid = json(&server.berth(&["get", "stack", "d", "-o", "json"]).ok().stdout)["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: d.1}}\neventTime: '2026-01-01T00:00:00.000000Z'\n\
         reportingController: berth-stack\nreportingInstance: test\naction: Pull\ntype: Warning\nreason: PullFailed\n\
         note: image busybox:1 not found\nregarding: {{apiVersion: berth.dev/v1alpha1, kind: Stack, name: d, namespace: default, uid: {uid}}}\n"
    );
    server.berth_stdin(&["apply", "-f", "-"], &event).ok();
    let text = server.berth(&["describe", "stack/d"]).ok().stdout;
    for want in [
        "Name:",
        "Conditions:",
        "ImagePullFailed",
        "pulling busybox:1 failed",
        "Events:",
        "PullFailed",
        "image busybox:1 not found",
        "berth-stack",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    let evs = server.berth(&["events", "--for", "stack/d"]).ok().stdout;
    assert!(evs.contains("PullFailed") && evs.contains("stack/d"), "{evs}");
}

fn event_about(name: &str, reason: &str, note: &str) -> String {
    format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: {name}.{}}}\neventTime: '2026-01-01T00:00:00.000000Z'\n\
         reportingController: berth-stack\nreportingInstance: test\naction: Apply\ntype: Normal\nreason: {reason}\n\
         note: {note}\nregarding: {{apiVersion: berth.dev/v1alpha1, kind: Stack, name: {name}, namespace: default}}\n",
        reason.to_lowercase()
    )
}

#[test]
fn events_watch_prints_events_recorded_after_it_started() {
    let server = Server::start();
    server.berth_stdin(&["apply", "-f", "-"], &event_about("ev", "Created", "created the containers")).ok();
    let mut cmd = server.berth_cmd();
    cmd.args(["events", "-w", "--for", "stack/ev"]);
    let mut watch = Streaming::spawn(cmd);
    let first = watch.wait_for_line(LONG, |l| l.contains("created the containers"));
    assert!(first.contains("Created") && first.contains("stack/ev"), "{first}");
    // A new event, and one about another object that the filter leaves out.
    server.berth_stdin(&["apply", "-f", "-"], &event_about("other", "Deleted", "not about ev")).ok();
    server.berth_stdin(&["apply", "-f", "-"], &event_about("ev", "Recreated", "recreated web")).ok();
    let next = watch.wait_for_line(LONG, |l| l.contains("recreated web"));
    assert!(next.contains("Recreated") && next.contains("stack/ev"), "{next}");
    assert!(!watch.seen.iter().any(|l| l.contains("not about ev")), "{:#?}", watch.seen);
}

#[test]
fn plan_and_logs_say_when_the_server_runs_no_controllers() {
    let server = Server::start();
    server.berth_stdin(&["apply", "-f", "-"], &stack("p", "app: p", "busybox:1")).ok();
    let r = server.berth(&["plan"]).expect(1);
    assert!(r.stderr.contains("runs no controllers") && r.stderr.contains("--no-controllers"), "{}", r.stderr);
    let r = server.berth(&["logs", "stack/p"]).expect(1);
    assert!(r.stderr.contains("cannot read container logs"), "{}", r.stderr);
    // Hosts' orphan part comes from status: none here, and saying so is no failure.
    let r = server.berth(&["orphans"]).ok();
    assert!(r.stderr.contains("No Hosts found"), "{}", r.stderr);
    server.berth(&["plan", "secret/x"]).expect(2);
    server.berth(&["orphans", "prune", "--host", "local"]).expect(2);
}

#[test]
fn wait_times_out_with_the_condition_message_and_succeeds_when_ready() {
    let server = Server::start();
    server.berth_stdin(&["apply", "-f", "-"], &stack("r", "app: r", "busybox:1")).ok();
    set_ready(&server, "r", "False", "ContainersStarting", "web 0/1 running");
    let r = server.berth(&["wait", "--for=condition=Ready", "stack/r", "--timeout", "2s"]).expect(1);
    assert!(r.stderr.contains("timed out after 2s"), "{}", r.stderr);
    assert!(r.stderr.contains("web 0/1 running"), "{}", r.stderr);
    assert!(r.stdout.contains("stack.berth.dev/r: Progressing"), "progress lines: {}", r.stdout);

    // A waiter started before the status turns Ready returns when it does.
    let mut cmd = server.berth_cmd();
    cmd.args(["wait", "--for=condition=Ready", "stack/r", "--timeout", "2m"]);
    let mut waiter = Streaming::spawn(cmd);
    waiter.wait_for_line(LONG, |l| l.contains("Progressing"));
    set_ready(&server, "r", "True", "Verified", "web 1/1 running");
    assert_eq!(waiter.wait_exit(LONG), Some(0), "{:#?}", waiter.seen);
    assert!(waiter.seen.iter().any(|l| l == "stack.berth.dev/r condition met"), "{:#?}", waiter.seen);

    // apply --wait returns once what it applied is Ready.
    let r = server
        .berth_stdin(&["apply", "-f", "-", "--wait", "--timeout", "30s"], &stack("r", "app: r", "busybox:1"))
        .ok();
    assert!(
        r.stdout.contains("stack.berth.dev/r unchanged") && r.stdout.contains("stack.berth.dev/r condition met"),
        "{}",
        r.stdout
    );
    let r = server
        .berth_stdin(&["apply", "-f", "-", "--wait", "--timeout", "2s"], &stack("r2", "app: r", "busybox:1"))
        .expect(1);
    assert!(r.stderr.contains("no controller has reported status"), "{}", r.stderr);

    // A spec change makes the old Ready stale: waiting again times out until status catches up.
    server.berth_stdin(&["apply", "-f", "-"], &stack("r", "app: r", "busybox:2")).ok();
    let r = server.berth(&["wait", "--for=condition=Ready", "stack/r", "--timeout", "1s"]).expect(1);
    assert!(r.stderr.contains("not yet for the current generation 2"), "{}", r.stderr);

    server.berth(&["wait", "--for=bogus", "stack/r"]).expect(2);
}

#[test]
fn delete_wait_returns_when_the_object_is_gone() {
    let server = Server::start();
    server.berth_stdin(&["apply", "-f", "-"], &stack("gone", "app: g", "busybox:1")).ok();
    let r = server.berth(&["delete", "stack/gone", "--wait"]).ok();
    assert_eq!(r.stdout.trim(), "stack.berth.dev \"gone\" deleted");
    server.berth(&["get", "stack", "gone"]).expect(1);
    let r = server.berth(&["delete", "stack/gone"]).expect(1);
    assert!(r.stderr.contains("NotFound"), "{}", r.stderr);
    server.berth(&["delete", "stack/gone", "--ignore-not-found"]).ok();

    // A finalizer holds the object: --wait times out saying so.
    let held =
        stack("held", "app: g", "busybox:1").replace("  labels:", "  finalizers: [test.berth.dev/hold]\n  labels:");
    server.berth_stdin(&["apply", "-f", "-"], &held).ok();
    let r = server.berth(&["delete", "stack/held", "--wait", "--timeout", "2s"]).expect(1);
    assert!(r.stderr.contains("test.berth.dev/hold"), "{}", r.stderr);
    server.kubectl(&["patch", "stack", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]).ok();
    server.berth(&["wait", "--for=delete", "stack/held", "--timeout", "1m"]).ok();
}

#[test]
fn diff_exits_0_when_equal_1_when_different_2_on_error() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "s.yaml", &stack("df", "app: df", "busybox:1"));
    let f = file.to_str().unwrap();
    let r = server.berth(&["diff", "-f", f]).expect(1);
    assert!(r.stdout.contains("+++ applied/stack.berth.dev/default/df"), "{}", r.stdout);
    // Dry runs, decided here or by the server, store nothing.
    let r = server.berth(&["apply", "-f", f, "--dry-run"]).ok();
    assert_eq!(r.stdout, "stack.berth.dev/df created (dry run)\n");
    let r = server.berth(&["apply", "-f", f, "--dry-run=server"]).ok();
    assert_eq!(r.stdout, "stack.berth.dev/df created (server dry run)\n");
    server.berth(&["get", "stack", "df"]).expect(1);
    server.berth(&["apply", "-f", f]).ok();
    let r = server.berth(&["diff", "-f", f]).ok();
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    write(dir.path(), "s.yaml", &stack("df", "app: df", "busybox:2"));
    let r = server.berth(&["diff", "-f", f]).expect(1);
    assert!(r.stdout.contains("-  - image: busybox:1\n+  - image: busybox:2"), "{}", r.stdout);
    write(dir.path(), "s.yaml", "kind: [");
    server.berth(&["diff", "-f", f]).expect(2);
}

#[test]
fn version_completion_and_connection_errors() {
    let server = Server::start();
    let r = server.berth(&["version"]).ok();
    assert!(r.stdout.contains("Client Version: v") && r.stdout.contains("Server Version: v"), "{}", r.stdout);
    assert!(r.stdout.contains("(berth; Kubernetes API v1."), "{}", r.stdout);
    let bash = server.berth(&["completion", "bash"]).ok().stdout;
    assert!(bash.contains("complete -F _berth") && bash.contains("apply"), "{bash}");
    let zsh = server.berth(&["completion", "zsh"]).ok().stdout;
    let fish = server.berth(&["completion", "fish"]).ok().stdout;
    assert!(zsh.starts_with("#compdef berth"), "{zsh}");
    assert!(fish.contains("complete -c berth"), "{fish}");
    for cmd in ["apply", "plan", "logs", "orphans", "prune", "events", "completion"] {
        assert!(zsh.contains(&format!("'{cmd}:")), "zsh misses {cmd}");
        assert!(fish.contains(&format!("-a \"{cmd}\"")), "fish misses {cmd}");
    }

    // The data dir's kubeconfig is found without KUBECONFIG, by flag and by environment.
    let dd = server.data_dir().to_str().unwrap();
    let mut cmd = server.berth_cmd();
    let out = cmd.env_remove("KUBECONFIG").args(["version", "--data-dir", dd]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = server.berth_cmd();
    let out = cmd.env_remove("KUBECONFIG").env("BERTH_DATA_DIR", dd).args(["get", "stacks"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // No server behind the kubeconfig: say which URL was tried and what to check.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kc =
        std::fs::read_to_string(server.kubeconfig()).unwrap().replace(&server.url, &format!("http://127.0.0.1:{port}"));
    let dead = write(server.dir.path(), "dead-kubeconfig", &kc);
    let r = server.berth(&["get", "stacks", "--kubeconfig", dead.to_str().unwrap()]).expect(1);
    assert!(r.stderr.contains("Is `berth serve` running?"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("tried http://127.0.0.1:{port}")), "{}", r.stderr);
    let mut cmd = server.berth_cmd();
    let empty = tempfile::tempdir().unwrap();
    let out = cmd.env_remove("KUBECONFIG").current_dir(empty.path()).args(["get", "stacks"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("berth serve"), "{}", String::from_utf8_lossy(&out.stderr));
}

fn without_age(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|mut v| {
            v.pop();
            v
        })
        .collect()
}

#[test]
fn kubectl_apply_get_wait_delete_give_the_same_results() {
    let server = Server::start();
    let samples = repo_root().join("manifests/samples");
    let s = samples.to_str().unwrap();
    let r = server.kubectl(&["apply", "-f", s]).ok();
    assert!(r.stdout.contains("stack.berth.dev/shop created"), "{}", r.stdout);
    // berth sees what kubectl applied, and prints the same table as kubectl.
    assert_eq!(names(&server, "stacks", &[]), ["stack.berth.dev/hello", "stack.berth.dev/shop"]);
    set_ready(&server, "shop", "True", "Verified", "all running");
    let ours = server.berth(&["get", "stacks"]).ok().stdout;
    let theirs = server.kubectl(&["get", "stacks"]).ok().stdout;
    assert_eq!(without_age(&ours), without_age(&theirs), "berth:\n{ours}\nkubectl:\n{theirs}");
    let ours = server.berth(&["get", "leases", "-A", "-o", "wide"]).ok().stdout;
    let theirs = server.kubectl(&["get", "leases", "-A", "-o", "wide"]).ok().stdout;
    assert_eq!(ours.lines().next(), theirs.lines().next(), "berth:\n{ours}\nkubectl:\n{theirs}");

    // berth apply over kubectl's apply changes no spec.
    let before = json(&server.berth(&["get", "stack", "shop", "-o", "json"]).ok().stdout);
    server.berth(&["apply", "-f", s]).ok();
    let after = json(&server.berth(&["get", "stack", "shop", "-o", "json"]).ok().stdout);
    assert_eq!(before["spec"], after["spec"]);
    assert_eq!(before["metadata"]["generation"], after["metadata"]["generation"]);

    // Both wait the same way, and both delete.
    server.kubectl(&["wait", "--for=condition=Ready", "stack/shop", "--timeout=30s"]).ok();
    server.berth(&["wait", "--for=condition=Ready", "stack/shop", "--timeout", "30s"]).ok();
    server.kubectl(&["delete", "stack", "hello", "--wait=true"]).ok();
    server.berth(&["delete", "stack/shop", "--wait"]).ok();
    let r = server.kubectl(&["get", "stacks"]).ok();
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}
