//! End-to-end tests of orphan collection: the real `berth serve` (Host and Stack controllers) on
//! the real local Docker daemon, driven with the real `kubectl`. Orphans are containers started
//! by hand with berth's labels naming this test's instance and an owner that does not exist;
//! they are reported in Host status and removed only when every gate passes. Containers of
//! another instance, or without labels, are never touched; volumes are never removed; a store
//! that looks wiped blocks every removal until an operator confirms.

use std::time::Duration;

use anyhow::Result;
use berth_e2e::stack_env::{IMAGE, StackEnv, condition, docker, inspect, is_ready, unique, wait_until};
use serde_json::Value;

/// Generous deadlines: the machine is small and shared.
const READY: Duration = Duration::from_secs(180);
const SCAN: Duration = Duration::from_secs(90);

/// The operator's confirmation annotation (what `berth orphans prune --host H --confirm` sets).
const CONFIRM: &str = "berth.dev/confirm-orphan-prune";

/// `--label` arguments of berth's ownership labels.
fn berth_labels(instance: &str, namespace: &str, owner: &str, uid: &str) -> Vec<String> {
    [
        ("berth.dev/managed-by", "berth"),
        ("berth.dev/instance", instance),
        ("berth.dev/owner-kind", "Stack"),
        ("berth.dev/owner-namespace", namespace),
        ("berth.dev/owner-name", owner),
        ("berth.dev/owner-uid", uid),
    ]
    .iter()
    .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
    .collect()
}

/// `docker run -d --name NAME LABELS… IMAGE sleep 3600`, removed when the test ends.
fn run_by_hand(env: &StackEnv, name: &str, labels: &[String]) -> Result<String> {
    let mut args: Vec<&str> = labels.iter().map(String::as_str).collect();
    args.extend(["--stop-timeout", "1", IMAGE, "sleep", "3600"]);
    env.run_foreign(name, &args)
}

fn uid() -> String {
    let (a, b) = (rand::random::<u64>(), rand::random::<u64>());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn stack_yaml(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  networks: \
         [{{name: back}}]\n  volumes: [{{name: data}}]\n  services:\n  - name: web\n    image: {IMAGE}\n    \
         stopGracePeriodSeconds: 1\n    command: [\"sleep\", \"3600\"]\n    networks: [{{name: back}}]\n  - name: db\n    \
         image: {IMAGE}\n    stopGracePeriodSeconds: 1\n    command: [\"sleep\", \"3600\"]\n    mounts: [{{mountPath: \
         /data, volume: data}}]\n"
    )
}

/// The orphan record of the object named `name` in the Host's last scan.
fn record<'a>(host: &'a Value, name: &str) -> Option<&'a Value> {
    host["status"]["orphanScan"]["orphans"].as_array()?.iter().find(|o| o["name"] == name)
}

fn action(host: &Value, name: &str) -> String {
    record(host, name).and_then(|o| o["action"].as_str()).unwrap_or("").to_string()
}

/// Whether the gate `gate` of the Host's last scan passed, and its message.
fn gate(host: &Value, gate: &str) -> Option<(bool, String)> {
    let g = host["status"]["orphanScan"]["gates"].as_array()?.iter().find(|g| g["gate"] == gate)?;
    Some((g["passed"] == true, g["message"].as_str().unwrap_or("").to_string()))
}

fn container_id(name: &str) -> Result<Option<String>> {
    Ok(inspect(name)?.map(|c| c["Id"].as_str().unwrap_or("").to_string()))
}

fn running_id(name: &str) -> Result<String> {
    let c = inspect(name)?.ok_or_else(|| anyhow::anyhow!("container {name} is gone"))?;
    anyhow::ensure!(c["State"]["Running"] == true, "container {name} is not running");
    Ok(c["Id"].as_str().unwrap_or("").to_string())
}

/// The Events recorded for Host `host` with reason `reason`, as their notes.
fn host_events(env: &StackEnv, host: &str, reason: &str) -> Result<Vec<String>> {
    Ok(env
        .events()?
        .iter()
        .filter(|e| e["regarding"]["kind"] == "Host" && e["regarding"]["name"] == host && e["reason"] == reason)
        .map(|e| e["note"].as_str().unwrap_or("").to_string())
        .collect())
}

