//! The `berth` commands that need the controllers and a real daemon: `apply --wait` progress,
//! `plan` (text and the `berth.dev/plan/v1` JSON), `logs` (and `logs -f`), `orphans` and `orphans
//! prune --confirm`. Each test runs its own `berth serve` with controllers under a unique
//! instance name (`StackEnv`), in its own namespace, and removes what it created.

use std::time::Duration;

use anyhow::Result;
use berth_e2e::cli_support::{Run, Streaming, berth_at, berth_cmd_for};
use berth_e2e::stack_env::{IMAGE, StackEnv, docker, inspect, unique, wait_until};
use serde_json::Value;

/// Generous deadlines: the machine is small and shared.
const READY: Duration = Duration::from_secs(180);
const LINE: Duration = Duration::from_secs(60);

fn berth(env: &StackEnv, args: &[&str]) -> Run {
    berth_at(&env.kubeconfig, args)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn namespace(env: &StackEnv) -> Result<String> {
    let ns = unique("ns");
    env.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))?;
    Ok(ns)
}

fn write_file(env: &StackEnv, name: &str, text: &str) -> Result<String> {
    let path = env.dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// The actions of a Stack item of a plan document, as (action, service, container, tier, reason).
fn actions(item: &Value) -> Vec<(String, String, String, u64, String)> {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    item["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| h["steps"].as_array().into_iter().flatten())
        .flat_map(|st| st["actions"].as_array().into_iter().flatten())
        .map(|a| (s(a, "action"), s(a, "service"), s(a, "container"), a["tier"].as_u64().unwrap_or(99), s(a, "reason")))
        .collect()
}

/// web ignores SIGTERM (sh as PID 1), so a recreate of it takes its whole stop grace period: the
/// plan taken right after a change sees the old container for that long, whatever the controller
/// is doing meanwhile.
fn plan_stack_yaml(mode: &str) -> String {
    format!(
        r#"apiVersion: berth.dev/v1alpha1
kind: Stack
metadata: {{name: shop}}
spec:
  services:
  - name: web
    image: {IMAGE}
    stopGracePeriodSeconds: 15
    command: ["sh", "-c", "while true; do sleep 1; done"]
    env: [{{name: MODE, value: {mode}}}]
  - name: db
    image: {IMAGE}
    stopGracePeriodSeconds: 1
    command: ["sh", "-c", "exec sleep 3600"]
"#
    )
}

#[test]
fn apply_wait_shows_progress_and_plan_shows_exactly_the_change_until_it_is_applied() -> Result<()> {
    let env = StackEnv::start("resyncInterval: 600s\n")?;
    let ns = namespace(&env)?;
    let file = write_file(&env, "shop.yaml", &plan_stack_yaml("one"))?;

    // apply --wait: plain progress lines (stdout is not a terminal) until the Stack is Ready.
    let r = berth(&env, &["apply", "-f", &file, "-n", &ns, "--wait", "--timeout", "3m"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"stack.berth.dev/shop created"), "{}", r.stdout);
    assert_eq!(lines.last(), Some(&"stack.berth.dev/shop condition met"), "{}", r.stdout);
    let progress: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("stack.berth.dev/shop: ")).collect();
    assert!(
        progress.last().is_some_and(|l| l.contains("Ready: 2/2 containers ready (db 1/1, web 1/1)")),
        "{}",
        r.stdout
    );

    // Converged: no action at all.
    let doc = json(&berth(&env, &["plan", "stack/shop", "-n", &ns, "-o", "json"]).ok().stdout);
    assert_eq!(doc["apiVersion"], "berth.dev/plan/v1");
    assert_eq!(doc["kind"], "PlanList");
    let item = &doc["items"][0];
    assert_eq!(
        (item["kind"].as_str(), item["namespace"].as_str(), item["name"].as_str()),
        (Some("Stack"), Some(ns.as_str()), Some("shop"))
    );
    assert_eq!(item["converged"], true, "{doc:#}");
    assert_eq!(item["hosts"][0]["host"], "local");
    assert!(actions(item).is_empty(), "{doc:#}");

    // Change web's environment: the plan recreates web, and only web, for the changed desired
    // state (tier 1).
    std::fs::write(&file, plan_stack_yaml("two"))?;
    berth(&env, &["apply", "-f", &file, "-n", &ns]).ok();
    let doc = json(&berth(&env, &["plan", "stack/shop", "-n", &ns, "-o", "json"]).ok().stdout);
    let item = &doc["items"][0];
    assert_eq!(item["converged"], false, "{doc:#}");
    let web0 = format!("{ns}.shop-web-0");
    let mutations: Vec<_> = actions(item).into_iter().filter(|a| a.0 != "ensureImage").collect();
    assert_eq!(
        mutations,
        [("recreate".to_string(), "web".to_string(), web0.clone(), 1, "DesiredStateChanged".to_string())],
        "{doc:#}"
    );
    let findings = item["hosts"][0]["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f["tier"] == 1 && f["reason"] == "DesiredStateChanged"), "{doc:#}");

    // The same plan as text, with the Host's orphan part.
    let text = berth(&env, &["plan", "-n", &ns]).ok().stdout;
    assert!(
        text.contains(&format!("~ recreate container {web0} (service web)  [tier 1 DesiredStateChanged]")),
        "{text}"
    );
    assert!(text.contains("host.berth.dev/local orphans: requested Report"), "{text}");

    // Once applied, the plan is empty again.
    berth(&env, &["wait", "--for=condition=Ready", "stack/shop", "-n", &ns, "--timeout", "3m"]).ok();
    let doc = json(&berth(&env, &["plan", "stack/shop", "-n", &ns, "-o", "json"]).ok().stdout);
    assert_eq!(doc["items"][0]["converged"], true, "{doc:#}");
    assert!(actions(&doc["items"][0]).is_empty(), "{doc:#}");
    let env_of_web = inspect(&web0)?.expect("web exists")["Config"]["Env"].to_string();
    assert!(env_of_web.contains("MODE=two"), "{env_of_web}");
    Ok(())
}

#[test]
fn logs_show_lines_of_a_service_and_follow_receives_a_new_line() -> Result<()> {
    let env = StackEnv::start("resyncInterval: 600s\n")?;
    let ns = namespace(&env)?;
    let yaml = format!(
        r#"apiVersion: berth.dev/v1alpha1
kind: Stack
metadata: {{name: chat}}
spec:
  services:
  - name: web
    image: {IMAGE}
    replicas: 2
    stopGracePeriodSeconds: 1
    command: ["sh", "-c", "echo web up on $HOSTNAME; echo web warning >&2; exec sleep 3600"]
  - name: db
    image: {IMAGE}
    stopGracePeriodSeconds: 1
    command: ["sh", "-c", "echo db up; exec sleep 3600"]
"#
    );
    let file = write_file(&env, "chat.yaml", &yaml)?;
    berth(&env, &["apply", "-f", &file, "-n", &ns, "--wait", "--timeout", "3m"]).ok();

    let all = berth(&env, &["logs", "stack/chat", "-n", &ns]).ok().stdout;
    for want in ["[db/0] db up", "[web/0] web up on ", "[web/1] web up on ", "[web/0 stderr] web warning"] {
        assert!(all.contains(want), "missing {want:?}:\n{all}");
    }
    let one = berth(&env, &["logs", "chat", "-n", &ns, "-s", "web", "--replica", "1"]).ok().stdout;
    // stdout and stderr are separate pipes: the order of two lines written in the same instant
    // is not defined, so compare the set of prefixes.
    let mut prefixes: Vec<&str> = one.lines().map(|l| l.split(']').next().unwrap_or_default()).collect();
    prefixes.sort_unstable();
    assert_eq!(prefixes, ["[web/1", "[web/1 stderr"], "{one}");
    let r = berth(&env, &["logs", "stack/chat", "-n", &ns, "-s", "api"]).expect(1);
    assert!(r.stderr.contains("no service \"api\"") && r.stderr.contains("db, web"), "{}", r.stderr);

    // -f: a line written after the command started arrives.
    let mut cmd = berth_cmd_for(&env.kubeconfig);
    cmd.args(["logs", "stack/chat", "-n", &ns, "-s", "web", "--replica", "0", "-f", "--tail", "1"]);
    let mut follow = Streaming::spawn(cmd);
    follow.wait_for_line(LINE, |l| l.starts_with("[web/0"));
    let marker = unique("written-later");
    let web0 = format!("{ns}.chat-web-0");
    docker(&["exec", &web0, "sh", "-c", &format!("echo {marker} > /proc/1/fd/1")])?;
    let line = follow.wait_for_line(LINE, |l| l.contains(&marker));
    assert_eq!(line, format!("[web/0] {marker}"));
    Ok(())
}

fn orphan_labels(instance: &str, uid: &str) -> Vec<String> {
    [
        "berth.dev/managed-by=berth".to_string(),
        format!("berth.dev/instance={instance}"),
        "berth.dev/owner-kind=Stack".into(),
        "berth.dev/owner-namespace=gone-ns".into(),
        "berth.dev/owner-name=gone".into(),
        format!("berth.dev/owner-uid={uid}"),
        "berth.dev/service=web".into(),
        "berth.dev/replica=0".into(),
    ]
    .into_iter()
    .flat_map(|l| ["--label".to_string(), l])
    .collect()
}

#[test]
fn orphans_lists_hand_made_orphans_and_prune_confirm_removes_them() -> Result<()> {
    // Remove above one orphan only when confirmed; a short resync so scans come quickly.
    let env = StackEnv::start("resyncInterval: 2s\norphans: {action: Remove, threshold: 1, minAge: 1s}\n")?;
    let ns = namespace(&env)?;
    // An owner in the store, so the StoreNotEmpty gate passes and BelowThreshold is the one
    // that blocks.
    let keeper = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {{name: keep}}\nspec:\n  services:\n  - name: app\n    image: {IMAGE}\n    stopGracePeriodSeconds: 1\n    command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
    );
    let file = write_file(&env, "keep.yaml", &keeper)?;
    berth(&env, &["apply", "-f", &file, "-n", &ns, "--wait", "--timeout", "3m"]).ok();

    // Two containers with this instance's labels whose owner was never in the store.
    let names = [unique("orphan-a"), unique("orphan-b")];
    for (i, name) in names.iter().enumerate() {
        let labels = orphan_labels(&env.instance, &format!("00000000-0000-0000-0000-00000000000{i}"));
        let mut args: Vec<&str> = labels.iter().map(String::as_str).collect();
        args.extend([IMAGE, "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]);
        env.run_foreign(name, &args)?;
    }

    let listing = wait_until("berth orphans lists both", READY, || {
        let r = berth(&env, &["orphans", "--host", "local"]);
        Ok((r.code == 0 && names.iter().all(|n| r.stdout.contains(n.as_str()))).then_some(r.stdout))
    })?;
    assert!(
        listing
            .starts_with("host.berth.dev/local orphans: requested Remove, effective Report, blocked by BelowThreshold"),
        "{listing}"
    );
    assert!(
        listing.contains("gate BelowThreshold blocks: 2 removable orphans exceed orphans.threshold 1"),
        "{listing}"
    );
    for n in &names {
        let line = listing.lines().find(|l| l.contains(n.as_str())).unwrap();
        assert!(
            line.contains("Stack/gone-ns/gone") && line.ends_with("Kept: removal blocked by gate BelowThreshold"),
            "{line}"
        );
    }
    let doc = json(&berth(&env, &["orphans", "-o", "json"]).ok().stdout);
    let host = doc["items"].as_array().unwrap().iter().find(|i| i["kind"] == "Host" && i["name"] == "local").unwrap();
    let scan = &host["orphanScan"];
    assert_eq!(
        (scan["requestedAction"].as_str(), scan["effectiveAction"].as_str(), scan["blockedBy"].as_str()),
        (Some("Remove"), Some("Report"), Some("BelowThreshold"))
    );
    // The keeper's container is no orphan.
    assert!(!listing.contains(&format!("{ns}.keep-app-0")), "{listing}");

    // Without --confirm: a usage error that says what prune would do.
    let r = berth(&env, &["orphans", "prune", "--host", "local"]).expect(2);
    assert!(r.stderr.contains("--confirm") && r.stderr.contains("BelowThreshold"), "{}", r.stderr);
    for n in &names {
        assert!(inspect(n)?.is_some(), "{n} was removed without confirmation");
    }

    let r = berth(&env, &["orphans", "prune", "--host", "local", "--confirm", "--timeout", "2m"]).ok();
    assert!(r.stdout.contains("used: gates StoreNotEmpty and BelowThreshold were waived"), "{}", r.stdout);
    assert!(r.stdout.contains("removed 2 orphans on host local"), "{}", r.stdout);
    for n in &names {
        let line = r.stdout.lines().find(|l| l.contains(n.as_str())).unwrap_or_default();
        assert!(line.ends_with("Removed"), "{}", r.stdout);
        assert!(inspect(n)?.is_none(), "{n} still exists");
    }
    assert!(inspect(&format!("{ns}.keep-app-0"))?.is_some(), "the owned container must stay");
    Ok(())
}
