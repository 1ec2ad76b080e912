//! Rendering a Lease: its SKU, the operator's hardening settings and its services become the
//! Docker objects of one release — hardened containers (one per service instance), the volumes
//! of its services and the tenant's bridge network — with berth's ownership labels, a config
//! hash and the allocation placement reserves. Pure: no I/O, secret values come in through
//! [`References`] and enter the hash only as an HMAC.
//!
//! Hardening of every container (PRODUCT.md §3): all capabilities dropped, no-new-privileges,
//! read-only root filesystem with tmpfs `/tmp` and `/run`, the SKU's PID limit, memory limit
//! equal to memory + swap (no swap), the SKU's CPU limit, Docker restart policy `no` (berth
//! detects and reports failures itself), the tenant's own bridge network, and published ports
//! bound to the configured address on random host ports.

use std::collections::BTreeMap;

use berth_crds::Lease;
use berth_crds::common::{
    LABEL_CONFIG_HASH, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_RELEASE, LABEL_REPLICA, LABEL_ROLE, LABEL_SERVICE,
    LABEL_SKU, LABEL_TENANT, LABEL_VOLUME, MANAGED_BY_VALUE, ROLE_TENANT_NETWORK,
};
use berth_crds::lease::LeaseAllocation;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{LeaseConfig, Sku};
use crate::controllers::stack::render::{HashedValue, References, RenderError, owner_labels, render_env};
use crate::docker::{ContainerSpec, Mount, NetworkJoin, NetworkSpec, PortMapping, VolumeSpec};

/// Owner kind of a Lease's Docker objects.
pub const OWNER_KIND: &str = "Lease";
/// PID limit of a SKU that sets none.
pub const DEFAULT_PIDS: i64 = 256;
/// Seconds between SIGTERM and SIGKILL when a Lease container is stopped.
pub const STOP_TIMEOUT_SECONDS: i64 = 10;
const MIB: i64 = 1024 * 1024;
/// Version of the config-hash encoding (bump only with a migration: it would recreate every
/// Lease container).
pub const HASH_ENCODING_VERSION: u32 = 1;

/// Why a Lease cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum LeaseRenderError {
    /// The SKU is not (or no longer) in the operator configuration.
    #[error(
        "SKU {sku:?} is not defined in the operator config key leases.skus (known: {known}); recreate the Lease \
         with a defined SKU or ask the operator to define it"
    )]
    UnknownSku {
        /// The SKU asked for.
        sku: String,
        /// The SKUs that exist.
        known: String,
    },
    /// An environment value could not be resolved.
    #[error(transparent)]
    Env(#[from] RenderError),
}

/// Names of a Lease's Docker objects. Lease names start with `lease.` and Stack names never
/// contain a dot after their namespace prefix, so a Lease and a Stack of the same name never
/// compete for a container name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseNaming {
    namespace: String,
    name: String,
}

impl LeaseNaming {
    /// Names for Lease `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// `lease.<namespace>.<name>.<service>-<instance>.r<revision>`: each release has its own
    /// containers, so an update can fall back to the previous ones.
    pub fn container(&self, service: &str, instance: i32, revision: i64) -> String {
        format!("lease.{}.{}.{service}-{instance}.r{revision}", self.namespace, self.name)
    }

    /// `lease.<namespace>.<name>.<service>-<instance>.<volume>`: shared by every release.
    pub fn volume(&self, service: &str, instance: i32, volume: &str) -> String {
        format!("lease.{}.{}.{service}-{instance}.{volume}", self.namespace, self.name)
    }

    /// `retained.<namespace>.<name>.<service>-<instance>.<volume>`: a closed Lease's volume kept
    /// for the retention grace period.
    pub fn retained_volume(&self, service: &str, instance: i32, volume: &str) -> String {
        format!("retained.{}.{}.{service}-{instance}.{volume}", self.namespace, self.name)
    }

    /// Name of the helper container that writes into a volume (never started).
    pub fn helper(&self, purpose: &str) -> String {
        format!("lease.{}.{}.{purpose}", self.namespace, self.name)
    }
}

/// The bridge network of `tenant` on a host (per berth instance, so two installations sharing
/// a daemon keep their tenants apart).
pub fn tenant_network(instance: &str, tenant: &str) -> String {
    format!("berth-{instance}-tenant-{tenant}")
}

/// Labels of the tenant network.
pub fn tenant_network_labels(instance: &str, tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_TENANT.to_string(), tenant.to_string()),
        (LABEL_ROLE.to_string(), ROLE_TENANT_NETWORK.to_string()),
    ])
}

