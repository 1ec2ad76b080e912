//! `Host`: a Docker daemon berth manages. Cluster-scoped: Stacks and Leases of every namespace
//! share the fleet.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, is_default};

/// Name of the Host berth registers for the local daemon on first start.
pub const LOCAL_HOST: &str = "local";

/// Desired state of a Host.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Host",
    plural = "hosts",
    singular = "host",
    status = "HostStatus",
    shortname = "hst",
    category = "berth",
    doc = "A Docker daemon that berth manages.",
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.endpoint",
        description = "How berth reaches the daemon"
    ),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status",
        description = "Whether the daemon answers"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.daemon.version",
        description = "Docker Engine version"
    ),
    printcolumn(name = "Cordoned", type_ = "boolean", json_path = ".spec.cordoned", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// `unix:///var/run/docker.sock`, `tcp://host:port` or `ssh://user@host`.
    pub endpoint: String,
    /// Client TLS material for `tcp://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HostTls>,
    /// When true, no new Lease is placed on the host (running work stays).
    #[serde(default, skip_serializing_if = "is_default")]
    pub cordoned: bool,
    /// Overrides the capacity the daemon reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<HostCapacity>,
}

/// Paths of client TLS material, readable by `berth serve`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostTls {
    /// CA bundle that signed the daemon's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// Schedulable capacity of a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostCapacity {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// Disk in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<i64>,
}

/// Observed state of a Host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Reachable`, `Ready`, `OrphansBlocked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Facts the daemon reported at the last successful connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonInfo>,
    /// Capacity used for placement (the override, else what the daemon reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<HostCapacity>,
    /// Capacity held by Leases placed on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<HostCapacity>,
    /// Stacks (still in the store) that own containers on the host.
    #[serde(default, skip_serializing_if = "is_default")]
    pub stacks: i64,
    /// Leases (still in the store) that own containers on the host.
    #[serde(default, skip_serializing_if = "is_default")]
    pub leases: i64,
    /// The last orphan scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_scan: Option<OrphanScan>,
}

/// What the daemon says of itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DaemonInfo {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// Negotiated API version, e.g. `1.41`.
    pub api_version: String,
    /// Operating system.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Architecture.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// CPUs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cpus: i64,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "is_default")]
    pub memory_mb: i64,
    /// Daemon name (hostname).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Result of one orphan scan on a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrphanScan {
    /// When a scan first produced this result (rescans with the same findings leave it alone,
    /// so that a converged host's status is not rewritten at every resync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The configured action: `Report` or `Remove`.
    pub requested_action: String,
    /// What berth actually did: `Report`, `Remove` or `None` (nothing found).
    pub effective_action: String,
    /// The first gate that blocked removal, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blocked_by: String,
    /// Every gate with its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// Orphans found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<OrphanRecord>,
    /// Orphans removed by this scan.
    #[serde(default, skip_serializing_if = "is_default")]
    pub removed: i64,
    /// What became of an operator's confirmation (annotation `berth.dev/confirm-orphan-prune`)
    /// that this scan consumed or is still holding.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub confirmation: String,
}

/// One orphan-removal gate and whether it passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    /// Gate name, in evaluation order: `CachesSynced`, `ListingComplete`, `StoreNotEmpty`,
    /// `BelowThreshold`, `MinAge`, `VolumesKept`.
    pub gate: String,
    /// Whether it allows removal.
    pub passed: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An object on a host whose owner is not in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphanRecord {
    /// `container`, `network` or `volume`.
    pub object: String,
    /// Docker name.
    pub name: String,
    /// Docker id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `kind/namespace/name` of the missing owner.
    pub owner: String,
    /// UID of the missing owner (a recreated owner of the same name has another UID).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_uid: String,
    /// Age in seconds when scanned.
    #[serde(default, skip_serializing_if = "is_default")]
    pub age_seconds: i64,
    /// What happened to it: `Reported`, `Removed`, `Kept` (and why).
    pub action: String,
}
