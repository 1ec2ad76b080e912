//! `Stack`: a long-lived set of services, networks and volumes that runs on every selected host.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, EnvVar, HealthcheckSpec, MountSpec, PortSpec, ResourcesSpec, RetryStatus, SecuritySpec, is_default,
};

/// Desired state of a Stack.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Stack",
    plural = "stacks",
    singular = "stack",
    namespaced,
    status = "StackStatus",
    shortname = "stk",
    shortname = "st",
    category = "berth",
    doc = "A long-lived set of containers, networks and volumes that berth keeps running on every selected Docker host.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every service runs as specified on every selected host"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(
        name = "Hosts",
        type_ = "string",
        json_path = ".status.hostsReady",
        description = "Hosts ready / hosts selected"
    ),
    printcolumn(
        name = "Drift",
        type_ = "string",
        json_path = ".status.lastDrift.reason",
        description = "Last drift found",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct StackSpec {
    /// Hosts the Stack runs on. Omitted: the `local` host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostSelection>,
    /// What to do about drift: `Reconcile` (correct it, the default) or `Report` (only record it).
    #[serde(default, skip_serializing_if = "is_default")]
    pub drift_policy: DriftPolicy,
    /// When true, berth changes nothing on any host and the Stack shows `Suspended`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub suspend: bool,
    /// How changed services are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// Networks the Stack owns, created on every selected host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkSpec>,
    /// Named volumes the Stack owns, created on every selected host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// The services (containers) of the Stack.
    pub services: Vec<ServiceSpec>,
}

/// Which hosts run a Stack: every host named, plus every host the selector matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostSelection {
    /// Host names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A label selector over Host objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What a controller does about drift.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DriftPolicy {
    /// Correct drift and record it.
    #[default]
    Reconcile,
    /// Record drift (condition `Drifted`, an event, status detail) and change nothing.
    Report,
}

/// How a Stack's changed services are replaced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `Recreate` (stop the old container, then start the new one; the default) or `StartFirst`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub strategy: RolloutStrategy,
    /// How many replicas of one service are replaced at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<i32>,
    /// How long a new container may take to become healthy (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_seconds: Option<i64>,
    /// Put the previous container back when the new one does not become healthy in time.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auto_rollback: bool,
}

/// Replacement order for a changed container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RolloutStrategy {
    /// Stop and remove the old container, then create the new one.
    #[default]
    Recreate,
    /// Start the new container first and remove the old one once the new one is up. Needs
    /// services without fixed host ports.
    StartFirst,
}

/// A network owned by a Stack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Name within the Stack; the Docker network is `<prefix>_<name>`, where the prefix is the
    /// Stack's name, preceded by `<namespace>.` outside the `default` namespace.
    pub name: String,
    /// No outside connectivity.
    #[serde(default, skip_serializing_if = "is_default")]
    pub internal: bool,
}

/// A named volume owned by a Stack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Name within the Stack; the Docker volume is `<prefix>_<name>` (prefix as for networks).
    pub name: String,
    /// Keep the volume when the Stack is deleted (default true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub retain: bool,
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// When to pull an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum PullPolicy {
    /// Pull on every reconcile that (re)creates a container.
    Always,
    /// Pull only when the image is not on the host (the default).
    #[default]
    IfNotPresent,
    /// Never pull; the image must be on the host.
    Never,
}

/// Docker restart policy of a service's containers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum RestartPolicy {
    /// Docker does not restart the container; berth does, at its next reconcile.
    No,
    /// Docker restarts the container when it exits non-zero.
    OnFailure,
    /// Docker restarts the container unless it was stopped (the default).
    #[default]
    UnlessStopped,
    /// Docker always restarts the container.
    Always,
}

impl RestartPolicy {
    /// Docker's spelling.
    pub fn docker_name(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure => "on-failure",
            Self::UnlessStopped => "unless-stopped",
            Self::Always => "always",
        }
    }
}

/// A service's attachment to one of the Stack's networks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNetwork {
    /// Name of a network in the Stack's `networks`.
    pub name: String,
    /// Extra DNS names of the service on that network (the service name is always one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What a dependency must reach before the dependent service starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DependencyCondition {
    /// The dependency's containers are running.
    #[default]
    Started,
    /// The dependency's containers report healthy (needs a health check).
    Healthy,
}

/// A start-order dependency on another service of the same Stack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Name of the service depended upon.
    pub service: String,
    /// `Started` (default) or `Healthy`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub condition: DependencyCondition,
}

