//! The pure core of the Stack controller: `plan(desired, observed)` compares what a Stack wants on
//! a host with what that host runs and returns the actions that converge it, in executable order,
//! with the drift findings (tier and reason) that justify them. No I/O happens here; the executor
//! applies a plan and `berth plan` prints it.
//!
//! The JSON form of [`HostPlan`] is part of berth's interface (`berth plan -o json`): fields are
//! only ever added, never renamed.

use std::collections::{BTreeMap, BTreeSet};

use berth_crds::common::{LABEL_CONFIG_HASH, LABEL_OWNER_UID, LABEL_REPLICA, LABEL_SERVICE};
use berth_crds::stack::{DependencyCondition, PullPolicy};
use serde::Serialize;

use super::render::DesiredState;

/// Docker's view of a container's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting (Docker's restart policy is at work).
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead.
    Dead,
}

/// Health reported by Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    /// Within the start period or before the first check.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// A container on a host, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// State.
    pub state: RunState,
    /// Health, when it has a health check.
    pub health: Option<Health>,
    /// Killed by the OOM killer (known only for stopped containers that were inspected).
    pub oom_killed: bool,
    /// Exit code (stopped containers that were inspected).
    pub exit_code: Option<i64>,
    /// Image id (`sha256:…`) the container runs (empty when unknown).
    pub image_id: String,
}

