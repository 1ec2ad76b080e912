//! Rendering: a Stack's spec (plus the Secrets and ConfigMaps it references) becomes the desired
//! Docker objects — networks, volumes and one container per service replica — with berth's
//! ownership labels and each container's config hash.
//!
//! The config hash is SHA-256 over a canonical encoding of everything that would make Docker
//! create a different container ([`ContainerConfig`]). Secret values enter it only as an HMAC
//! under the installation's hash key, so a rotated secret rolls the service out but its value
//! never appears in a label. Bookkeeping labels and berth's own version are not part of it:
//! upgrading berth never recreates containers. `tests::golden_hash_is_stable` pins the encoding.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use berth_crds::common::{
    EnvVar, LABEL_CONFIG_HASH, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME,
    LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID, LABEL_REPLICA, LABEL_SERVICE, MANAGED_BY_VALUE,
};
use berth_crds::stack::{DependencyCondition, PullPolicy, Stack};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Version of the canonical encoding. Changing it recreates every container berth manages;
/// only do so deliberately (the golden test will fail until it is updated).
pub const HASH_ENCODING_VERSION: u32 = 1;

/// Name of the network services join when they name none.
pub const DEFAULT_NETWORK: &str = "default";

/// Why a Stack cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A referenced Secret or ConfigMap (or key) does not exist.
    #[error(
        "{kind} {namespace}/{name} has no key {key:?} (or does not exist); create it or mark the reference optional"
    )]
    MissingReference {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// A hostPath mount is outside the operator's allowlist.
    #[error(
        "hostPath {path:?} of service {service:?} is not under any prefix in the operator config key \
         stacks.allowedHostPaths ({allowed}); ask the operator to allow it or use a volume"
    )]
    HostPathNotAllowed {
        /// Service.
        service: String,
        /// The path.
        path: String,
        /// The allowlist, comma-separated (or "empty").
        allowed: String,
    },
    /// A referenced value is not valid UTF-8 and cannot go into an environment variable.
    #[error("{kind} {namespace}/{name} key {key:?} is not UTF-8 text and cannot be used as an environment variable")]
    NotText {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
}

/// Where referenced Secret and ConfigMap values come from (the controller's caches in
/// production, a map in tests). Returns `None` when the object or key does not exist.
pub trait References: Send + Sync {
    /// Decoded bytes of `data[key]` of Secret `namespace/name`.
    fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>>;
    /// `data[key]` of ConfigMap `namespace/name`.
    fn config_map(&self, namespace: &str, name: &str, key: &str) -> Option<String>;
}

/// A value of an environment variable as it enters the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HashedValue {
    /// A literal (or ConfigMap) value, hashed as is.
    Plain(String),
    /// A secret value, represented by its HMAC-SHA256 under the installation's hash key.
    SecretDigest(String),
}

/// A published or exposed port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortConfig {
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address, empty for all.
    pub host_ip: String,
    /// Host port: `None` not published, `Some(0)` a random port.
    pub host_port: Option<u16>,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MountSource {
    /// A named Docker volume (full Docker name).
    Volume(String),
    /// A host path.
    HostPath(String),
    /// A tmpfs with an optional size in bytes.
    Tmpfs(Option<i64>),
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountConfig {
    /// Path in the container.
    pub target: String,
    /// Source.
    pub source: MountSource,
    /// Read-only.
    pub read_only: bool,
}

/// A network attachment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachment {
    /// Full Docker network name.
    pub network: String,
    /// DNS aliases on it (sorted; the service name is always one).
    pub aliases: Vec<String>,
}

/// Health check, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthConfig {
    /// Test command.
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

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceConfig {
    /// CPU limit in nano-CPUs.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Memory + swap limit in bytes (equal to memory: no swap).
    pub memory_swap_bytes: Option<i64>,
    /// PID limit.
    pub pids: Option<i64>,
}

/// Security options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// Read-only root filesystem.
    pub read_only_root_filesystem: bool,
    /// Capabilities added (sorted).
    pub cap_add: Vec<String>,
    /// Capabilities dropped (sorted).
    pub cap_drop: Vec<String>,
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
    /// Privileged.
    pub privileged: bool,
}

