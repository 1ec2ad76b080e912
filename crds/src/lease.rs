//! `Lease`: an ephemeral, time-bounded workload of one tenant, sized by an operator-defined SKU.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, EnvVar, Protocol, SecretKeySelector, is_default};

/// Annotation whose change asks the controller to restart a Ready or Failed Lease's containers.
/// Its value is free-form (a timestamp is customary); the last value acted upon is recorded in
/// `status.restartedFor`.
pub const RESTART_ANNOTATION: &str = "berth.dev/restart";

/// Desired state of a Lease.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Lease",
    plural = "leases",
    singular = "lease",
    namespaced,
    status = "LeaseStatus",
    shortname = "bl",
    category = "berth",
    doc = "An ephemeral, time-bounded, tenant-scoped workload placed by berth on a host with room for its SKU.",
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenant",
        description = "Tenant owning the Lease"
    ),
    printcolumn(name = "SKU", type_ = "string", json_path = ".spec.sku", description = "Resource profile"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(
        name = "Host",
        type_ = "string",
        json_path = ".status.host",
        description = "Host the Lease is placed on"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the Lease is deprovisioned"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Tenant the Lease belongs to (quota, network isolation, retention are per tenant).
    pub tenant: String,
    /// Name of a resource profile in the operator's `leases.skus`.
    pub sku: String,
    /// How long the Lease lives from its creation, e.g. `2h`, `90m`, `1h30m`. With neither
    /// `duration` nor `expiresAt`, the operator's `leases.defaultDuration` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Absolute expiry (instead of `duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Restricts placement to Hosts with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<LabelSelector>,
    /// The workload.
    pub services: Vec<LeaseService>,
    /// Keep the Lease's volumes for the retention grace period after close.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retain_on_close: bool,
    /// Name of a retained Lease of the same tenant whose volumes this Lease adopts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// Where terminal transitions are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSpec>,
    /// Set to true to close the Lease before it expires.
    #[serde(default, skip_serializing_if = "is_default")]
    pub closed: bool,
}

/// One service of a Lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseService {
    /// Service name, a DNS label.
    pub name: String,
    /// Image reference; its registry must be in the operator's allowlist.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Ports exposed on random host ports (listed in `status.endpoints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<LeasePort>,
    /// Paths that persist for the Lease's life in a volume (retained on close when asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<LeaseVolume>,
    /// Number of identical instances (default 1).
    #[serde(default = "default_quantity")]
    pub quantity: i32,
}

fn default_quantity() -> i32 {
    1
}

/// A port a Lease service exposes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeasePort {
    /// Port inside the container.
    pub container_port: i32,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
}

/// A persistent path of a Lease service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseVolume {
    /// Volume name within the service.
    pub name: String,
    /// Absolute path inside the container.
    pub mount_path: String,
}

/// Callback target for terminal transitions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackSpec {
    /// `http://` or `https://` URL receiving a signed JSON POST.
    pub url: String,
    /// Secret key holding the HMAC-SHA256 key (else the operator's default callback secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

/// Lifecycle phase of a Lease.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum LeasePhase {
    /// Admitted, waiting for a host with room.
    Pending,
    /// Placed; images are pulled and containers created and verified.
    Provisioning,
    /// Every instance passed its startup check.
    Ready,
    /// A container died; being confirmed and diagnosed.
    Failing,
    /// Diagnosed failure; containers are kept for inspection until close or expiry.
    Failed,
    /// A spec change is being rolled out.
    Updating,
    /// A requested restart is in progress.
    Restarting,
    /// Containers are being removed.
    Deprovisioning,
    /// Gone from its host; nothing is kept.
    Closed,
    /// Gone from its host; volumes are kept for the retention grace period.
    Retained,
}

impl LeasePhase {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Ready => "Ready",
            Self::Failing => "Failing",
            Self::Failed => "Failed",
            Self::Updating => "Updating",
            Self::Restarting => "Restarting",
            Self::Deprovisioning => "Deprovisioning",
            Self::Closed => "Closed",
            Self::Retained => "Retained",
        }
    }

    /// Phases a Lease never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Closed | Self::Retained)
    }
}

/// Observed state of a Lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<LeasePhase>,
    /// When the Lease entered its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// Why the Lease is in its phase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Host the Lease is placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When the Lease expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Resources reserved on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<LeaseAllocation>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<LeaseEndpoint>,
    /// `Ready`, `Admitted`, `Placed`, `Expired`, `RolledBack`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Instances and their containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<LeaseInstanceStatus>,
    /// Rollout history, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<LeaseRelease>,
    /// What berth gathered when the Lease failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<LeaseDiagnostics>,
    /// Volumes kept after close.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained_volumes: Vec<String>,
    /// Until when retained volumes are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<Time>,
    /// The value of the restart annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_for: Option<String>,
    /// Callbacks sent (or being sent) for terminal transitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<CallbackRecord>,
}

/// CPU and memory a Lease holds on its host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseAllocation {
    /// CPU cores.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory_mb: i64,
}

impl LeaseAllocation {
    /// The larger of two allocations in each dimension (what a rollout holds while both
    /// releases may run).
    pub fn max_with(&self, other: &LeaseAllocation) -> LeaseAllocation {
        LeaseAllocation { cpus: self.cpus.max(other.cpus), memory_mb: self.memory_mb.max(other.memory_mb) }
    }
}

/// A published port of a Lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseEndpoint {
    /// Service name.
    pub service: String,
    /// Instance index.
    pub instance: i32,
    /// Port in the container.
    pub container_port: i32,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
    /// Address the port is bound to.
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    /// Host port.
    pub host_port: i32,
    /// A URL to reach it (`http://host:port` for TCP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// One container of a Lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInstanceStatus {
    /// Service name.
    pub service: String,
    /// Instance index.
    pub instance: i32,
    /// Container id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    /// Docker state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Health, when the image has a health check.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
}

/// One rollout of a Lease's services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRelease {
    /// Sequence number, from 1.
    pub revision: i64,
    /// `metadata.generation` of the spec rolled out.
    pub generation: i64,
    /// Hash of the services' configuration.
    pub config_hash: String,
    /// `Active`, `Superseded`, `Failed` or `RolledBack`.
    pub outcome: String,
    /// Why, when it did not become active.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// Diagnostics gathered when a Lease failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseDiagnostics {
    /// Container (`service-instance`) that failed.
    pub container: String,
    /// Exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Killed by the kernel's OOM killer.
    #[serde(default, skip_serializing_if = "is_default")]
    pub oom_killed: bool,
    /// Docker's error message, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Last log lines (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_log_lines: Vec<String>,
    /// When the failure was diagnosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// A terminal-transition callback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRecord {
    /// Phase reported.
    pub phase: LeasePhase,
    /// `Pending` (in the outbox) or `Delivered`.
    pub state: String,
    /// Attempts so far.
    #[serde(default, skip_serializing_if = "is_default")]
    pub attempts: u32,
    /// Last delivery error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

impl Lease {
    /// The Lease's namespace (`default` when unset).
    pub fn namespace_or_default(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}