/// Log rotation of Docker's `json-file` driver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// Size of one log file in MiB before it is rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_mb: Option<i64>,
    /// Number of rotated files kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<i64>,
}

/// One service of a Stack: a container image run as `replicas` identical containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service name, a DNS label; containers are named `<prefix>-<service>-<replica>` (prefix as for
    /// networks), replicas counting from 0.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `Always`, `IfNotPresent` (default) or `Never`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pull_policy: PullPolicy,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's command (the entrypoint's arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `user[:group]` the process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Ports, published when `hostPort` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Volume, host-path and tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    /// Networks of the Stack the service joins. Omitted: the Stack's implicit `default` network,
    /// which berth creates when some service joins no declared network (as docker compose does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<ServiceNetwork>,
    /// Container health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckSpec>,
    /// CPU, memory and PID limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Security options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// Docker restart policy (default `UnlessStopped`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart_policy: RestartPolicy,
    /// Number of containers (default 1; 0 stops the service).
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// Services that must be up first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// Seconds between SIGTERM and SIGKILL when a container is stopped (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_seconds: Option<i64>,
    /// Extra labels on the containers (not under `berth.dev/`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Log rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
}

fn default_replicas() -> i32 {
    1
}

/// Lifecycle phase of a Stack, a summary of its conditions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StackPhase {
    /// Accepted, nothing observed yet.
    Pending,
    /// Changes are being applied.
    Progressing,
    /// Every service runs as specified on every selected host.
    Ready,
    /// Something runs, but not everything as specified.
    Degraded,
    /// The Stack cannot be applied as written (a permanent error).
    Failed,
    /// `spec.suspend` is true; nothing is changed.
    Suspended,
    /// The Stack is being removed from its hosts.
    Deleting,
}

impl StackPhase {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Progressing => "Progressing",
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Failed => "Failed",
            Self::Suspended => "Suspended",
            Self::Deleting => "Deleting",
        }
    }
}

/// Observed state of a Stack, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct StackStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StackPhase>,
    /// `Ready`, `Progressing`, `Drifted`, `Degraded`, `Suspended`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Hash of the desired state rendered from the current spec (and referenced secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_hash: Option<String>,
    /// Hash of the desired state last applied successfully on every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// `ready/selected` hosts, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_ready: Option<String>,
    /// Per-host state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<StackHostStatus>,
    /// The last drift found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<DriftRecord>,
    /// Retry state while failing transiently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryStatus>,
    /// Desired-state hash of a configuration that did not become ready and was rolled back;
    /// berth does not try it again until the desired state changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_hash: Option<String>,
}

/// Phase of a Stack on one host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StackHostPhase {
    /// Nothing applied yet.
    Pending,
    /// Changes are being applied.
    Progressing,
    /// Everything runs as specified.
    Ready,
    /// Some containers are not as specified.
    Degraded,
    /// The host cannot be reached.
    Unreachable,
    /// The Stack cannot be applied on this host.
    Failed,
}

/// A Stack's state on one host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackHostStatus {
    /// Host name.
    pub host: String,
    /// Phase on this host.
    pub phase: StackHostPhase,
    /// Why the phase is what it is, when that is not obvious.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// One entry per service replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerStatus>,
}

/// What berth observed of one container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Service name.
    pub service: String,
    /// Replica index.
    pub replica: i32,
    /// Docker container name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Docker container id (empty when the container does not exist).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    /// Image reference.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Image id (`sha256:…`) the container runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// Docker state: `running`, `exited`, `created`, `restarting`, `missing`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a health check.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
    /// Config hash label of the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
    /// Restarts Docker made.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restarts: i64,
    /// Ports published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

/// A port Docker published.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedPort {
    /// Port in the container.
    pub container_port: i32,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// Host port.
    pub host_port: i32,
}

/// A drift finding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftRecord {
    /// 0 spec, 1 desired state, 2 runtime configuration, 3 runtime state.
    pub tier: u8,
    /// What was found, e.g. `ContainerMissing`, `ConfigHashMismatch`, `NotRunning`.
    pub reason: String,
    /// Details for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Host where it was found (empty for tiers 0 and 1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Service concerned, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Whether berth corrected it (false under `driftPolicy: Report`).
    pub corrected: bool,
    /// When it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
}

impl Stack {
    /// The Stack's namespace (`default` when unset).
    pub fn namespace_or_default(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The Stack's name (empty when unset, which admission refuses).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}
