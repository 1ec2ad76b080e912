//! The Docker layer: the [`DockerApi`] trait the controllers use, berth's own request and
//! observation types (so no bollard type leaks out of this module), typed errors, the bollard
//! implementation ([`bollard_impl`]) and an in-memory fake ([`fake`]) for unit and component tests.
//!
//! Architecture invariant: only this module touches bollard. Controllers speak in the types
//! below; the bollard implementation maps them onto the Engine API of the negotiated version
//! (daemons as old as 20.10, API 1.41, work), and the fake keeps them in memory.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;

pub mod bollard_impl;
pub mod fake;

/// Label filter of a listing: every `(key, value)` must match (`value` empty: the key exists).
pub type LabelFilter = Vec<(String, String)>;

/// Why a Docker call failed. Variants are named after what failed; [`DockerError::is_transient`]
/// tells the controllers whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon does not answer (socket missing, connection refused, host down).
    #[error(
        "Docker daemon at {endpoint} is unreachable: {message}; check that dockerd runs and that berth can reach it"
    )]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What the connection attempt said.
        message: String,
    },
    /// The call did not finish in time.
    #[error("Docker call {operation} timed out after {after:?}; the daemon may be overloaded")]
    Timeout {
        /// The call, e.g. `create container web-0`.
        operation: String,
        /// The limit.
        after: Duration,
    },
    /// The object does not exist.
    #[error("{what} not found on the Docker host")]
    NotFound {
        /// e.g. `container shop-web-0`.
        what: String,
    },
    /// The object exists already or is in a state that forbids the call (name in use, port taken).
    #[error("{what}: conflict: {message}")]
    Conflict {
        /// The object.
        what: String,
        /// Docker's message.
        message: String,
    },
    /// The image could not be pulled.
    #[error(
        "pulling image {image} failed: {message}; check the reference, the registry's reachability and credentials"
    )]
    PullFailed {
        /// Reference.
        image: String,
        /// Docker's message.
        message: String,
    },
    /// The daemon has no subnet left for a new network (it answers 404 for this).
    #[error(
        "creating network {network} failed: the Docker daemon has no free address pool left ({message}); every \
         bridge network takes a subnet from dockerd's default-address-pools (about 30 networks with Docker's \
         defaults): remove networks that are no longer needed, or give dockerd larger default-address-pools in \
         daemon.json"
    )]
    AddressPoolsExhausted {
        /// The network that could not be created.
        network: String,
        /// Docker's message.
        message: String,
    },
    /// The endpoint of a Host cannot be used.
    #[error("invalid Docker endpoint {endpoint:?}: {message}")]
    InvalidEndpoint {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// Any other error the daemon returned.
    #[error("Docker call {operation} failed (HTTP {status}): {message}")]
    Api {
        /// The call.
        operation: String,
        /// HTTP status (0 when there was no HTTP answer to report, e.g. an unreadable reply).
        status: u16,
        /// Docker's message.
        message: String,
    },
}

impl DockerError {
    /// Whether retrying later can succeed without anyone changing the spec.
    pub fn is_transient(&self) -> bool {
        match self {
            DockerError::Unreachable { .. } | DockerError::Timeout { .. } | DockerError::PullFailed { .. } => true,
            DockerError::Conflict { .. } => true,
            // Frees up when other networks go; retried with backoff.
            DockerError::AddressPoolsExhausted { .. } => true,
            DockerError::NotFound { .. } => false,
            DockerError::InvalidEndpoint { .. } => false,
            DockerError::Api { status, .. } => *status >= 500,
        }
    }

    /// Whether the daemon could not be reached at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. } | DockerError::Timeout { .. })
    }

    /// Whether the object does not exist (convergent deletes treat this as success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }
}

/// Result of a Docker call.
pub type DockerResult<T> = Result<T, DockerError>;

/// Convergent removal: a stop or remove whose object is already gone has done its job.
pub trait GoneIsDone {
    /// `Ok` for success and for [`DockerError::NotFound`]; other errors unchanged.
    fn gone_is_done(self) -> DockerResult<()>;
}

