//! Types shared by more than one kind: conditions, environment, ports, mounts, health checks,
//! resource limits and security options. Each is defined once here so that a Stack service and a
//! Lease service mean the same thing by `ports` or `env`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label every object berth creates on a Docker host carries.
pub const LABEL_MANAGED_BY: &str = "berth.dev/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "berth";
/// Which berth installation created the object (two installations may share a daemon).
pub const LABEL_INSTANCE: &str = "berth.dev/instance";
/// Kind of the owning resource (`Stack` or `Lease`).
pub const LABEL_OWNER_KIND: &str = "berth.dev/owner-kind";
/// Namespace of the owning resource.
pub const LABEL_OWNER_NAMESPACE: &str = "berth.dev/owner-namespace";
/// Name of the owning resource.
pub const LABEL_OWNER_NAME: &str = "berth.dev/owner-name";
/// UID of the owning resource: a recreated Stack of the same name is a different owner.
pub const LABEL_OWNER_UID: &str = "berth.dev/owner-uid";
/// Service name within the owner.
pub const LABEL_SERVICE: &str = "berth.dev/service";
/// Replica (or instance) index within the service.
pub const LABEL_REPLICA: &str = "berth.dev/replica";
/// Config hash of the container as it was created.
pub const LABEL_CONFIG_HASH: &str = "berth.dev/config-hash";
/// Tenant of a Lease's containers, volumes and tenant network.
pub const LABEL_TENANT: &str = "berth.dev/tenant";
/// SKU of a Lease's containers (placement rebuilds allocations from it after a restart).
pub const LABEL_SKU: &str = "berth.dev/sku";
/// Release (revision) of a Lease a container belongs to.
pub const LABEL_RELEASE: &str = "berth.dev/release";
/// Logical volume name within a Lease service.
pub const LABEL_VOLUME: &str = "berth.dev/volume";
/// Objects whose lifecycle is not tied to one owner object: [`ROLE_TENANT_NETWORK`] and
/// [`ROLE_RETAINED_VOLUME`]. The Lease controller removes them itself; orphan collection
/// leaves them alone.
pub const LABEL_ROLE: &str = "berth.dev/role";
/// [`LABEL_ROLE`] of the bridge network shared by one tenant's Leases on a host.
pub const ROLE_TENANT_NETWORK: &str = "tenant-network";
/// [`LABEL_ROLE`] of a closed Lease's volume kept for its retention grace period.
pub const ROLE_RETAINED_VOLUME: &str = "retained-volume";
/// Until when a retained volume is kept (Unix seconds); the reaper removes it afterwards.
pub const LABEL_RETAINED_UNTIL: &str = "berth.dev/retained-until";
/// Prefix reserved for berth's own labels; users may not set labels under it.
pub const RESERVED_LABEL_PREFIX: &str = "berth.dev/";

/// Status of a condition, as in Kubernetes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell (yet).
    #[default]
    Unknown,
}

impl ConditionStatus {
    /// `True` when `b`, else `False`.
    pub fn from_bool(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// One observation of an aspect of an object's state, with the reason it is so.
///
/// Same shape as `metav1.Condition`, so `kubectl wait --for=condition=Ready` works.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase word saying why the condition has this status.
    #[serde(default)]
    pub reason: String,
    /// A human-readable explanation; says what to do next when something is wrong.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition with the given type, status, reason and message and no timestamps.
    pub fn new(type_: &str, status: ConditionStatus, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }
}

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Insert or replace a condition, keeping `lastTransitionTime` when the status did not change.
///
/// `now` is stamped only on a status change (or a new condition), as Kubernetes does, so that
/// "Ready for 3 days" stays true across reconciles.
pub fn set_condition(conditions: &mut Vec<Condition>, mut cond: Condition, now: Time) {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            cond.last_transition_time = if existing.status == cond.status {
                existing.last_transition_time.clone().or(Some(now))
            } else {
                Some(now)
            };
            *existing = cond;
        }
        None => {
            cond.last_transition_time = Some(now);
            conditions.push(cond);
        }
    }
}

/// Transport protocol of a port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The wire (and Docker) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A container port, optionally published on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// Port inside the container, 1–65535.
    pub container_port: i32,
    /// Port on the host. Omitted or 0: Docker picks a free one (only when published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
    /// Host address to bind the published port to (default: all addresses).
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// Reference to one key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret's `data`.
    pub key: String,
    /// When true, a missing Secret or key leaves the variable unset instead of failing.
    #[serde(default, skip_serializing_if = "is_default")]
    pub optional: bool,
}

/// Where an environment variable's value comes from when it is not written inline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A key of a ConfigMap in the object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<SecretKeySelector>,
}

/// An environment variable: exactly one of `value` and `valueFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value taken from a Secret or ConfigMap at reconcile time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// A tmpfs mount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TmpfsSpec {
    /// Size limit in MiB (omitted: Docker's default, half the host's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<i64>,
}

/// A filesystem mount: exactly one of `volume`, `hostPath` and `tmpfs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub mount_path: String,
    /// Name of a volume declared in the Stack's `volumes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Absolute path on the host (admitted only under the operator's `stacks.allowedHostPaths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// An in-memory filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsSpec>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

/// A container health check, mapped onto Docker's `HEALTHCHECK`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthcheckSpec {
    /// `["CMD", arg…]`, `["CMD-SHELL", "command"]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Seconds between checks (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i64>,
    /// Seconds before a check counts as failed (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Consecutive failures before the container is unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Seconds of start-up during which failures do not count (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_seconds: Option<i64>,
}

/// Resource limits of a container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// CPU limit in cores (e.g. `1.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

/// Security options of a container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only_root_filesystem: bool,
    /// Capabilities to drop (`ALL` drops every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Capabilities to add back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Set `no-new-privileges`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub no_new_privileges: bool,
    /// Run privileged. Refused unless the operator allows it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub privileged: bool,
}

/// Retry bookkeeping shown in status while an object is failing transiently.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetryStatus {
    /// Consecutive failed attempts since the last success.
    pub count: u32,
    /// The last error, as a person should read it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// When the controller will try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Time>,
}

/// `true` when `v` equals its type's default; used to keep defaults off the wire.
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
