//! The operator configuration of `berth serve --config berth.yaml`: Lease SKUs, registry
//! allowlist, tenant quotas and lease defaults, the Stack hostPath allowlist, the orphan policy
//! and the resync interval. Parsed strictly (an unknown key is an error, since a typo in a
//! safety setting must not pass silently) and validated at start, every error naming its key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the operator config {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("the operator config {path} is not valid: {message}")]
    Parse {
        /// File.
        path: String,
        /// What the parser said (it names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("operator config key {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `leases.skus.small.memoryMb`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// A Go-style duration (`15s`, `5m`, `720h`) in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        berth_crds::duration::parse_duration(&s).map(ConfigDuration).map_err(serde::de::Error::custom)
    }
}

/// A resource profile a Lease asks for by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sku {
    /// CPU limit in cores.
    pub cpus: f64,
    /// Memory limit (and memory + swap limit) in MiB.
    pub memory_mb: i64,
    /// Writable-layer disk quota in MiB (applied where the storage driver supports it).
    #[serde(default)]
    pub disk_mb: Option<i64>,
    /// PID limit.
    #[serde(default)]
    pub pids: Option<i64>,
}

/// What one tenant may hold at once.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantQuota {
    /// Leases not yet Closed.
    #[serde(default)]
    pub max_leases: Option<u32>,
    /// Sum of SKU CPUs × quantity.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Sum of SKU memory × quantity, MiB.
    #[serde(default)]
    pub memory_mb: Option<i64>,
}

/// Retention of closed Leases' volumes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// How long retained volumes are kept.
    #[serde(default = "default_grace")]
    pub grace: ConfigDuration,
    /// How often expired retained volumes are reaped.
    #[serde(default = "default_reap_interval")]
    pub reap_interval: ConfigDuration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { grace: default_grace(), reap_interval: default_reap_interval() }
    }
}

fn default_grace() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(720 * 3600))
}

fn default_reap_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3600))
}

/// Where callback signing secrets come from when a Lease names none.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallbackConfig {
    /// The HMAC secret itself (prefer `secretFile`).
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the HMAC secret.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// Lease settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseConfig {
    /// SKUs by name.
    #[serde(default)]
    pub skus: BTreeMap<String, Sku>,
    /// Registries Lease images may come from, as registry hosts (`docker.io`, `ghcr.io`,
    /// `registry.local:5000`); empty: any registry. The registry of an image is its first path
    /// component when that looks like a host (has a `.` or `:`, or is `localhost`), as Docker
    /// decides. A reference naming no registry (`busybox`, `berth-e2e/busybox:latest`) is
    /// allowed by `docker.io` (Docker pulls it from there) and by the special entry `local`,
    /// which stands for images built or loaded on the hosts; `docker.io/library/busybox` is
    /// allowed by `docker.io` only. See `policy::image_allowed`.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Quotas by tenant (tenants not listed have no quota).
    #[serde(default)]
    pub tenant_quotas: BTreeMap<String, TenantQuota>,
    /// Longest Lease.
    #[serde(default = "default_max_duration")]
    pub max_duration: ConfigDuration,
    /// Duration of a Lease that gives neither `duration` nor `expiresAt`.
    #[serde(default = "default_lease_duration")]
    pub default_duration: ConfigDuration,
    /// How long a container without a health check must keep running to count as up.
    #[serde(default = "default_verify_window")]
    pub verify_window: ConfigDuration,
    /// How long a container with a health check may take to become healthy.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: ConfigDuration,
    /// Size of the tmpfs mounted at `/tmp` and `/run`, MiB.
    #[serde(default = "default_tmpfs_mb")]
    pub tmpfs_mb: i64,
    /// Address published ports bind to.
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    /// Host name used in endpoint URLs (default: the Host's endpoint host, or `localhost`).
    #[serde(default)]
    pub public_host: Option<String>,
    /// Retention of closed Leases' volumes.
    #[serde(default)]
    pub retention: Retention,
    /// Callback signing.
    #[serde(default)]
    pub callbacks: CallbackConfig,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            skus: BTreeMap::new(),
            allowed_registries: Vec::new(),
            tenant_quotas: BTreeMap::new(),
            max_duration: default_max_duration(),
            default_duration: default_lease_duration(),
            verify_window: default_verify_window(),
            health_timeout: default_health_timeout(),
            tmpfs_mb: default_tmpfs_mb(),
            bind_address: default_bind_address(),
            public_host: None,
            retention: Retention::default(),
            callbacks: CallbackConfig::default(),
        }
    }
}