impl GoneIsDone for DockerResult<()> {
    fn gone_is_done(self) -> DockerResult<()> {
        self.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })
    }
}

/// Facts of a daemon, for Host status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonFacts {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// The API version negotiated with the daemon, e.g. `1.41`.
    pub api_version: String,
    /// `linux`.
    pub os: String,
    /// `x86_64`.
    pub arch: String,
    /// CPUs.
    pub cpus: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Daemon host name.
    pub name: String,
}

/// A port mapping of a container to create.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortMapping {
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address (empty: all).
    pub host_ip: String,
    /// `None`: exposed only; `Some(0)`: published on a random port; `Some(p)`: on port `p`.
    pub host_port: Option<u16>,
}

/// A mount of a container to create.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mount {
    /// A named volume.
    Volume {
        /// Volume name.
        name: String,
        /// Path in the container.
        target: String,
        /// Read-only.
        read_only: bool,
    },
    /// A bind mount of a host path.
    Bind {
        /// Host path.
        source: String,
        /// Path in the container.
        target: String,
        /// Read-only.
        read_only: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Path in the container.
        target: String,
        /// Size limit in bytes.
        size_bytes: Option<i64>,
        /// Mount options as Docker's `--tmpfs` takes them besides the size (e.g. `noexec,nosuid`).
        options: Option<String>,
    },
}

/// A network a container joins, with its DNS aliases there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetworkJoin {
    /// Network name.
    pub network: String,
    /// Aliases.
    pub aliases: Vec<String>,
}

/// A container health check (durations in seconds; `None`: Docker's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Interval.
    pub interval_seconds: Option<i64>,
    /// Timeout.
    pub timeout_seconds: Option<i64>,
    /// Retries.
    pub retries: Option<i64>,
    /// Start period.
    pub start_period_seconds: Option<i64>,
}

/// Everything needed to create a container. The controllers build it (from a rendered Stack or
/// a Lease); the bollard implementation maps it onto `ContainerCreateBody` + `HostConfig`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// Command override.
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries. Never logged.
    pub env: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// `user[:group]`.
    pub user: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<PortMapping>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Networks; the first is joined at creation, the others are connected before start.
    pub networks: Vec<NetworkJoin>,
    /// Health check.
    pub healthcheck: Option<Healthcheck>,
    /// CPU limit in nano-CPUs.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Memory + swap in bytes (equal to `memory_bytes`: no swap).
    pub memory_swap_bytes: Option<i64>,
    /// PID limit.
    pub pids_limit: Option<i64>,
    /// Read-only root filesystem.
    pub read_only_root_filesystem: bool,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    pub cap_drop: Vec<String>,
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
    /// Privileged.
    pub privileged: bool,
    /// `no`, `on-failure`, `unless-stopped`, `always`.
    pub restart_policy: String,
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub stop_timeout_seconds: Option<i64>,
    /// `json-file` rotation: max size in MiB and max files.
    pub log_max_size_mb: Option<i64>,
    /// Number of rotated log files.
    pub log_max_files: Option<i64>,
    /// Disk quota of the writable layer in bytes (`storage-opt size`; only some storage drivers
    /// support it: the implementation skips it where the daemon cannot apply it and says so).
    pub storage_size_bytes: Option<i64>,
}

/// A container's process state, as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead.
    Dead,
}

impl ContainerState {
    /// Parses Docker's spelling (`running`, `exited`, …); unknown states count as `Dead`.
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "exited" => Self::Exited,
            _ => Self::Dead,
        }
    }

    /// Docker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
        }
    }
}

/// Health of a container with a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Before the first check passes.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

impl HealthState {
    /// Docker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// A port Docker published for a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
}

/// A container as one listing shows it (no per-container call needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Id.
    pub id: String,
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// Image reference it was created from.
    pub image: String,
    /// Image id (`sha256:…`).
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// State.
    pub state: ContainerState,
    /// Health, parsed from the listing's status text (`Up 3 minutes (healthy)`).
    pub health: Option<HealthState>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
}

