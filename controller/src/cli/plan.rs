//! `berth plan`: what the controllers would do now, without doing it. The plan of each Stack
//! comes from the server's `plan` subresource (the Stack controller's own planner with the
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
  berth plan                          # every Stack of the namespace, and every Host's orphans
  berth plan stack/shop               # one Stack
  berth plan -A -o json               # everything, as the berth.dev/plan/v1 document
  berth plan host/edge-1              # the orphan part of one Host

Nothing is executed. Each action shows the drift tier that calls for it (0 spec, 1 desired
state, 2 runtime configuration, 3 runtime state) and its reason; a Host shows the orphan
action requested and the one in effect, and the gate that blocks removal.")]
pub struct PlanArgs {
    /// KIND/NAME… (stack or host), or KIND NAME…; nothing means every Stack and Host.
    #[arg(value_name = "KIND/NAME")]
    pub targets: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Stacks of every namespace.
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
    /// One Stack.
    Stack { namespace: String, name: String },
    /// Every Stack of a namespace, or of all (`None`).
    Stacks(Option<String>),
    /// One Host's orphans, or every Host's.
    Hosts(Option<String>),
}

fn planned_from(args: &PlanArgs, namespace: &str) -> anyhow::Result<Vec<Planned>> {
    let scope = (!args.all_namespaces).then(|| namespace.to_string());
    if args.targets.is_empty() {
        return Ok(vec![Planned::Stacks(scope), Planned::Hosts(None)]);
    }
    let mut out = Vec::new();
    for t in resources::parse_targets(&args.targets)? {
        match (t.info.group.as_str(), t.info.kind.as_str(), t.name) {
            (berth_crds::GROUP, "Stack", Some(name)) => {
                out.push(Planned::Stack { namespace: namespace.to_string(), name })
            }
            (berth_crds::GROUP, "Stack", None) => out.push(Planned::Stacks(scope.clone())),
            (berth_crds::GROUP, "Host", name) => out.push(Planned::Hosts(name)),
            (_, kind, _) => {
                return Err(super::usage(format!(
                    "berth plan shows Stacks and Hosts, not {kind}: write stack/NAME or host/NAME"
                )));
            }
        }
    }
    Ok(out)
}

fn stack_info() -> std::sync::Arc<ResourceInfo> {
    resources::registry().find_kind(berth_crds::GROUP, "Stack").expect("the registry serves Stacks")
}

