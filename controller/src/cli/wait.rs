//! `berth wait`: block until objects meet a condition (`--for=condition=Ready`) or are deleted
//! (`--for=delete`), following their changes with a watch. On timeout it exits 1 and says what
//! the condition said last, which is usually the reason.

use std::io::Write;
use std::time::Duration;

use kube::api::ListParams;
use serde_json::Value;
use tokio::time::Instant;

use super::client::{self, ConnectArgs, Session};
use super::follow::{self, Change, Follower};
use super::progress::{self, Progress};
use super::resources;
use crate::apiserver::registry::ResourceInfo;

/// Arguments of `berth wait`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth wait --for=condition=Ready stack/shop --timeout 2m
  berth wait --for=condition=Ready stack web api          # several Stacks
  berth wait --for=condition=Drifted=False stack/shop
  berth wait --for=delete lease/pr-1234 -n previews --timeout 5m

Exit status: 0 when every object met the condition, 1 on timeout or error (the last state of the
condition is printed), 2 on usage errors.")]
pub struct WaitArgs {
    /// KIND/NAME…, or KIND NAME….
    #[arg(required = true, value_name = "KIND/NAME")]
    pub targets: Vec<String>,
    /// What to wait for: `condition=TYPE` (status True), `condition=TYPE=STATUS`, or `delete`.
    #[arg(long = "for", value_name = "CONDITION", value_parser = parse_for)]
    pub for_: WaitFor,
    /// How long to wait in total (e.g. 30s, 2m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A status condition with a status (`True` unless given).
    Condition {
        /// Condition type, matched case-insensitively as kubectl does.
        type_: String,
        /// Wanted status.
        status: String,
    },
    /// The object is gone.
    Delete,
}