/// A container as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDetails {
    /// The listing's facts.
    pub summary: ContainerSummary,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// Docker's error text for the last start, if any.
    pub error: String,
    /// Restarts Docker made.
    pub restart_count: i64,
    /// Start time (RFC 3339) of the current or last run.
    pub started_at: Option<String>,
    /// End time (RFC 3339) of the last run.
    pub finished_at: Option<String>,
    /// Networks joined, by name, with their aliases.
    pub networks: Vec<NetworkJoin>,
}

/// A network as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Internal (no outside connectivity).
    pub internal: bool,
    /// Creation time (RFC 3339), when Docker reports it.
    pub created: Option<String>,
}

/// A network to create (bridge driver).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSpec {
    /// Name.
    pub name: String,
    /// Internal.
    pub internal: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A volume as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSummary {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time (RFC 3339), when Docker reports it.
    pub created: Option<String>,
}

/// A volume to create (local driver).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSpec {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// An image on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image id (`sha256:…`).
    pub id: String,
    /// Repo digests, if the image came from a registry.
    pub repo_digests: Vec<String>,
    /// Health check declared by the image, if any.
    pub has_healthcheck: bool,
}

/// Progress of an image pull.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullProgress {
    /// Docker's status line, e.g. `Downloading`.
    pub status: String,
    /// Layer id, if the line is about a layer.
    pub layer: Option<String>,
    /// Bytes done of the layer.
    pub current: Option<i64>,
    /// Bytes of the layer.
    pub total: Option<i64>,
}

/// Receives pull progress. Must not block.
pub type ProgressFn<'a> = &'a (dyn Fn(&PullProgress) + Send + Sync);

/// A Docker event (filtered to berth's labels by the caller's filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEvent {
    /// `container`, `network`, `volume`, …
    pub kind: String,
    /// `die`, `destroy`, `start`, `oom`, `health_status: unhealthy`, …
    pub action: String,
    /// Id of the object.
    pub id: String,
    /// Attributes, including the object's labels and `name`.
    pub attributes: BTreeMap<String, String>,
    /// Unix time in nanoseconds.
    pub time_nanos: i64,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Stream.
    pub stream: LogStream,
    /// Timestamp (RFC 3339 with nanoseconds), when asked for.
    pub timestamp: Option<String>,
    /// The text, without the trailing newline.
    pub text: String,
}

/// Which log lines to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Keep streaming new lines.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
    /// Only lines since this Unix time (seconds).
    pub since: Option<i64>,
    /// Include timestamps.
    pub timestamps: bool,
}

