//! The real Docker layer: [`BollardDocker`] implements [`DockerApi`] over bollard, and
//! [`BollardConnector`] opens one per Host. This file owns everything about talking to a daemon:
//! endpoints (`unix://`, `tcp://` with or without TLS, `ssh://`), API version negotiation, per-call
//! timeouts, the mapping of berth's request types onto the Engine API and of the answers back, and
//! the translation of bollard's errors into [`DockerError`].
//!
//! Every request is sent with the API version negotiated at connect time, and every field this
//! file sets exists in API 1.41 (Docker 20.10), so the oldest supported daemon never sees a field
//! it does not know; `body_uses_only_api_1_41_fields` checks that for container creation.
//! Environment values are never logged and never put into errors: Docker's messages are scrubbed
//! of them before they become a [`DockerError`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, EventMessage, HealthConfig, HostConfig, HostConfigLogConfig,
    Mount as BollardMount, MountType, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    EventsOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{
    Connector, ContainerDetails, ContainerSpec, ContainerState, ContainerSummary, DaemonFacts, DockerApi, DockerError,
    DockerEvent, DockerResult, HealthState, ImageInfo, LabelFilter, LogLine, LogOptions, LogStream, Mount, NetworkJoin,
    NetworkSpec, NetworkSummary, ProgressFn, PublishedPort, PullProgress, TlsFiles, VolumeSpec, VolumeSummary,
};

/// The oldest Engine API berth speaks (Docker 20.10).
const MIN_API: (usize, usize) = (1, 41);

/// How long calls may take. Streams (pull, events, logs with `follow`) have no per-call limit
/// once they answer; the pull has its own overall limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Ordinary calls (and the time until a stream answers).
    pub call: Duration,
    /// A whole image pull.
    pub pull: Duration,
    /// A whole archive download or upload (volume contents can be large).
    pub archive: Duration,
    /// How often an open event stream checks that the daemon still answers, so a silently
    /// dropped connection (a cut network) ends the stream instead of leaving it idle forever.
    pub event_liveness: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            call: Duration::from_secs(30),
            pull: Duration::from_secs(30 * 60),
            archive: Duration::from_secs(10 * 60),
            event_liveness: Duration::from_secs(15),
        }
    }
}

/// Whether the daemon can apply `StorageOpt size` (a disk quota on the writable layer).
#[derive(Debug, Clone, PartialEq, Eq)]
enum StorageQuota {
    Supported,
    Unsupported { reason: String },
}

/// A connection to one Docker daemon through bollard.
pub struct BollardDocker {
    docker: Docker,
    endpoint: String,
    timeouts: Timeouts,
    api_version: (usize, usize),
    storage_quota: tokio::sync::OnceCell<StorageQuota>,
    /// Set once a daemon refused a storage quota we thought it could apply.
    storage_quota_refused: AtomicBool,
    storage_quota_logged: AtomicBool,
    /// Serializes network creation on this connection: before API 1.44 the duplicate-name check
    /// is a listing followed by a create, and two concurrent creates (Leases of one tenant
    /// provisioned at once) would otherwise both pass it and make two networks of one name.
    network_create: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for BollardDocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BollardDocker")
            .field("endpoint", &self.endpoint)
            .field("api_version", &self.api_version_string())
            .finish()
    }
}

/// The transport an endpoint asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    Unix { path: String },
    Tcp { addr: String },
    Ssh { addr: String },
}

fn parse_endpoint(endpoint: &str) -> DockerResult<Transport> {
    let invalid =
        |message: &str| DockerError::InvalidEndpoint { endpoint: endpoint.to_string(), message: message.into() };
    if let Some(path) = endpoint.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(invalid("unix:// needs a socket path, e.g. unix:///var/run/docker.sock"));
        }
        return Ok(Transport::Unix { path: path.to_string() });
    }
    if endpoint.starts_with('/') {
        return Ok(Transport::Unix { path: endpoint.to_string() });
    }
    for scheme in ["tcp://", "http://", "https://"] {
        if let Some(rest) = endpoint.strip_prefix(scheme) {
            let addr = rest.trim_end_matches('/');
            if addr.is_empty() {
                return Err(invalid("tcp:// needs host:port, e.g. tcp://10.0.0.5:2376"));
            }
            return Ok(Transport::Tcp { addr: addr.to_string() });
        }
    }
    if let Some(rest) = endpoint.strip_prefix("ssh://") {
        if rest.is_empty() {
            return Err(invalid("ssh:// needs user@host, e.g. ssh://deploy@10.0.0.5"));
        }
        // bollard 0.21 hands `user@host:port` to ssh as the destination, where the port is not
        // understood; ssh's own configuration can carry it.
        let host = rest.split('/').next().unwrap_or(rest);
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if host.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid(
                "ssh:// endpoints cannot carry a port; add a Host entry with HostName and Port to the ssh \
                 configuration of the user running berth (~/.ssh/config) and use ssh://user@that-host",
            ));
        }
        return Ok(Transport::Ssh { addr: endpoint.to_string() });
    }
    Err(invalid("unsupported scheme; use unix:///path/to/docker.sock, tcp://host:port or ssh://user@host"))
}

fn readable_file(endpoint: &str, what: &str, path: &str) -> DockerResult<()> {
    std::fs::metadata(path).map(|_| ()).map_err(|e| DockerError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        message: format!("cannot read the TLS {what} file {path}: {e}"),
    })
}

impl BollardDocker {
    /// Connects with the default [`Timeouts`] and negotiates the API version.
    pub async fn connect(endpoint: &str, tls: Option<&TlsFiles>) -> DockerResult<Self> {
        Self::connect_with(endpoint, tls, Timeouts::default()).await
    }

    /// Connects to `endpoint` and negotiates the API version; fails when the daemon does not
    /// answer or speaks an API older than 1.41.
    pub async fn connect_with(endpoint: &str, tls: Option<&TlsFiles>, timeouts: Timeouts) -> DockerResult<Self> {
        let transport = parse_endpoint(endpoint)?;
        // bollard's own limit covers the time until a response starts; keep it a little above
        // ours so that ours (which knows the operation) fires first.
        let header_secs = timeouts.call.as_secs().max(1) + 5;
        let version = bollard::API_DEFAULT_VERSION;
        let unreachable =
            |e: BollardError| DockerError::Unreachable { endpoint: endpoint.to_string(), message: error_chain(&e) };
        let docker = match transport {
            Transport::Unix { path } => Docker::connect_with_unix(&path, header_secs, version).map_err(unreachable)?,
            Transport::Tcp { addr } => {
                match tls.filter(|t| t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some()) {
                    None => Docker::connect_with_http(&addr, header_secs, version).map_err(unreachable)?,
                    Some(tls) => {
                        let (Some(ca), Some(cert), Some(key)) = (&tls.ca_file, &tls.cert_file, &tls.key_file) else {
                            return Err(DockerError::InvalidEndpoint {
                                endpoint: endpoint.to_string(),
                                message: "TLS needs all three files: CA certificate, client certificate and client key"
                                    .into(),
                            });
                        };
                        readable_file(endpoint, "CA certificate", ca)?;
                        readable_file(endpoint, "client certificate", cert)?;
                        readable_file(endpoint, "client key", key)?;
                        // Several crates in the process enable rustls; pick ring explicitly so the
                        // TLS client never depends on which provider happens to be installed.
                        let _ = rustls::crypto::ring::default_provider().install_default();
                        Docker::connect_with_ssl(
                            &addr,
                            Path::new(key),
                            Path::new(cert),
                            Path::new(ca),
                            header_secs,
                            version,
                        )
                        .map_err(|e| DockerError::InvalidEndpoint {
                            endpoint: endpoint.to_string(),
                            message: error_chain(&e),
                        })?
                    }
                }
            }
            Transport::Ssh { addr } => {
                if tls.is_some_and(|t| t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some()) {
                    return Err(DockerError::InvalidEndpoint {
                        endpoint: endpoint.to_string(),
                        message: "TLS files apply to tcp:// endpoints only; ssh:// uses the ssh client's keys".into(),
                    });
                }
                Docker::connect_with_ssh(&addr, header_secs, version, None).map_err(unreachable)?
            }
        };
        let negotiated = match tokio::time::timeout(timeouts.call, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(BollardError::DockerResponseServerError { status_code: 400, message }))
                if message.contains("HTTPS server") =>
            {
                return Err(DockerError::InvalidEndpoint {
                    endpoint: endpoint.to_string(),
                    message: "the daemon speaks TLS: give the CA certificate, client certificate and client key files"
                        .into(),
                });
            }
            Ok(Err(e)) => return Err(map_error(endpoint, "negotiate API version with", "daemon", timeouts.call, e)),
            Err(_) => {
                return Err(DockerError::Timeout {
                    operation: "negotiate API version with daemon".into(),
                    after: timeouts.call,
                });
            }
        };
        let v = negotiated.client_version();
        let api_version = (v.major_version, v.minor_version);
        if api_version < MIN_API {
            return Err(DockerError::InvalidEndpoint {
                endpoint: endpoint.to_string(),
                message: format!(
                    "the daemon speaks Docker API {}.{}, older than {}.{} (Docker 20.10), the oldest berth supports; upgrade Docker on that host",
                    api_version.0, api_version.1, MIN_API.0, MIN_API.1
                ),
            });
        }
        Ok(Self {
            docker: negotiated,
            endpoint: endpoint.to_string(),
            timeouts,
            api_version,
            storage_quota: tokio::sync::OnceCell::new(),
            storage_quota_refused: AtomicBool::new(false),
            storage_quota_logged: AtomicBool::new(false),
            network_create: tokio::sync::Mutex::new(()),
        })
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version_string(&self) -> String {
        format!("{}.{}", self.api_version.0, self.api_version.1)
    }