impl ObservedContainer {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A network on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNetwork {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A volume on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVolume {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// What one listing of a host shows (berth-managed objects of this installation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// Containers.
    pub containers: Vec<ObservedContainer>,
    /// Networks.
    pub networks: Vec<ObservedNetwork>,
    /// Volumes.
    pub volumes: Vec<ObservedVolume>,
    /// Image id each desired image reference resolves to on the host now (references that are
    /// not on the host are absent). A container running another image id has drifted.
    pub images: BTreeMap<String, String>,
}

/// Drift tiers (PRODUCT §4).
pub mod tier {
    /// Spec changed (`generation` ≠ `observedGeneration`).
    pub const SPEC: u8 = 0;
    /// Rendered desired state changed (hash ≠ `appliedHash`).
    pub const DESIRED: u8 = 1;
    /// Runtime configuration differs (missing, surplus, different config, network/volume gone).
    pub const RUNTIME_CONFIG: u8 = 2;
    /// Runtime state differs (not running, restarting, unhealthy, OOM-killed).
    pub const RUNTIME_STATE: u8 = 3;
}

/// Reasons of findings and actions, as they appear in status, events and `berth plan`.
pub mod reason {
    /// The spec changed.
    pub const SPEC_CHANGED: &str = "SpecChanged";
    /// The rendered desired state changed (spec or referenced secrets).
    pub const DESIRED_STATE_CHANGED: &str = "DesiredStateChanged";
    /// A wanted container does not exist.
    pub const CONTAINER_MISSING: &str = "ContainerMissing";
    /// A container of a replica beyond `replicas`.
    pub const SURPLUS_REPLICA: &str = "SurplusReplica";
    /// A container of a service no longer in the spec.
    pub const SERVICE_REMOVED: &str = "ServiceRemoved";
    /// A container whose config hash differs from the desired one.
    pub const CONFIG_HASH_MISMATCH: &str = "ConfigHashMismatch";
    /// A container runs another image than the one its reference resolves to on the host now
    /// (the tag was re-pulled or re-tagged).
    pub const IMAGE_CHANGED: &str = "ImageChanged";
    /// Two containers claim the same replica.
    pub const DUPLICATE_REPLICA: &str = "DuplicateReplica";
    /// A wanted network does not exist.
    pub const NETWORK_MISSING: &str = "NetworkMissing";
    /// A wanted volume does not exist.
    pub const VOLUME_MISSING: &str = "VolumeMissing";
    /// A network of the Stack no longer in the spec.
    pub const NETWORK_REMOVED: &str = "NetworkRemoved";
    /// A container is not running.
    pub const NOT_RUNNING: &str = "NotRunning";
    /// A container was killed by the OOM killer.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// Docker is restarting a container.
    pub const RESTARTING: &str = "Restarting";
    /// A container's health check fails.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// A container is paused.
    pub const PAUSED: &str = "Paused";
}

/// A difference between desired and observed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Drift tier, 0–3.
    pub tier: u8,
    /// Reason (see [`reason`]).
    pub reason: String,
    /// Service concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Docker object concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Explanation.
    pub message: String,
}

/// One change to a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Create a network.
    #[serde(rename_all = "camelCase")]
    CreateNetwork {
        /// Docker name.
        name: String,
        /// Internal.
        internal: bool,
    },
    /// Create a volume.
    #[serde(rename_all = "camelCase")]
    CreateVolume {
        /// Docker name.
        name: String,
    },
    /// Make sure the image is on the host (pull per policy).
    #[serde(rename_all = "camelCase")]
    EnsureImage {
        /// Reference.
        image: String,
        /// `Always`, `IfNotPresent` or `Never`.
        policy: PullPolicy,
    },
    /// Create and start a container.
    #[serde(rename_all = "camelCase")]
    Create {
        /// Docker name.
        container: String,
        /// Service.
        service: String,
        /// Why.
        reason: String,
    },
    /// Replace a container (stop, remove, create, start).
    #[serde(rename_all = "camelCase")]
    Recreate {
        /// Docker name.
        container: String,
        /// Id of the container replaced.
        id: String,
        /// Service.
        service: String,
        /// Why.
        reason: String,
    },
    /// Start a stopped container.
    #[serde(rename_all = "camelCase")]
    Start {
        /// Docker name.
        container: String,
        /// Id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Restart a running but unhealthy container.
    #[serde(rename_all = "camelCase")]
    Restart {
        /// Docker name.
        container: String,
        /// Id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Stop and remove a container the Stack no longer wants.
    #[serde(rename_all = "camelCase")]
    Remove {
        /// Docker name.
        container: String,
        /// Id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Attach an existing container to a (re-created) network.
    #[serde(rename_all = "camelCase")]
    Connect {
        /// Docker network name.
        network: String,
        /// Container name.
        container: String,
        /// Aliases.
        aliases: Vec<String>,
    },
    /// Remove a network the Stack no longer wants.
    #[serde(rename_all = "camelCase")]
    RemoveNetwork {
        /// Docker name.
        name: String,
        /// Id.
        id: String,
    },
}

impl Action {
    /// Whether the action changes a running workload (used to tell a converged host).
    pub fn is_mutation(&self) -> bool {
        !matches!(self, Action::EnsureImage { .. })
    }

    /// Whether the action puts runtime drift (tiers 2 and 3) back, as opposed to rolling out a
    /// changed desired state. When the desired state is the one applied last, every change is a
    /// correction; otherwise starts, restarts, reconnections and the replacement of dead or
    /// re-tagged containers are.
    pub fn corrects_runtime_drift(&self, previously_applied: bool) -> bool {
        if previously_applied {
            return self.is_mutation();
        }
        match self {
            Action::Start { .. } | Action::Restart { .. } | Action::Connect { .. } => true,
            Action::Recreate { reason: why, .. } => {
                [reason::NOT_RUNNING, reason::OOM_KILLED, reason::IMAGE_CHANGED].contains(&why.as_str())
            }
            _ => false,
        }
    }
}

/// The part of `plan` that `driftPolicy: Report` executes: a changed desired state is rolled out
/// (tiers 0 and 1), runtime drift (tiers 2 and 3) is only reported. Image pulls are kept only for
/// the creations that remain, and steps left empty are dropped.
pub fn without_drift_corrections(plan: &HostPlan, previously_applied: bool) -> HostPlan {
    let steps = plan
        .steps
        .iter()
        .filter_map(|step| {
            let mut actions: Vec<Action> =
                step.actions.iter().filter(|a| !a.corrects_runtime_drift(previously_applied)).cloned().collect();
            let creates = actions.iter().any(|a| matches!(a, Action::Create { .. } | Action::Recreate { .. }));
            if !creates {
                actions.retain(|a| !matches!(a, Action::EnsureImage { .. }));
            }
            (!actions.is_empty()).then(|| Step { actions, ..step.clone() })
        })
        .collect();
    HostPlan { host: plan.host.clone(), findings: plan.findings.clone(), steps }
}

/// A dependency to satisfy before a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitFor {
    /// Service depended upon.
    pub service: String,
    /// `Started` or `Healthy`.
    pub condition: DependencyCondition,
}

/// A group of actions that may run in parallel, after its dependencies are satisfied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// `removeUnwanted`, `prepare`, `service`, `cleanup`.
    pub phase: String,
    /// Service of a `service` step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Dependencies to wait for first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wait_for: Vec<WaitFor>,
    /// The actions.
    pub actions: Vec<Action>,
}

/// The plan for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostPlan {
    /// Host name.
    pub host: String,
    /// What differs.
    pub findings: Vec<Finding>,
    /// What to do, in order.
    pub steps: Vec<Step>,
}