/// What the controllers need from one Docker daemon. Object-safe: a Host's connection is an
/// `Arc<dyn DockerApi>`. Every call has a timeout in the real implementation; removal calls
/// return [`DockerError::NotFound`] when the object is already gone (callers that converge treat
/// that as success). Ids and names are accepted wherever Docker accepts either.
#[async_trait::async_trait]
pub trait DockerApi: Send + Sync + 'static {
    /// The endpoint, for messages (`unix:///var/run/docker.sock`, `tcp://10.0.0.5:2376`).
    fn endpoint(&self) -> &str;

    /// Checks that the daemon answers.
    async fn ping(&self) -> DockerResult<()>;
    /// Daemon facts (version, negotiated API version, OS, CPUs, memory).
    async fn info(&self) -> DockerResult<DaemonFacts>;

    /// All containers (running or not) carrying every label of `labels`.
    async fn list_containers(&self, labels: &LabelFilter) -> DockerResult<Vec<ContainerSummary>>;
    /// One container.
    async fn inspect_container(&self, id: &str) -> DockerResult<ContainerDetails>;
    /// Creates a container (joined to its first network, connected to the others) and returns
    /// its id. Does not start it. A name already in use is [`DockerError::Conflict`].
    async fn create_container(&self, spec: &ContainerSpec) -> DockerResult<String>;
    /// Starts a container.
    async fn start_container(&self, id: &str) -> DockerResult<()>;
    /// Stops a container, killing it after `timeout_seconds` (default: its own stop timeout).
    async fn stop_container(&self, id: &str, timeout_seconds: Option<i64>) -> DockerResult<()>;
    /// Restarts a container.
    async fn restart_container(&self, id: &str, timeout_seconds: Option<i64>) -> DockerResult<()>;
    /// Kills a container with a signal (`SIGKILL` when `None`).
    async fn kill_container(&self, id: &str, signal: Option<&str>) -> DockerResult<()>;
    /// Removes a container (`force`: even when running). Anonymous volumes are removed with it.
    async fn remove_container(&self, id: &str, force: bool) -> DockerResult<()>;
    /// Renames a container.
    async fn rename_container(&self, id: &str, new_name: &str) -> DockerResult<()>;

    /// Networks carrying every label of `labels`.
    async fn list_networks(&self, labels: &LabelFilter) -> DockerResult<Vec<NetworkSummary>>;
    /// Creates a bridge network and returns its id.
    async fn create_network(&self, spec: &NetworkSpec) -> DockerResult<String>;
    /// Removes a network.
    async fn remove_network(&self, id: &str) -> DockerResult<()>;
    /// Connects a container to a network with aliases.
    async fn connect_network(&self, network: &str, container: &str, aliases: &[String]) -> DockerResult<()>;
    /// Disconnects a container from a network.
    async fn disconnect_network(&self, network: &str, container: &str) -> DockerResult<()>;

    /// Volumes carrying every label of `labels`.
    async fn list_volumes(&self, labels: &LabelFilter) -> DockerResult<Vec<VolumeSummary>>;
    /// Creates a volume (idempotent for the same name and labels, as Docker is).
    async fn create_volume(&self, spec: &VolumeSpec) -> DockerResult<()>;
    /// Removes a volume. A volume in use is [`DockerError::Conflict`].
    async fn remove_volume(&self, name: &str) -> DockerResult<()>;

    /// The image, when it is on the host (`Ok(None)` when it is not).
    async fn inspect_image(&self, reference: &str) -> DockerResult<Option<ImageInfo>>;
    /// Pulls an image, reporting progress; fails with [`DockerError::PullFailed`].
    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> DockerResult<()>;

    /// A tar archive of `path` in a container (running or stopped; its volumes included).
    async fn download_archive(&self, container: &str, path: &str) -> DockerResult<bytes::Bytes>;
    /// Extracts a tar archive into `path` of a container (running or stopped).
    async fn upload_archive(&self, container: &str, path: &str, tar: bytes::Bytes) -> DockerResult<()>;

    /// Events from now on for objects carrying every label of `labels`. The stream ends (or
    /// yields an error) when the connection drops; the caller reconnects.
    fn events(&self, labels: &LabelFilter) -> BoxStream<'static, DockerResult<DockerEvent>>;
    /// A container's log.
    fn logs(&self, id: &str, options: &LogOptions) -> BoxStream<'static, DockerResult<LogLine>>;
}

/// Connects to Docker endpoints; the Host controller holds one connection per Host. The fake
/// connector serves tests with in-memory daemons.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    /// A client for `endpoint` (`unix://…`, `tcp://…`, `ssh://…`), with TLS material when given.
    /// Connecting negotiates the API version, so this fails when the daemon does not answer.
    async fn connect(&self, endpoint: &str, tls: Option<&TlsFiles>) -> DockerResult<std::sync::Arc<dyn DockerApi>>;
}

/// TLS material of a `tcp://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_file: Option<String>,
    /// Client certificate (PEM).
    pub cert_file: Option<String>,
    /// Client key (PEM).
    pub key_file: Option<String>,
}

/// The endpoint of the local daemon: `DOCKER_HOST` when set, else the default socket.
pub fn local_endpoint() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}