    fn api_at_least(&self, major: usize, minor: usize) -> bool {
        self.api_version >= (major, minor)
    }

    /// Runs one call under `limit`, mapping its error onto [`DockerError`] for `verb what`.
    async fn call<T>(
        &self,
        verb: &str,
        what: &str,
        limit: Duration,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> DockerResult<T> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(&self.endpoint, verb, what, limit, e)),
            Err(_) => Err(DockerError::Timeout { operation: format!("{verb} {what}"), after: limit }),
        }
    }

    /// A client whose response-header limit fits a call that legitimately takes `limit`.
    fn docker_for(&self, limit: Duration) -> Docker {
        self.docker.clone().with_timeout(limit + Duration::from_secs(5))
    }

    async fn storage_quota(&self) -> DockerResult<StorageQuota> {
        if self.storage_quota_refused.load(Ordering::Relaxed) {
            return Ok(StorageQuota::Unsupported {
                reason: "the daemon refused a storage-opt size earlier (overlay2 needs xfs mounted with pquota)".into(),
            });
        }
        let quota = self
            .storage_quota
            .get_or_try_init(|| async {
                let info = self.call("read", "daemon info", self.timeouts.call, self.docker.info()).await?;
                let driver = info.driver.unwrap_or_default();
                let backing = info
                    .driver_status
                    .unwrap_or_default()
                    .into_iter()
                    .find(|kv| kv.first().is_some_and(|k| k == "Backing Filesystem"))
                    .and_then(|kv| kv.get(1).cloned())
                    .unwrap_or_default();
                Ok::<_, DockerError>(storage_quota_support(&driver, &backing))
            })
            .await?;
        Ok(quota.clone())
    }

    fn log_quota_skipped_once(&self, reason: &str) {
        if !self.storage_quota_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                endpoint = %self.endpoint,
                "not applying container disk quotas (storageSizeBytes) on this host: {reason}"
            );
        }
    }
}

/// Whether a storage driver can apply `StorageOpt size`. overlay2 can only on xfs mounted with
/// `pquota`, which `docker info` does not show: on xfs we try, and fall back when refused.
fn storage_quota_support(driver: &str, backing_filesystem: &str) -> StorageQuota {
    match driver {
        "overlay2" if backing_filesystem == "xfs" => StorageQuota::Supported,
        "overlay2" => StorageQuota::Unsupported {
            reason: format!(
                "storage driver overlay2 on {} supports quotas only on xfs mounted with pquota",
                if backing_filesystem.is_empty() { "an unknown filesystem" } else { backing_filesystem }
            ),
        },
        "devicemapper" | "btrfs" | "zfs" | "windowsfilter" => StorageQuota::Supported,
        other => StorageQuota::Unsupported { reason: format!("storage driver {other} does not support quotas") },
    }
}

/// The causes of an error, outermost first (hyper's top-level messages alone say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What a 404 is about: Docker's message may name another object than the call's (creating a
/// container whose image or network is missing).
fn not_found_what(default_what: &str, message: &str) -> String {
    let m = message.trim();
    if let Some(rest) = m.strip_prefix("No such image:") {
        return format!("image {}", rest.trim());
    }
    if let Some(rest) = m.strip_prefix("No such container:") {
        return format!("container {}", rest.trim());
    }
    if let Some(rest) = m.strip_prefix("network ")
        && let Some(name) = rest.strip_suffix(" not found")
    {
        return format!("network {name}");
    }
    if m.contains("Could not find the file") || m.contains("no such file or directory") {
        return format!("{default_what} ({m})");
    }
    default_what.to_string()
}

/// Maps a bollard error of the call `verb what` onto berth's error.
fn map_error(endpoint: &str, verb: &str, what: &str, limit: Duration, e: BollardError) -> DockerError {
    let operation = format!("{verb} {what}");
    match e {
        // Docker 20.10 answers 404 when no subnet is left for a new network: not a missing object.
        BollardError::DockerResponseServerError { message, .. } if is_address_pool_exhaustion(&message) => {
            let network = what.strip_prefix("network ").unwrap_or(what).to_string();
            DockerError::AddressPoolsExhausted { network, message }
        }
        BollardError::DockerResponseServerError { status_code: 404, message } => {
            DockerError::NotFound { what: not_found_what(what, &message) }
        }
        BollardError::DockerResponseServerError { status_code: 409, message } => {
            DockerError::Conflict { what: what.to_string(), message }
        }
        BollardError::DockerResponseServerError { status_code, message } => {
            DockerError::Api { operation, status: status_code, message }
        }
        BollardError::RequestTimeoutError => DockerError::Timeout { operation, after: limit },
        e @ (BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. }
        | BollardError::SocketNotFoundError(_)) => {
            let message = error_chain(&e);
            if is_tls_refusal(&message) {
                // The daemon answered but one side refused the other's certificate: waiting will
                // not help, the TLS files must change.
                DockerError::InvalidEndpoint {
                    endpoint: endpoint.to_string(),
                    message: format!(
                        "TLS handshake failed: {message}; check the CA, client certificate and key files of this host"
                    ),
                }
            } else {
                DockerError::Unreachable { endpoint: endpoint.to_string(), message }
            }
        }
        e @ (BollardError::CertPathError { .. }
        | BollardError::CertMultipleKeys { .. }
        | BollardError::CertParseError { .. }
        | BollardError::NoNativeCertsError { .. }
        | BollardError::LoadNativeCertsErrors { .. }
        | BollardError::UnsupportedURISchemeError { .. }) => {
            DockerError::InvalidEndpoint { endpoint: endpoint.to_string(), message: error_chain(&e) }
        }
        // Anything else means the answer could not be read or the request not built: no HTTP
        // status to report.
        other => DockerError::Api { operation, status: 0, message: error_chain(&other) },
    }
}

/// Whether Docker's message says that no address pool is left for a new network.
fn is_address_pool_exhaustion(message: &str) -> bool {
    message.contains("could not find an available, non-overlapping IPv4 address pool")
        || message.contains("could not find an available, non-overlapping IPv6 address pool")
}

/// Whether a transport error is rustls refusing a certificate (ours or the daemon's).
fn is_tls_refusal(message: &str) -> bool {
    message.contains("invalid peer certificate") || message.contains("received fatal alert")
}

/// Removes environment values from a message Docker returned for a create call (Docker quotes
/// invalid entries verbatim). Entries are replaced whole, then values long enough to be
/// recognisable.
fn scrub_env(message: &str, env: &[String]) -> String {
    let mut out = message.to_string();
    for entry in env {
        if let Some((key, value)) = entry.split_once('=') {
            if !value.is_empty() {
                out = out.replace(entry.as_str(), &format!("{key}=<redacted>"));
            }
            if value.len() >= 3 {
                out = out.replace(value, "<redacted>");
            }
        }
    }
    out
}