/// Everything that makes Docker create a particular container. Serialized (with
/// [`HASH_ENCODING_VERSION`]) as the canonical encoding of the config hash; the real environment
/// values are kept beside it and never serialized (nor shown by `Debug`).
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// Image reference.
    pub image: String,
    /// Entrypoint override.
    pub command: Option<Vec<String>>,
    /// Command (arguments) override.
    pub args: Option<Vec<String>>,
    /// Environment as hashed, sorted by name.
    pub env: BTreeMap<String, HashedValue>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Ports, sorted.
    pub ports: Vec<PortConfig>,
    /// Mounts, sorted by target.
    pub mounts: Vec<MountConfig>,
    /// Networks, sorted by name.
    pub networks: Vec<NetworkAttachment>,
    /// Health check.
    pub healthcheck: Option<HealthConfig>,
    /// Limits.
    pub resources: ResourceConfig,
    /// Security options.
    pub security: SecurityConfig,
    /// Docker restart policy (`no`, `on-failure`, `unless-stopped`, `always`).
    pub restart_policy: String,
    /// Stop timeout in seconds.
    pub stop_grace_period_seconds: Option<i64>,
    /// Log rotation: max size in MiB and max files.
    pub logging: Option<(Option<i64>, Option<i64>)>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// The real environment (`NAME=value`), never hashed or logged.
    #[serde(skip)]
    pub env_values: Vec<String>,
}

impl std::fmt::Debug for ContainerConfig {
    // Written by hand so that a `{:?}` in a log line can never print a secret value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerConfig")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("working_dir", &self.working_dir)
            .field("user", &self.user)
            .field("ports", &self.ports)
            .field("mounts", &self.mounts)
            .field("networks", &self.networks)
            .field("healthcheck", &self.healthcheck)
            .field("resources", &self.resources)
            .field("security", &self.security)
            .field("restart_policy", &self.restart_policy)
            .field("stop_grace_period_seconds", &self.stop_grace_period_seconds)
            .field("logging", &self.logging)
            .field("labels", &self.labels)
            .field("env_values", &format_args!("<{} values hidden>", self.env_values.len()))
            .finish()
    }
}

impl ContainerConfig {
    /// The values of the variables that come from Secrets, so that text shown to people (Docker
    /// errors, container logs) can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<&str> {
        self.env_values
            .iter()
            .filter_map(|entry| {
                let (name, value) = entry.split_once('=')?;
                matches!(self.env.get(name), Some(HashedValue::SecretDigest(_))).then_some(value)
            })
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The config hash: hex SHA-256 of the canonical encoding.
    pub fn hash(&self) -> String {
        #[derive(Serialize)]
        struct Versioned<'a> {
            v: u32,
            c: &'a ContainerConfig,
        }
        let bytes = serde_json::to_vec(&Versioned { v: HASH_ENCODING_VERSION, c: self }).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// One container the Stack wants on every selected host.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    /// Docker container name.
    pub name: String,
    /// Service.
    pub service: String,
    /// Replica index.
    pub replica: i32,
    /// Configuration.
    pub config: ContainerConfig,
    /// Its hash.
    pub config_hash: String,
    /// All labels to set (ownership, bookkeeping and user labels).
    pub labels: BTreeMap<String, String>,
}

/// A service with its containers.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    /// Service name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Pull policy.
    pub pull_policy: PullPolicy,
    /// Start-order dependencies.
    pub depends_on: Vec<(String, DependencyCondition)>,
    /// Whether the service has a health check (readiness then means healthy).
    pub has_healthcheck: bool,
    /// One entry per replica.
    pub containers: Vec<DesiredContainer>,
}

