//! The Stack planner's [`HostPlan`]s as the stable `berth.dev/plan/v1` document
//! ([`berth_crds::plan`]). Pure. Each action gets the drift tier and reason that call for it:
//! the tier of the finding about the same object when there is one (runtime drift), else tier 1
//! when the plan rolls out a changed desired state.

use berth_crds::Stack;
use berth_crds::plan::{self as wire, PlannedAction, WorkloadPlan};
use berth_crds::stack::DriftPolicy;

use crate::controllers::stack::plan::{Action, Finding, HostPlan, Step, reason, tier};

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The name of an action as in the planner's JSON (`createNetwork`, `recreate`, …).
fn action_name(a: &Action) -> &'static str {
    match a {
        Action::CreateNetwork { .. } => "createNetwork",
        Action::CreateVolume { .. } => "createVolume",
        Action::EnsureImage { .. } => "ensureImage",
        Action::Create { .. } => "create",
        Action::Recreate { .. } => "recreate",
        Action::Start { .. } => "start",
        Action::Restart { .. } => "restart",
        Action::Remove { .. } => "remove",
        Action::Connect { .. } => "connect",
        Action::RemoveNetwork { .. } => "removeNetwork",
    }
}

/// The action's objects, without tier and reason.
fn describe(a: &Action) -> PlannedAction {
    let mut p = PlannedAction { action: action_name(a).into(), ..Default::default() };
    match a {
        Action::CreateNetwork { name, internal } => {
            p.network = Some(name.clone());
            p.internal = Some(*internal);
        }
        Action::CreateVolume { name } => p.volume = Some(name.clone()),
        Action::EnsureImage { image, policy } => {
            p.image = Some(image.clone());
            p.pull_policy = Some(text(policy));
        }
        Action::Create { container, service, .. } => {
            p.container = Some(container.clone());
            p.service = Some(service.clone());
        }
        Action::Recreate { container, id, service, .. } => {
            p.container = Some(container.clone());
            p.id = Some(id.clone());
            p.service = Some(service.clone());
        }
        Action::Start { container, id, .. }
        | Action::Restart { container, id, .. }
        | Action::Remove { container, id, .. } => {
            p.container = Some(container.clone());
            p.id = Some(id.clone());
        }
        Action::Connect { network, container, aliases } => {
            p.network = Some(network.clone());
            p.container = Some(container.clone());
            p.aliases = aliases.clone();
        }
        Action::RemoveNetwork { name, id } => {
            p.network = Some(name.clone());
            p.id = Some(id.clone());
        }
    }
    p
}

/// The reason the planner gave the action, or the one its kind implies.
fn own_reason(a: &Action) -> Option<&str> {
    match a {
        Action::Create { reason, .. }
        | Action::Recreate { reason, .. }
        | Action::Start { reason, .. }
        | Action::Restart { reason, .. }
        | Action::Remove { reason, .. } => Some(reason),
        Action::CreateNetwork { .. } | Action::Connect { .. } => Some(reason::NETWORK_MISSING),
        Action::CreateVolume { .. } => Some(reason::VOLUME_MISSING),
        Action::RemoveNetwork { .. } => Some(reason::NETWORK_REMOVED),
        Action::EnsureImage { .. } => None,
    }
}

/// The Docker object a finding about the action would name.
fn object_of(a: &Action) -> Option<&str> {
    match a {
        Action::CreateNetwork { name, .. }
        | Action::RemoveNetwork { name, .. }
        | Action::Connect { network: name, .. } => Some(name),
        Action::CreateVolume { name } => Some(name),
        Action::Create { container, .. }
        | Action::Recreate { container, .. }
        | Action::Start { container, .. }
        | Action::Restart { container, .. }
        | Action::Remove { container, .. } => Some(container),
        Action::EnsureImage { .. } => None,
    }
}

/// Tier and reason of an action that is not an image pull.
fn tier_and_reason(a: &Action, findings: &[Finding], rollout: bool) -> (u8, String) {
    let why = own_reason(a).unwrap_or_default();
    let about = |f: &&Finding| f.object.as_deref().is_some_and(|o| Some(o) == object_of(a));
    let found = findings.iter().filter(about).find(|f| f.reason == why).or_else(|| findings.iter().find(about));
    match found {
        Some(f) => (f.tier, why.to_string()),
        None if rollout => (tier::DESIRED, why.to_string()),
        // Without a finding and without a rollout the planner acts on runtime configuration.
        None => (tier::RUNTIME_CONFIG, why.to_string()),
    }
}