fn scrub_error(e: DockerError, env: &[String]) -> DockerError {
    match e {
        DockerError::Api { operation, status, message } => {
            DockerError::Api { operation, status, message: scrub_env(&message, env) }
        }
        DockerError::Conflict { what, message } => DockerError::Conflict { what, message: scrub_env(&message, env) },
        DockerError::NotFound { what } => DockerError::NotFound { what: scrub_env(&what, env) },
        other => other,
    }
}

/// Docker's label filter: `k=v`, or `k` alone when any value will do.
fn label_filters(labels: &LabelFilter) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        let values =
            labels.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect::<Vec<_>>();
        filters.insert("label".to_string(), values);
    }
    filters
}

/// Health as the listing's status text shows it (`Up 2 minutes (healthy)`).
fn parse_health_from_status(status: &str) -> Option<HealthState> {
    if status.contains("(health: starting)") {
        Some(HealthState::Starting)
    } else if status.contains("(unhealthy)") {
        Some(HealthState::Unhealthy)
    } else if status.contains("(healthy)") {
        Some(HealthState::Healthy)
    } else {
        None
    }
}

fn parse_health_status(status: &str) -> Option<HealthState> {
    match status {
        "starting" => Some(HealthState::Starting),
        "healthy" => Some(HealthState::Healthy),
        "unhealthy" => Some(HealthState::Unhealthy),
        _ => None,
    }
}

fn to_btree(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

fn to_hash(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// RFC 3339 → Unix seconds (0 when Docker sent nothing usable).
fn rfc3339_to_unix(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().map(|t| t.as_second()).unwrap_or(0)
}

/// Docker reports times never reached as the zero time.
fn meaningful_time(t: Option<String>) -> Option<String> {
    t.filter(|s| !s.is_empty() && !s.starts_with("0001-01-01"))
}

fn port_key(container_port: u16, protocol: &str) -> String {
    let protocol = if protocol.is_empty() { "tcp" } else { protocol };
    format!("{container_port}/{protocol}")
}

/// `80/tcp` → (80, "tcp").
fn parse_port_key(key: &str) -> Option<(u16, String)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, protocol.to_string()))
}

fn restart_policy(name: &str) -> Result<Option<RestartPolicy>, String> {
    let name = match name {
        "" => return Ok(None),
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => return Err(format!("unknown restart policy {other:?}; use no, on-failure, unless-stopped or always")),
    };
    Ok(Some(RestartPolicy { name: Some(name), maximum_retry_count: None }))
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

fn healthcheck(h: &super::Healthcheck) -> HealthConfig {
    let nanos = |s: Option<i64>| s.map(|s| s.saturating_mul(NANOS_PER_SECOND));
    HealthConfig {
        test: Some(h.test.clone()),
        interval: nanos(h.interval_seconds),
        timeout: nanos(h.timeout_seconds),
        retries: h.retries,
        start_period: nanos(h.start_period_seconds),
        // StartInterval needs API 1.44: never sent.
        start_interval: None,
    }
}

/// The create body for `spec`. Pure, so what berth sends can be checked without a daemon.
/// Tmpfs mounts go into `HostConfig.Tmpfs` (every API version takes size and options there; the
/// `Mount` form takes options only from API 1.46 on).
fn container_body(spec: &ContainerSpec, with_storage_quota: bool) -> Result<ContainerCreateBody, String> {
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = port_key(p.container_port, &p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        if let Some(host_port) = p.host_port {
            let binding = PortBinding {
                host_ip: if p.host_ip.is_empty() { None } else { Some(p.host_ip.clone()) },
                // An empty host port asks Docker for a random one.
                host_port: Some(if host_port == 0 { String::new() } else { host_port.to_string() }),
            };
            bindings.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(binding);
        }
    }

    let mut mounts = Vec::new();
    let mut tmpfs = HashMap::new();
    for m in &spec.mounts {
        match m {
            Mount::Volume { name, target, read_only } => mounts.push(BollardMount {
                target: Some(target.clone()),
                source: Some(name.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(*read_only),
                ..Default::default()
            }),
            Mount::Bind { source, target, read_only } => mounts.push(BollardMount {
                target: Some(target.clone()),
                source: Some(source.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(*read_only),
                ..Default::default()
            }),
            Mount::Tmpfs { target, size_bytes, options } => {
                let mut opts = Vec::new();
                if let Some(size) = size_bytes {
                    opts.push(format!("size={size}"));
                }
                if let Some(o) = options.as_deref().filter(|o| !o.is_empty()) {
                    opts.push(o.to_string());
                }
                tmpfs.insert(target.clone(), opts.join(","));
            }
        }
    }

    let log_config = if spec.log_max_size_mb.is_some() || spec.log_max_files.is_some() {
        let mut config = HashMap::new();
        if let Some(mb) = spec.log_max_size_mb {
            config.insert("max-size".to_string(), format!("{mb}m"));
        }
        if let Some(n) = spec.log_max_files {
            config.insert("max-file".to_string(), n.to_string());
        }
        Some(HostConfigLogConfig { typ: Some("json-file".into()), config: Some(config) })
    } else {
        None
    };

    let storage_opt = match spec.storage_size_bytes {
        Some(size) if with_storage_quota => Some(HashMap::from([("size".to_string(), size.to_string())])),
        _ => None,
    };

    let first_network = spec.networks.first();
    let host_config = HostConfig {
        memory: spec.memory_bytes,
        memory_swap: spec.memory_swap_bytes,
        nano_cpus: spec.nano_cpus,
        pids_limit: spec.pids_limit,
        log_config,
        network_mode: first_network.map(|n| n.network.clone()),
        port_bindings: if bindings.is_empty() { None } else { Some(bindings) },
        restart_policy: restart_policy(&spec.restart_policy)?,
        mounts: if mounts.is_empty() { None } else { Some(mounts) },
        cap_add: if spec.cap_add.is_empty() { None } else { Some(spec.cap_add.clone()) },
        cap_drop: if spec.cap_drop.is_empty() { None } else { Some(spec.cap_drop.clone()) },
        privileged: Some(spec.privileged),
        readonly_rootfs: Some(spec.read_only_root_filesystem),
        security_opt: if spec.no_new_privileges { Some(vec!["no-new-privileges".to_string()]) } else { None },
        storage_opt,
        tmpfs: if tmpfs.is_empty() { None } else { Some(tmpfs) },
        ..Default::default()
    };

    let networking_config = first_network.map(|n| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            n.network.clone(),
            EndpointSettings {
                aliases: if n.aliases.is_empty() { None } else { Some(n.aliases.clone()) },
                ..Default::default()
            },
        )])),
    });

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: if spec.env.is_empty() { None } else { Some(spec.env.clone()) },
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        labels: Some(to_hash(&spec.labels)),
        exposed_ports: if exposed.is_empty() { None } else { Some(exposed) },
        healthcheck: spec.healthcheck.as_ref().map(healthcheck),
        stop_timeout: spec.stop_timeout_seconds,
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    })
}

/// Whether Docker refused a storage quota it cannot apply (overlay2 without xfs pquota).
fn is_storage_quota_refusal(e: &DockerError) -> bool {
    matches!(e, DockerError::Api { message, .. } if message.contains("storage-opt") || message.contains("StorageOpt"))
}

