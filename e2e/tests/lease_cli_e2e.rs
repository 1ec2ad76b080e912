//! `berth logs lease/NAME` and `berth plan lease/NAME` (and `berth plan` listing Leases) with the
//! real `berth` binary against a real `berth serve` and the local Docker daemon: the lines a
//! Lease's container prints, followed as they come, and the plan of a Ready Lease (converged) and
//! of one waiting for room (why, per host). Each test runs its own server under a unique
//! instance name and namespace, and removes everything it created.

use std::time::Duration;

use anyhow::Result;
use berth_e2e::cli_support::{Run, Streaming, berth_at, berth_cmd_for};
use berth_e2e::stack_env::{IMAGE, StackEnv, condition, docker, unique, wait_until};
use serde_json::Value;

/// Generous deadlines: the machine is small and shared.
const READY: Duration = Duration::from_secs(120);
const LINE: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"leases:
  skus:
    small: {cpus: 0.25, memoryMb: 64, pids: 64}
  allowedRegistries: [local]
  verifyWindow: 2s
  bindAddress: 127.0.0.1
resyncInterval: 600s
"#;

fn berth(env: &StackEnv, args: &[&str]) -> Run {
    berth_at(&env.kubeconfig, args)
}

fn namespace(env: &StackEnv) -> Result<String> {
    let ns = unique("ns");
    env.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))?;
    Ok(ns)
}

/// A Lease of one service `app` running `script` with `sh -c`.
fn lease_yaml(ns: &str, name: &str, script: &str, quantity: u32) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Lease\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  tenant: acme\n  \
         sku: small\n  duration: 1h\n  services:\n  - name: app\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \
         {script:?}]\n    quantity: {quantity}\n"
    )
}

fn lease(env: &StackEnv, ns: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&env.kubectl(&["get", "lease", name, "-n", ns, "-o", "json"], None)?)?)
}

fn wait_lease(env: &StackEnv, ns: &str, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
    let r = wait_until(what, READY, || {
        let l = lease(env, ns, name)?;
        Ok(check(&l).then_some(l))
    });
    r.map_err(|e| anyhow::anyhow!("{e}\nserver log:\n{}", env.log_tail()))
}

fn phase(l: &Value) -> &str {
    l["status"]["phase"].as_str().unwrap_or("")
}

/// The single item of `berth plan lease/NAME -o json`.
fn plan_item(env: &StackEnv, ns: &str, name: &str) -> Value {
    let target = format!("lease/{name}");
    let out = berth(env, &["plan", &target, "-n", ns, "-o", "json"]).ok().stdout;
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!((doc["apiVersion"].as_str(), doc["kind"].as_str()), (Some("berth.dev/plan/v1"), Some("PlanList")));
    let items = doc["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{doc:#}");
    assert_eq!((items[0]["kind"].as_str(), items[0]["name"].as_str()), (Some("Lease"), Some(name)), "{doc:#}");
    items[0].clone()
}

#[test]
fn logs_of_a_lease_show_what_its_container_printed_and_follow_new_lines() -> Result<()> {
    let env = StackEnv::start(CONFIG)?;
    let ns = namespace(&env)?;
    let script = "echo hello from instance $HOSTNAME; echo a warning >&2; exec sleep 3600";
    env.apply(&lease_yaml(&ns, "talker", script, 2))?;
    wait_lease(&env, &ns, "talker", "Ready", |l| phase(l) == "Ready")?;

    let all = berth(&env, &["logs", "lease/talker", "-n", &ns]).ok().stdout;
    for want in ["[app/0] hello from instance ", "[app/1] hello from instance ", "[app/0 stderr] a warning"] {
        assert!(all.contains(want), "missing {want:?}:\n{all}");
    }
    let one =
        berth(&env, &["logs", "lease/talker", "-n", &ns, "-s", "app", "--replica", "1", "--tail", "1"]).ok().stdout;
    let prefixes: Vec<&str> = one.lines().map(|l| l.split(']').next().unwrap_or_default()).collect();
    assert_eq!(prefixes.len(), 1, "--tail 1 of one instance: {one}");
    assert!(prefixes[0].starts_with("[app/1"), "{one}");
    let r = berth(&env, &["logs", "lease/talker", "-n", &ns, "-s", "web"]).expect(1);
    assert!(r.stderr.contains("no service \"web\"") && r.stderr.contains("app"), "{}", r.stderr);
    let r = berth(&env, &["logs", "lease/nobody", "-n", &ns]).expect(1);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);

    // -f: a line written after the command started arrives.
    let mut cmd = berth_cmd_for(&env.kubeconfig);
    cmd.args(["logs", "lease/talker", "-n", &ns, "--replica", "0", "-f", "--tail", "1"]);
    let mut follow = Streaming::spawn(cmd);
    follow.wait_for_line(LINE, |l| l.starts_with("[app/0"));
    let marker = unique("written-later");
    let container = format!("lease.{ns}.talker.app-0.r1");
    docker(&["exec", &container, "sh", "-c", &format!("echo {marker} > /proc/1/fd/1")])?;
    let line = follow.wait_for_line(LINE, |l| l.contains(&marker));
    assert_eq!(line, format!("[app/0] {marker}"));
    Ok(())
}

#[test]
fn plan_of_a_ready_lease_is_converged_and_of_one_without_room_says_why() -> Result<()> {
    let env = StackEnv::start(CONFIG)?;
    let ns = namespace(&env)?;
    wait_until("the local Host", READY, || Ok(env.kubectl(&["get", "host", "local"], None).ok()))?;
    // Room for exactly one instance of the SKU.
    env.kubectl(&["patch", "host", "local", "--type", "merge", "-p", r#"{"spec":{"capacity":{"cpus":0.25}}}"#], None)?;
    env.apply(&lease_yaml(&ns, "first", "exec sleep 3600", 1))?;
    wait_lease(&env, &ns, "first", "Ready", |l| phase(l) == "Ready")?;

    let item = plan_item(&env, &ns, "first");
    assert_eq!(item["converged"], true, "{item:#}");
    assert_eq!(item["phase"], "Ready", "{item:#}");
    assert_eq!(item["hosts"][0]["host"], "local", "{item:#}");
    assert_eq!(item["hosts"][0]["steps"], Value::Array(vec![]), "{item:#}");

    env.apply(&lease_yaml(&ns, "second", "exec sleep 3600", 1))?;
    wait_lease(&env, &ns, "second", "Pending for capacity", |l| {
        condition(l, "Ready").is_some_and(|c| c.1 == "InsufficientCapacity")
    })?;
    let item = plan_item(&env, &ns, "second");
    assert_eq!(item["converged"], false, "{item:#}");
    assert_eq!(item["phase"], "Pending", "{item:#}");
    assert_eq!(item["findings"][0]["reason"], "InsufficientCapacity", "{item:#}");
    let local = &item["hosts"][0];
    assert_eq!(local["host"], "local", "{item:#}");
    assert_eq!(local["findings"][0]["reason"], "InsufficientCapacity", "{item:#}");
    let why = local["findings"][0]["message"].as_str().unwrap_or_default();
    assert!(why.starts_with("local has 0.00 of 0.25 CPUs"), "{item:#}");

    // `berth plan` without a name lists the namespace's Leases too, in words.
    let text = berth(&env, &["plan", "-n", &ns]).ok().stdout;
    for want in [
        "lease.berth.dev/first (namespace ",
        ", Ready): no changes (1 host converged: local)",
        ", Pending): not converged; nothing can be done now",
        "tier 1 InsufficientCapacity: local has 0.00 of 0.25 CPUs",
        "host.berth.dev/local orphans:",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    Ok(())
}