/// Waits for an Event of Host `local` with reason `reason` whose note contains `text`.
fn wait_for_event(env: &StackEnv, reason: &str, text: &str) -> Result<()> {
    let mut seen = Vec::new();
    wait_until(&format!("a {reason} Event about {text:?}"), SCAN, || {
        seen = host_events(env, "local", reason)?;
        Ok(seen.iter().any(|n| n.contains(text)).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}; {reason} Events seen: {seen:?}"))
}

/// How many Host reconciles have completed.
fn host_reconciles(env: &StackEnv) -> Result<f64> {
    env.metric("berth_reconciles_total{kind=\"Host\"}")
}

/// Waits until `scans` more Host reconciles (each one an orphan scan) have completed.
fn wait_for_scans(env: &StackEnv, scans: f64) -> Result<()> {
    let start = host_reconciles(env)?;
    wait_until(&format!("{scans} more orphan scans"), SCAN, || {
        Ok((host_reconciles(env)? >= start + scans).then_some(()))
    })
}

#[test]
fn orphans_are_reported_and_removed_only_when_every_gate_passes() -> Result<()> {
    // Scans every 2 s; an orphan must be 8 s old; at most 2 removable orphans per host.
    let env = StackEnv::start("resyncInterval: 2s\norphans: {action: Remove, threshold: 2, minAge: 8s}\n")?;
    let ns = unique("ns");
    env.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))?;
    // A live Stack: the store is not empty, and its own containers are never orphans.
    env.apply(&stack_yaml(&ns, "live"))?;
    env.wait_stack(&ns, "live", "Ready", READY, is_ready)?;
    let live = [format!("{ns}.live-web-0"), format!("{ns}.live-db-0")];
    let live_ids = live.iter().map(|n| running_id(n)).collect::<Result<Vec<_>>>()?;

    // Orphans of a Stack `gone` that the store never knew: a container, a network, a volume.
    let gone = berth_labels(&env.instance, &ns, "gone", &uid());
    let orphan = format!("{ns}.gone-web-0");
    let orphan_net = format!("{ns}.gone_default");
    let orphan_vol = format!("{ns}.gone_data");
    let mut net_args = vec!["network", "create"];
    net_args.extend(gone.iter().map(String::as_str));
    net_args.push(&orphan_net);
    docker(&net_args)?;
    let mut vol_args = vec!["volume", "create"];
    vol_args.extend(gone.iter().map(String::as_str));
    vol_args.push(&orphan_vol);
    docker(&vol_args)?;
    let mut orphan_labels = gone.clone();
    orphan_labels.extend(["--network".into(), orphan_net.clone(), "-v".into(), format!("{orphan_vol}:/data")]);
    run_by_hand(&env, &orphan, &orphan_labels)?;

    // Never touched: the same labels under another instance, no labels at all, and berth's
    // instance labels without a complete owner (berth cannot attribute it).
    let other_instance = berth_labels(&unique("e2e-other"), &ns, "gone", &uid());
    let foreign = format!("{ns}.other-web-0");
    let plain = format!("{ns}.plain");
    let unattributed = format!("{ns}.unattributed");
    let foreign_id = run_by_hand(&env, &foreign, &other_instance)?;
    let plain_id = run_by_hand(&env, &plain, &[])?;
    let partial = vec![
        "--label".into(),
        "berth.dev/managed-by=berth".into(),
        "--label".into(),
        format!("berth.dev/instance={}", env.instance),
    ];
    let unattributed_id = run_by_hand(&env, &unattributed, &partial)?;

    // First the minimum age holds the orphan back, and the scan says so.
    let h = env.wait_host("local", "the orphan reported as too young", SCAN, |h| {
        action(h, &orphan).starts_with("Waiting: younger than minAge 8s")
    })?;
    let (passed, message) = gate(&h, "MinAge").expect("gate MinAge");
    assert!(!passed && message.contains("younger than orphans.minAge 8s"), "{message}");
    for g in ["CachesSynced", "ListingComplete", "StoreNotEmpty", "BelowThreshold"] {
        assert!(gate(&h, g).is_some_and(|(passed, _)| passed), "gate {g}: {:#}", h["status"]["orphanScan"]);
    }
    let rec = record(&h, &orphan).unwrap();
    assert_eq!(rec["owner"], format!("Stack/{ns}/gone"));
    assert_eq!(rec["object"], "container");
    assert!(container_id(&orphan)?.is_some(), "nothing removed while the orphan is young");
    for name in [&foreign, &plain] {
        assert!(record(&h, name).is_none(), "{name} is not berth's (this instance's) and is not reported");
    }
    for name in &live {
        assert!(record(&h, name).is_none(), "{name} belongs to a live Stack");
    }

    // Once old enough, every gate passes: the container and the network are removed.
    wait_until("the orphaned container removed", SCAN, || Ok(container_id(&orphan)?.is_none().then_some(())))
        .map_err(|e| anyhow::anyhow!("{e}\nserver log:\n{}", env.log_tail()))?;
    wait_until("the orphaned network removed", SCAN, || {
        Ok(docker(&["network", "inspect", &orphan_net]).is_err().then_some(()))
    })?;
    wait_for_event(&env, "OrphanRemoved", &orphan)?;
    // Volumes are reported, never removed.
    let h = env.wait_host("local", "the orphaned volume reported", SCAN, |h| {
        record(h, &orphan).is_none() && action(h, &orphan_vol).starts_with("Kept: volumes are never removed")
    })?;
    assert!(docker(&["volume", "inspect", &orphan_vol]).is_ok(), "the orphaned volume is kept");
    assert!(
        action(&h, &unattributed).starts_with("Kept: berth's ownership labels are incomplete"),
        "{:#}",
        h["status"]
    );
    let blocked = condition(&h, "OrphansBlocked").expect("condition OrphansBlocked");
    assert_eq!(blocked.0, "False", "{blocked:?}");

    // More removable orphans than the threshold: nothing is removed, even once old enough.
    let many_owner = berth_labels(&env.instance, &ns, "many", &uid());
    let many: Vec<String> = (0..3).map(|i| format!("{ns}.many-web-{i}")).collect();
    for name in &many {
        run_by_hand(&env, name, &many_owner)?;
    }
    let h = env.wait_host("local", "removal blocked by the threshold", SCAN, |h| {
        condition(h, "OrphansBlocked").is_some_and(|c| c.0 == "True" && c.1 == "ThresholdExceeded")
    })?;
    assert_eq!(h["status"]["orphanScan"]["blockedBy"], "BelowThreshold");
    let (_, message) = gate(&h, "BelowThreshold").unwrap();
    assert!(message.contains("3 removable orphans exceed orphans.threshold 2"), "{message}");
    let created = inspect(&many[0])?.unwrap()["Created"].as_str().unwrap_or("").parse::<jiff::Timestamp>()?;
    wait_until("the blocked orphans older than minAge", SCAN, || {
        let age = jiff::Timestamp::now().duration_since(created);
        Ok((age > jiff::SignedDuration::from_secs(9)).then_some(()))
    })?;
    wait_for_scans(&env, 2.0)?;
    for name in &many {
        running_id(name)?;
        assert!(action(&env.host("local")?, name).contains("blocked by gate BelowThreshold"));
    }
    wait_for_event(&env, "OrphanRemovalBlocked", "3 removable orphans exceed")?;

    // Back at the threshold (one removed by hand), the others go.
    docker(&["rm", "-f", &many[2]])?;
    for name in &many[..2] {
        wait_until(&format!("{name} removed"), SCAN, || Ok(container_id(name)?.is_none().then_some(())))?;
    }

    // Nothing berth does not own, nothing of a live owner, and no volume was touched.
    assert_eq!(running_id(&foreign)?, foreign_id, "another instance's container is never touched");
    assert_eq!(running_id(&plain)?, plain_id, "an unlabelled container is never touched");
    assert_eq!(running_id(&unattributed)?, unattributed_id, "an unattributable container is kept");
    for (name, id) in live.iter().zip(&live_ids) {
        assert_eq!(&running_id(name)?, id, "{name} of the live Stack is untouched");
    }
    assert!(docker(&["volume", "inspect", &orphan_vol]).is_ok());
    assert!(docker(&["volume", "inspect", &format!("{ns}.live_data")]).is_ok());
    Ok(())
}