/// A pull reference with an explicit tag: without one Docker pulls every tag of the repository.
fn pull_reference(reference: &str) -> String {
    if reference.contains('@') {
        return reference.to_string();
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') { reference.to_string() } else { format!("{reference}:latest") }
}

fn event_from(m: EventMessage) -> DockerEvent {
    let actor = m.actor.unwrap_or_default();
    DockerEvent {
        kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
        action: m.action.unwrap_or_default(),
        id: actor.id.unwrap_or_default(),
        attributes: to_btree(actor.attributes),
        time_nanos: m.time_nano.unwrap_or_else(|| m.time.unwrap_or(0).saturating_mul(NANOS_PER_SECOND)),
    }
}

/// Turns Docker's log frames (one per write, per stream) into lines: text is split on newlines,
/// a line cut across frames is joined, and the timestamp Docker puts before each frame is taken
/// off and kept with the line.
#[derive(Debug, Default)]
struct LogSplitter {
    timestamps: bool,
    stdout: PendingLine,
    stderr: PendingLine,
}

#[derive(Debug, Default)]
struct PendingLine {
    bytes: Vec<u8>,
    timestamp: Option<String>,
}

impl LogSplitter {
    fn new(timestamps: bool) -> Self {
        Self { timestamps, ..Default::default() }
    }

    fn push(&mut self, stream: LogStream, frame: &[u8], out: &mut VecDeque<LogLine>) {
        let timestamps = self.timestamps;
        let pending = match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        };
        let mut payload = frame;
        if timestamps {
            let split = frame.iter().position(|b| *b == b' ');
            let (ts, rest) = match split {
                Some(i) => (&frame[..i], &frame[i + 1..]),
                None => (frame, &frame[frame.len()..]),
            };
            if pending.bytes.is_empty() {
                pending.timestamp = Some(String::from_utf8_lossy(ts).into_owned());
            }
            payload = rest;
        }
        pending.bytes.extend_from_slice(payload);
        while let Some(i) = pending.bytes.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = pending.bytes.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            out.push_back(LogLine {
                stream,
                timestamp: pending.timestamp.clone(),
                text: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        if pending.bytes.is_empty() {
            pending.timestamp = None;
        }
    }

    fn finish(&mut self, out: &mut VecDeque<LogLine>) {
        for (stream, pending) in [(LogStream::Stdout, &mut self.stdout), (LogStream::Stderr, &mut self.stderr)] {
            if !pending.bytes.is_empty() {
                let text = String::from_utf8_lossy(&pending.bytes).into_owned();
                out.push_back(LogLine { stream, timestamp: pending.timestamp.take(), text });
                pending.bytes.clear();
            }
        }
    }
}

fn container_summary_from_listing(c: bollard::models::ContainerSummary) -> ContainerSummary {
    let name =
        c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default();
    let state = c.state.map(|s| ContainerState::parse(s.as_ref())).unwrap_or(ContainerState::Dead);
    let health = c.status.as_deref().and_then(parse_health_from_status);
    let mut ports: Vec<PublishedPort> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PublishedPort {
                container_port: p.private_port,
                protocol: p.typ.map(|t| t.to_string()).filter(|t| !t.is_empty()).unwrap_or_else(|| "tcp".into()),
                host_ip: p.ip.unwrap_or_default(),
                host_port: p.public_port?,
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ContainerSummary {
        id: c.id.unwrap_or_default(),
        name,
        image: c.image.unwrap_or_default(),
        image_id: c.image_id.unwrap_or_default(),
        labels: to_btree(c.labels),
        state,
        health,
        created: c.created.unwrap_or(0),
        ports,
    }
}

fn container_details_from_inspect(c: bollard::models::ContainerInspectResponse) -> ContainerDetails {
    let id = c.id.unwrap_or_default();
    let config = c.config.unwrap_or_default();
    let state_info = c.state.unwrap_or_default();
    let state = state_info.status.map(|s| ContainerState::parse(s.as_ref())).unwrap_or(ContainerState::Dead);
    let health = if state == ContainerState::Running {
        state_info.health.as_ref().and_then(|h| h.status).and_then(|s| parse_health_status(s.as_ref()))
    } else {
        None
    };
    let settings = c.network_settings.unwrap_or_default();
    let mut ports = Vec::new();
    for (key, bindings) in settings.ports.unwrap_or_default() {
        let Some((container_port, protocol)) = parse_port_key(&key) else { continue };
        for b in bindings.unwrap_or_default() {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok()) else { continue };
            ports.push(PublishedPort {
                container_port,
                protocol: protocol.clone(),
                host_ip: b.host_ip.unwrap_or_default(),
                host_port,
            });
        }
    }
    ports.sort();
    ports.dedup();
    let short_id: String = id.chars().take(12).collect();
    let mut networks: Vec<NetworkJoin> = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| NetworkJoin {
            network,
            // Docker adds the short container id as an alias on user-defined networks; berth
            // only reports the aliases it asked for.
            aliases: endpoint.aliases.unwrap_or_default().into_iter().filter(|a| *a != short_id).collect(),
        })
        .collect();
    networks.sort();
    ContainerDetails {
        summary: ContainerSummary {
            id,
            name: c.name.unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.image.unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            labels: to_btree(config.labels),
            state,
            health,
            created: c.created.as_deref().map(rfc3339_to_unix).unwrap_or(0),
            ports,
        },
        exit_code: state_info.exit_code,
        oom_killed: state_info.oom_killed.unwrap_or(false),
        error: state_info.error.unwrap_or_default(),
        restart_count: c.restart_count.unwrap_or(0),
        started_at: meaningful_time(state_info.started_at),
        finished_at: meaningful_time(state_info.finished_at),
        networks,
    }
}

/// Headroom for a stop or restart beyond the grace period: Docker answers only once the
/// container is down.
const STOP_HEADROOM: Duration = Duration::from_secs(30);
/// Grace period assumed when the caller leaves it to the container's own stop timeout, which
/// would cost an extra call to read.
const DEFAULT_STOP_BOUND: Duration = Duration::from_secs(300);

#[async_trait::async_trait]
impl DockerApi for BollardDocker {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn ping(&self) -> DockerResult<()> {
        self.call("ping", "daemon", self.timeouts.call, self.docker.ping()).await.map(|_| ())
    }

    async fn info(&self) -> DockerResult<DaemonFacts> {
        let info = self.call("read", "daemon info", self.timeouts.call, self.docker.info()).await?;
        Ok(DaemonFacts {
            version: info.server_version.unwrap_or_default(),
            api_version: self.api_version_string(),
            os: info.os_type.unwrap_or_default(),
            arch: info.architecture.unwrap_or_default(),
            cpus: info.ncpu.unwrap_or(0),
            memory_bytes: info.mem_total.unwrap_or(0),
            name: info.name.unwrap_or_default(),
        })
    }

    async fn list_containers(&self, labels: &LabelFilter) -> DockerResult<Vec<ContainerSummary>> {
        let options = ListContainersOptionsBuilder::new().all(true).filters(&label_filters(labels)).build();
        let listed =
            self.call("list", "containers", self.timeouts.call, self.docker.list_containers(Some(options))).await?;
        Ok(listed.into_iter().map(container_summary_from_listing).collect())
    }

    async fn inspect_container(&self, id: &str) -> DockerResult<ContainerDetails> {
        let what = format!("container {id}");
        let c = self.call("inspect", &what, self.timeouts.call, self.docker.inspect_container(id, None)).await?;
        Ok(container_details_from_inspect(c))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> DockerResult<String> {
        let what = format!("container {}", spec.name);
        let mut quota = false;
        if spec.storage_size_bytes.is_some() {
            match self.storage_quota().await? {
                StorageQuota::Supported => quota = true,
                StorageQuota::Unsupported { reason } => self.log_quota_skipped_once(&reason),
            }
        }
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let what = &what;
        let attempt = |quota: bool| {
            let options = options.clone();
            async move {
                let body = container_body(spec, quota).map_err(|message| DockerError::Api {
                    operation: format!("create {what}"),
                    status: 400,
                    message,
                })?;
                self.call("create", what, self.timeouts.call, self.docker.create_container(Some(options), body))
                    .await
                    .map_err(|e| scrub_error(e, &spec.env))
            }
        };
        let created = match attempt(quota).await {
            Err(e) if quota && is_storage_quota_refusal(&e) => {
                self.storage_quota_refused.store(true, Ordering::Relaxed);
                self.log_quota_skipped_once(
                    "the daemon refused storage-opt size (overlay2 needs xfs mounted with pquota)",
                );
                attempt(false).await?
            }
            other => other?,
        };
        for join in spec.networks.iter().skip(1) {
            if let Err(e) = self.connect_network(&join.network, &created.id, &join.aliases).await {
                // Half-joined containers would look converged to the next pass; take it back.
                let _ = self.remove_container(&created.id, true).await;
                return Err(e);
            }
        }
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> DockerResult<()> {
        let what = format!("container {id}");
        self.call("start", &what, self.timeouts.call, self.docker.start_container(id, None)).await
    }

    async fn stop_container(&self, id: &str, timeout_seconds: Option<i64>) -> DockerResult<()> {
        let what = format!("container {id}");
        let mut options = StopContainerOptionsBuilder::new();
        let grace = match timeout_seconds {
            Some(t) => {
                options = options.t(t.clamp(0, i32::MAX as i64) as i32);
                Duration::from_secs(t.max(0) as u64)
            }
            None => DEFAULT_STOP_BOUND,
        };
        let limit = grace + STOP_HEADROOM.max(self.timeouts.call);
        self.call("stop", &what, limit, self.docker_for(limit).stop_container(id, Some(options.build()))).await
    }

    async fn restart_container(&self, id: &str, timeout_seconds: Option<i64>) -> DockerResult<()> {
        let what = format!("container {id}");
        let mut options = RestartContainerOptionsBuilder::new();
        let grace = match timeout_seconds {
            Some(t) => {
                options = options.t(t.clamp(0, i32::MAX as i64) as i32);
                Duration::from_secs(t.max(0) as u64)
            }
            None => DEFAULT_STOP_BOUND,
        };
        let limit = grace + STOP_HEADROOM.max(self.timeouts.call);
        self.call("restart", &what, limit, self.docker_for(limit).restart_container(id, Some(options.build()))).await
    }

    async fn kill_container(&self, id: &str, signal: Option<&str>) -> DockerResult<()> {
        let what = format!("container {id}");
        let options = KillContainerOptionsBuilder::new().signal(signal.unwrap_or("SIGKILL")).build();
        self.call("kill", &what, self.timeouts.call, self.docker.kill_container(id, Some(options))).await
    }

    async fn remove_container(&self, id: &str, force: bool) -> DockerResult<()> {
        let what = format!("container {id}");
        let options = RemoveContainerOptionsBuilder::new().force(force).v(true).build();
        self.call("remove", &what, self.timeouts.call, self.docker.remove_container(id, Some(options))).await
    }

    async fn rename_container(&self, id: &str, new_name: &str) -> DockerResult<()> {
        let what = format!("container {id}");
        let options = RenameContainerOptionsBuilder::new().name(new_name).build();
        self.call("rename", &what, self.timeouts.call, self.docker.rename_container(id, options)).await
    }

    async fn list_networks(&self, labels: &LabelFilter) -> DockerResult<Vec<NetworkSummary>> {
        let options = ListNetworksOptionsBuilder::new().filters(&label_filters(labels)).build();
        let listed =
            self.call("list", "networks", self.timeouts.call, self.docker.list_networks(Some(options))).await?;
        Ok(listed
            .into_iter()
            .map(|n| NetworkSummary {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: to_btree(n.labels),
                internal: n.internal.unwrap_or(false),
                created: n.created.filter(|c| !c.is_empty()),
            })
            .collect())
    }

    async fn create_network(&self, spec: &NetworkSpec) -> DockerResult<String> {
        let what = format!("network {}", spec.name);
        let _serialized = self.network_create.lock().await;
        // Before API 1.44 Docker creates a second network with the same name unless asked to
        // check (CheckDuplicate, which bollard's models no longer carry): check here.
        if !self.api_at_least(1, 44) {
            let filters = HashMap::from([("name".to_string(), vec![spec.name.clone()])]);
            let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
            let existing =
                self.call("list", "networks", self.timeouts.call, self.docker.list_networks(Some(options))).await?;
            // The name filter matches substrings; only an exact name conflicts.
            if let Some(n) = existing.iter().find(|n| n.name.as_deref() == Some(spec.name.as_str())) {
                return Err(DockerError::Conflict {
                    what,
                    message: format!(
                        "network with name {} already exists (id {})",
                        spec.name,
                        n.id.as_deref().unwrap_or("?")
                    ),
                });
            }
        }
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".into()),
            internal: Some(spec.internal),
            labels: Some(to_hash(&spec.labels)),
            ..Default::default()
        };
        let created = self.call("create", &what, self.timeouts.call, self.docker.create_network(request)).await?;
        Ok(created.id)
    }

    async fn remove_network(&self, id: &str) -> DockerResult<()> {
        let what = format!("network {id}");
        self.call("remove", &what, self.timeouts.call, self.docker.remove_network(id)).await
    }

    async fn connect_network(&self, network: &str, container: &str, aliases: &[String]) -> DockerResult<()> {
        let what = format!("network {network}");
        let request = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: if aliases.is_empty() { None } else { Some(aliases.to_vec()) },
                ..Default::default()
            }),
        };
        let verb = format!("connect container {container} to");
        self.call(&verb, &what, self.timeouts.call, self.docker.connect_network(network, request)).await
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> DockerResult<()> {
        let what = format!("network {network}");
        let request = NetworkDisconnectRequest { container: container.to_string(), force: Some(false) };
        let verb = format!("disconnect container {container} from");
        self.call(&verb, &what, self.timeouts.call, self.docker.disconnect_network(network, request)).await
    }

    async fn list_volumes(&self, labels: &LabelFilter) -> DockerResult<Vec<VolumeSummary>> {
        let options = ListVolumesOptionsBuilder::new().filters(&label_filters(labels)).build();
        let listed = self.call("list", "volumes", self.timeouts.call, self.docker.list_volumes(Some(options))).await?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeSummary {
                name: v.name,
                labels: v.labels.into_iter().collect(),
                created: v.created_at.filter(|c| !c.is_empty()),
            })
            .collect())
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> DockerResult<()> {
        let what = format!("volume {}", spec.name);
        let request = VolumeCreateRequest {
            name: Some(spec.name.clone()),
            driver: Some("local".into()),
            labels: Some(to_hash(&spec.labels)),
            ..Default::default()
        };
        self.call("create", &what, self.timeouts.call, self.docker.create_volume(request)).await.map(|_| ())
    }

    async fn remove_volume(&self, name: &str) -> DockerResult<()> {
        let what = format!("volume {name}");
        let options = RemoveVolumeOptionsBuilder::new().force(false).build();
        self.call("remove", &what, self.timeouts.call, self.docker.remove_volume(name, Some(options))).await
    }

    async fn inspect_image(&self, reference: &str) -> DockerResult<Option<ImageInfo>> {
        let what = format!("image {reference}");
        match self.call("inspect", &what, self.timeouts.call, self.docker.inspect_image(reference)).await {
            Ok(image) => Ok(Some(ImageInfo {
                id: image.id.unwrap_or_default(),
                repo_digests: image.repo_digests.unwrap_or_default(),
                has_healthcheck: image
                    .config
                    .and_then(|c| c.healthcheck)
                    .and_then(|h| h.test)
                    .and_then(|t| t.first().cloned())
                    .is_some_and(|first| first != "NONE"),
            })),
            Err(DockerError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> DockerResult<()> {
        let what = format!("image {reference}");
        let from_image = pull_reference(reference);
        let options = CreateImageOptionsBuilder::new().from_image(&from_image).build();
        // A pull may wait a while for the registry before answering; the overall limit still
        // bounds it.
        let docker = self.docker_for(self.timeouts.call.max(Duration::from_secs(120)));
        let pull_failed = |message: String| DockerError::PullFailed { image: reference.to_string(), message };
        let run = async {
            let mut stream = docker.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        let detail = info.progress_detail.unwrap_or_default();
                        progress(&PullProgress {
                            status: info.status.unwrap_or_default(),
                            layer: info.id,
                            current: detail.current,
                            total: detail.total,
                        });
                    }
                    Err(BollardError::DockerStreamError { error }) => return Err(pull_failed(error)),
                    Err(BollardError::DockerResponseServerError { message, .. }) => return Err(pull_failed(message)),
                    Err(e) => return Err(map_error(&self.endpoint, "pull", &what, self.timeouts.pull, e)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.timeouts.pull, run).await {
            Ok(result) => result,
            Err(_) => Err(DockerError::Timeout { operation: format!("pull {what}"), after: self.timeouts.pull }),
        }
    }

    async fn download_archive(&self, container: &str, path: &str) -> DockerResult<bytes::Bytes> {
        let what = format!("path {path} in container {container}");
        let options = DownloadFromContainerOptionsBuilder::new().path(path).build();
        let docker = self.docker_for(self.timeouts.call);
        let collect = async move {
            let mut out = bytes::BytesMut::new();
            let mut stream = docker.download_from_container(container, Some(options));
            while let Some(chunk) = stream.try_next().await? {
                out.extend_from_slice(&chunk);
            }
            Ok::<_, BollardError>(out.freeze())
        };
        self.call("download", &what, self.timeouts.archive, collect).await
    }

    async fn upload_archive(&self, container: &str, path: &str, tar: bytes::Bytes) -> DockerResult<()> {
        let what = format!("path {path} in container {container}");
        let options = UploadToContainerOptionsBuilder::new().path(path).build();
        let docker = self.docker_for(self.timeouts.archive);
        self.call(
            "upload to",
            &what,
            self.timeouts.archive,
            docker.upload_to_container(container, Some(options), bollard::body_full(tar)),
        )
        .await
    }

    fn events(&self, labels: &LabelFilter) -> BoxStream<'static, DockerResult<DockerEvent>> {
        let mut filters = label_filters(labels);
        filters.insert("type".into(), vec!["container".into(), "network".into(), "volume".into()]);
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let inner = self.docker.events(Some(options)).boxed();
        let endpoint = self.endpoint.clone();
        let docker = self.docker.clone();
        let timeouts = self.timeouts;
        let liveness =
            tokio::time::interval_at(tokio::time::Instant::now() + timeouts.event_liveness, timeouts.event_liveness);
        let state = EventState { inner, docker, liveness, endpoint, timeouts, done: false };
        futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            let item = s.next_item().await;
            if item.is_err() {
                s.done = true;
            }
            Some((item, s))
        })
        .boxed()
    }

    fn logs(&self, id: &str, options: &LogOptions) -> BoxStream<'static, DockerResult<LogLine>> {
        let mut builder = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .timestamps(options.timestamps)
            .tail(&options.tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()));
        if let Some(since) = options.since {
            builder = builder.since(since.clamp(0, i32::MAX as i64) as i32);
        }
        let inner = self.docker.logs(id, Some(builder.build())).boxed();
        let endpoint = self.endpoint.clone();
        let what = format!("container {id}");
        let limit = self.timeouts.call;
        let state = LogState {
            inner,
            splitter: LogSplitter::new(options.timestamps),
            ready: VecDeque::new(),
            pending_error: None,
            done: false,
            endpoint,
            what,
            limit,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(line) = s.ready.pop_front() {
                    return Some((Ok(line), s));
                }
                // Lines read before a failure come first; the error then ends the stream.
                if let Some(err) = s.pending_error.take() {
                    return Some((Err(err), s));
                }
                if s.done {
                    return None;
                }
                match s.inner.next().await {
                    Some(Ok(output)) => {
                        let (stream, bytes) = match output {
                            LogOutput::StdErr { message } => (LogStream::Stderr, message),
                            // A container with a TTY has one combined stream, shown as stdout.
                            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                                (LogStream::Stdout, message)
                            }
                            LogOutput::StdIn { .. } => continue,
                        };
                        s.splitter.push(stream, &bytes, &mut s.ready);
                    }
                    Some(Err(e)) => {
                        s.done = true;
                        s.splitter.finish(&mut s.ready);
                        s.pending_error = Some(map_error(&s.endpoint, "read logs of", &s.what, s.limit, e));
                    }
                    None => {
                        s.done = true;
                        s.splitter.finish(&mut s.ready);
                    }
                }
            }
        })
        .boxed()
    }
}