/// The path of a Stack's plan subresource.
pub fn plan_path(namespace: &str, name: &str) -> String {
    format!("/apis/{}/namespaces/{namespace}/stacks/{name}/plan", berth_crds::API_VERSION)
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

async fn plan_stack(session: &Session, namespace: &str, name: &str) -> anyhow::Result<WorkloadPlan> {
    let request = http::Request::get(plan_path(namespace, name)).body(Vec::new())?;
    match session.client.request::<PlanList>(request).await {
        Ok(doc) => Ok(doc
            .items
            .into_iter()
            .find_map(|i| match i {
                PlanItem::Stack(p) => Some(p),
                _ => None,
            })
            .unwrap_or_else(|| WorkloadPlan {
                namespace: namespace.into(),
                name: name.into(),
                error: Some("the server's plan holds no Stack item".into()),
                ..Default::default()
            })),
        Err(e) => {
            if let Some(fatal) = cannot_plan_here(session, &e).await? {
                return Err(fatal);
            }
            let message = match &e {
                kube::Error::Api(s) => s.message.clone(),
                other => other.to_string(),
            };
            Ok(WorkloadPlan {
                namespace: namespace.into(),
                name: name.into(),
                error: Some(message),
                ..Default::default()
            })
        }
    }
}

async fn stack_names(session: &Session, namespace: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    let api = resources::api(&session.client, &stack_info(), namespace);
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
            Planned::Stack { namespace, name } => {
                items.push(PlanItem::Stack(plan_stack(session, namespace, name).await?));
            }
            Planned::Stacks(scope) => {
                for (ns, name) in stack_names(session, scope.as_deref()).await? {
                    items.push(PlanItem::Stack(plan_stack(session, &ns, &name).await?));
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
                        "Nothing to plan: no Stack{}.",
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

/// `+` adds, `-` removes, `~` changes in place or replaces; nothing for an image check.
fn symbol(action: &str) -> char {
    match action {
        "create" | "createNetwork" | "createVolume" => '+',
        "remove" | "removeNetwork" => '-',
        "ensureImage" => ' ',
        _ => '~',
    }
}

/// One action in words, e.g. `~ recreate container ns.shop-web-0 (service web)  [tier 1 DesiredStateChanged]`.
pub fn action_line(a: &PlannedAction) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let what = match a.action.as_str() {
        "createNetwork" => format!("create network {}", opt(&a.network)),
        "removeNetwork" => format!("remove network {}", opt(&a.network)),
        "createVolume" => format!("create volume {}", opt(&a.volume)),
        "ensureImage" => {
            format!("ensure image {} (pull {})", opt(&a.image), a.pull_policy.as_deref().unwrap_or("IfNotPresent"))
        }
        "connect" => format!("connect container {} to network {}", opt(&a.container), opt(&a.network)),
        other => {
            let service = a.service.as_ref().map(|s| format!(" (service {s})")).unwrap_or_default();
            format!("{other} container {}{service}", opt(&a.container))
        }
    };
    format!("{} {what}  [tier {} {}]", symbol(&a.action), a.tier, a.reason)
}

fn changes(h: &HostPlan) -> usize {
    h.steps.iter().flat_map(|s| &s.actions).filter(|a| a.is_mutation()).count()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// A workload's plan in words: a summary line, then per host its actions and findings.
pub fn render_workload(kind: &str, p: &WorkloadPlan) -> String {
    let title = format!("{}.{}/{} (namespace {})", kind.to_lowercase(), berth_crds::GROUP, p.name, p.namespace);
    if let Some(e) = &p.error {
        return format!("{title}: cannot plan: {e}\n");
    }
    let total: usize = p.hosts.iter().map(changes).sum();
    let hosts: Vec<&str> = p.hosts.iter().map(|h| h.host.as_str()).collect();
    let mut out = if p.hosts.is_empty() {
        format!("{title}: no host selected\n")
    } else if total == 0 {
        format!("{title}: no changes ({} converged: {})\n", plural(hosts.len(), "host"), hosts.join(", "))
    } else {
        let busy = p.hosts.iter().filter(|h| changes(h) > 0).count();
        format!("{title}: {} on {}\n", plural(total, "change"), plural(busy, "host"))
    };
    for n in &p.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    for h in &p.hosts {
        if changes(h) == 0 && h.findings.is_empty() {
            continue;
        }
        out.push_str(&format!("  host {}:\n", h.host));
        for a in h.steps.iter().flat_map(|s| &s.actions).filter(|a| a.is_mutation() || changes(h) > 0) {
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

/// Every item in words, Stacks first as given, then Hosts.
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
    fn targets_name_stacks_and_hosts_only() {
        assert_eq!(
            planned_from(&args(&[], false), "ns").unwrap(),
            [Planned::Stacks(Some("ns".into())), Planned::Hosts(None)]
        );
        assert_eq!(planned_from(&args(&[], true), "ns").unwrap()[0], Planned::Stacks(None));
        assert_eq!(
            planned_from(&args(&["stack/web", "host/local"], false), "ns").unwrap(),
            [Planned::Stack { namespace: "ns".into(), name: "web".into() }, Planned::Hosts(Some("local".into()))]
        );
        assert_eq!(planned_from(&args(&["stacks"], false), "ns").unwrap(), [Planned::Stacks(Some("ns".into()))]);
        let err = planned_from(&args(&["secret/x"], false), "ns").unwrap_err();
        assert!(err.to_string().contains("stack/NAME or host/NAME"), "{err}");
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