impl HostPlan {
    /// Every action, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.steps.iter().flat_map(|s| s.actions.iter())
    }

    /// True when nothing needs to change.
    pub fn is_converged(&self) -> bool {
        !self.actions().any(Action::is_mutation)
    }
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.is_empty() { "(unknown)" } else { &hex[..hex.len().min(12)] }
}

/// Services in an order where each comes after what it depends on (spec order otherwise).
pub fn service_order(desired: &DesiredState) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = desired.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut done = vec![false; desired.services.len()];
    let mut order = Vec::with_capacity(desired.services.len());
    while order.len() < desired.services.len() {
        let ready = (0..desired.services.len()).find(|&i| {
            !done[i]
                && desired.services[i].depends_on.iter().all(|(d, _)| index.get(d.as_str()).is_none_or(|&k| done[k]))
        });
        // A cycle cannot pass validation; should one appear anyway, fall back to spec order.
        let next = ready.unwrap_or_else(|| (0..desired.services.len()).find(|&i| !done[i]).unwrap_or(0));
        done[next] = true;
        order.push(next);
    }
    order
}

/// A finding about the Stack as a whole (no service or object).
pub fn finding_for(tier: u8, reason: &str, message: String) -> Finding {
    finding(tier, reason, None, None, message)
}

fn finding(tier: u8, reason: &str, service: Option<&str>, object: Option<&str>, message: String) -> Finding {
    Finding {
        tier,
        reason: reason.into(),
        service: service.map(str::to_string),
        object: object.map(str::to_string),
        message,
    }
}

