//! `berth orphans`: the orphans each Host's last scan found (berth objects whose owner is gone),
//! with the requested and effective action and the gate that blocks removal; and `berth orphans
//! prune --host H --confirm`, which sets the Host's confirmation annotation
//! (`berth.dev/confirm-orphan-prune`), waits for the Host controller's next scan to report what
//! became of it (`status.orphanScan.confirmation`) and prints the outcome.
//!
//! The confirmation waives only the StoreNotEmpty and BelowThreshold gates, for one scan; the
//! controller decides, this command only asks and reports. The rendering of a Host's orphan part
//! ([`render_host`]) is shared with `berth plan`.

use std::io::Write;
use std::time::Duration;

use berth_crds::host::OrphanScan;
use berth_crds::plan::{HostOrphans, PlanItem, PlanList};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::Value;

use super::client::{self, ConnectArgs, Session};
use super::follow::{self, Change, Follower};
use super::printer;
use super::resources;
use crate::apiserver::registry::ResourceInfo;
use crate::apiserver::table::human_duration;
use crate::controllers::host::orphans::CONFIRM_ANNOTATION;

/// Arguments of `berth orphans`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  berth orphans                                   # what every Host's last orphan scan found
  berth orphans --host edge-1                     # one Host
  berth orphans -o json                           # as the berth.dev/plan/v1 document (Host items)
  berth orphans prune --host edge-1 --confirm     # let the next scan remove them despite the
                                                  # StoreNotEmpty and BelowThreshold gates

An orphan is a container, network or volume with this berth instance's labels whose owner (Stack
or Lease) is no longer in the store. What happens to it is decided by the Host controller's gates
(orphans.action, orphans.threshold, orphans.minAge in the berth config); volumes are never removed."
)]
pub struct OrphansArgs {
    #[command(subcommand)]
    pub command: Option<OrphansCommand>,
    /// Only this Host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: DocumentFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Subcommands of `berth orphans`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum OrphansCommand {
    /// Confirm the removal of a Host's orphans despite the StoreNotEmpty and BelowThreshold gates.
    Prune(PruneArgs),
}

/// Arguments of `berth orphans prune`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth orphans prune --host local --confirm
  berth orphans prune --host edge-1 --confirm --timeout 5m

The confirmation is the annotation berth.dev/confirm-orphan-prune on the Host. The Host controller
uses it for its next scan that sees the store and the host completely: the StoreNotEmpty and
BelowThreshold gates are waived for that scan only; MinAge still applies and volumes are never
removed. With orphans.action: Report the confirmation is ignored.
Exit status: 0 when the confirmation was used, 1 when it was ignored, still held at the timeout,
or a removal failed; 2 without --confirm.")]
pub struct PruneArgs {
    /// The Host whose orphans to remove.
    #[arg(long, value_name = "HOST", required = true)]
    pub host: String,
    /// Confirm the removal (required: it deletes containers and networks).
    #[arg(long)]
    pub confirm: bool,
    /// How long to wait for the Host controller to report.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    berth_crds::duration::parse_duration(s)
}

/// `-o` of `plan` and `orphans`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DocumentFormat {
    /// Text for people.
    #[default]
    Text,
    /// The `berth.dev/plan/v1` document as JSON.
    Json,
    /// The same document as YAML.
    Yaml,
}

fn host_info() -> std::sync::Arc<ResourceInfo> {
    resources::registry().find_kind(berth_crds::GROUP, "Host").expect("the registry serves Hosts")
}

/// The orphan part of a Host object (JSON as served).
pub fn host_orphans(host: &Value) -> HostOrphans {
    HostOrphans {
        name: host.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
        orphan_scan: host.pointer("/status/orphanScan").and_then(|s| serde_json::from_value(s.clone()).ok()),
    }
}