fn step(s: &Step, findings: &[Finding], rollout: bool) -> wire::Step {
    let mut actions: Vec<PlannedAction> = s
        .actions
        .iter()
        .map(|a| {
            let mut p = describe(a);
            if !matches!(a, Action::EnsureImage { .. }) {
                (p.tier, p.reason) = tier_and_reason(a, findings, rollout);
            }
            p
        })
        .collect();
    // An image is made sure of for the containers of its step: it carries their tier and reason.
    let first = actions.iter().find(|p| p.action != "ensureImage").map(|p| (p.tier, p.reason.clone()));
    for p in actions.iter_mut().filter(|p| p.action == "ensureImage") {
        (p.tier, p.reason) = first.clone().unwrap_or((tier::DESIRED, reason::DESIRED_STATE_CHANGED.to_string()));
    }
    wire::Step {
        phase: s.phase.clone(),
        service: s.service.clone(),
        wait_for: s
            .wait_for
            .iter()
            .map(|w| wire::WaitFor { service: w.service.clone(), condition: text(&w.condition) })
            .collect(),
        actions,
    }
}

/// One host's plan in the wire form.
pub fn host_plan(p: &HostPlan) -> wire::HostPlan {
    let rollout = p.findings.iter().any(|f| f.reason == reason::DESIRED_STATE_CHANGED);
    wire::HostPlan {
        host: p.host.clone(),
        converged: p.is_converged(),
        findings: p
            .findings
            .iter()
            .map(|f| wire::Finding {
                tier: f.tier,
                reason: f.reason.clone(),
                service: f.service.clone(),
                object: f.object.clone(),
                message: f.message.clone(),
            })
            .collect(),
        steps: p.steps.iter().map(|s| step(s, &p.findings, rollout)).collect(),
    }
}

/// Why the plan of `stack` executes less than it finds.
fn notes(stack: &Stack) -> Vec<String> {
    let mut notes = Vec::new();
    if stack.spec.suspend {
        notes.push("spec.suspend is true: the controller changes nothing; findings are only reported".to_string());
    }
    if stack.spec.drift_policy == DriftPolicy::Report {
        notes.push(
            "driftPolicy is Report: changes of the desired state (tiers 0 and 1) roll out, runtime drift (tiers 2 \
             and 3) is only reported"
                .to_string(),
        );
    }
    if let Some(status) = &stack.status
        && status.rolled_back_hash.is_some()
        && status.rolled_back_hash == status.desired_hash
    {
        notes.push(
            "the last rollout of this desired state failed and was rolled back: berth does not retry it until the \
             Stack or what it references changes"
                .to_string(),
        );
    }
    notes
}

