//! End-to-end test of a Docker daemon that goes away mid-run: the real `berth serve` manages a
//! Stack on a throw-away dockerd in its own network namespace ([`TestDaemon`]), registered as a
//! Host over `tcp://`. The daemon is first cut off the network, then stopped and restarted. Each
//! time the Host shows `Reachable=False`, the Stack says its host is unreachable, nothing is
//! removed or recreated, and everything recovers by itself once the daemon answers again (the
//! resync interval is 600 s, so recovery comes from berth noticing the daemon, not from a timer).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_e2e::stack_env::{IMAGE, StackEnv, condition, is_ready, unique, wait_until};
use berth_e2e::testdaemon::TestDaemon;
use serde_json::Value;

/// Generous deadlines: the machine is small and shared, and a cut is noticed by a ping timeout.
const READY: Duration = Duration::from_secs(180);
const NOTICED: Duration = Duration::from_secs(120);

/// `docker inspect` of a container on the test daemon, `None` when it does not exist.
fn inspect_on(td: &TestDaemon, name: &str) -> Result<Option<Value>> {
    let out = td.cli().args(["inspect", "--type", "container", name]).output().context("docker inspect")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such") {
            return Ok(None);
        }
        bail!("docker inspect {name} on {}: {err}", td.endpoint());
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().and_then(|a| a.first()).cloned())
}

/// (id, running) of a container on the test daemon.
fn state_on(td: &TestDaemon, name: &str) -> Result<(String, bool)> {
    let c = inspect_on(td, name)?.with_context(|| format!("{name} does not exist on the test daemon"))?;
    Ok((c["Id"].as_str().unwrap_or("").to_string(), c["State"]["Running"] == true))
}

fn reachable(host: &Value) -> Option<String> {
    condition(host, "Reachable").map(|c| c.0)
}

/// The Stack's view of host `td`: its phase there and its message.
fn host_phase(stack: &Value, host: &str) -> Option<(String, String)> {
    stack["status"]["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host"] == host)
        .map(|h| (h["phase"].as_str().unwrap_or("").to_string(), h["message"].as_str().unwrap_or("").to_string()))
}

/// Waits until the Host and the Stack both say the host is unreachable, and checks what they say.
fn expect_unreachable(env: &StackEnv, ns: &str) -> Result<()> {
    let h = env.wait_host("td", "Host td Reachable=False", NOTICED, |h| reachable(h).as_deref() == Some("False"))?;
    let (_, reason, message) = condition(&h, "Reachable").unwrap();
    assert_eq!(reason, "Unreachable", "{message}");
    assert!(message.contains("retrying"), "{message}");
    let s = env.wait_stack(ns, "edge", "the Stack reporting its host unreachable", NOTICED, |s| {
        condition(s, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "HostUnreachable")
    })?;
    let (phase, message) = host_phase(&s, "td").expect("status of host td");
    assert_eq!(phase, "Unreachable", "{message}");
    assert!(message.contains("changes nothing on this host"), "{message}");
    assert_ne!(s["status"]["phase"], "Ready");
    Ok(())
}

/// Waits until the Host answers again and the Stack is Ready with no one's help.
fn expect_recovered(env: &StackEnv, ns: &str) -> Result<()> {
    env.wait_host("td", "Host td Reachable=True again", NOTICED, |h| reachable(h).as_deref() == Some("True"))?;
    env.wait_stack(ns, "edge", "the Stack Ready again", READY, is_ready)?;
    Ok(())
}

#[test]
fn a_daemon_cut_off_or_stopped_mid_run_changes_nothing_and_recovers_by_itself() -> Result<()> {
    // Declared before the server, so the server stops first: once the test daemon is gone its
    // address must not be called any more.
    let mut td = TestDaemon::start().context("starting a test daemon (needs root)")?;
    let env = StackEnv::start("resyncInterval: 600s\n")?;
    let ns = unique("ns");
    env.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: berth.dev/v1alpha1\nkind: \
         Host\nmetadata:\n  name: td\nspec:\n  endpoint: {}\n",
        td.endpoint()
    ))?;
    env.wait_host("td", "Host td reachable", NOTICED, |h| reachable(h).as_deref() == Some("True"))?;
    // `keep` restarts by Docker's policy (unless-stopped, the default); `manual` has restart
    // policy No, so after the daemon restarts only berth starts it again.
    env.apply(&format!(
        r#"apiVersion: berth.dev/v1alpha1
kind: Stack
metadata: {{name: edge, namespace: {ns}}}
spec:
  hosts: {{names: [td]}}
  networks: [{{name: back}}]
  volumes: [{{name: data}}]
  services:
  - name: keep
    image: {IMAGE}
    stopGracePeriodSeconds: 1
    command: ["sleep", "3600"]
    networks: [{{name: back}}]
    mounts: [{{mountPath: /data, volume: data}}]
  - name: manual
    image: {IMAGE}
    stopGracePeriodSeconds: 1
    restartPolicy: "No"
    command: ["sleep", "3600"]
    networks: [{{name: back}}]
"#
    ))?;
    env.wait_stack(&ns, "edge", "Ready on the test daemon", READY, is_ready)?;
    let names = [format!("{ns}.edge-keep-0"), format!("{ns}.edge-manual-0")];
    let ids: Vec<String> = names
        .iter()
        .map(|n| {
            let (id, running) = state_on(&td, n)?;
            anyhow::ensure!(running, "{n} runs on the test daemon");
            Ok(id)
        })
        .collect::<Result<_>>()?;

    // 1. The link is cut; the daemon and its containers keep running.
    td.cut()?;
    expect_unreachable(&env, &ns)?;
    td.restore()?;
    expect_recovered(&env, &ns)?;
    for (name, id) in names.iter().zip(&ids) {
        assert_eq!(state_on(&td, name)?, (id.clone(), true), "{name} is the same container, running");
    }

    // 2. The daemon stops (and stops its containers) and comes back.
    td.stop()?;
    expect_unreachable(&env, &ns)?;
    td.restart()?;
    expect_recovered(&env, &ns)?;
    for (name, id) in names.iter().zip(&ids) {
        let (now, running) = wait_until(&format!("{name} running again"), READY, || {
            let s = state_on(&td, name)?;
            Ok(s.1.then_some(s))
        })?;
        assert!(running);
        assert_eq!(&now, id, "{name} was started again, not recreated");
    }
    let s = env.stack(&ns, "edge")?;
    assert_eq!(s["status"]["lastDrift"]["reason"], "NotRunning", "{:#}", s["status"]);
    assert_eq!(s["status"]["lastDrift"]["corrected"], true);

    // No destructive action at any point.
    let events = env.kubectl(&["get", "events", "-n", &ns, "-o", "json"], None)?;
    let events: Value = serde_json::from_str(&events)?;
    let reasons: Vec<&str> =
        events["items"].as_array().into_iter().flatten().filter_map(|e| e["reason"].as_str()).collect();
    for destructive in ["Recreated", "Removed", "NetworkRemoved", "VolumeRemoved", "CleanedUp"] {
        assert!(!reasons.contains(&destructive), "a {destructive} event: {reasons:?}");
    }
    assert!(reasons.contains(&"HostUnreachable"), "{reasons:?}");
    let volumes = td.cli().args(["volume", "ls", "-q"]).output()?;
    assert!(String::from_utf8_lossy(&volumes.stdout).contains(&format!("{ns}.edge_data")));
    drop(env);
    Ok(())
}