fn default_max_duration() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(168 * 3600))
}
fn default_lease_duration() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3600))
}
fn default_verify_window() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_health_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}
fn default_tmpfs_mb() -> i64 {
    64
}
fn default_bind_address() -> String {
    "0.0.0.0".into()
}

/// Stack settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackConfig {
    /// Host path prefixes `hostPath` mounts may use (empty: none allowed).
    #[serde(default)]
    pub allowed_host_paths: Vec<String>,
}

/// What orphan collection does with orphans that pass every gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum OrphanAction {
    /// Only report them (the default).
    #[default]
    Report,
    /// Remove them.
    Remove,
}

impl OrphanAction {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "Report",
            Self::Remove => "Remove",
        }
    }
}

/// Orphan policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrphanConfig {
    /// Requested action.
    #[serde(default)]
    pub action: OrphanAction,
    /// Most orphans removed on one host without an operator's confirmation.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Youngest object that may be removed.
    #[serde(default = "default_min_age")]
    pub min_age: ConfigDuration,
}

impl Default for OrphanConfig {
    fn default() -> Self {
        Self { action: OrphanAction::Report, threshold: default_threshold(), min_age: default_min_age() }
    }
}

fn default_threshold() -> u32 {
    5
}
fn default_min_age() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(300))
}
fn default_resync() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