/// Computes the plan for one host.
///
/// `owner_uid` selects the Stack's objects among everything observed. `previously_applied` is
/// true when the desired state equals the one last applied: anything missing is then runtime
/// drift (tier 2/3) rather than a change being rolled out.
pub fn plan(
    host: &str,
    desired: &DesiredState,
    observed: &Observation,
    owner_uid: &str,
    previously_applied: bool,
) -> HostPlan {
    let mut findings = Vec::new();
    let owned = |labels: &BTreeMap<String, String>| labels.get(LABEL_OWNER_UID).map(String::as_str) == Some(owner_uid);

    // Containers of this Stack, by (service, replica).
    let mut by_slot: BTreeMap<(String, i32), Vec<&ObservedContainer>> = BTreeMap::new();
    for c in observed.containers.iter().filter(|c| owned(&c.labels)) {
        let service = c.label(LABEL_SERVICE).unwrap_or("").to_string();
        let replica = c.label(LABEL_REPLICA).and_then(|r| r.parse().ok()).unwrap_or(-1);
        by_slot.entry((service, replica)).or_default().push(c);
    }
    let desired_services: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();

    // 1. Containers the Stack no longer wants (and duplicates of a replica).
    let mut removals = Vec::new();
    let desired_names: BTreeMap<(String, i32), &str> =
        desired.containers().map(|c| ((c.service.clone(), c.replica), c.name.as_str())).collect();
    for ((service, replica), containers) in &by_slot {
        // The keeper of a wanted slot: the container with the desired name, else the first.
        let keeper = desired_names
            .get(&(service.clone(), *replica))
            .map(|name| containers.iter().position(|c| c.name == *name).unwrap_or(0));
        for (i, c) in containers.iter().enumerate() {
            if keeper == Some(i) {
                continue;
            }
            let why = if !desired_services.contains(service.as_str()) {
                reason::SERVICE_REMOVED
            } else if keeper.is_none() {
                reason::SURPLUS_REPLICA
            } else {
                reason::DUPLICATE_REPLICA
            };
            if previously_applied {
                findings.push(finding(
                    tier::RUNTIME_CONFIG,
                    why,
                    Some(service),
                    Some(&c.name),
                    format!("container {} is not wanted ({why})", c.name),
                ));
            }
            removals.push(Action::Remove { container: c.name.clone(), id: c.id.clone(), reason: why.into() });
        }
    }
    let current = |service: &str, replica: i32, name: &str| -> Option<&ObservedContainer> {
        let slot = by_slot.get(&(service.to_string(), replica))?;
        slot.iter().find(|c| c.name == name).or(slot.first()).copied()
    };

    // 2. Networks and volumes.
    let mut prepare = Vec::new();
    let mut missing_networks = BTreeSet::new();
    for n in &desired.networks {
        let exists = observed.networks.iter().any(|o| o.name == n.name && owned(&o.labels));
        if !exists {
            if previously_applied {
                findings.push(finding(
                    tier::RUNTIME_CONFIG,
                    reason::NETWORK_MISSING,
                    None,
                    Some(&n.name),
                    format!("network {} is gone", n.name),
                ));
            }
            missing_networks.insert(n.name.clone());
            prepare.push(Action::CreateNetwork { name: n.name.clone(), internal: n.internal });
        }
    }
    for v in &desired.volumes {
        // Any volume of this installation with the name will do: a retained volume of a deleted
        // Stack is picked up again by a new Stack of the same name (that is what retain is for).
        let exists = observed.volumes.iter().any(|o| o.name == v.name);
        if !exists {
            if previously_applied {
                findings.push(finding(
                    tier::RUNTIME_CONFIG,
                    reason::VOLUME_MISSING,
                    None,
                    Some(&v.name),
                    format!("volume {} is gone", v.name),
                ));
            }
            prepare.push(Action::CreateVolume { name: v.name.clone() });
        }
    }

    // 3. Services, dependencies first.
    let mut service_steps = Vec::new();
    for i in service_order(desired) {
        let svc = &desired.services[i];
        let mut actions = Vec::new();
        let mut needs_image = false;
        let image_changed = |c: &ObservedContainer| {
            observed.images.get(&svc.image).is_some_and(|id| !c.image_id.is_empty() && c.image_id != *id)
        };
        for d in &svc.containers {
            match current(&svc.name, d.replica, &d.name) {
                None => {
                    if previously_applied {
                        findings.push(finding(
                            tier::RUNTIME_CONFIG,
                            reason::CONTAINER_MISSING,
                            Some(&svc.name),
                            Some(&d.name),
                            format!("container {} does not exist", d.name),
                        ));
                    }
                    needs_image = true;
                    actions.push(Action::Create {
                        container: d.name.clone(),
                        service: svc.name.clone(),
                        reason: reason::CONTAINER_MISSING.into(),
                    });
                }
                Some(c) if c.label(LABEL_CONFIG_HASH) != Some(d.config_hash.as_str()) || c.name != d.name => {
                    let why =
                        if previously_applied { reason::CONFIG_HASH_MISMATCH } else { reason::DESIRED_STATE_CHANGED };
                    if previously_applied {
                        findings.push(finding(
                            tier::RUNTIME_CONFIG,
                            why,
                            Some(&svc.name),
                            Some(&d.name),
                            format!("container {} does not have the desired configuration", c.name),
                        ));
                    }
                    needs_image = true;
                    actions.push(Action::Recreate {
                        container: d.name.clone(),
                        id: c.id.clone(),
                        service: svc.name.clone(),
                        reason: why.into(),
                    });
                }
                Some(c) if image_changed(c) => {
                    findings.push(finding(
                        tier::RUNTIME_CONFIG,
                        reason::IMAGE_CHANGED,
                        Some(&svc.name),
                        Some(&c.name),
                        format!(
                            "container {} runs image {} but {} now resolves to {} on this host",
                            c.name,
                            short_id(&c.image_id),
                            svc.image,
                            short_id(observed.images.get(&svc.image).map(String::as_str).unwrap_or(""))
                        ),
                    ));
                    needs_image = true;
                    actions.push(Action::Recreate {
                        container: d.name.clone(),
                        id: c.id.clone(),
                        service: svc.name.clone(),
                        reason: reason::IMAGE_CHANGED.into(),
                    });
                }
                Some(c) => {
                    match c.state {
                        RunState::Running => {
                            if c.health == Some(Health::Unhealthy) {
                                findings.push(finding(
                                    tier::RUNTIME_STATE,
                                    reason::UNHEALTHY,
                                    Some(&svc.name),
                                    Some(&c.name),
                                    format!("container {} is unhealthy", c.name),
                                ));
                                actions.push(Action::Restart {
                                    container: c.name.clone(),
                                    id: c.id.clone(),
                                    reason: reason::UNHEALTHY.into(),
                                });
                            }
                        }
                        RunState::Restarting => {
                            // Docker's restart policy is acting; berth does not interfere.
                            findings.push(finding(
                                tier::RUNTIME_STATE,
                                reason::RESTARTING,
                                Some(&svc.name),
                                Some(&c.name),
                                format!("container {} is restarting", c.name),
                            ));
                        }
                        RunState::Paused => {
                            findings.push(finding(
                                tier::RUNTIME_STATE,
                                reason::PAUSED,
                                Some(&svc.name),
                                Some(&c.name),
                                format!(
                                    "container {} is paused; unpause it or let berth recreate it after a spec change",
                                    c.name
                                ),
                            ));
                        }
                        RunState::Removing => {
                            findings.push(finding(
                                tier::RUNTIME_STATE,
                                reason::NOT_RUNNING,
                                Some(&svc.name),
                                Some(&c.name),
                                format!("container {} is being removed", c.name),
                            ));
                        }
                        RunState::Created | RunState::Exited | RunState::Dead => {
                            let why = if c.oom_killed { reason::OOM_KILLED } else { reason::NOT_RUNNING };
                            let detail = match (c.oom_killed, c.exit_code) {
                                (true, _) => "was killed by the OOM killer; raise resources.memoryMb".to_string(),
                                (false, Some(code)) => format!("exited with code {code}"),
                                (false, None) => format!("is {:?}", c.state).to_lowercase(),
                            };
                            let only_created = previously_applied || c.state != RunState::Created;
                            if only_created {
                                findings.push(finding(
                                    tier::RUNTIME_STATE,
                                    why,
                                    Some(&svc.name),
                                    Some(&c.name),
                                    format!("container {} {detail}", c.name),
                                ));
                            }
                            if c.state == RunState::Dead {
                                needs_image = true;
                                actions.push(Action::Recreate {
                                    container: d.name.clone(),
                                    id: c.id.clone(),
                                    service: svc.name.clone(),
                                    reason: why.into(),
                                });
                            } else {
                                actions.push(Action::Start {
                                    container: c.name.clone(),
                                    id: c.id.clone(),
                                    reason: why.into(),
                                });
                            }
                        }
                    }
                    // A network that had to be re-created lost this container's attachment.
                    for att in &d.config.networks {
                        if missing_networks.contains(&att.network) {
                            prepare.push(Action::Connect {
                                network: att.network.clone(),
                                container: c.name.clone(),
                                aliases: att.aliases.clone(),
                            });
                        }
                    }
                }
            }
        }
        if needs_image {
            actions.insert(0, Action::EnsureImage { image: svc.image.clone(), policy: svc.pull_policy });
        }
        if !actions.is_empty() {
            service_steps.push(Step {
                phase: "service".into(),
                service: Some(svc.name.clone()),
                wait_for: svc.depends_on.iter().map(|(s, c)| WaitFor { service: s.clone(), condition: *c }).collect(),
                actions,
            });
        }
    }

    // 4. Networks the Stack no longer wants.
    let desired_networks: BTreeSet<&str> = desired.networks.iter().map(|n| n.name.as_str()).collect();
    let cleanup: Vec<Action> = observed
        .networks
        .iter()
        .filter(|n| owned(&n.labels) && !desired_networks.contains(n.name.as_str()))
        .map(|n| {
            if previously_applied {
                findings.push(finding(
                    tier::RUNTIME_CONFIG,
                    reason::NETWORK_REMOVED,
                    None,
                    Some(&n.name),
                    format!("network {} is not wanted", n.name),
                ));
            }
            Action::RemoveNetwork { name: n.name.clone(), id: n.id.clone() }
        })
        .collect();

    let mut steps = Vec::new();
    if !removals.is_empty() {
        steps.push(Step { phase: "removeUnwanted".into(), service: None, wait_for: vec![], actions: removals });
    }
    // Connect actions go after creations of networks: keep creates first.
    prepare.sort_by_key(|a| matches!(a, Action::Connect { .. }));
    if !prepare.is_empty() {
        steps.push(Step { phase: "prepare".into(), service: None, wait_for: vec![], actions: prepare });
    }
    steps.extend(service_steps);
    if !cleanup.is_empty() {
        steps.push(Step { phase: "cleanup".into(), service: None, wait_for: vec![], actions: cleanup });
    }
    HostPlan { host: host.to_string(), findings, steps }
}

#[cfg(test)]
mod tests;
