//! The `berth.dev/plan/v1` document: what the controllers would do now, without doing it.
//!
//! The API serves it as the `plan` subresource of a Stack or a Lease (`GET
//! /apis/berth.dev/v1alpha1/namespaces/{ns}/{stacks|leases}/{name}/plan`) and `berth plan -o json`
//! prints it, with one item per planned object and one per Host (the orphan part of the plan, from the
//! Host's last orphan scan). `docs/plan-json.md` documents every field.
//!
//! Stability: fields are only ever added, never renamed or removed, and their meaning never
//! changes within `berth.dev/plan/v1`. Readers must ignore fields, item kinds and action names
//! they do not know. A Lease's plan is `kind: Lease` with the shape of a Stack's, plus `phase`,
//! object-level `findings` and the Lease actions (`place`, `provision`, `update`, `restart`,
//! `diagnose`, `deprovision`, `reap`).

use serde::{Deserialize, Serialize};

use crate::host::OrphanScan;

/// `apiVersion` of plan documents.
pub const PLAN_API_VERSION: &str = "berth.dev/plan/v1";
/// `kind` of the plan document.
pub const PLAN_LIST_KIND: &str = "PlanList";

/// A plan document: every planned object, in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanList {
    /// Always [`PLAN_API_VERSION`].
    pub api_version: String,
    /// Always [`PLAN_LIST_KIND`].
    pub kind: String,
    /// The plans, one per object.
    #[serde(default)]
    pub items: Vec<PlanItem>,
}

impl PlanList {
    /// A document holding `items`.
    pub fn new(items: Vec<PlanItem>) -> Self {
        Self { api_version: PLAN_API_VERSION.into(), kind: PLAN_LIST_KIND.into(), items }
    }
}

/// The plan of one object; `kind` tells which.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind")]
pub enum PlanItem {
    /// What the Stack controller would do for one Stack.
    Stack(WorkloadPlan),
    /// What the Lease controller would do for one Lease (same shape as a Stack's).
    Lease(WorkloadPlan),
    /// The orphan part of the plan on one Host.
    Host(HostOrphans),
    /// A kind this reader does not know (written by a newer berth); skip it.
    #[serde(other)]
    Unknown,
}

/// The plan of a Stack (or Lease) on every host it runs on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlan {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID of the object planned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// `metadata.generation` of the object planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// True when no host needs a change (for a Lease: when the controller has nothing to do
    /// and nothing waits to be done).
    #[serde(default)]
    pub converged: bool,
    /// The Lease's `status.phase` the plan starts from (`Pending` before the controller saw it);
    /// absent for Stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Findings about the object itself rather than one host (a Lease that is not placed, closed,
    /// expired, or whose spec cannot be rendered); absent for Stacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Why the plan executes less than it finds (`spec.suspend`, `driftPolicy: Report`, …), and
    /// for a Lease what happens later (expiry, end of retention) or what an operation does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why no plan could be computed (the object cannot be rendered, the server cannot plan);
    /// `hosts` is empty then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One plan per host.
    #[serde(default)]
    pub hosts: Vec<HostPlan>,
}

/// What would happen on one host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostPlan {
    /// Host name.
    pub host: String,
    /// True when nothing on the host needs to change.
    #[serde(default)]
    pub converged: bool,
    /// Every difference found between desired and observed state.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// What would be done, in order; the actions of one step may run in parallel.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A difference between desired and observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Drift tier: 0 spec, 1 desired state, 2 runtime configuration, 3 runtime state.
    pub tier: u8,
    /// Reason (`SpecChanged`, `DesiredStateChanged`, `ContainerMissing`, `NotRunning`, …).
    pub reason: String,
    /// Service concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Docker object concerned (container, network or volume name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Explanation.
    pub message: String,
}

/// Actions that run together once their dependencies are satisfied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// `removeUnwanted`, `prepare`, `service` or `cleanup`.
    pub phase: String,
    /// Service of a `service` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Dependencies waited for before the step runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wait_for: Vec<WaitFor>,
    /// The actions.
    #[serde(default)]
    pub actions: Vec<PlannedAction>,
}

/// A dependency of a step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WaitFor {
    /// Service depended upon.
    pub service: String,
    /// `Started` or `Healthy`.
    pub condition: String,
}

/// One change to a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlannedAction {
    /// `createNetwork`, `createVolume`, `ensureImage`, `create`, `recreate`, `start`, `restart`,
    /// `remove`, `connect` or `removeNetwork`; for a Lease also `place`, `provision`, `update`,
    /// `restart` (without `container`: the whole release), `diagnose`, `deprovision` and `reap`.
    pub action: String,
    /// The drift tier that calls for it: 1 when it rolls out a changed desired state (for a Lease:
    /// every step of its lifecycle), 2 or 3 when it corrects (or, for a Lease, diagnoses)
    /// runtime drift.
    pub tier: u8,
    /// Why (a finding's reason, e.g. `DesiredStateChanged`, `ContainerMissing`, `NotRunning`).
    pub reason: String,
    /// Service concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Container name (container actions, `connect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Network name (`createNetwork`, `removeNetwork`, `connect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Volume name (`createVolume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Image reference (`ensureImage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker id of the object acted upon, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `Always`, `IfNotPresent` or `Never` (`ensureImage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    /// Network aliases (`connect`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Whether the network is internal (`createNetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    /// The Lease release concerned (`provision`, `update`, `restart`, and the containers they
    /// create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<i64>,
    /// Whether the Lease's volumes are kept under retained names (`deprovision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_volumes: Option<bool>,
    /// True when the controller is already doing it (a Lease operation running in the
    /// background); it goes on rather than starts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_progress: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl PlannedAction {
    /// Whether the action changes a workload (everything but making sure an image is there).
    pub fn is_mutation(&self) -> bool {
        self.action != "ensureImage"
    }
}

/// The orphan part of the plan on one Host: its last orphan scan (requested and effective
/// action, every gate, the blocking one, each orphan and what happens to it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostOrphans {
    /// Host name.
    pub name: String,
    /// The Host's last orphan scan (`status.orphanScan`); absent before the first scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_scan: Option<OrphanScan>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_told_apart_by_kind_and_unknown_kinds_are_skippable() {
        let doc = PlanList::new(vec![
            PlanItem::Stack(WorkloadPlan { namespace: "ns".into(), name: "web".into(), ..Default::default() }),
            PlanItem::Host(HostOrphans { name: "local".into(), orphan_scan: None }),
        ]);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["apiVersion"], PLAN_API_VERSION);
        assert_eq!(json["items"][0]["kind"], "Stack");
        assert_eq!(json["items"][0]["name"], "web");
        assert_eq!(json["items"][1]["kind"], "Host");
        let back: PlanList = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);

        let newer = serde_json::json!({"apiVersion": PLAN_API_VERSION, "kind": "PlanList", "items": [
            {"kind": "Volume", "name": "x", "somethingNew": 1},
            {"kind": "Stack", "namespace": "ns", "name": "web", "converged": true, "hosts": [], "later": "field"}
        ]});
        let read: PlanList = serde_json::from_value(newer).unwrap();
        assert_eq!(read.items[0], PlanItem::Unknown);
        assert!(matches!(&read.items[1], PlanItem::Stack(p) if p.converged));
    }
}