/// The whole operator configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Lease settings.
    #[serde(default)]
    pub leases: LeaseConfig,
    /// Stack settings.
    #[serde(default)]
    pub stacks: StackConfig,
    /// Orphan policy.
    #[serde(default)]
    pub orphans: OrphanConfig,
    /// How often a converged object is re-checked.
    #[serde(default = "default_resync")]
    pub resync_interval: ConfigDuration,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            leases: LeaseConfig::default(),
            stacks: StackConfig::default(),
            orphans: OrphanConfig::default(),
            resync_interval: default_resync(),
        }
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl OperatorConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: OperatorConfig = if text.trim().is_empty() {
            OperatorConfig::default()
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|e| ConfigError::Parse { path: origin.to_string(), message: e.to_string() })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.leases;
        for (name, sku) in &l.skus {
            let key = |f: &str| format!("leases.skus.{name}.{f}");
            if berth_crds::validation::dns_label_problem(name).is_some() {
                return Err(invalid(format!("leases.skus.{name}"), "SKU names must be DNS labels (a-z, 0-9, -)"));
            }
            if !(sku.cpus > 0.0 && sku.cpus.is_finite()) {
                return Err(invalid(key("cpus"), format!("must be a positive number of cores, got {}", sku.cpus)));
            }
            if sku.memory_mb < 6 {
                return Err(invalid(
                    key("memoryMb"),
                    format!("must be at least 6 (Docker's minimum), got {}", sku.memory_mb),
                ));
            }
            if let Some(d) = sku.disk_mb
                && d <= 0
            {
                return Err(invalid(key("diskMb"), format!("must be positive, got {d}")));
            }
            if let Some(p) = sku.pids
                && p <= 0
            {
                return Err(invalid(key("pids"), format!("must be positive, got {p}")));
            }
        }
        for (i, r) in l.allowed_registries.iter().enumerate() {
            if r.is_empty() || r.contains('/') || r.contains(char::is_whitespace) {
                return Err(invalid(
                    format!("leases.allowedRegistries[{i}]"),
                    format!(
                        "{r:?} is not a registry host (write e.g. docker.io, ghcr.io, registry.local:5000 or local)"
                    ),
                ));
            }
        }
        for (tenant, q) in &l.tenant_quotas {
            if let Some(c) = q.cpus
                && (c.is_nan() || c <= 0.0)
            {
                return Err(invalid(format!("leases.tenantQuotas.{tenant}.cpus"), "must be positive"));
            }
            if let Some(m) = q.memory_mb
                && m <= 0
            {
                return Err(invalid(format!("leases.tenantQuotas.{tenant}.memoryMb"), "must be positive"));
            }
        }
        if l.max_duration.0.is_zero() {
            return Err(invalid("leases.maxDuration", "must be longer than 0"));
        }
        if l.default_duration.0 > l.max_duration.0 {
            return Err(invalid("leases.defaultDuration", "must not be longer than leases.maxDuration"));
        }
        if l.verify_window.0 > Duration::from_secs(600) {
            return Err(invalid("leases.verifyWindow", "must be at most 10m"));
        }
        if l.tmpfs_mb <= 0 {
            return Err(invalid("leases.tmpfsMb", "must be positive"));
        }
        if l.bind_address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "leases.bindAddress",
                format!("{:?} is not an IP address (write e.g. 0.0.0.0 or 127.0.0.1)", l.bind_address),
            ));
        }
        if l.retention.reap_interval.0 < Duration::from_secs(1) {
            return Err(invalid("leases.retention.reapInterval", "must be at least 1s"));
        }
        if l.callbacks.secret.is_some() && l.callbacks.secret_file.is_some() {
            return Err(invalid("leases.callbacks", "give secret or secretFile, not both"));
        }
        if let Some(f) = &l.callbacks.secret_file
            && !Path::new(f).is_file()
        {
            return Err(invalid("leases.callbacks.secretFile", format!("{f} is not a readable file")));
        }
        for (i, p) in self.stacks.allowed_host_paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(invalid(format!("stacks.allowedHostPaths[{i}]"), format!("{p:?} is not an absolute path")));
            }
            if p == "/" {
                return Err(invalid(
                    format!("stacks.allowedHostPaths[{i}]"),
                    "\"/\" would allow every host path, the Docker socket included; list narrower prefixes",
                ));
            }
        }
        if self.orphans.threshold == 0 {
            return Err(invalid("orphans.threshold", "must be at least 1 (use action: Report to never remove)"));
        }
        if self.resync_interval.0 < Duration::from_secs(1) {
            return Err(invalid("resyncInterval", "must be at least 1s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../manifests/berth.yaml");

    #[test]
    fn the_sample_config_is_valid() {
        let c = OperatorConfig::parse(SAMPLE, "berth.yaml").unwrap();
        assert_eq!(c.leases.skus["small"].memory_mb, 256);
        assert_eq!(c.orphans.threshold, 5);
        assert_eq!(c.orphans.min_age.0, Duration::from_secs(300));
        assert_eq!(c.resync_interval.0, Duration::from_secs(60));
    }

    #[test]
    fn empty_config_gives_defaults() {
        let c = OperatorConfig::parse("", "x").unwrap();
        assert_eq!(c, OperatorConfig::default());
        assert_eq!(c.orphans.action, OrphanAction::Report);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("leases: {skus: {small: {cpus: 0, memoryMb: 256}}}", "leases.skus.small.cpus"),
            ("leases: {skus: {small: {cpus: 1, memoryMb: 1}}}", "leases.skus.small.memoryMb"),
            ("leases: {allowedRegistries: [\"docker.io/library\"]}", "leases.allowedRegistries[0]"),
            ("leases: {bindAddress: everywhere}", "leases.bindAddress"),
            ("stacks: {allowedHostPaths: [srv]}", "stacks.allowedHostPaths[0]"),
            ("stacks: {allowedHostPaths: [/]}", "stacks.allowedHostPaths[0]"),
            ("orphans: {threshold: 0}", "orphans.threshold"),
            ("resyncInterval: 0s", "resyncInterval"),
        ];
        for (text, key) in cases {
            let err = OperatorConfig::parse(text, "x").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        let err = OperatorConfig::parse("orphans: {treshold: 3}", "x").unwrap_err().to_string();
        assert!(err.contains("treshold"), "{err}");
        let err = OperatorConfig::parse("orphans: {minAge: soon}", "x").unwrap_err().to_string();
        assert!(err.contains("minAge") || err.contains("soon"), "{err}");
        let err = OperatorConfig::parse("orphans: {action: Delete}", "x").unwrap_err().to_string();
        assert!(err.contains("Delete"), "{err}");
    }
}