/// A volume of one service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceVolume {
    /// Name in the Lease spec.
    pub logical: String,
    /// Docker volume name.
    pub name: String,
    /// Path in the container.
    pub mount_path: String,
}

/// One container of the release.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedInstance {
    /// Service name.
    pub service: String,
    /// Instance index.
    pub instance: i32,
    /// What to create.
    pub spec: ContainerSpec,
    /// Its volumes.
    pub volumes: Vec<InstanceVolume>,
}

impl RenderedInstance {
    /// `service-instance`, as diagnostics and events name it.
    pub fn display(&self) -> String {
        format!("{}-{}", self.service, self.instance)
    }
}

/// A rendered release of a Lease.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedLease {
    /// Containers, by service then instance.
    pub instances: Vec<RenderedInstance>,
    /// Volumes to create (shared by every release).
    pub volumes: Vec<VolumeSpec>,
    /// The tenant network.
    pub network: NetworkSpec,
    /// Hash of everything that makes Docker create a different container (revision excluded).
    pub config_hash: String,
    /// What the Lease reserves on its host.
    pub allocation: LeaseAllocation,
    /// Secret values (for redaction of messages; never logged).
    pub secrets: Vec<String>,
}

/// Inputs of rendering besides the Lease.
pub struct LeaseRenderContext<'a> {
    /// This installation's instance id.
    pub instance: &'a str,
    /// Key of the secret-value HMAC.
    pub hash_key: &'a [u8],
    /// The operator's Lease settings.
    pub config: &'a LeaseConfig,
    /// Secret and ConfigMap values.
    pub references: &'a dyn References,
}

/// What one instance reserves: the SKU.
pub fn allocation(sku: &Sku, instances: i64) -> LeaseAllocation {
    LeaseAllocation { cpus: sku.cpus * instances as f64, memory_mb: sku.memory_mb * instances }
}

/// Number of containers of a Lease (sum of quantities).
pub fn instance_count(lease: &Lease) -> i64 {
    lease.spec.services.iter().map(|s| i64::from(s.quantity.max(0))).sum()
}