/// A network the Stack owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNetwork {
    /// Name in the Stack.
    pub logical: String,
    /// Docker name.
    pub name: String,
    /// Internal.
    pub internal: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A volume the Stack owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVolume {
    /// Name in the Stack.
    pub logical: String,
    /// Docker name.
    pub name: String,
    /// Kept when the Stack is deleted.
    pub retain: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Everything a Stack wants on each of its hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredState {
    /// Networks.
    pub networks: Vec<DesiredNetwork>,
    /// Volumes.
    pub volumes: Vec<DesiredVolume>,
    /// Services in spec order.
    pub services: Vec<DesiredService>,
}

impl DesiredState {
    /// Hash of the whole desired state (tier 1 drift compares it with `status.appliedHash`).
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("v{HASH_ENCODING_VERSION}\n"));
        for n in &self.networks {
            h.update(format!("network {} internal={}\n", n.name, n.internal));
        }
        for v in &self.volumes {
            h.update(format!("volume {}\n", v.name));
        }
        for s in &self.services {
            for c in &s.containers {
                h.update(format!("container {} {}\n", c.name, c.config_hash));
            }
            for (d, cond) in &s.depends_on {
                h.update(format!("depends {} {d} {cond:?}\n", s.name));
            }
        }
        hex::encode(h.finalize())
    }

    /// Every container, in spec order.
    pub fn containers(&self) -> impl Iterator<Item = &DesiredContainer> {
        self.services.iter().flat_map(|s| s.containers.iter())
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&DesiredService> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every secret value the desired containers receive (see [`redact`]).
    pub fn secret_values(&self) -> Vec<String> {
        let mut values: BTreeSet<String> = BTreeSet::new();
        for s in &self.services {
            if let Some(c) = s.containers.first() {
                values.extend(c.config.secret_values().into_iter().map(str::to_string));
            }
        }
        values.into_iter().collect()
    }
}

/// Replaces every occurrence of a secret value in `text` (a Docker error, a log line) before it
/// is shown in status, an event or a log.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        // Very short values would turn ordinary text into asterisks and hide nothing of worth.
        if s.len() >= 3 {
            out = out.replace(s.as_str(), "****");
        }
    }
    out
}

/// Names of a Stack's Docker objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

impl Naming {
    /// Names for Stack `name` in `namespace`: the prefix is the Stack name, preceded by
    /// `<namespace>.` outside `default` (dots never occur in Stack names, so names never clash).
    pub fn new(namespace: &str, name: &str) -> Self {
        let prefix = if namespace == "default" { name.to_string() } else { format!("{namespace}.{name}") };
        Self { prefix }
    }

    /// `<prefix>-<service>-<replica>`.
    pub fn container(&self, service: &str, replica: i32) -> String {
        format!("{}-{service}-{replica}", self.prefix)
    }

    /// `<prefix>_<network>`.
    pub fn network(&self, network: &str) -> String {
        format!("{}_{network}", self.prefix)
    }

    /// `<prefix>_<volume>`.
    pub fn volume(&self, volume: &str) -> String {
        format!("{}_{volume}", self.prefix)
    }
}

/// Inputs of rendering besides the Stack.
pub struct RenderContext<'a> {
    /// This installation's instance id (label `berth.dev/instance`).
    pub instance: &'a str,
    /// Key of the secret-value HMAC.
    pub hash_key: &'a [u8],
    /// Allowed hostPath prefixes.
    pub allowed_host_paths: &'a [String],
    /// Secret and ConfigMap values.
    pub references: &'a dyn References,
}

/// Labels every object owned by `stack` carries.
pub fn owner_labels(instance: &str, kind: &str, namespace: &str, name: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_OWNER_KIND.to_string(), kind.to_string()),
        (LABEL_OWNER_NAMESPACE.to_string(), namespace.to_string()),
        (LABEL_OWNER_NAME.to_string(), name.to_string()),
        (LABEL_OWNER_UID.to_string(), uid.to_string()),
    ])
}