struct LogState {
    inner: BoxStream<'static, Result<LogOutput, BollardError>>,
    splitter: LogSplitter,
    ready: VecDeque<LogLine>,
    pending_error: Option<DockerError>,
    done: bool,
    endpoint: String,
    what: String,
    limit: Duration,
}

struct EventState {
    inner: BoxStream<'static, Result<EventMessage, BollardError>>,
    docker: Docker,
    liveness: tokio::time::Interval,
    endpoint: String,
    timeouts: Timeouts,
    done: bool,
}

impl EventState {
    async fn next_item(&mut self) -> DockerResult<DockerEvent> {
        loop {
            tokio::select! {
                item = self.inner.next() => {
                    return match item {
                        Some(Ok(m)) => Ok(event_from(m)),
                        Some(Err(e)) => Err(map_error(&self.endpoint, "watch", "events", self.timeouts.call, e)),
                        None => Err(DockerError::Unreachable {
                            endpoint: self.endpoint.clone(),
                            message: "the daemon closed the event stream".into(),
                        }),
                    };
                }
                _ = self.liveness.tick() => {
                    match tokio::time::timeout(self.timeouts.call, self.docker.ping()).await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => return Err(map_error(&self.endpoint, "ping", "daemon", self.timeouts.call, e)),
                        Err(_) => return Err(DockerError::Unreachable {
                            endpoint: self.endpoint.clone(),
                            message: format!(
                                "the daemon stopped answering while events were watched (no ping answer within {:?})",
                                self.timeouts.call
                            ),
                        }),
                    }
                }
            }
        }
    }
}