/// The SKU of a Lease, or why there is none.
pub fn sku_of<'a>(lease: &Lease, config: &'a LeaseConfig) -> Result<&'a Sku, LeaseRenderError> {
    config.skus.get(&lease.spec.sku).ok_or_else(|| LeaseRenderError::UnknownSku {
        sku: lease.spec.sku.clone(),
        known: if config.skus.is_empty() {
            "none".into()
        } else {
            config.skus.keys().cloned().collect::<Vec<_>>().join(", ")
        },
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HashedService<'a> {
    name: &'a str,
    image: &'a str,
    command: &'a Option<Vec<String>>,
    args: &'a Option<Vec<String>>,
    env: BTreeMap<String, HashedValue>,
    ports: Vec<(i32, &'static str)>,
    volumes: Vec<(&'a str, &'a str)>,
    quantity: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HashedLease<'a> {
    encoding: u32,
    sku: (f64, i64, Option<i64>, i64),
    tmpfs_mb: i64,
    bind_address: &'a str,
    network: String,
    services: Vec<HashedService<'a>>,
}

/// Renders release `revision` of `lease`.
pub fn render(lease: &Lease, revision: i64, ctx: &LeaseRenderContext<'_>) -> Result<RenderedLease, LeaseRenderError> {
    let sku = sku_of(lease, ctx.config)?;
    let namespace = lease.namespace_or_default();
    let name = lease.name();
    let uid = lease.metadata.uid.as_deref().unwrap_or("");
    let tenant = &lease.spec.tenant;
    let naming = LeaseNaming::new(namespace, name);
    let network_name = tenant_network(ctx.instance, tenant);
    let owner = owner_labels(ctx.instance, OWNER_KIND, namespace, name, uid);
    let pids = sku.pids.unwrap_or(DEFAULT_PIDS);

    let mut hashed_services = Vec::new();
    let mut env_per_service = Vec::new();
    let mut secrets = Vec::new();
    for svc in &lease.spec.services {
        let (hashed_env, values) = render_env(
            &svc.env,
            namespace,
            &crate::controllers::stack::render::RenderContext {
                instance: ctx.instance,
                hash_key: ctx.hash_key,
                allowed_host_paths: &[],
                references: ctx.references,
            },
        )?;
        for (k, v) in &hashed_env {
            if let HashedValue::SecretDigest(_) = v
                && let Some(entry) = values.iter().find(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
                && let Some((_, value)) = entry.split_once('=')
            {
                secrets.push(value.to_string());
            }
        }
        hashed_services.push(HashedService {
            name: &svc.name,
            image: &svc.image,
            command: &svc.command,
            args: &svc.args,
            env: hashed_env,
            ports: svc.ports.iter().map(|p| (p.container_port, p.protocol.as_str())).collect(),
            volumes: svc.volumes.iter().map(|v| (v.name.as_str(), v.mount_path.as_str())).collect(),
            quantity: svc.quantity,
        });
        env_per_service.push(values);
    }
    let hashed = HashedLease {
        encoding: HASH_ENCODING_VERSION,
        sku: (sku.cpus, sku.memory_mb, sku.disk_mb, pids),
        tmpfs_mb: ctx.config.tmpfs_mb,
        bind_address: &ctx.config.bind_address,
        network: network_name.clone(),
        services: hashed_services,
    };
    let encoded = serde_json::to_vec(&hashed).expect("the hash input serializes");
    let config_hash = hex::encode(Sha256::digest(&encoded));

    let mut instances = Vec::new();
    let mut volumes = Vec::new();
    for (svc, env) in lease.spec.services.iter().zip(env_per_service) {
        for i in 0..svc.quantity.max(0) {
            let mut labels = owner.clone();
            labels.insert(LABEL_SERVICE.into(), svc.name.clone());
            labels.insert(LABEL_REPLICA.into(), i.to_string());
            labels.insert(LABEL_TENANT.into(), tenant.clone());
            labels.insert(LABEL_SKU.into(), lease.spec.sku.clone());

            let mut mounts = vec![
                Mount::Tmpfs {
                    target: "/tmp".into(),
                    size_bytes: Some(ctx.config.tmpfs_mb * MIB),
                    options: Some("nosuid,nodev".into()),
                },
                Mount::Tmpfs {
                    target: "/run".into(),
                    size_bytes: Some(ctx.config.tmpfs_mb * MIB),
                    options: Some("nosuid,nodev".into()),
                },
            ];
            let mut inst_volumes = Vec::new();
            for v in &svc.volumes {
                let vname = naming.volume(&svc.name, i, &v.name);
                let mut vlabels = labels.clone();
                vlabels.insert(LABEL_VOLUME.into(), v.name.clone());
                volumes.push(VolumeSpec { name: vname.clone(), labels: vlabels });
                mounts.push(Mount::Volume { name: vname.clone(), target: v.mount_path.clone(), read_only: false });
                inst_volumes.push(InstanceVolume {
                    logical: v.name.clone(),
                    name: vname,
                    mount_path: v.mount_path.clone(),
                });
            }
            let mut container_labels = labels.clone();
            container_labels.insert(LABEL_CONFIG_HASH.into(), config_hash.clone());
            container_labels.insert(LABEL_RELEASE.into(), revision.to_string());
            let spec = ContainerSpec {
                name: naming.container(&svc.name, i, revision),
                image: svc.image.clone(),
                entrypoint: svc.command.clone(),
                cmd: svc.args.clone(),
                env: env.clone(),
                labels: container_labels,
                ports: svc
                    .ports
                    .iter()
                    .map(|p| PortMapping {
                        container_port: u16::try_from(p.container_port).unwrap_or(0),
                        protocol: p.protocol.as_str().to_string(),
                        host_ip: ctx.config.bind_address.clone(),
                        host_port: Some(0),
                    })
                    .collect(),
                mounts,
                networks: vec![NetworkJoin {
                    network: network_name.clone(),
                    aliases: vec![format!("{name}-{}", svc.name), format!("{name}-{}-{i}", svc.name)],
                }],
                nano_cpus: Some((sku.cpus * 1e9).round() as i64),
                memory_bytes: Some(sku.memory_mb * MIB),
                memory_swap_bytes: Some(sku.memory_mb * MIB),
                pids_limit: Some(pids),
                read_only_root_filesystem: true,
                cap_drop: vec!["ALL".into()],
                no_new_privileges: true,
                restart_policy: "no".into(),
                stop_timeout_seconds: Some(STOP_TIMEOUT_SECONDS),
                log_max_size_mb: Some(10),
                log_max_files: Some(3),
                storage_size_bytes: sku.disk_mb.map(|d| d * MIB),
                ..Default::default()
            };
            instances.push(RenderedInstance { service: svc.name.clone(), instance: i, spec, volumes: inst_volumes });
        }
    }
    Ok(RenderedLease {
        instances,
        volumes,
        network: NetworkSpec {
            name: network_name,
            internal: false,
            labels: tenant_network_labels(ctx.instance, tenant),
        },
        config_hash,
        allocation: allocation(sku, instance_count(lease)),
        secrets,
    })
}

/// The host name endpoint URLs use: the operator's `leases.publicHost`, else the host part of
/// the Host's endpoint (`tcp://10.0.0.5:2376` → `10.0.0.5`), else `localhost` for a local socket.
pub fn public_host(config: &LeaseConfig, endpoint: &str) -> String {
    if let Some(h) = &config.public_host {
        return h.clone();
    }
    let rest = endpoint.split_once("://").map(|(_, r)| r).unwrap_or(endpoint);
    if endpoint.starts_with("unix://") || endpoint.starts_with("npipe://") || rest.is_empty() {
        return "localhost".into();
    }
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.rsplit_once('@').map(|(_, h)| h).unwrap_or(host_port);
    if let Some(stripped) = host_port.strip_prefix('[') {
        return format!("[{}]", stripped.split(']').next().unwrap_or(stripped));
    }
    host_port.split(':').next().unwrap_or(host_port).to_string()
}

#[cfg(test)]
mod tests {
    use berth_crds::LeaseSpec;
    use berth_crds::common::{EnvVar, EnvVarSource, LABEL_OWNER_KIND, LABEL_OWNER_UID, SecretKeySelector};
    use berth_crds::lease::{LeasePort, LeaseService, LeaseVolume};

    use super::*;

    struct Refs(BTreeMap<String, Vec<u8>>);
    impl References for Refs {
        fn secret(&self, _: &str, name: &str, key: &str) -> Option<Vec<u8>> {
            self.0.get(&format!("{name}/{key}")).cloned()
        }
        fn config_map(&self, _: &str, _: &str, _: &str) -> Option<String> {
            None
        }
    }

    fn config() -> LeaseConfig {
        let mut c = LeaseConfig::default();
        c.skus.insert("small".into(), Sku { cpus: 0.5, memory_mb: 256, disk_mb: Some(1024), pids: Some(128) });
        c.bind_address = "127.0.0.1".into();
        c
    }

    pub(crate) fn lease() -> Lease {
        let mut l = Lease::new(
            "pr-1",
            LeaseSpec {
                tenant: "acme".into(),
                sku: "small".into(),
                duration: Some("1h".into()),
                services: vec![
                    LeaseService {
                        name: "app".into(),
                        image: "berth-e2e/busybox:latest".into(),
                        command: Some(vec!["httpd".into(), "-f".into()]),
                        ports: vec![LeasePort { container_port: 8080, protocol: Default::default() }],
                        volumes: vec![LeaseVolume { name: "data".into(), mount_path: "/data".into() }],
                        env: vec![
                            EnvVar { name: "MODE".into(), value: Some("preview".into()), value_from: None },
                            EnvVar {
                                name: "TOKEN".into(),
                                value: None,
                                value_from: Some(EnvVarSource {
                                    secret_key_ref: Some(SecretKeySelector {
                                        name: "tok".into(),
                                        key: "v".into(),
                                        optional: false,
                                    }),
                                    config_map_key_ref: None,
                                }),
                            },
                        ],
                        quantity: 2,
                        ..Default::default()
                    },
                    LeaseService {
                        name: "worker".into(),
                        image: "berth-e2e/busybox:latest".into(),
                        quantity: 1,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
        l.metadata.namespace = Some("previews".into());
        l.metadata.uid = Some("uid-1".into());
        l
    }

    fn refs(token: &str) -> Refs {
        Refs(BTreeMap::from([("tok/v".to_string(), token.as_bytes().to_vec())]))
    }

    fn ctx<'a>(config: &'a LeaseConfig, refs: &'a Refs) -> LeaseRenderContext<'a> {
        LeaseRenderContext { instance: "test", hash_key: b"0123456789abcdef", config, references: refs }
    }

    #[test]
    fn every_container_is_hardened() {
        let c = config();
        let r = refs("s3cret-token");
        let out = render(&lease(), 1, &ctx(&c, &r)).unwrap();
        assert_eq!(out.instances.len(), 3, "app × 2 + worker × 1");
        for i in &out.instances {
            let s = &i.spec;
            assert_eq!(s.cap_drop, ["ALL"]);
            assert!(s.cap_add.is_empty());
            assert!(s.no_new_privileges && s.read_only_root_filesystem && !s.privileged);
            assert_eq!(s.restart_policy, "no");
            assert_eq!(s.pids_limit, Some(128));
            assert_eq!(s.memory_bytes, Some(256 * MIB));
            assert_eq!(s.memory_swap_bytes, s.memory_bytes, "no swap");
            assert_eq!(s.nano_cpus, Some(500_000_000));
            assert_eq!(s.storage_size_bytes, Some(1024 * MIB));
            let tmpfs: Vec<_> = s
                .mounts
                .iter()
                .filter_map(|m| match m {
                    Mount::Tmpfs { target, size_bytes, .. } => Some((target.as_str(), *size_bytes)),
                    _ => None,
                })
                .collect();
            assert_eq!(tmpfs, [("/tmp", Some(64 * MIB)), ("/run", Some(64 * MIB))]);
            assert_eq!(s.networks.len(), 1);
            assert_eq!(s.networks[0].network, "berth-test-tenant-acme");
            for p in &s.ports {
                assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", Some(0)), "random port on bindAddress");
            }
            assert_eq!(s.labels[LABEL_OWNER_KIND], "Lease");
            assert_eq!(s.labels[LABEL_OWNER_UID], "uid-1");
            assert_eq!(s.labels[LABEL_TENANT], "acme");
            assert_eq!(s.labels[LABEL_RELEASE], "1");
        }
        assert_eq!(out.instances[1].spec.name, "lease.previews.pr-1.app-1.r1");
        assert_eq!(
            out.volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["lease.previews.pr-1.app-0.data", "lease.previews.pr-1.app-1.data"]
        );
        assert_eq!(out.allocation, LeaseAllocation { cpus: 1.5, memory_mb: 768 });
        assert_eq!(out.network.labels[LABEL_ROLE], ROLE_TENANT_NETWORK);
    }

    #[test]
    fn secret_values_are_in_the_environment_but_not_in_labels_or_the_hash_input() {
        let c = config();
        let r = refs("s3cret-token");
        let out = render(&lease(), 1, &ctx(&c, &r)).unwrap();
        let app = &out.instances[0].spec;
        assert!(app.env.contains(&"TOKEN=s3cret-token".to_string()));
        assert!(app.labels.values().all(|v| !v.contains("s3cret")));
        assert_eq!(out.secrets, ["s3cret-token"]);
    }

    #[test]
    fn the_hash_follows_configuration_not_the_revision() {
        let c = config();
        let r = refs("one");
        let a = render(&lease(), 1, &ctx(&c, &r)).unwrap();
        let b = render(&lease(), 2, &ctx(&c, &r)).unwrap();
        assert_eq!(a.config_hash, b.config_hash);
        assert_ne!(a.instances[0].spec.name, b.instances[0].spec.name);
        let rotated = render(&lease(), 1, &ctx(&c, &refs("two"))).unwrap();
        assert_ne!(a.config_hash, rotated.config_hash, "a rotated secret is a new release");
        let mut changed = lease();
        changed.spec.services[0].image = "berth-e2e/busybox:other".into();
        assert_ne!(a.config_hash, render(&changed, 1, &ctx(&c, &r)).unwrap().config_hash);
        let mut longer = lease();
        longer.spec.duration = Some("2h".into());
        assert_eq!(a.config_hash, render(&longer, 1, &ctx(&c, &r)).unwrap().config_hash, "duration is not config");
    }

    #[test]
    fn golden_hash_pins_the_encoding() {
        let c = config();
        let r = refs("one");
        let a = render(&lease(), 1, &ctx(&c, &r)).unwrap();
        // Changing this value recreates every Lease container after an upgrade: bump
        // HASH_ENCODING_VERSION only with a reason.
        assert_eq!(a.config_hash, GOLDEN);
    }

    const GOLDEN: &str = "0a2907ed0e1c3061f2b0eb8fb207e2dad70ea2d0668d0f7e36667dd312d37b4e";

    #[test]
    fn unknown_skus_and_missing_secrets_are_errors_that_say_what_to_do() {
        let c = config();
        let r = refs("x");
        let mut l = lease();
        l.spec.sku = "huge".into();
        let e = render(&l, 1, &ctx(&c, &r)).unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("leases.skus") && e.contains("small"), "{e}");
        let e = render(&lease(), 1, &ctx(&c, &Refs(BTreeMap::new()))).unwrap_err().to_string();
        assert!(e.contains("tok"), "{e}");
    }

    #[test]
    fn public_host_comes_from_the_endpoint_unless_configured() {
        let mut c = config();
        assert_eq!(public_host(&c, "unix:///var/run/docker.sock"), "localhost");
        assert_eq!(public_host(&c, "tcp://10.0.0.5:2376"), "10.0.0.5");
        assert_eq!(public_host(&c, "ssh://deploy@edge-1"), "edge-1");
        assert_eq!(public_host(&c, "tcp://[fd00::1]:2375"), "[fd00::1]");
        c.public_host = Some("previews.example.com".into());
        assert_eq!(public_host(&c, "tcp://10.0.0.5:2376"), "previews.example.com");
    }
}