/// The plan document item of a Stack.
pub fn stack_plan(stack: &Stack, plans: &[HostPlan]) -> WorkloadPlan {
    let hosts: Vec<wire::HostPlan> = plans.iter().map(host_plan).collect();
    WorkloadPlan {
        namespace: stack.metadata.namespace.clone().unwrap_or_default(),
        name: stack.metadata.name.clone().unwrap_or_default(),
        uid: stack.metadata.uid.clone().unwrap_or_default(),
        generation: stack.metadata.generation,
        converged: hosts.iter().all(|h| h.converged),
        notes: notes(stack),
        error: None,
        hosts,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use berth_crds::stack::{DependencyCondition, PullPolicy};

    use super::*;
    use crate::controllers::stack::plan::{WaitFor, finding_for};

    fn finding(tier: u8, reason: &str, object: &str) -> Finding {
        Finding { object: Some(object.into()), ..finding_for(tier, reason, String::new()) }
    }

    fn service_step(actions: Vec<Action>) -> Step {
        Step {
            phase: "service".into(),
            service: Some("b".into()),
            wait_for: vec![WaitFor { service: "a".into(), condition: DependencyCondition::Healthy }],
            actions,
        }
    }

    fn tiers(p: &wire::HostPlan) -> Vec<(String, u8, String)> {
        p.steps.iter().flat_map(|s| &s.actions).map(|a| (a.action.clone(), a.tier, a.reason.clone())).collect()
    }

    #[test]
    fn a_rollout_recreates_with_tier_1_and_its_image_shares_the_reason() {
        let plan = HostPlan {
            host: "local".into(),
            findings: vec![
                finding_for(tier::SPEC, reason::SPEC_CHANGED, "generation 2 differs".into()),
                finding_for(tier::DESIRED, reason::DESIRED_STATE_CHANGED, "hash differs".into()),
            ],
            steps: vec![service_step(vec![
                Action::EnsureImage { image: "busybox".into(), policy: PullPolicy::IfNotPresent },
                Action::Recreate {
                    container: "ns.s-b-0".into(),
                    id: "c1".into(),
                    service: "b".into(),
                    reason: reason::DESIRED_STATE_CHANGED.into(),
                },
            ])],
        };
        let w = host_plan(&plan);
        assert!(!w.converged);
        assert_eq!(
            tiers(&w),
            [
                ("ensureImage".into(), 1, "DesiredStateChanged".into()),
                ("recreate".into(), 1, "DesiredStateChanged".into())
            ]
        );
        let a = &w.steps[0].actions[1];
        assert_eq!(
            (a.container.as_deref(), a.service.as_deref(), a.id.as_deref()),
            (Some("ns.s-b-0"), Some("b"), Some("c1"))
        );
        assert_eq!(w.steps[0].actions[0].pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(w.steps[0].wait_for, [wire::WaitFor { service: "a".into(), condition: "Healthy".into() }]);
        assert_eq!(w.findings.len(), 2);
    }

    #[test]
    fn runtime_drift_takes_the_tier_of_the_finding_about_the_object() {
        let plan = HostPlan {
            host: "local".into(),
            findings: vec![
                finding(tier::RUNTIME_STATE, reason::NOT_RUNNING, "ns.s-a-0"),
                finding(tier::RUNTIME_CONFIG, reason::NETWORK_MISSING, "ns.s-back"),
                finding(tier::RUNTIME_CONFIG, reason::CONTAINER_MISSING, "ns.s-b-0"),
            ],
            steps: vec![
                Step {
                    phase: "prepare".into(),
                    service: None,
                    wait_for: vec![],
                    actions: vec![
                        Action::CreateNetwork { name: "ns.s-back".into(), internal: false },
                        Action::Connect { network: "ns.s-back".into(), container: "ns.s-a-0".into(), aliases: vec![] },
                    ],
                },
                Step {
                    phase: "service".into(),
                    service: Some("a".into()),
                    wait_for: vec![],
                    actions: vec![Action::Start {
                        container: "ns.s-a-0".into(),
                        id: "c1".into(),
                        reason: reason::NOT_RUNNING.into(),
                    }],
                },
                service_step(vec![
                    Action::EnsureImage { image: "busybox".into(), policy: PullPolicy::Never },
                    Action::Create {
                        container: "ns.s-b-0".into(),
                        service: "b".into(),
                        reason: reason::CONTAINER_MISSING.into(),
                    },
                ]),
            ],
        };
        assert_eq!(
            tiers(&host_plan(&plan)),
            [
                ("createNetwork".into(), 2, "NetworkMissing".into()),
                ("connect".into(), 2, "NetworkMissing".into()),
                ("start".into(), 3, "NotRunning".into()),
                ("ensureImage".into(), 2, "ContainerMissing".into()),
                ("create".into(), 2, "ContainerMissing".into()),
            ]
        );
    }

    #[test]
    fn a_plan_with_only_an_image_check_is_converged() {
        let plan = HostPlan {
            host: "local".into(),
            findings: vec![],
            steps: vec![service_step(vec![Action::EnsureImage { image: "x".into(), policy: PullPolicy::Always }])],
        };
        assert!(host_plan(&plan).converged);
        assert!(host_plan(&HostPlan { host: "h".into(), ..Default::default() }).converged);
    }

    #[test]
    fn suspended_and_report_stacks_say_so() {
        let mut stack = Stack::new("s", Default::default());
        stack.metadata.namespace = Some("ns".into());
        stack.spec.suspend = true;
        stack.spec.drift_policy = DriftPolicy::Report;
        let p = stack_plan(&stack, &[HostPlan { host: "local".into(), ..Default::default() }]);
        assert_eq!((p.namespace.as_str(), p.name.as_str(), p.converged), ("ns", "s", true));
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes[0].contains("suspend") && p.notes[1].contains("Report"));
    }
}