/// Opens [`BollardDocker`] connections for the Host controller.
#[derive(Debug, Clone, Default)]
pub struct BollardConnector {
    timeouts: Timeouts,
}

impl BollardConnector {
    /// A connector whose connections use `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        Self { timeouts }
    }
}

#[async_trait::async_trait]
impl Connector for BollardConnector {
    async fn connect(&self, endpoint: &str, tls: Option<&TlsFiles>) -> DockerResult<Arc<dyn DockerApi>> {
        let docker = BollardDocker::connect_with(endpoint, tls, self.timeouts).await?;
        Ok(Arc::new(docker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{Healthcheck, PortMapping};

    #[test]
    fn endpoints_parse_or_say_what_to_use() {
        let ok = [
            ("unix:///var/run/docker.sock", Transport::Unix { path: "/var/run/docker.sock".into() }),
            ("/run/user/1000/docker.sock", Transport::Unix { path: "/run/user/1000/docker.sock".into() }),
            ("tcp://10.0.0.5:2376", Transport::Tcp { addr: "10.0.0.5:2376".into() }),
            ("tcp://10.0.0.5:2376/", Transport::Tcp { addr: "10.0.0.5:2376".into() }),
            ("ssh://deploy@h1", Transport::Ssh { addr: "ssh://deploy@h1".into() }),
        ];
        for (endpoint, expected) in ok {
            assert_eq!(parse_endpoint(endpoint).unwrap(), expected, "{endpoint}");
        }
        let err = parse_endpoint("ssh://deploy@h1:2222").unwrap_err();
        assert!(err.to_string().contains("~/.ssh/config"), "{err}");
        for bad in ["ftp://x", "unix://", "tcp://", "ssh://", "docker.example:2375"] {
            let err = parse_endpoint(bad).unwrap_err();
            assert!(matches!(err, DockerError::InvalidEndpoint { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("unix://") || err.to_string().contains("e.g."), "{bad}: {err}");
        }
    }

    #[test]
    fn label_filters_use_key_alone_for_empty_values() {
        let f = label_filters(&vec![("a".into(), "1".into()), ("b".into(), String::new())]);
        assert_eq!(f["label"], vec!["a=1".to_string(), "b".to_string()]);
        assert!(label_filters(&vec![]).is_empty());
    }

    #[test]
    fn health_is_read_from_the_status_text() {
        let cases = [
            ("Up 2 minutes (healthy)", Some(HealthState::Healthy)),
            ("Up 5 seconds (unhealthy)", Some(HealthState::Unhealthy)),
            ("Up 1 second (health: starting)", Some(HealthState::Starting)),
            ("Up 3 hours", None),
            ("Exited (0) 2 minutes ago", None),
            ("Created", None),
        ];
        for (status, expected) in cases {
            assert_eq!(parse_health_from_status(status), expected, "{status}");
        }
    }

    fn full_spec() -> ContainerSpec {
        ContainerSpec {
            name: "shop-web-0".into(),
            image: "img:1".into(),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["sleep 1".into()]),
            env: vec!["A=1".into()],
            working_dir: Some("/w".into()),
            user: Some("65534:65534".into()),
            labels: BTreeMap::from([("app".into(), "shop".into())]),
            ports: vec![
                PortMapping { container_port: 80, protocol: "tcp".into(), host_ip: String::new(), host_port: Some(0) },
                PortMapping {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    host_port: Some(8080),
                },
                PortMapping { container_port: 53, protocol: "udp".into(), host_ip: String::new(), host_port: None },
            ],
            mounts: vec![
                Mount::Volume { name: "data".into(), target: "/data".into(), read_only: false },
                Mount::Bind { source: "/etc/hosts".into(), target: "/h".into(), read_only: true },
                Mount::Tmpfs {
                    target: "/tmp".into(),
                    size_bytes: Some(1 << 20),
                    options: Some("noexec,nosuid".into()),
                },
            ],
            networks: vec![
                NetworkJoin { network: "n1".into(), aliases: vec!["web".into()] },
                NetworkJoin { network: "n2".into(), aliases: vec!["web2".into()] },
            ],
            healthcheck: Some(Healthcheck {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval_seconds: Some(2),
                timeout_seconds: Some(3),
                retries: Some(4),
                start_period_seconds: Some(5),
            }),
            nano_cpus: Some(500_000_000),
            memory_bytes: Some(64 << 20),
            memory_swap_bytes: Some(64 << 20),
            pids_limit: Some(50),
            read_only_root_filesystem: true,
            cap_add: vec!["NET_BIND_SERVICE".into()],
            cap_drop: vec!["ALL".into()],
            no_new_privileges: true,
            privileged: false,
            restart_policy: "unless-stopped".into(),
            stop_timeout_seconds: Some(7),
            log_max_size_mb: Some(10),
            log_max_files: Some(3),
            storage_size_bytes: Some(1 << 30),
        }
    }

    #[test]
    fn create_body_maps_every_field() {
        let body = serde_json::to_value(container_body(&full_spec(), true).unwrap()).unwrap();
        let hc = &body["HostConfig"];
        assert_eq!(body["Image"], "img:1");
        assert_eq!(body["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
        assert_eq!(body["Cmd"], serde_json::json!(["sleep 1"]));
        assert_eq!(body["Env"], serde_json::json!(["A=1"]));
        assert_eq!(body["WorkingDir"], "/w");
        assert_eq!(body["User"], "65534:65534");
        assert_eq!(body["Labels"], serde_json::json!({"app": "shop"}));
        assert_eq!(body["ExposedPorts"], serde_json::json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(body["StopTimeout"], 7);
        assert_eq!(
            body["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000i64,
                "Timeout": 3_000_000_000i64, "Retries": 4, "StartPeriod": 5_000_000_000i64})
        );
        assert_eq!(
            hc["PortBindings"],
            serde_json::json!({"80/tcp": [{"HostPort": ""}, {"HostIp": "127.0.0.1", "HostPort": "8080"}]})
        );
        assert_eq!(
            hc["Mounts"],
            serde_json::json!([
                {"Target": "/data", "Source": "data", "Type": "volume", "ReadOnly": false},
                {"Target": "/h", "Source": "/etc/hosts", "Type": "bind", "ReadOnly": true},
            ])
        );
        assert_eq!(hc["Tmpfs"], serde_json::json!({"/tmp": "size=1048576,noexec,nosuid"}));
        assert_eq!(hc["NanoCpus"], 500_000_000);
        assert_eq!(hc["Memory"], 64 << 20);
        assert_eq!(hc["MemorySwap"], 64 << 20);
        assert_eq!(hc["PidsLimit"], 50);
        assert_eq!(hc["ReadonlyRootfs"], true);
        assert_eq!(hc["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
        assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(hc["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
        assert_eq!(hc["Privileged"], false);
        assert_eq!(hc["RestartPolicy"], serde_json::json!({"Name": "unless-stopped"}));
        assert_eq!(
            hc["LogConfig"],
            serde_json::json!({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})
        );
        assert_eq!(hc["StorageOpt"], serde_json::json!({"size": "1073741824"}));
        assert_eq!(hc["NetworkMode"], "n1");
        // Only the first network at creation (API < 1.44 takes one); the others are connected.
        assert_eq!(body["NetworkingConfig"], serde_json::json!({"EndpointsConfig": {"n1": {"Aliases": ["web"]}}}));

        let without_quota = serde_json::to_value(container_body(&full_spec(), false).unwrap()).unwrap();
        assert!(without_quota["HostConfig"].get("StorageOpt").is_none());
        let minimal = serde_json::to_value(
            container_body(&ContainerSpec { name: "m".into(), image: "i".into(), ..Default::default() }, false)
                .unwrap(),
        )
        .unwrap();
        for absent in ["LogConfig", "RestartPolicy", "Mounts", "Tmpfs", "PortBindings", "SecurityOpt", "NetworkMode"] {
            assert!(minimal["HostConfig"].get(absent).is_none(), "{absent} set for a minimal spec");
        }
        let bad = ContainerSpec { restart_policy: "sometimes".into(), ..full_spec() };
        assert!(container_body(&bad, false).unwrap_err().contains("on-failure"));
    }

    /// Field names of the API 1.41 (Docker 20.10) create request, per object.
    #[rustfmt::skip]
    const API_1_41_CONFIG: &[&str] = &[
        "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
        "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes", "WorkingDir",
        "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
        "HostConfig", "NetworkingConfig",
    ];
    #[rustfmt::skip]
    const API_1_41_HOST_CONFIG: &[&str] = &[
        "CpuShares", "Memory", "CgroupParent", "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuPeriod", "CpuQuota",
        "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "Devices", "DeviceCgroupRules",
        "DeviceRequests", "KernelMemory", "KernelMemoryTCP", "MemoryReservation", "MemorySwap", "MemorySwappiness",
        "NanoCpus", "OomKillDisable", "Init", "PidsLimit", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps",
        "IOMaximumBandwidth", "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy",
        "AutoRemove", "VolumeDriver", "VolumesFrom", "Mounts", "CapAdd", "CapDrop", "CgroupnsMode", "Dns",
        "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup", "Links", "OomScoreAdj", "PidMode",
        "Privileged", "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode",
        "UsernsMode", "ShmSize", "Sysctls", "Runtime", "ConsoleSize", "Isolation", "MaskedPaths", "ReadonlyPaths",
    ];
    const API_1_41_HEALTHCHECK: &[&str] = &["Test", "Interval", "Timeout", "Retries", "StartPeriod"];
    const API_1_41_MOUNT: &[&str] =
        &["Target", "Source", "Type", "ReadOnly", "Consistency", "BindOptions", "VolumeOptions", "TmpfsOptions"];
    #[rustfmt::skip]
    const API_1_41_ENDPOINT: &[&str] = &[
        "IPAMConfig", "Links", "Aliases", "NetworkID", "EndpointID", "Gateway", "IPAddress", "IPPrefixLen",
        "IPv6Gateway", "GlobalIPv6Address", "GlobalIPv6PrefixLen", "MacAddress", "DriverOpts",
    ];

    fn keys_within(v: &serde_json::Value, allowed: &[&str], at: &str) {
        for key in v.as_object().unwrap_or_else(|| panic!("{at} is not an object")).keys() {
            assert!(allowed.contains(&key.as_str()), "{at}.{key} is not in API 1.41");
        }
    }

    #[test]
    fn body_uses_only_api_1_41_fields() {
        let body = serde_json::to_value(container_body(&full_spec(), true).unwrap()).unwrap();
        keys_within(&body, API_1_41_CONFIG, "Config");
        keys_within(&body["HostConfig"], API_1_41_HOST_CONFIG, "HostConfig");
        keys_within(&body["Healthcheck"], API_1_41_HEALTHCHECK, "Healthcheck");
        keys_within(&body["HostConfig"]["RestartPolicy"], &["Name", "MaximumRetryCount"], "RestartPolicy");
        keys_within(&body["HostConfig"]["LogConfig"], &["Type", "Config"], "LogConfig");
        for m in body["HostConfig"]["Mounts"].as_array().unwrap() {
            keys_within(m, API_1_41_MOUNT, "Mounts[]");
        }
        for binding in body["HostConfig"]["PortBindings"].as_object().unwrap().values() {
            for b in binding.as_array().unwrap() {
                keys_within(b, &["HostIp", "HostPort"], "PortBindings[]");
            }
        }
        keys_within(&body["NetworkingConfig"], &["EndpointsConfig"], "NetworkingConfig");
        for endpoint in body["NetworkingConfig"]["EndpointsConfig"].as_object().unwrap().values() {
            keys_within(endpoint, API_1_41_ENDPOINT, "EndpointsConfig[]");
        }
    }

    fn server(status: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError { status_code: status, message: message.into() }
    }

    #[test]
    fn errors_map_to_what_failed() {
        let ep = "unix:///var/run/docker.sock";
        let limit = Duration::from_secs(30);
        let e = map_error(ep, "create", "container web-0", limit, server(404, "No such image: busybox:9"));
        assert!(matches!(&e, DockerError::NotFound { what } if what == "image busybox:9"), "{e}");
        let e = map_error(ep, "create", "container web-0", limit, server(404, "network n1 not found"));
        assert!(matches!(&e, DockerError::NotFound { what } if what == "network n1"), "{e}");
        let e = map_error(
            ep,
            "create",
            "network shop_default",
            limit,
            server(
                404,
                "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the \
                 network",
            ),
        );
        assert!(matches!(&e, DockerError::AddressPoolsExhausted { network, .. } if network == "shop_default"), "{e}");
        assert!(e.is_transient() && !e.is_not_found(), "{e}");
        assert!(e.to_string().contains("default-address-pools"), "{e}");
        let e = map_error(ep, "start", "container web-0", limit, server(404, "No such container: web-0"));
        assert!(matches!(&e, DockerError::NotFound { what } if what == "container web-0"), "{e}");
        let e = map_error(ep, "create", "container web-0", limit, server(409, "name in use"));
        assert!(matches!(&e, DockerError::Conflict { what, .. } if what == "container web-0"), "{e}");
        let e = map_error(ep, "start", "container web-0", limit, server(500, "port is already allocated"));
        assert!(
            matches!(&e, DockerError::Api { operation, status: 500, .. } if operation == "start container web-0"),
            "{e}"
        );
        assert!(e.is_transient());
        let e = map_error(ep, "list", "containers", limit, BollardError::RequestTimeoutError);
        assert!(matches!(&e, DockerError::Timeout { operation, .. } if operation == "list containers"), "{e}");
        let e = map_error(ep, "ping", "daemon", limit, BollardError::SocketNotFoundError("/nope.sock".into()));
        assert!(matches!(&e, DockerError::Unreachable { message, .. } if message.contains("/nope.sock")), "{e}");
        let io = BollardError::IOError { err: std::io::Error::other("connection reset") };
        assert!(map_error(ep, "ping", "daemon", limit, io).is_unreachable());
    }

    #[test]
    fn env_values_never_reach_error_messages() {
        let env = vec!["TOKEN=s3cr3t-value".to_string(), "N=1".to_string()];
        let scrubbed = scrub_env("invalid environment variable: TOKEN=s3cr3t-value (also s3cr3t-value)", &env);
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
        assert!(scrubbed.contains("TOKEN=<redacted>"), "{scrubbed}");
        let e = scrub_error(
            DockerError::Api { operation: "create container x".into(), status: 400, message: "bad N=1".into() },
            &env,
        );
        assert!(!e.to_string().contains("N=1"), "{e}");
    }

    fn split(timestamps: bool, frames: &[(LogStream, &str)]) -> Vec<LogLine> {
        let mut splitter = LogSplitter::new(timestamps);
        let mut out = VecDeque::new();
        for (stream, frame) in frames {
            splitter.push(*stream, frame.as_bytes(), &mut out);
        }
        splitter.finish(&mut out);
        out.into_iter().collect()
    }

    fn line(stream: LogStream, ts: Option<&str>, text: &str) -> LogLine {
        LogLine { stream, timestamp: ts.map(str::to_string), text: text.into() }
    }

    #[test]
    fn log_frames_become_lines() {
        use LogStream::{Stderr, Stdout};
        assert_eq!(
            split(
                false,
                &[(Stdout, "a\nb\n"), (Stderr, "err\n"), (Stdout, "par"), (Stdout, "tial\r\n"), (Stdout, "end")]
            ),
            vec![
                line(Stdout, None, "a"),
                line(Stdout, None, "b"),
                line(Stderr, None, "err"),
                line(Stdout, None, "partial"),
                line(Stdout, None, "end"),
            ]
        );
        assert_eq!(
            split(
                true,
                &[
                    (Stdout, "2024-01-01T00:00:00.000000001Z hello\n"),
                    (Stderr, "2024-01-01T00:00:01.5Z oops\n"),
                    (Stdout, "2024-01-01T00:00:02Z \n"),
                ]
            ),
            vec![
                line(Stdout, Some("2024-01-01T00:00:00.000000001Z"), "hello"),
                line(Stderr, Some("2024-01-01T00:00:01.5Z"), "oops"),
                line(Stdout, Some("2024-01-01T00:00:02Z"), ""),
            ]
        );
    }

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(pull_reference("registry:5000/team/app"), "registry:5000/team/app:latest");
        assert_eq!(pull_reference("registry:5000/team/app:v2"), "registry:5000/team/app:v2");
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
    }

    #[test]
    fn storage_quota_depends_on_driver_and_filesystem() {
        assert_eq!(storage_quota_support("overlay2", "xfs"), StorageQuota::Supported);
        assert_eq!(storage_quota_support("btrfs", ""), StorageQuota::Supported);
        let StorageQuota::Unsupported { reason } = storage_quota_support("overlay2", "extfs") else {
            panic!("overlay2 on extfs cannot apply quotas")
        };
        assert!(reason.contains("pquota"), "{reason}");
        assert!(matches!(storage_quota_support("vfs", "extfs"), StorageQuota::Unsupported { .. }));
    }

    #[test]
    fn inspect_drops_docker_s_own_alias_and_zero_times() {
        let json = serde_json::json!({
            "Id": "0123456789abcdef0123",
            "Created": "2024-05-01T10:00:00.5Z",
            "Name": "/web-0",
            "Image": "sha256:feed",
            "RestartCount": 2,
            "State": {"Status": "exited", "ExitCode": 137, "OOMKilled": true, "Error": "",
                      "StartedAt": "2024-05-01T10:00:01Z", "FinishedAt": "0001-01-01T00:00:00Z",
                      "Health": {"Status": "unhealthy"}},
            "Config": {"Image": "img:1", "Labels": {"app": "shop"}},
            "NetworkSettings": {
                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}], "53/udp": null},
                "Networks": {"n1": {"Aliases": ["web", "0123456789ab"]}}
            }
        });
        let details = container_details_from_inspect(serde_json::from_value(json).unwrap());
        assert_eq!(details.summary.name, "web-0");
        assert_eq!(details.summary.image, "img:1");
        assert_eq!(details.summary.image_id, "sha256:feed");
        assert_eq!(details.summary.state, ContainerState::Exited);
        assert_eq!(details.summary.health, None, "a stopped container has no current health");
        assert_eq!(details.summary.created, 1_714_557_600);
        assert_eq!(
            details.summary.ports,
            vec![PublishedPort {
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: "0.0.0.0".into(),
                host_port: 32768
            }]
        );
        assert_eq!(details.exit_code, Some(137));
        assert!(details.oom_killed);
        assert_eq!(details.restart_count, 2);
        assert_eq!(details.started_at.as_deref(), Some("2024-05-01T10:00:01Z"));
        assert_eq!(details.finished_at, None);
        assert_eq!(details.networks, vec![NetworkJoin { network: "n1".into(), aliases: vec!["web".into()] }]);
    }

    #[tokio::test]
    async fn connecting_to_nothing_is_unreachable() {
        let missing = BollardDocker::connect("unix:///nonexistent/berth-test.sock", None).await.unwrap_err();
        assert!(matches!(missing, DockerError::Unreachable { .. }), "{missing}");
        let refused = BollardDocker::connect("tcp://127.0.0.1:1", None).await.unwrap_err();
        assert!(matches!(refused, DockerError::Unreachable { .. }), "{refused}");
        assert!(refused.to_string().contains("tcp://127.0.0.1:1"), "{refused}");
        let half_tls = TlsFiles { ca_file: Some("/x/ca.pem".into()), ..Default::default() };
        let e = BollardDocker::connect("tcp://127.0.0.1:1", Some(&half_tls)).await.unwrap_err();
        assert!(matches!(e, DockerError::InvalidEndpoint { .. }), "{e}");
    }
}
