//! `berth plan`: what the controllers would do now, without doing it. The plan of each Stack
//! and Lease comes from the server's `plan` subresource (the controllers' own planners with the
//! server's hash key and Docker connections; the CLI has neither), and the orphan part of each
//! Host from its last orphan scan (`status.orphanScan`). Printed as text, or as the stable
//! `berth.dev/plan/v1` document (`-o json|yaml`, see docs/plan-json.md).

use std::io::Write;

use berth_crds::plan::{HostPlan, PlanItem, PlanList, PlannedAction, WorkloadPlan};
use kube::api::ListParams;
use serde_json::Value;

use super::client::{self, ConnectArgs, Session};
use super::follow;
use super::orphans::{self, DocumentFormat};
use super::resources;
use crate::apiserver::registry::ResourceInfo;

/// Arguments of `berth plan`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth plan                          # every Stack and Lease of the namespace, every Host's orphans
  berth plan stack/shop               # one Stack
  berth plan lease/pr-1234 -n previews # one Lease: where it goes, or what its controller does next
  berth plan -A -o json               # everything, as the berth.dev/plan/v1 document
  berth plan host/edge-1              # the orphan part of one Host

Nothing is executed. Each action shows the drift tier that calls for it (0 spec, 1 desired
state, 2 runtime configuration, 3 runtime state) and its reason; a Lease's plan also says why it
waits (e.g. InsufficientCapacity, per host) and what happens at its expiry; a Host shows the
orphan action requested and the one in effect, and the gate that blocks removal.")]
pub struct PlanArgs {
    /// KIND/NAME… (stack, lease or host), or KIND NAME…; nothing means every Stack, Lease and Host.
    #[arg(value_name = "KIND/NAME")]
    pub targets: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Stacks and Leases of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: DocumentFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Planned {
    /// One Stack or Lease (`kind`).
    One { kind: &'static str, namespace: String, name: String },
    /// Every Stack or Lease of a namespace, or of all (`None`).
    All { kind: &'static str, scope: Option<String> },
    /// One Host's orphans, or every Host's.
    Hosts(Option<String>),
}

/// The kinds with a `plan` subresource.
const WORKLOADS: [&str; 2] = ["Stack", "Lease"];

fn planned_from(args: &PlanArgs, namespace: &str) -> anyhow::Result<Vec<Planned>> {
    let scope = (!args.all_namespaces).then(|| namespace.to_string());
    if args.targets.is_empty() {
        let mut all: Vec<Planned> = WORKLOADS.iter().map(|kind| Planned::All { kind, scope: scope.clone() }).collect();
        all.push(Planned::Hosts(None));
        return Ok(all);
    }
    let mut out = Vec::new();
    for t in resources::parse_targets(&args.targets)? {
        let workload = WORKLOADS.iter().find(|k| t.info.group == berth_crds::GROUP && **k == t.info.kind);
        match (workload, t.info.kind.as_str(), t.name) {
            (Some(kind), _, Some(name)) => out.push(Planned::One { kind, namespace: namespace.to_string(), name }),
            (Some(kind), _, None) => out.push(Planned::All { kind, scope: scope.clone() }),
            (None, "Host", name) if t.info.group == berth_crds::GROUP => out.push(Planned::Hosts(name)),
            (None, kind, _) => {
                return Err(super::usage(format!(
                    "berth plan shows Stacks, Leases and Hosts, not {kind}: write stack/NAME, lease/NAME or host/NAME"
                )));
            }
        }
    }
    Ok(out)
}

fn info(kind: &str) -> std::sync::Arc<ResourceInfo> {
    resources::registry().find_kind(berth_crds::GROUP, kind).expect("the registry serves Stacks and Leases")
}

/// The path of an object's plan subresource (`plural`: `stacks`, `leases`).
pub fn plan_path(plural: &str, namespace: &str, name: &str) -> String {
    format!("/apis/{}/namespaces/{namespace}/{plural}/{name}/plan", berth_crds::API_VERSION)
}

/// Whether the server lists the `stacks/plan` subresource (a berth server running controllers).
async fn plans_served(session: &Session) -> anyhow::Result<bool> {
    let list = session.client.list_api_group_resources(berth_crds::API_VERSION).await?;
    Ok(list.resources.iter().any(|r| r.name == "stacks/plan"))
}

/// A 404 from a server that computes no plans at all (no controllers, or not a berth server):
/// stop at once rather than report every Stack.
async fn cannot_plan_here(session: &Session, err: &kube::Error) -> anyhow::Result<Option<anyhow::Error>> {
    let kube::Error::Api(status) = err else { return Ok(None) };
    if status.code != 404 || plans_served(session).await? {
        return Ok(None);
    }
    Ok(Some(anyhow::anyhow!(
        "{} (server {}): `berth plan` needs a berth API server (`berth serve`) running its controllers",
        status.message,
        session.server
    )))
}

fn item(kind: &str, plan: WorkloadPlan) -> PlanItem {
    if kind == "Lease" { PlanItem::Lease(plan) } else { PlanItem::Stack(plan) }
}

/// The plan item of one Stack or Lease; a failure to plan that object is an item with `error`.
async fn plan_one(session: &Session, kind: &str, namespace: &str, name: &str) -> anyhow::Result<PlanItem> {
    let failed = |message: String| {
        item(
            kind,
            WorkloadPlan { namespace: namespace.into(), name: name.into(), error: Some(message), ..Default::default() },
        )
    };
    let request = http::Request::get(plan_path(&info(kind).plural, namespace, name)).body(Vec::new())?;
    match session.client.request::<PlanList>(request).await {
        Ok(doc) => Ok(doc
            .items
            .into_iter()
            .find(|i| matches!((i, kind), (PlanItem::Stack(_), "Stack") | (PlanItem::Lease(_), "Lease")))
            .unwrap_or_else(|| failed(format!("the server's plan holds no {kind} item")))),
        Err(e) => {
            if let Some(fatal) = cannot_plan_here(session, &e).await? {
                return Err(fatal);
            }
            let message = match &e {
                kube::Error::Api(s) if s.code == 404 && s.message.starts_with("the server could not find") => format!(
                    "the server does not compute plans of {kind} objects (the `plan` subresource of {} is unknown \
                     there): upgrade the berth server",
                    info(kind).plural
                ),
                kube::Error::Api(s) => s.message.clone(),
                other => other.to_string(),
            };
            Ok(failed(message))
        }
    }
}

async fn names(session: &Session, kind: &str, namespace: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    let api = resources::api(&session.client, &info(kind), namespace);
    let (items, _) = follow::list(&api, &ListParams::default()).await?;
    let mut names: Vec<(String, String)> = items
        .iter()
        .map(|o| {
            let s = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
            (s("/metadata/namespace"), s("/metadata/name"))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Collects the plan items of every target, in order.
async fn collect(session: &Session, planned: &[Planned]) -> anyhow::Result<Vec<PlanItem>> {
    let mut items = Vec::new();
    for p in planned {
        match p {
            Planned::One { kind, namespace, name } => items.push(plan_one(session, kind, namespace, name).await?),
            Planned::All { kind, scope } => {
                for (ns, name) in names(session, kind, scope.as_deref()).await? {
                    items.push(plan_one(session, kind, &ns, &name).await?);
                }
            }
            Planned::Hosts(only) => {
                items.extend(orphans::fetch_hosts(session, only.as_deref()).await?.into_iter().map(PlanItem::Host));
            }
        }
    }
    Ok(items)
}

/// Runs `berth plan`.
pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let session = client::connect(&args.connect).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let planned = planned_from(&args, &namespace)?;
    let mut out = std::io::stdout().lock();
    let result = async {
        let items = collect(&session, &planned).await?;
        let failed: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                PlanItem::Stack(p) | PlanItem::Lease(p) if p.error.is_some() => {
                    Some(format!("{}/{}", p.namespace, p.name))
                }
                _ => None,
            })
            .collect();
        match args.output {
            DocumentFormat::Text => {
                if items.is_empty() {
                    eprintln!(
                        "Nothing to plan: no Stack or Lease{}.",
                        if args.all_namespaces { "" } else { " in this namespace" }
                    );
                }
                write!(out, "{}", render_text(&items, jiff::Timestamp::now()))?;
            }
            format => orphans::print_document(items, format, &mut out)?,
        }
        out.flush()?;
        if !failed.is_empty() {
            anyhow::bail!("could not plan {}", failed.join(", "));
        }
        Ok(())
    }
    .await;
    result.map_err(|e| session.explain(e))
}

/// `+` adds, `-` removes, `~` changes in place or replaces, `?` looks into; nothing for an image
/// check.
fn symbol(action: &str) -> char {
    match action {
        "create" | "createNetwork" | "createVolume" | "place" | "provision" => '+',
        "remove" | "removeNetwork" | "deprovision" | "reap" => '-',
        "diagnose" => '?',
        "ensureImage" => ' ',
        _ => '~',
    }
}

/// One action in words, e.g. `~ recreate container ns.shop-web-0 (service web)  [tier 1 DesiredStateChanged]`.
pub fn action_line(a: &PlannedAction) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let release = a.release.map(|r| format!("release {r}")).unwrap_or_else(|| "the release".into());
    let what = match a.action.as_str() {
        "createNetwork" => format!("create network {}", opt(&a.network)),
        "removeNetwork" => format!("remove network {}", opt(&a.network)),
        "createVolume" => format!("create volume {}", opt(&a.volume)),
        "ensureImage" => {
            format!("ensure image {} (pull {})", opt(&a.image), a.pull_policy.as_deref().unwrap_or("IfNotPresent"))
        }
        "connect" => format!("connect container {} to network {}", opt(&a.container), opt(&a.network)),
        "place" => "place the Lease on this host".to_string(),
        "provision" => format!("provision {release}"),
        "update" => format!("update to {release}"),
        "restart" if a.container.is_none() => format!("restart the containers of {release}"),
        "deprovision" => match a.retain_volumes {
            Some(true) => "deprovision the Lease, keeping its volumes".to_string(),
            _ => "deprovision the Lease, removing its volumes".to_string(),
        },
        "reap" => format!("reap retained volume {}", opt(&a.volume)),
        other => {
            let service = a.service.as_ref().map(|s| format!(" (service {s})")).unwrap_or_default();
            format!("{other} container {}{service}", opt(&a.container))
        }
    };
    let doing = if a.in_progress { " (in progress)" } else { "" };
    format!("{} {what}{doing}  [tier {} {}]", symbol(&a.action), a.tier, a.reason)
}

/// Changes still to start on a host.
fn changes(h: &HostPlan) -> usize {
    h.steps.iter().flat_map(|s| &s.actions).filter(|a| a.is_mutation() && !a.in_progress).count()
}

/// Operations the controller is already running on a host.
fn running(h: &HostPlan) -> usize {
    h.steps.iter().flat_map(|s| &s.actions).filter(|a| a.in_progress).count()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// A workload's plan in words: a summary line, the findings about the object, the notes, then
/// per host its actions and findings.
pub fn render_workload(kind: &str, p: &WorkloadPlan) -> String {
    let phase = p.phase.as_ref().map(|ph| format!(", {ph}")).unwrap_or_default();
    let title = format!("{}.{}/{} (namespace {}{phase})", kind.to_lowercase(), berth_crds::GROUP, p.name, p.namespace);
    if let Some(e) = &p.error {
        return format!("{title}: cannot plan: {e}\n");
    }
    let total: usize = p.hosts.iter().map(changes).sum();
    let in_progress: usize = p.hosts.iter().map(running).sum();
    let hosts: Vec<&str> = p.hosts.iter().map(|h| h.host.as_str()).collect();
    let busy = p.hosts.iter().filter(|h| changes(h) > 0 || running(h) > 0).count();
    let mut out = if total > 0 {
        format!("{title}: {} on {}\n", plural(total, "change"), plural(busy, "host"))
    } else if in_progress > 0 {
        format!("{title}: {} in progress on {}\n", plural(in_progress, "operation"), plural(busy, "host"))
    } else if !p.converged {
        format!("{title}: not converged; nothing can be done now (see the findings)\n")
    } else if p.hosts.is_empty() {
        if p.findings.is_empty() && kind == "Stack" {
            format!("{title}: no host selected\n")
        } else {
            format!("{title}: no changes\n")
        }
    } else {
        format!("{title}: no changes ({} converged: {})\n", plural(hosts.len(), "host"), hosts.join(", "))
    };
    if !p.findings.is_empty() {
        out.push_str("  findings:\n");
        for f in &p.findings {
            out.push_str(&format!("    tier {} {}: {}\n", f.tier, f.reason, f.message));
        }
    }
    for n in &p.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    for h in &p.hosts {
        let acting = changes(h) + running(h) > 0;
        if !acting && h.findings.is_empty() {
            continue;
        }
        out.push_str(&format!("  host {}:\n", h.host));
        for a in h.steps.iter().flat_map(|s| &s.actions).filter(|a| a.is_mutation() || acting) {
            out.push_str(&format!("    {}\n", action_line(a)));
        }
        if !h.findings.is_empty() {
            out.push_str("    findings:\n");
            for f in &h.findings {
                out.push_str(&format!("      tier {} {}: {}\n", f.tier, f.reason, f.message));
            }
        }
    }
    out
}

/// Every item in words, in the order given.
pub fn render_text(items: &[PlanItem], now: jiff::Timestamp) -> String {
    let mut out = String::new();
    for item in items {
        let text = match item {
            PlanItem::Stack(p) => render_workload("Stack", p),
            PlanItem::Lease(p) => render_workload("Lease", p),
            PlanItem::Host(h) => orphans::render_host(h, now),
            PlanItem::Unknown => continue,
        };
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use berth_crds::plan::{Finding, Step};

    use super::*;

    fn args(targets: &[&str], all: bool) -> PlanArgs {
        PlanArgs {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            namespace: None,
            all_namespaces: all,
            output: DocumentFormat::Text,
            connect: Default::default(),
        }
    }

    #[test]
    fn targets_name_stacks_leases_and_hosts_only() {
        let all = |kind, scope: Option<&str>| Planned::All { kind, scope: scope.map(String::from) };
        let one = |kind, name: &str| Planned::One { kind, namespace: "ns".into(), name: name.into() };
        assert_eq!(
            planned_from(&args(&[], false), "ns").unwrap(),
            [all("Stack", Some("ns")), all("Lease", Some("ns")), Planned::Hosts(None)]
        );
        assert_eq!(
            planned_from(&args(&[], true), "ns").unwrap(),
            [all("Stack", None), all("Lease", None), Planned::Hosts(None)]
        );
        assert_eq!(
            planned_from(&args(&["stack/web", "lease/pr-1", "host/local"], false), "ns").unwrap(),
            [one("Stack", "web"), one("Lease", "pr-1"), Planned::Hosts(Some("local".into()))]
        );
        assert_eq!(planned_from(&args(&["stacks"], false), "ns").unwrap(), [all("Stack", Some("ns"))]);
        assert_eq!(planned_from(&args(&["leases"], true), "ns").unwrap(), [all("Lease", None)]);
        assert_eq!(
            planned_from(&args(&["bl", "a", "b"], false), "ns").unwrap(),
            [one("Lease", "a"), one("Lease", "b")]
        );
        let err = planned_from(&args(&["secret/x"], false), "ns").unwrap_err();
        assert!(err.to_string().contains("stack/NAME, lease/NAME or host/NAME"), "{err}");
    }

    fn recreate() -> PlannedAction {
        PlannedAction {
            action: "recreate".into(),
            tier: 1,
            reason: "DesiredStateChanged".into(),
            service: Some("web".into()),
            container: Some("ns.shop-web-0".into()),
            id: Some("abc".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_changing_stack_lists_actions_with_tier_and_reason_then_findings() {
        let p = WorkloadPlan {
            namespace: "ns".into(),
            name: "shop".into(),
            hosts: vec![
                HostPlan {
                    host: "local".into(),
                    converged: false,
                    findings: vec![Finding {
                        tier: 1,
                        reason: "DesiredStateChanged".into(),
                        message: "the rendered desired state differs".into(),
                        ..Default::default()
                    }],
                    steps: vec![Step {
                        phase: "service".into(),
                        service: Some("web".into()),
                        actions: vec![
                            PlannedAction {
                                action: "ensureImage".into(),
                                tier: 1,
                                reason: "DesiredStateChanged".into(),
                                image: Some("busybox".into()),
                                pull_policy: Some("Never".into()),
                                ..Default::default()
                            },
                            recreate(),
                        ],
                        ..Default::default()
                    }],
                },
                HostPlan { host: "edge".into(), converged: true, ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(
            render_workload("Stack", &p),
            "stack.berth.dev/shop (namespace ns): 1 change on 1 host\n  host local:\n      \
             ensure image busybox (pull Never)  [tier 1 DesiredStateChanged]\n    \
             ~ recreate container ns.shop-web-0 (service web)  [tier 1 DesiredStateChanged]\n    findings:\n      \
             tier 1 DesiredStateChanged: the rendered desired state differs\n"
        );
    }

    #[test]
    fn converged_failed_and_noted_stacks() {
        let converged = WorkloadPlan {
            namespace: "ns".into(),
            name: "web".into(),
            converged: true,
            notes: vec!["spec.suspend is true".into()],
            hosts: vec![HostPlan { host: "local".into(), converged: true, ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(
            render_workload("Stack", &converged),
            "stack.berth.dev/web (namespace ns): no changes (1 host converged: local)\n  note: spec.suspend is true\n"
        );
        let failed = WorkloadPlan {
            namespace: "ns".into(),
            name: "x".into(),
            error: Some("Secret ns/db not found".into()),
            ..Default::default()
        };
        assert_eq!(
            render_workload("Stack", &failed),
            "stack.berth.dev/x (namespace ns): cannot plan: Secret ns/db not found\n"
        );
    }

    fn lease(phase: &str) -> WorkloadPlan {
        WorkloadPlan {
            namespace: "previews".into(),
            name: "pr-1".into(),
            phase: Some(phase.into()),
            ..Default::default()
        }
    }

    fn finding(reason: &str, message: &str) -> Finding {
        Finding { tier: 1, reason: reason.into(), message: message.into(), ..Default::default() }
    }

    #[test]
    fn a_pending_lease_says_why_it_waits_per_host() {
        let p = WorkloadPlan {
            findings: vec![finding("InsufficientCapacity", "no matching Host has room for 1 CPUs and 256 MiB: …")],
            notes: vec!["the Lease stays Pending".into()],
            hosts: vec![HostPlan {
                host: "local".into(),
                findings: vec![finding(
                    "InsufficientCapacity",
                    "local has 0.50 of 2.00 CPUs and 1024 of 1024 MiB free",
                )],
                ..Default::default()
            }],
            ..lease("Pending")
        };
        assert_eq!(
            render_workload("Lease", &p),
            "lease.berth.dev/pr-1 (namespace previews, Pending): not converged; nothing can be done now (see the \
             findings)\n  findings:\n    tier 1 InsufficientCapacity: no matching Host has room for 1 CPUs and 256 \
             MiB: …\n  note: the Lease stays Pending\n  host local:\n    findings:\n      tier 1 \
             InsufficientCapacity: local has 0.50 of 2.00 CPUs and 1024 of 1024 MiB free\n"
        );
    }

    #[test]
    fn a_lease_being_placed_lists_its_steps_and_one_in_progress_says_so() {
        let action = |name: &str, reason: &str| PlannedAction {
            action: name.into(),
            tier: 1,
            reason: reason.into(),
            release: Some(1),
            ..Default::default()
        };
        let p = WorkloadPlan {
            hosts: vec![HostPlan {
                host: "local".into(),
                steps: vec![
                    Step { phase: "place".into(), actions: vec![action("place", "NotPlaced")], ..Default::default() },
                    Step {
                        phase: "provision".into(),
                        actions: vec![
                            action("provision", "NotProvisioned"),
                            PlannedAction {
                                container: Some("lease.previews.pr-1.web-0.r1".into()),
                                service: Some("web".into()),
                                ..action("create", "NotProvisioned")
                            },
                        ],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..lease("Pending")
        };
        assert_eq!(
            render_workload("Lease", &p),
            "lease.berth.dev/pr-1 (namespace previews, Pending): 3 changes on 1 host\n  host local:\n    + place the \
             Lease on this host  [tier 1 NotPlaced]\n    + provision release 1  [tier 1 NotProvisioned]\n    + create \
             container lease.previews.pr-1.web-0.r1 (service web)  [tier 1 NotProvisioned]\n"
        );
        let p = WorkloadPlan {
            hosts: vec![HostPlan {
                host: "local".into(),
                steps: vec![Step {
                    phase: "update".into(),
                    actions: vec![PlannedAction { in_progress: true, ..action("update", "DesiredStateChanged") }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..lease("Updating")
        };
        assert_eq!(
            render_workload("Lease", &p),
            "lease.berth.dev/pr-1 (namespace previews, Updating): 1 operation in progress on 1 host\n  host local:\n    \
             ~ update to release 1 (in progress)  [tier 1 DesiredStateChanged]\n"
        );
    }

    #[test]
    fn a_converged_or_closed_lease_is_one_line_and_its_notes() {
        let ready = WorkloadPlan {
            converged: true,
            notes: vec!["release 1 runs on host local".into()],
            hosts: vec![HostPlan { host: "local".into(), converged: true, ..Default::default() }],
            ..lease("Ready")
        };
        assert_eq!(
            render_workload("Lease", &ready),
            "lease.berth.dev/pr-1 (namespace previews, Ready): no changes (1 host converged: local)\n  note: release 1 \
             runs on host local\n"
        );
        let closed = WorkloadPlan { converged: true, ..lease("Closed") };
        assert_eq!(
            render_workload("Lease", &closed),
            "lease.berth.dev/pr-1 (namespace previews, Closed): no changes\n"
        );
    }

    #[test]
    fn lease_actions_in_words() {
        let line = |action: &str, f: fn(&mut PlannedAction)| {
            let mut a = PlannedAction { action: action.into(), tier: 1, reason: "R".into(), ..Default::default() };
            f(&mut a);
            action_line(&a)
        };
        assert_eq!(
            line("deprovision", |a| a.retain_volumes = Some(true)),
            "- deprovision the Lease, keeping its volumes  [tier 1 R]"
        );
        assert_eq!(
            line("deprovision", |a| a.retain_volumes = Some(false)),
            "- deprovision the Lease, removing its volumes  [tier 1 R]"
        );
        assert_eq!(line("reap", |a| a.volume = Some("v".into())), "- reap retained volume v  [tier 1 R]");
        assert_eq!(line("restart", |a| a.release = Some(2)), "~ restart the containers of release 2  [tier 1 R]");
        assert_eq!(
            line("diagnose", |a| {
                a.container = Some("c".into());
                a.service = Some("web".into());
            }),
            "? diagnose container c (service web)  [tier 1 R]"
        );
    }

    #[test]
    fn action_lines_say_what_changes() {
        let line = |action: &str, f: fn(&mut PlannedAction)| {
            let mut a = PlannedAction { action: action.into(), tier: 2, reason: "R".into(), ..Default::default() };
            f(&mut a);
            action_line(&a)
        };
        assert_eq!(line("createNetwork", |a| a.network = Some("n".into())), "+ create network n  [tier 2 R]");
        assert_eq!(line("removeNetwork", |a| a.network = Some("n".into())), "- remove network n  [tier 2 R]");
        assert_eq!(line("remove", |a| a.container = Some("c".into())), "- remove container c  [tier 2 R]");
        assert_eq!(line("start", |a| a.container = Some("c".into())), "~ start container c  [tier 2 R]");
        assert_eq!(
            line("connect", |a| {
                a.container = Some("c".into());
                a.network = Some("n".into());
            }),
            "~ connect container c to network n  [tier 2 R]"
        );
        assert_eq!(
            action_line(&recreate()),
            "~ recreate container ns.shop-web-0 (service web)  [tier 1 DesiredStateChanged]"
        );
    }
}