/// Every Host's orphan part (or only `only`'s), by name.
pub async fn fetch_hosts(session: &Session, only: Option<&str>) -> anyhow::Result<Vec<HostOrphans>> {
    let api = resources::api(&session.client, &host_info(), None);
    let mut items = match only {
        Some(name) => vec![follow::to_value(api.get(name).await?)],
        None => follow::list(&api, &ListParams::default()).await?.0,
    };
    items.sort_by_key(|h| h.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string());
    Ok(items.iter().map(host_orphans).collect())
}

/// Seconds since an RFC 3339 time, when it parses.
fn seconds_since(time: &str, now: jiff::Timestamp) -> Option<i64> {
    time.parse::<jiff::Timestamp>().ok().map(|t| (now.as_second() - t.as_second()).max(0))
}

fn scan_time(scan: &OrphanScan) -> Option<String> {
    scan.time.as_ref().map(|t| t.0.to_string())
}

/// The orphan part of one Host in words: requested and effective action, the blocking gate and
/// why, each orphan with what happens to it, and the fate of a confirmation.
pub fn render_host(h: &HostOrphans, now: jiff::Timestamp) -> String {
    let title = format!("host.berth.dev/{} orphans", h.name);
    let Some(scan) = &h.orphan_scan else {
        return format!(
            "{title}: no scan reported yet; the Host controller scans once it reaches the daemon (see `berth \
             describe host/{}`)\n",
            h.name
        );
    };
    let since = scan_time(scan).and_then(|t| seconds_since(&t, now));
    let mut out = format!("{title}: requested {}, effective {}", scan.requested_action, scan.effective_action);
    if !scan.blocked_by.is_empty() {
        out.push_str(&format!(", blocked by {}", scan.blocked_by));
    }
    if let Some(s) = since {
        out.push_str(&format!(" (scan {} ago)", human_duration(s)));
    }
    if scan.orphans.is_empty() {
        out.push_str(": no orphans");
    }
    out.push('\n');
    for g in scan.gates.iter().filter(|g| !g.passed) {
        out.push_str(&format!("  gate {} blocks: {}\n", g.gate, g.message));
    }
    if !scan.orphans.is_empty() {
        let mut rows = vec![["OBJECT", "NAME", "OWNER", "AGE", "ACTION"].map(String::from).to_vec()];
        for o in &scan.orphans {
            let age = o.age_seconds + since.unwrap_or(0);
            rows.push(vec![o.object.clone(), o.name.clone(), o.owner.clone(), human_duration(age), o.action.clone()]);
        }
        for line in printer::render(&rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if !scan.confirmation.is_empty() {
        out.push_str(&format!("  {}\n", scan.confirmation));
    }
    out
}

/// Prints `items` in the chosen format.
pub fn print_document(items: Vec<PlanItem>, format: DocumentFormat, out: &mut impl Write) -> anyhow::Result<()> {
    let doc = PlanList::new(items);
    match format {
        // Straight from the types, so fields keep their documented order.
        DocumentFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?,
        DocumentFormat::Yaml => write!(out, "{}", serde_yaml_ng::to_string(&doc)?)?,
        DocumentFormat::Text => unreachable!("text is rendered by the command"),
    }
    Ok(())
}

/// Runs `berth orphans`.
pub async fn run(args: OrphansArgs) -> anyhow::Result<()> {
    if let Some(OrphansCommand::Prune(p)) = args.command {
        return prune(p).await;
    }
    let session = client::connect(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    let result = async {
        let hosts = fetch_hosts(&session, args.host.as_deref()).await?;
        if args.output != DocumentFormat::Text {
            return print_document(hosts.into_iter().map(PlanItem::Host).collect(), args.output, &mut out);
        }
        if hosts.is_empty() {
            eprintln!("No Hosts found.");
        }
        let now = jiff::Timestamp::now();
        for h in &hosts {
            write!(out, "{}", render_host(h, now))?;
        }
        Ok(())
    }
    .await;
    result.map_err(|e| session.explain(e))
}

/// What became of a confirmation, read from `status.orphanScan.confirmation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The controller has not reported on this confirmation yet.
    Pending,
    /// Used: the gates were waived for one scan.
    Used,
    /// Read and dropped without effect.
    Ignored,
    /// Kept for a later scan (the scan had no complete view).
    Held,
}

/// The outcome of the confirmation `value` in a Host's scan.
pub fn outcome(scan: Option<&OrphanScan>, value: &str) -> Outcome {
    let Some(text) = scan.map(|s| s.confirmation.as_str()) else { return Outcome::Pending };
    // The controller writes `confirmation "<value>" used|ignored|held …`.
    let Some(rest) = text.strip_prefix(&format!("confirmation {value:?} ")) else { return Outcome::Pending };
    if rest.starts_with("used") {
        Outcome::Used
    } else if rest.starts_with("ignored") {
        Outcome::Ignored
    } else if rest.starts_with("held") {
        Outcome::Held
    } else {
        Outcome::Pending
    }
}

async fn prune(args: PruneArgs) -> anyhow::Result<()> {
    if !args.confirm {
        return Err(super::usage(format!(
            "`berth orphans prune` removes containers and networks on host {} whose owner is gone, waiving the \
             StoreNotEmpty and BelowThreshold safety gates for one scan. Check them with `berth orphans --host {}`, \
             then add --confirm",
            args.host, args.host
        )));
    }
    let session = client::connect(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    let result = exec_prune(&session, &args, &mut out).await;
    result.map_err(|e| session.explain(e))
}

async fn exec_prune(session: &Session, args: &PruneArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let info = host_info();
    let api = resources::api(&session.client, &info, None);
    let host = &args.host;
    // A new value each time: the controller reports on exactly this confirmation.
    let value = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {CONFIRM_ANNOTATION: value}}});
    let patched = api.patch(host, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let rv = patched.metadata.resource_version.clone().unwrap_or_default();
    writeln!(
        out,
        "host.berth.dev/{host}: orphan removal confirmed ({CONFIRM_ANNOTATION}={value}); waiting for the next scan"
    )?;
    out.flush()?;

    let lp = ListParams::default().fields(&format!("metadata.name={host}"));
    let mut follower = Follower::new(api, &lp, rv);
    let mut last = follow::to_value(patched);
    let scan_of = |v: &Value| host_orphans(v).orphan_scan;
    let waited = tokio::time::timeout(args.timeout, async {
        loop {
            match outcome(scan_of(&last).as_ref(), &value) {
                Outcome::Used | Outcome::Ignored => return Ok::<(), anyhow::Error>(()),
                Outcome::Pending | Outcome::Held => {}
            }
            match follower.next().await? {
                Change::Added(v) | Change::Modified(v) => last = v,
                Change::Deleted(_) => anyhow::bail!("Host {host} was deleted while waiting for its orphan scan"),
                Change::Relisted(mut all) => match all.pop() {
                    Some(v) => last = v,
                    None => anyhow::bail!("Host {host} was deleted while waiting for its orphan scan"),
                },
            }
        }
    })
    .await;
    if let Ok(Err(e)) = waited {
        return Err(e);
    }
    let scan = scan_of(&last);
    let now = jiff::Timestamp::now();
    let secs = berth_crds::duration::format_duration(args.timeout);
    match outcome(scan.as_ref(), &value) {
        Outcome::Used => {
            write!(out, "{}", render_host(&host_orphans(&last), now))?;
            let scan = scan.unwrap_or_default();
            let failed: Vec<&str> =
                scan.orphans.iter().filter(|o| o.action.starts_with("RemoveFailed")).map(|o| o.name.as_str()).collect();
            writeln!(out, "removed {} orphans on host {host}", scan.removed)?;
            if !failed.is_empty() {
                anyhow::bail!(
                    "removing {} failed (see the ACTION column); the Host controller's events say more: `berth \
                     events --for host/{host}`",
                    failed.join(", ")
                );
            }
            Ok(())
        }
        Outcome::Ignored => {
            write!(out, "{}", render_host(&host_orphans(&last), now))?;
            anyhow::bail!(
                "the Host controller ignored the confirmation: {}",
                scan.map(|s| s.confirmation).unwrap_or_default()
            )
        }
        Outcome::Held => anyhow::bail!(
            "timed out after {secs}: the Host controller holds the confirmation for a later scan: {}. The annotation \
             stays on the Host; check `berth describe host/{host}`",
            scan.map(|s| s.confirmation).unwrap_or_default()
        ),
        Outcome::Pending => anyhow::bail!(
            "timed out after {secs}: the Host controller has not reported on the confirmation. Is `berth serve` \
             running with its controllers, and does it reach the host? The annotation stays on Host {host}; its \
             next scan uses it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use berth_crds::host::{GateResult, OrphanRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn scan(confirmation: &str) -> OrphanScan {
        OrphanScan {
            time: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
            requested_action: "Remove".into(),
            effective_action: "Report".into(),
            blocked_by: "BelowThreshold".into(),
            gates: vec![
                GateResult { gate: "CachesSynced".into(), passed: true, message: "complete".into() },
                GateResult {
                    gate: "BelowThreshold".into(),
                    passed: false,
                    message: "2 removable orphans exceed orphans.threshold 1".into(),
                },
            ],
            orphans: vec![OrphanRecord {
                object: "container".into(),
                name: "old-web-0".into(),
                id: "abc".into(),
                owner: "Stack/default/gone".into(),
                owner_uid: "u".into(),
                age_seconds: 60,
                action: "Kept: removal blocked by gate BelowThreshold".into(),
            }],
            removed: 0,
            confirmation: confirmation.into(),
        }
    }

    #[test]
    fn a_host_shows_actions_the_blocking_gate_and_each_orphan() {
        let now: jiff::Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let text = render_host(&HostOrphans { name: "local".into(), orphan_scan: Some(scan("")) }, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "host.berth.dev/local orphans: requested Remove, effective Report, blocked by BelowThreshold (scan 2m ago)"
        );
        assert_eq!(lines[1], "  gate BelowThreshold blocks: 2 removable orphans exceed orphans.threshold 1");
        assert!(lines[2].starts_with("  OBJECT") && lines[2].ends_with("ACTION"), "{text}");
        // The age counts from the scan to now: 60 s then, 3 minutes now.
        assert!(
            lines[3].contains("old-web-0") && lines[3].contains(" 3m ") && lines[3].contains("Stack/default/gone"),
            "{text}"
        );
        let none = render_host(&HostOrphans { name: "edge".into(), orphan_scan: None }, now);
        assert!(none.contains("no scan reported yet"), "{none}");
    }

    #[test]
    fn the_outcome_is_read_for_this_confirmation_only() {
        let v = "2026-01-01T00:00:00.5Z";
        assert_eq!(outcome(None, v), Outcome::Pending);
        assert_eq!(outcome(Some(&scan("")), v), Outcome::Pending);
        let used = format!("confirmation {v:?} used: gates StoreNotEmpty and BelowThreshold were waived for this scan");
        assert_eq!(outcome(Some(&scan(&used)), v), Outcome::Used);
        assert_eq!(outcome(Some(&scan(&used)), "2025-01-01T00:00:00Z"), Outcome::Pending, "an older confirmation");
        let ignored = format!("confirmation {v:?} ignored: orphans.action is Report");
        assert_eq!(outcome(Some(&scan(&ignored)), v), Outcome::Ignored);
        let held = format!("confirmation {v:?} held for a later scan: gate ListingComplete failed");
        assert_eq!(outcome(Some(&scan(&held)), v), Outcome::Held);
    }

    #[test]
    fn the_controllers_wording_is_what_outcome_reads() {
        use crate::controllers::host::orphans::Confirmation;
        let v = "2026-01-01T00:00:00.5Z";
        let s = |c: Confirmation| scan(&c.describe());
        assert_eq!(outcome(Some(&s(Confirmation::Used(v.into()))), v), Outcome::Used);
        assert_eq!(outcome(Some(&s(Confirmation::Ignored(v.into(), "why".into()))), v), Outcome::Ignored);
        assert_eq!(outcome(Some(&s(Confirmation::Held(v.into(), "why".into()))), v), Outcome::Held);
    }
}