#[test]
fn with_the_store_wiped_nothing_is_removed_until_an_operator_confirms() -> Result<()> {
    let config = "resyncInterval: 2s\norphans: {action: Remove, threshold: 5, minAge: 1s}\n";
    let mut env = StackEnv::start(config)?;
    let ns = unique("ns");
    env.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))?;
    env.apply(&stack_yaml(&ns, "shop"))?;
    env.wait_stack(&ns, "shop", "Ready", READY, is_ready)?;
    let names = [format!("{ns}.shop-web-0"), format!("{ns}.shop-db-0")];
    let ids = names.iter().map(|n| running_id(n)).collect::<Result<Vec<_>>>()?;
    let networks = [format!("{ns}.shop_back"), format!("{ns}.shop_default")];
    let volume = format!("{ns}.shop_data");
    for n in &networks {
        docker(&["network", "inspect", n])?;
    }

    // The same installation comes back on an empty data dir: its containers look orphaned.
    env.restart("data-wiped", config)?;
    let h = env.wait_host("local", "removal blocked: possible store loss", SCAN, |h| {
        condition(h, "OrphansBlocked").is_some_and(|c| c.0 == "True" && c.1 == "PossibleStoreLoss")
    })?;
    let scan = &h["status"]["orphanScan"];
    assert_eq!(scan["blockedBy"], "StoreNotEmpty", "{scan:#}");
    assert_eq!(scan["requestedAction"], "Remove");
    assert_eq!(scan["removed"].as_i64().unwrap_or(0), 0, "{scan:#}");
    let (passed, message) = gate(&h, "StoreNotEmpty").unwrap();
    assert!(!passed && message.contains("possible store loss"), "{message}");
    assert!(message.contains("berth orphans prune --host local --confirm"), "{message}");
    let (_, _, cond_message) = condition(&h, "OrphansBlocked").unwrap();
    assert!(!cond_message.is_empty());
    for name in &names {
        assert!(action(&h, name).contains("blocked by gate StoreNotEmpty"), "{name}: {scan:#}");
    }

    // Several scans later, still nothing removed.
    wait_for_scans(&env, 3.0)?;
    for (name, id) in names.iter().zip(&ids) {
        assert_eq!(&running_id(name)?, id, "{name} is untouched while the store looks lost");
    }
    for n in &networks {
        docker(&["network", "inspect", n])?;
    }
    wait_for_event(&env, "OrphanRemovalBlocked", "possible store loss")?;

    // The operator confirms (as `berth orphans prune --host local --confirm` does).
    env.kubectl(&["annotate", "host", "local", &format!("{CONFIRM}=2030-01-01T00:00:00Z")], None)?;
    for name in &names {
        wait_until(&format!("{name} removed after the confirmation"), SCAN, || {
            Ok(container_id(name)?.is_none().then_some(()))
        })
        .map_err(|e| anyhow::anyhow!("{e}\nserver log:\n{}", env.log_tail()))?;
    }
    for n in &networks {
        wait_until(&format!("network {n} removed"), SCAN, || {
            Ok(docker(&["network", "inspect", n]).is_err().then_some(()))
        })?;
    }
    assert!(docker(&["volume", "inspect", &volume]).is_ok(), "volumes are never removed");
    let h = env.host("local")?;
    assert!(
        h["metadata"]["annotations"].get(CONFIRM).is_none(),
        "the confirmation is spent: {:#}",
        h["metadata"]["annotations"]
    );
    wait_for_event(&env, "OrphanPruneConfirmed", "2030-01-01T00:00:00Z")?;
    for name in &names {
        wait_for_event(&env, "OrphanRemoved", name)?;
    }
    Ok(())
}