/// Parses `--for`.
pub fn parse_for(s: &str) -> Result<WaitFor, String> {
    if s.eq_ignore_ascii_case("delete") {
        return Ok(WaitFor::Delete);
    }
    if let Some(rest) = s.strip_prefix("condition=") {
        let (type_, status) = match rest.split_once('=') {
            Some((t, st)) => (t, st),
            None => (rest, "True"),
        };
        if type_.is_empty() || status.is_empty() {
            return Err(format!("{s:?}: write condition=TYPE or condition=TYPE=STATUS, e.g. condition=Ready"));
        }
        return Ok(WaitFor::Condition { type_: type_.to_string(), status: status.to_string() });
    }
    Err(format!("{s:?} is not supported: use --for=condition=TYPE[=STATUS] or --for=delete"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    berth_crds::duration::parse_duration(s)
}

fn generation(obj: &Value) -> Option<i64> {
    obj.pointer("/metadata/generation").and_then(Value::as_i64)
}

/// Whether the object's condition has the wanted status *for its current generation*: a status
/// the controller wrote for an older spec says nothing about the new one.
pub fn condition_met(obj: &Value, type_: &str, status: &str) -> bool {
    let Some(conds) = obj.pointer("/status/conditions").and_then(Value::as_array) else { return false };
    let generation = generation(obj);
    let status_generation = obj.pointer("/status/observedGeneration").and_then(Value::as_i64);
    if let (Some(g), Some(s)) = (generation, status_generation)
        && s < g
    {
        return false;
    }
    conds.iter().any(|c| {
        let t = c.get("type").and_then(Value::as_str).unwrap_or("");
        let st = c.get("status").and_then(Value::as_str).unwrap_or("");
        let fresh = match (generation, c.get("observedGeneration").and_then(Value::as_i64)) {
            (Some(g), Some(o)) => o >= g,
            _ => true,
        };
        t.eq_ignore_ascii_case(type_) && st.eq_ignore_ascii_case(status) && fresh
    })
}

/// What the condition says now, for the timeout message.
pub fn condition_state(obj: &Value, type_: &str) -> String {
    let found = obj.pointer("/status/conditions").and_then(Value::as_array).and_then(|cs| {
        cs.iter().find(|c| c.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case(type_)))
    });
    match found {
        None => {
            let phase = obj.pointer("/status/phase").and_then(Value::as_str);
            match phase {
                Some(p) => format!("no {type_} condition yet (phase {p})"),
                None => format!("no {type_} condition yet: no controller has reported status"),
            }
        }
        Some(c) => {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
            let mut text = format!("condition {} is {}", s("type"), s("status"));
            if !s("reason").is_empty() {
                text.push_str(&format!(" (reason {})", s("reason")));
            }
            if let (Some(g), Some(o)) = (generation(obj), c.get("observedGeneration").and_then(Value::as_i64))
                && o < g
            {
                text.push_str(&format!(" for generation {o}, not yet for the current generation {g}"));
            }
            if !s("message").is_empty() {
                text.push_str(&format!(": {}", s("message")));
            }
            text
        }
    }
}

/// Runs `berth wait`.
pub async fn run(args: WaitArgs) -> anyhow::Result<()> {
    let targets = resources::parse_targets(&args.targets)?;
    if targets.iter().any(|t| t.name.is_none()) {
        return Err(super::usage("name the objects to wait for: KIND/NAME or KIND NAME…"));
    }
    let session = client::connect(&args.connect).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let deadline = Instant::now() + args.timeout;
    let mut out = std::io::stdout().lock();
    let mut progress = Progress::stdout();
    let result = async {
        for t in &targets {
            let name = t.name.as_deref().unwrap_or_default();
            wait_one(&session, &t.info, &namespace, name, &args.for_, deadline, args.timeout, &mut progress, &mut out)
                .await?;
        }
        Ok(())
    }
    .await;
    result.map_err(|e| session.explain(e))
}

/// Waits for one object; prints `… condition met` or `… deleted`.
#[allow(clippy::too_many_arguments)]
pub async fn wait_one(
    session: &Session,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    for_: &WaitFor,
    deadline: Instant,
    timeout: Duration,
    progress: &mut Progress,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let display = resources::display_name(info, name);
    let api = resources::api(&session.client, info, Some(namespace));
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    let (items, rv) = follow::list(&api, &lp).await?;
    let mut last = items.into_iter().next();
    if last.is_none() {
        if *for_ == WaitFor::Delete {
            writeln!(out, "{display} deleted")?;
            return Ok(());
        }
        return Err(api
            .get(name)
            .await
            .err()
            .map(anyhow::Error::new)
            .unwrap_or_else(|| anyhow::anyhow!("{display} appeared and went while waiting; run the command again")));
    }
    let met = |obj: &Option<Value>| match (for_, obj) {
        (WaitFor::Delete, None) => true,
        (WaitFor::Condition { type_, status }, Some(o)) => condition_met(o, type_, status),
        _ => false,
    };
    let mut follower = Follower::new(api, &lp, rv);
    let waited = tokio::time::timeout_at(deadline, async {
        loop {
            if let (WaitFor::Condition { .. }, Some(o)) = (for_, &last) {
                progress.update(&display, &progress::summary(o), out)?;
            }
            if met(&last) {
                return Ok::<(), anyhow::Error>(());
            }
            match follower.next().await? {
                Change::Added(v) | Change::Modified(v) => last = Some(v),
                Change::Deleted(_) => last = None,
                Change::Relisted(mut all) => last = all.pop(),
            }
            if last.is_none()
                && let WaitFor::Condition { .. } = for_
            {
                anyhow::bail!("{display} was deleted while waiting for its condition");
            }
        }
    })
    .await;
    progress.finish(out)?;
    match waited {
        Ok(Ok(())) => {
            match for_ {
                WaitFor::Delete => writeln!(out, "{display} deleted")?,
                WaitFor::Condition { .. } => writeln!(out, "{display} condition met")?,
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let secs = berth_crds::duration::format_duration(timeout);
            Err(match (for_, &last) {
                (WaitFor::Condition { type_, status }, Some(o)) => anyhow::anyhow!(
                    "timed out after {secs} waiting for {display} to have condition {type_}={status}: {}",
                    condition_state(o, type_)
                ),
                _ => anyhow::anyhow!(
                    "timed out after {secs} waiting for {display} to be deleted; finalizers {} still hold it",
                    last.as_ref()
                        .and_then(|o| o.pointer("/metadata/finalizers"))
                        .map(|f| f.to_string())
                        .unwrap_or_else(|| "[]".into())
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn for_values() {
        assert_eq!(
            parse_for("condition=Ready"),
            Ok(WaitFor::Condition { type_: "Ready".into(), status: "True".into() })
        );
        assert_eq!(
            parse_for("condition=Drifted=False"),
            Ok(WaitFor::Condition { type_: "Drifted".into(), status: "False".into() })
        );
        assert_eq!(parse_for("delete"), Ok(WaitFor::Delete));
        assert!(parse_for("condition=").is_err());
        assert!(parse_for("ready").unwrap_err().contains("--for=condition=TYPE"));
    }

    fn obj(generation: i64, cond_gen: i64, status: &str) -> Value {
        json!({"metadata": {"name": "web", "generation": generation}, "status": {"conditions": [
            {"type": "Ready", "status": status, "reason": "Verified", "message": "2/2 containers running", "observedGeneration": cond_gen}
        ]}})
    }

    #[test]
    fn a_condition_counts_only_for_the_current_generation() {
        assert!(condition_met(&obj(2, 2, "True"), "Ready", "True"));
        assert!(condition_met(&obj(2, 2, "True"), "ready", "true"));
        assert!(!condition_met(&obj(2, 1, "True"), "Ready", "True"));
        assert!(!condition_met(&obj(2, 2, "False"), "Ready", "True"));
        assert!(condition_met(&obj(2, 2, "False"), "Ready", "False"));
        assert!(!condition_met(&json!({"metadata": {}}), "Ready", "True"));
        let mut stale = obj(3, 3, "True");
        stale["status"]["observedGeneration"] = json!(2);
        assert!(!condition_met(&stale, "Ready", "True"));
    }

    #[test]
    fn timeout_messages_carry_the_last_condition() {
        assert_eq!(
            condition_state(&obj(1, 1, "False"), "Ready"),
            "condition Ready is False (reason Verified): 2/2 containers running"
        );
        assert!(condition_state(&obj(2, 1, "True"), "Ready").contains("not yet for the current generation 2"));
        assert!(condition_state(&json!({}), "Ready").contains("no controller has reported status"));
    }
}