fn secret_digest(key: &[u8], namespace: &str, name: &str, item: &str, value: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{namespace}/{name}/{item}\0").as_bytes());
    mac.update(value);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `path` lies under one of the `allowed` prefixes (whole path components: `/srv` allows
/// `/srv/shop`, not `/srvx`).
/// A path with `..` is never allowed, whatever it starts with (`/srv/../etc`).
pub fn host_path_allowed(path: &str, allowed: &[String]) -> bool {
    let p = std::path::Path::new(path);
    if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) || !p.is_absolute() {
        return false;
    }
    allowed.iter().any(|prefix| p.starts_with(std::path::Path::new(prefix)))
}

/// The environment of a container (`NAME=value` entries) and how each value enters the config
/// hash (secret values only as an HMAC under the installation's key). Shared with Leases.
pub fn render_env(
    env: &[EnvVar],
    namespace: &str,
    ctx: &RenderContext<'_>,
) -> Result<(BTreeMap<String, HashedValue>, Vec<String>), RenderError> {
    let mut hashed = BTreeMap::new();
    let mut values = Vec::new();
    for e in env {
        if let Some(v) = &e.value {
            hashed.insert(e.name.clone(), HashedValue::Plain(v.clone()));
            values.push(format!("{}={v}", e.name));
            continue;
        }
        let Some(src) = &e.value_from else { continue };
        if let Some(sel) = &src.secret_key_ref {
            match ctx.references.secret(namespace, &sel.name, &sel.key) {
                Some(bytes) => {
                    let text = String::from_utf8(bytes.clone()).map_err(|_| RenderError::NotText {
                        kind: "Secret",
                        namespace: namespace.into(),
                        name: sel.name.clone(),
                        key: sel.key.clone(),
                    })?;
                    let digest = secret_digest(ctx.hash_key, namespace, &sel.name, &sel.key, &bytes);
                    hashed.insert(e.name.clone(), HashedValue::SecretDigest(digest));
                    values.push(format!("{}={text}", e.name));
                }
                None if sel.optional => {}
                None => {
                    return Err(RenderError::MissingReference {
                        kind: "Secret",
                        namespace: namespace.into(),
                        name: sel.name.clone(),
                        key: sel.key.clone(),
                    });
                }
            }
        } else if let Some(sel) = &src.config_map_key_ref {
            match ctx.references.config_map(namespace, &sel.name, &sel.key) {
                Some(v) => {
                    hashed.insert(e.name.clone(), HashedValue::Plain(v.clone()));
                    values.push(format!("{}={v}", e.name));
                }
                None if sel.optional => {}
                None => {
                    return Err(RenderError::MissingReference {
                        kind: "ConfigMap",
                        namespace: namespace.into(),
                        name: sel.name.clone(),
                        key: sel.key.clone(),
                    });
                }
            }
        }
    }
    Ok((hashed, values))
}

/// Renders the desired state of `stack`.
pub fn render(stack: &Stack, ctx: &RenderContext<'_>) -> Result<DesiredState, RenderError> {
    let namespace = stack.namespace_or_default();
    let name = stack.name();
    let uid = stack.metadata.uid.as_deref().unwrap_or("");
    let naming = Naming::new(namespace, name);
    let owner = owner_labels(ctx.instance, "Stack", namespace, name, uid);

    let mut networks: Vec<DesiredNetwork> = stack
        .spec
        .networks
        .iter()
        .map(|n| DesiredNetwork {
            logical: n.name.clone(),
            name: naming.network(&n.name),
            internal: n.internal,
            labels: owner.clone(),
        })
        .collect();
    let needs_default = stack.spec.services.iter().any(|s| s.networks.is_empty());
    if needs_default && !networks.iter().any(|n| n.logical == DEFAULT_NETWORK) {
        networks.push(DesiredNetwork {
            logical: DEFAULT_NETWORK.into(),
            name: naming.network(DEFAULT_NETWORK),
            internal: false,
            labels: owner.clone(),
        });
    }
    let volumes: Vec<DesiredVolume> = stack
        .spec
        .volumes
        .iter()
        .map(|v| DesiredVolume {
            logical: v.name.clone(),
            name: naming.volume(&v.name),
            retain: v.retain,
            labels: owner.clone(),
        })
        .collect();

    let mut services = Vec::new();
    for svc in &stack.spec.services {
        let (env, env_values) = render_env(&svc.env, namespace, ctx)?;
        let mut mounts = Vec::new();
        for m in &svc.mounts {
            let source = if let Some(v) = &m.volume {
                MountSource::Volume(naming.volume(v))
            } else if let Some(p) = &m.host_path {
                if !host_path_allowed(p, ctx.allowed_host_paths) {
                    return Err(RenderError::HostPathNotAllowed {
                        service: svc.name.clone(),
                        path: p.clone(),
                        allowed: if ctx.allowed_host_paths.is_empty() {
                            "empty".into()
                        } else {
                            ctx.allowed_host_paths.join(", ")
                        },
                    });
                }
                MountSource::HostPath(p.clone())
            } else {
                MountSource::Tmpfs(m.tmpfs.as_ref().and_then(|t| t.size_mb).map(|mb| mb * 1024 * 1024))
            };
            mounts.push(MountConfig { target: m.mount_path.clone(), source, read_only: m.read_only });
        }
        mounts.sort();
        let mut attachments: Vec<NetworkAttachment> = if svc.networks.is_empty() {
            vec![NetworkAttachment { network: naming.network(DEFAULT_NETWORK), aliases: vec![svc.name.clone()] }]
        } else {
            svc.networks
                .iter()
                .map(|n| {
                    let mut aliases: BTreeSet<String> = n.aliases.iter().cloned().collect();
                    aliases.insert(svc.name.clone());
                    NetworkAttachment { network: naming.network(&n.name), aliases: aliases.into_iter().collect() }
                })
                .collect()
        };
        attachments.sort();
        let mut ports: Vec<PortConfig> = svc
            .ports
            .iter()
            .map(|p| PortConfig {
                container_port: p.container_port.clamp(0, 65535) as u16,
                protocol: p.protocol.as_str().to_string(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
                host_port: p.host_port.map(|h| h.clamp(0, 65535) as u16),
            })
            .collect();
        ports.sort();
        let resources = svc
            .resources
            .as_ref()
            .map(|r| ResourceConfig {
                nano_cpus: r.cpus.map(|c| (c * 1e9).round() as i64),
                memory_bytes: r.memory_mb.map(|m| m * 1024 * 1024),
                memory_swap_bytes: r.memory_mb.map(|m| m * 1024 * 1024),
                pids: r.pids,
            })
            .unwrap_or_default();
        let security = svc
            .security
            .as_ref()
            .map(|s| {
                let mut cap_add = s.cap_add.clone();
                cap_add.sort();
                let mut cap_drop = s.cap_drop.clone();
                cap_drop.sort();
                SecurityConfig {
                    read_only_root_filesystem: s.read_only_root_filesystem,
                    cap_add,
                    cap_drop,
                    no_new_privileges: s.no_new_privileges,
                    privileged: s.privileged,
                }
            })
            .unwrap_or_default();
        let config = ContainerConfig {
            image: svc.image.clone(),
            command: svc.command.clone(),
            args: svc.args.clone(),
            env,
            working_dir: svc.working_dir.clone(),
            user: svc.user.clone(),
            ports,
            mounts,
            networks: attachments,
            healthcheck: svc.healthcheck.as_ref().map(|h| HealthConfig {
                test: h.test.clone(),
                interval_seconds: h.interval_seconds,
                timeout_seconds: h.timeout_seconds,
                retries: h.retries,
                start_period_seconds: h.start_period_seconds,
            }),
            resources,
            security,
            restart_policy: svc.restart_policy.docker_name().to_string(),
            stop_grace_period_seconds: svc.stop_grace_period_seconds,
            logging: svc.logging.as_ref().map(|l| (l.max_size_mb, l.max_files)),
            labels: svc.labels.clone(),
            env_values,
        };
        let config_hash = config.hash();
        let containers = (0..svc.replicas.max(0))
            .map(|replica| {
                let mut labels = svc.labels.clone();
                labels.extend(owner.clone());
                labels.insert(LABEL_SERVICE.into(), svc.name.clone());
                labels.insert(LABEL_REPLICA.into(), replica.to_string());
                labels.insert(LABEL_CONFIG_HASH.into(), config_hash.clone());
                DesiredContainer {
                    name: naming.container(&svc.name, replica),
                    service: svc.name.clone(),
                    replica,
                    config: config.clone(),
                    config_hash: config_hash.clone(),
                    labels,
                }
            })
            .collect();
        services.push(DesiredService {
            name: svc.name.clone(),
            image: svc.image.clone(),
            pull_policy: svc.pull_policy,
            depends_on: svc.depends_on.iter().map(|d| (d.service.clone(), d.condition)).collect(),
            has_healthcheck: svc.healthcheck.as_ref().is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE")),
            containers,
        });
    }
    Ok(DesiredState { networks, volumes, services })
}

/// Decodes base64 Secret data, for [`References`] implementations over Secret objects.
pub fn decode_secret_value(b64: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests;
