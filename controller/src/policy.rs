//! Operator admission policy: the rules of the operator configuration (`berth serve --config`)
//! that the API server applies to every create and update after schema and semantic
//! validation, so that an object the operator does not allow is never stored.
//!
//! One function per kind: [`OperatorPolicy::admit`] dispatches on the resource. Stack rule:
//! `hostPath` mounts must lie under `stacks.allowedHostPaths` ([`stack_causes`]). Lease rules
//! ([`lease_causes`], [`quota_causes`]): the SKU must be one of `leases.skus`, every image must
//! come from `leases.allowedRegistries`, the Lease may not outlive `leases.maxDuration`, its
//! tenant, SKU and `restoreFrom` never change, `restoreFrom` names a Retained Lease of the same
//! tenant when that Lease still exists, and the tenant stays within `leases.tenantQuotas` (403,
//! like Kubernetes' "exceeded quota"). Field rules refuse only new violations on update, and
//! quotas refuse only an update that increases usage, so an object admitted before the operator
//! narrowed the configuration can still be updated and deleted.
//!
//! The quota check reads the store and the write follows it; the creates and updates of the
//! Leases of a tenant with a quota are ordered by that tenant's lock
//! ([`AdmissionPolicy::serialize`]) from the check until the write is stored, so two creates
//! racing for a tenant's last slot cannot both be admitted. Tenants without a quota take no lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_crds::duration::{format_duration, parse_duration};
use berth_crds::image::{DEFAULT_REGISTRY, ImageRef};
use berth_crds::{Lease, LeasePhase, Stack};
use serde::Deserialize;
use serde_json::Value;

use crate::apiserver::admission::{AdmissionPolicy, AdmissionRequest, Operation};
use crate::apiserver::errors::{ApiError, Cause, Details, qualified};
use crate::apiserver::registry::ResourceInfo;
use crate::config::{OperatorConfig, TenantQuota};
use crate::controllers::stack::render::host_path_allowed;
use crate::store::{ListOptions, ObjectKey, ResourceRef, Store};

/// The `leases.allowedRegistries` entry that admits image references naming no registry
/// (`busybox`, `berth-e2e/busybox:latest`): images built or loaded on the hosts.
pub const LOCAL_REGISTRY: &str = "local";

/// The policy of an operator configuration.
#[derive(Debug, Clone)]
pub struct OperatorPolicy {
    config: Arc<OperatorConfig>,
    /// One lock per tenant with a quota, ordering its Lease writes (see the module doc).
    quota_order: Arc<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OperatorPolicy {
    /// The policy of `config`.
    pub fn new(config: Arc<OperatorConfig>) -> Self {
        let quota_order = config.leases.tenant_quotas.keys().map(|t| (t.clone(), Arc::default())).collect();
        Self { config, quota_order: Arc::new(quota_order) }
    }
}

/// Every hostPath of `stack` outside `stacks.allowedHostPaths`, as 422 causes naming the field.
pub fn stack_causes(config: &OperatorConfig, stack: &Stack) -> Vec<Cause> {
    let allowed = &config.stacks.allowed_host_paths;
    let mut causes = Vec::new();
    for (i, svc) in stack.spec.services.iter().enumerate() {
        for (j, m) in svc.mounts.iter().enumerate() {
            let Some(path) = &m.host_path else { continue };
            if host_path_allowed(path, allowed) {
                continue;
            }
            let allowed_text =
                if allowed.is_empty() { "no host path is allowed".to_string() } else { allowed.join(", ") };
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                field: format!("spec.services[{i}].mounts[{j}].hostPath"),
                message: format!(
                    "hostPath {path:?} is not under any prefix of the operator config key stacks.allowedHostPaths \
                     ({allowed_text}); use a volume, or ask the operator to allow the path"
                ),
            });
        }
    }
    causes
}

/// Whether any mount of `stack` (as JSON) sets a host path: the only thing the Stack rules refuse.
fn has_host_path(stack: &Value) -> bool {
    let services = stack.pointer("/spec/services").and_then(Value::as_array).into_iter().flatten();
    services
        .filter_map(|s| s.get("mounts").and_then(Value::as_array))
        .flatten()
        .any(|m| m.get("hostPath").is_some_and(|p| !p.is_null()))
}

fn stack_rules(config: &OperatorConfig, request: &AdmissionRequest<'_>) -> Result<(), ApiError> {
    // Most Stacks mount no host path: nothing to decode then.
    if !has_host_path(request.object) {
        return Ok(());
    }
    let name = request.object.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("").to_string();
    // Schema validation ran first; an object that still does not parse has nothing to check here.
    let Ok(stack) = Stack::deserialize(request.object) else { return Ok(()) };
    let mut causes = stack_causes(config, &stack);
    if request.operation == Operation::Update
        && let Some(old) = request.old.and_then(|o| Stack::deserialize(o).ok())
    {
        // Only new violations are refused: a Stack admitted before the operator narrowed the
        // allowlist can still be deleted and have its finalizer removed (the controller refuses
        // to run it anyway).
        let before = stack_causes(config, &old);
        causes.retain(|c| !before.iter().any(|b| b.field == c.field && b.message == c.message));
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(&request.resource.kind, &request.resource.group, &name, causes))
}

fn cause(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Cause {
    Cause { reason: reason.into(), field: field.into(), message: message.into() }
}

fn quoted_list<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items.into_iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

/// Whether `reference` may run under `allowed` (`leases.allowedRegistries`): `Ok` when it may,
/// else the reason. An empty list allows every registry. A reference naming no registry
/// (`busybox`, `acme/app`) is what Docker pulls from `docker.io`, and is also how images built or
/// loaded on a host are named: it is allowed by `docker.io` and by [`LOCAL_REGISTRY`]. A
/// reference naming `docker.io` (or `index.docker.io`) explicitly is allowed by `docker.io` only.
/// A reference that does not parse is left to semantic validation (it reports it).
pub fn image_allowed(reference: &str, allowed: &[String]) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Ok(image) = ImageRef::parse(reference) else { return Ok(()) };
    let registry = image.registry.to_ascii_lowercase();
    let explicit = reference.to_ascii_lowercase().starts_with(&format!("{registry}/"));
    let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_string() } else { registry };
    let listed = |r: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(r));
    if listed(&registry) || (!explicit && listed(LOCAL_REGISTRY)) {
        return Ok(());
    }
    let list = allowed.join(", ");
    Err(if explicit {
        format!(
            "image {reference:?} comes from registry {registry}, which is not in the operator config key \
             leases.allowedRegistries ({list}); use an image from an allowed registry or ask the operator to add \
             {registry}"
        )
    } else {
        format!(
            "image {reference:?} names no registry (Docker pulls it from {DEFAULT_REGISTRY} unless it was built or \
             loaded on the host), and the operator config key leases.allowedRegistries ({list}) lists neither \
             {DEFAULT_REGISTRY} nor {LOCAL_REGISTRY}; use an image from an allowed registry"
        )
    })
}

/// How long `lease` would live, and the field that says so: `spec.duration`, or `spec.expiresAt`
/// counted from the Lease's creation (`now` for a Lease not yet created). `None` when it gives
/// neither (the operator's `leases.defaultDuration` applies) or the value does not parse (semantic
/// validation reports it).
fn requested_lifetime(lease: &Lease, now: jiff::Timestamp) -> Option<(&'static str, Duration, String)> {
    if let Some(d) = &lease.spec.duration {
        let d = parse_duration(d).ok()?;
        return Some(("spec.duration", d, format!("duration {}", format_duration(d))));
    }
    let expires = lease.spec.expires_at.as_ref()?.0;
    let (start, since) = match &lease.metadata.creation_timestamp {
        Some(t) => (t.0, "after the Lease's creation"),
        None => (now, "from now"),
    };
    let secs = expires.duration_since(start).as_secs();
    let d = Duration::from_secs(secs.max(0).unsigned_abs());
    Some(("spec.expiresAt", d, format!("expiresAt {expires} is {} {since}", format_duration(d))))
}

/// Every violation of the operator's field rules by `lease` (422 causes naming the field and the
/// config key): an unknown SKU, an image outside the registry allowlist, a lifetime beyond
/// `leases.maxDuration`. `now` is when a Lease without `creationTimestamp` would start.
pub fn lease_causes(config: &OperatorConfig, lease: &Lease, now: jiff::Timestamp) -> Vec<Cause> {
    let l = &config.leases;
    let mut causes = Vec::new();
    let sku = &lease.spec.sku;
    if !sku.is_empty() && !l.skus.contains_key(sku) {
        let known = if l.skus.is_empty() {
            "defines no SKU; ask the operator to define one".to_string()
        } else {
            format!("defines {}", quoted_list(l.skus.keys()))
        };
        causes.push(cause(
            "FieldValueNotSupported",
            "spec.sku",
            format!("unknown SKU {sku:?}: the operator config key leases.skus {known}"),
        ));
    }
    for (i, svc) in lease.spec.services.iter().enumerate() {
        if let Err(message) = image_allowed(&svc.image, &l.allowed_registries) {
            causes.push(cause("FieldValueForbidden", format!("spec.services[{i}].image"), message));
        }
    }
    let max = l.max_duration.0;
    if let Some((field, lifetime, what)) = requested_lifetime(lease, now)
        && lifetime > max
    {
        let max = format_duration(max);
        causes.push(cause(
            "FieldValueInvalid",
            field,
            format!(
                "{what}, longer than the operator config key leases.maxDuration ({max}) allows; ask for at most {max}"
            ),
        ));
    }
    causes
}

/// The fields a Lease keeps for its whole life, changed by `new`: it is re-created instead.
fn immutable_causes(old: &Lease, new: &Lease) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut check = |field: &str, what: &str, before: Option<&str>, after: Option<&str>| {
        if before != after {
            let before = before.map(|b| format!("{b:?}")).unwrap_or_else(|| "unset".into());
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("field is immutable: a Lease keeps its {what} (was {before}); create a new Lease instead"),
            ));
        }
    };
    check("spec.tenant", "tenant", Some(&old.spec.tenant), Some(&new.spec.tenant));
    check("spec.sku", "SKU", Some(&old.spec.sku), Some(&new.spec.sku));
    check("spec.restoreFrom", "restoreFrom", old.spec.restore_from.as_deref(), new.spec.restore_from.as_deref());
    causes
}

fn leases_ref() -> ResourceRef {
    ResourceRef { group: berth_crds::GROUP.into(), resource: "leases".into() }
}

fn store_error(err: crate::store::StoreError) -> ApiError {
    ApiError::internal(format!(
        "admission could not read Leases from the store: {err}; check the server log and the data directory's disk"
    ))
}

/// The Lease `lease` restores from, checked when it still exists: same tenant, phase Retained.
/// A Lease that no longer exists is admitted (the controller looks for its retained volumes).
fn restore_causes(store: &dyn Store, lease: &Lease) -> Result<Vec<Cause>, ApiError> {
    let Some(source) = &lease.spec.restore_from else { return Ok(Vec::new()) };
    let key =
        ObjectKey { resource: leases_ref(), namespace: lease.namespace_or_default().to_string(), name: source.clone() };
    let Some(stored) = store.get(&key).map_err(store_error)? else { return Ok(Vec::new()) };
    let value = &stored.value();
    let tenant = value.pointer("/spec/tenant").and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    if tenant != lease.spec.tenant {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.restoreFrom",
            format!(
                "lease {source} belongs to tenant {tenant:?}, not {:?}; a Lease restores only its own tenant's data",
                lease.spec.tenant
            ),
        ));
    }
    let phase = value.pointer("/status/phase").and_then(Value::as_str);
    if phase != Some(LeasePhase::Retained.as_str()) {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.restoreFrom",
            format!(
                "lease {source} is in phase {}; only a Retained Lease can be restored (close it with \
                 retainOnClose: true and wait for phase Retained)",
                phase.unwrap_or("(none yet)")
            ),
        ));
    }
    Ok(causes)
}

/// What Leases hold against a tenant quota.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantUsage {
    /// Live Leases (not Closed or Retained).
    pub leases: u32,
    /// SKU CPUs × instances.
    pub cpus: f64,
    /// SKU memory × instances, MiB.
    pub memory_mb: i64,
}

impl TenantUsage {
    fn plus(self, other: TenantUsage) -> TenantUsage {
        TenantUsage {
            leases: self.leases + other.leases,
            cpus: self.cpus + other.cpus,
            memory_mb: self.memory_mb + other.memory_mb,
        }
    }
}

/// What one stored Lease (as JSON) holds against its tenant's quota: nothing once Closed or
/// Retained; else one Lease and its SKU × the sum of its services' quantities (for a SKU the
/// operator has since removed, the allocation its status records).
pub fn lease_usage(config: &OperatorConfig, lease: &Value) -> TenantUsage {
    let phase = lease.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some(p) if p == LeasePhase::Closed.as_str() || p == LeasePhase::Retained.as_str()) {
        return TenantUsage::default();
    }
    let instances: i64 = lease
        .pointer("/spec/services")
        .and_then(Value::as_array)
        .map(|s| s.iter().map(|s| s.get("quantity").and_then(Value::as_i64).unwrap_or(1)).sum())
        .unwrap_or(0);
    let sku = lease.pointer("/spec/sku").and_then(Value::as_str).and_then(|s| config.leases.skus.get(s));
    let (cpus, memory_mb) = match sku {
        Some(sku) => (sku.cpus * instances as f64, sku.memory_mb * instances),
        None => (
            lease.pointer("/status/allocated/cpus").and_then(Value::as_f64).unwrap_or(0.0),
            lease.pointer("/status/allocated/memoryMb").and_then(Value::as_i64).unwrap_or(0),
        ),
    };
    TenantUsage { leases: 1, cpus, memory_mb }
}

/// What every stored Lease of `tenant` in every namespace holds, except the one at
/// `namespace/name`.
fn tenant_usage_except(
    config: &OperatorConfig,
    store: &dyn Store,
    tenant: &str,
    namespace: &str,
    name: &str,
) -> Result<TenantUsage, ApiError> {
    let list = store.list(&leases_ref(), None, &ListOptions::default()).map_err(store_error)?;
    Ok(list
        .items
        .iter()
        .filter(|o| !(o.key.namespace == namespace && o.key.name == name))
        .map(|o| o.value())
        .filter(|v| v.pointer("/spec/tenant").and_then(Value::as_str) == Some(tenant))
        .fold(TenantUsage::default(), |acc, v| acc.plus(lease_usage(config, &v))))
}

fn format_cpus(c: f64) -> String {
    // Sums of fractional SKUs (0.1 × 3) print as the operator wrote them, not 0.30000000000000004.
    let s = format!("{:.3}", c);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Every dimension of `quota` (the operator config key `leases.tenantQuotas.<tenant>`) that a
/// write exceeds: `others` is what the tenant's other Leases hold, `before` what this Lease held
/// (zero on create), `after` what it would hold. A dimension is refused only when the total after
/// the write is over the quota and larger than before, so an update that does not grow usage is
/// always admitted. Messages name the key, like Kubernetes' "exceeded quota".
pub fn quota_causes(
    tenant: &str,
    quota: &TenantQuota,
    others: TenantUsage,
    before: TenantUsage,
    after: TenantUsage,
) -> Vec<Cause> {
    const EPSILON: f64 = 1e-9;
    let key = format!("leases.tenantQuotas.{tenant}");
    let (was, will) = (others.plus(before), others.plus(after));
    let mut causes = Vec::new();
    if let Some(max) = quota.max_leases
        && will.leases > max
        && will.leases > was.leases
    {
        let held = if others.leases == max {
            format!("tenant {tenant} has {} live Leases, the most allowed", others.leases)
        } else {
            format!("tenant {tenant} has {} live Leases and {max} are allowed", others.leases)
        };
        causes.push(cause(
            "FieldValueForbidden",
            "spec.tenant",
            format!("{key}.maxLeases: {held}; close one of them first, or ask the operator to raise the quota"),
        ));
    }
    if let Some(max) = quota.cpus
        && will.cpus > max + EPSILON
        && will.cpus > was.cpus + EPSILON
    {
        causes.push(cause(
            "FieldValueForbidden",
            "spec.sku",
            format!(
                "{key}.cpus: this Lease needs {} CPUs and tenant {tenant}'s other live Leases hold {} of the {} \
                 allowed; use a smaller SKU or fewer instances, close a Lease, or ask the operator to raise the quota",
                format_cpus(after.cpus),
                format_cpus(others.cpus),
                format_cpus(max)
            ),
        ));
    }
    if let Some(max) = quota.memory_mb
        && will.memory_mb > max
        && will.memory_mb > was.memory_mb
    {
        causes.push(cause(
            "FieldValueForbidden",
            "spec.sku",
            format!(
                "{key}.memoryMb: this Lease needs {} MiB and tenant {tenant}'s other live Leases hold {} of the {max} \
                 MiB allowed; use a smaller SKU or fewer instances, close a Lease, or ask the operator to raise the \
                 quota",
                after.memory_mb, others.memory_mb
            ),
        ));
    }
    causes
}

fn forbidden(request: &AdmissionRequest<'_>, name: &str, causes: Vec<Cause>) -> ApiError {
    let info = request.resource;
    let summary: Vec<&str> = causes.iter().map(|c| c.message.as_str()).collect();
    let message = format!(
        "{} {name:?} is forbidden: exceeded quota: {}",
        qualified(&info.group, &info.plural),
        summary.join("; ")
    );
    let mut details = Details::new(&info.group, &info.plural, name);
    details.causes = causes;
    ApiError::Forbidden { message, details: Some(details) }
}

fn lease_rules(config: &OperatorConfig, request: &AdmissionRequest<'_>, now: jiff::Timestamp) -> Result<(), ApiError> {
    // Schema and semantic validation ran first; an object that still does not parse has nothing
    // to check here.
    let Ok(lease) = serde_json::from_value::<Lease>(request.object.clone()) else { return Ok(()) };
    let name = lease.name().to_string();
    let old = match request.operation {
        Operation::Update => request.old.and_then(|o| serde_json::from_value::<Lease>(o.clone()).ok()),
        Operation::Create => None,
    };
    let mut causes = lease_causes(config, &lease, now);
    match &old {
        Some(old) => {
            // Only new violations are refused (see the module doc).
            let before = lease_causes(config, old, now);
            causes.retain(|c| !before.iter().any(|b| b.field == c.field && b.message == c.message));
            causes.extend(immutable_causes(old, &lease));
        }
        // restoreFrom is immutable: checked once, so that a later change of the source Lease
        // never blocks updates (finalizer removal) of the restoring one.
        None => causes.extend(restore_causes(request.store, &lease)?),
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&request.resource.kind, &request.resource.group, &name, causes));
    }
    let Some(quota) = config.leases.tenant_quotas.get(&lease.spec.tenant) else { return Ok(()) };
    let others = tenant_usage_except(config, request.store, &lease.spec.tenant, lease.namespace_or_default(), &name)?;
    // The stored status comes along on a spec update: a Closed Lease holds nothing before or after.
    let before = request.old.map(|o| lease_usage(config, o)).unwrap_or_default();
    let after = lease_usage(config, request.object);
    let causes = quota_causes(&lease.spec.tenant, quota, others, before, after);
    if causes.is_empty() {
        return Ok(());
    }
    Err(forbidden(request, &name, causes))
}

#[async_trait]
impl AdmissionPolicy for OperatorPolicy {
    async fn admit(&self, request: &AdmissionRequest<'_>) -> Result<(), ApiError> {
        match (request.resource.group.as_str(), request.resource.kind.as_str()) {
            ("berth.dev", "Stack") => stack_rules(&self.config, request),
            ("berth.dev", "Lease") => lease_rules(&self.config, request, jiff::Timestamp::now()),
            _ => Ok(()),
        }
    }

    async fn serialize(&self, resource: &ResourceInfo, object: &Value) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        if resource.group != "berth.dev" || resource.kind != "Lease" {
            return None;
        }
        // The tenant never changes (admission refuses it), so the new object names the lock.
        let tenant = object.pointer("/spec/tenant").and_then(Value::as_str)?;
        let lock = self.quota_order.get(tenant)?;
        Some(Arc::clone(lock).lock_owned().await)
    }
}

#[cfg(test)]
mod tests {
    use berth_crds::StackSpec;
    use berth_crds::common::MountSpec;
    use berth_crds::lease::{LeaseService, LeaseSpec, LeaseStatus};
    use berth_crds::stack::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn stack(paths: &[&str]) -> Stack {
        Stack::new(
            "shop",
            StackSpec {
                services: vec![ServiceSpec {
                    name: "db".into(),
                    image: "i".into(),
                    mounts: paths
                        .iter()
                        .map(|p| MountSpec {
                            mount_path: "/x".into(),
                            volume: None,
                            host_path: Some(p.to_string()),
                            tmpfs: None,
                            read_only: false,
                        })
                        .collect(),
                    replicas: 1,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    fn config(allowed: &[&str]) -> OperatorConfig {
        let mut c = OperatorConfig::default();
        c.stacks.allowed_host_paths = allowed.iter().map(|s| s.to_string()).collect();
        c
    }

    async fn admit(config: &OperatorConfig, op: Operation, new: &Stack, old: Option<&Stack>) -> Result<(), ApiError> {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().join("store"), Default::default()).unwrap();
        let registry = crate::apiserver::registry::Registry::builtin();
        let info = registry.find_kind("berth.dev", "Stack").unwrap();
        let object = serde_json::to_value(new).unwrap();
        let old = old.map(|o| serde_json::to_value(o).unwrap());
        let request =
            AdmissionRequest { resource: &info, operation: op, object: &object, old: old.as_ref(), store: &*store };
        OperatorPolicy::new(Arc::new(config.clone())).admit(&request).await
    }

    #[tokio::test]
    async fn creates_are_refused_but_updates_refuse_only_new_violations() {
        let narrow = config(&["/srv"]);
        let err = admit(&narrow, Operation::Create, &stack(&["/etc"]), None).await.unwrap_err();
        assert_eq!(err.code().as_u16(), 422);
        assert!(err.to_string().contains("spec.services[0].mounts[0].hostPath"), "{err}");
        // A Stack admitted under a wider allowlist can still be updated (its finalizer removed)…
        let old = stack(&["/etc"]);
        let mut same = old.clone();
        same.metadata.finalizers = Some(vec![]);
        admit(&narrow, Operation::Update, &same, Some(&old)).await.unwrap();
        // …but not given another forbidden path.
        let worse = stack(&["/etc", "/var/run/docker.sock"]);
        let err = admit(&narrow, Operation::Update, &worse, Some(&old)).await.unwrap_err();
        assert!(err.to_string().contains("mounts[1].hostPath") && !err.to_string().contains("mounts[0]"), "{err}");
        admit(&narrow, Operation::Create, &stack(&["/srv/x"]), None).await.unwrap();
    }

    #[test]
    fn host_paths_outside_the_allowlist_are_refused_with_the_field_and_the_key() {
        let causes = stack_causes(&config(&["/srv"]), &stack(&["/srv/shop", "/etc/shadow", "/srvx"]));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.services[0].mounts[1].hostPath", "spec.services[0].mounts[2].hostPath"]);
        assert!(causes[0].message.contains("stacks.allowedHostPaths") && causes[0].message.contains("/srv"));
        assert!(stack_causes(&config(&[]), &stack(&["/srv"]))[0].message.contains("no host path is allowed"));
        assert!(stack_causes(&config(&["/srv"]), &stack(&[])).is_empty());
        assert!(!has_host_path(&serde_json::to_value(stack(&[])).unwrap()));
        assert!(has_host_path(&serde_json::to_value(stack(&["/srv"])).unwrap()));
    }

    // ---- Leases ----

    fn lease_config() -> OperatorConfig {
        OperatorConfig::parse(
            "leases:\n  skus:\n    small: {cpus: 0.5, memoryMb: 256}\n    large: {cpus: 2, memoryMb: 2048}\n  \
             allowedRegistries: [ghcr.io, local]\n  maxDuration: 24h\n  \
             tenantQuotas: {acme: {maxLeases: 3, cpus: 4, memoryMb: 4096}}\n",
            "test",
        )
        .unwrap()
    }

    fn lease(name: &str, tenant: &str, sku: &str, images: &[&str]) -> Lease {
        let mut l = Lease::new(
            name,
            LeaseSpec {
                tenant: tenant.into(),
                sku: sku.into(),
                duration: Some("2h".into()),
                services: images
                    .iter()
                    .enumerate()
                    .map(|(i, image)| LeaseService {
                        name: format!("s{i}"),
                        image: image.to_string(),
                        quantity: 1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        );
        l.metadata.namespace = Some("previews".into());
        l
    }

    fn in_phase(mut l: Lease, phase: LeasePhase) -> Lease {
        l.status = Some(LeaseStatus { phase: Some(phase), ..Default::default() });
        l
    }

    struct Env {
        store: Arc<dyn Store>,
        _dir: tempfile::TempDir,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().join("store"), Default::default()).unwrap();
        Env { store, _dir: dir }
    }

    impl Env {
        async fn put(&self, l: &Lease) {
            let key =
                ObjectKey { resource: leases_ref(), namespace: l.namespace_or_default().into(), name: l.name().into() };
            self.store.create(&key, serde_json::to_value(l).unwrap()).await.unwrap();
        }

        async fn admit(
            &self,
            config: &OperatorConfig,
            op: Operation,
            new: &Lease,
            old: Option<&Lease>,
        ) -> Result<(), ApiError> {
            let registry = crate::apiserver::registry::Registry::builtin();
            let info = registry.find_kind("berth.dev", "Lease").unwrap();
            let object = serde_json::to_value(new).unwrap();
            let old = old.map(|o| serde_json::to_value(o).unwrap());
            let request = AdmissionRequest {
                resource: &info,
                operation: op,
                object: &object,
                old: old.as_ref(),
                store: &*self.store,
            };
            OperatorPolicy::new(Arc::new(config.clone())).admit(&request).await
        }
    }

    /// The (field, reason) of every cause of a 422, or panics.
    fn invalid_fields(err: &ApiError) -> Vec<(String, String)> {
        assert_eq!(err.code().as_u16(), 422, "{err}");
        let status = err.status();
        status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["field"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string()))
            .collect()
    }

    #[tokio::test]
    async fn an_unknown_sku_is_refused_naming_the_known_ones_and_the_key() {
        let e = env();
        let c = lease_config();
        e.admit(&c, Operation::Create, &lease("a", "acme", "small", &["ghcr.io/acme/app:1"]), None).await.unwrap();
        let err = e
            .admit(&c, Operation::Create, &lease("a", "acme", "huge", &["ghcr.io/acme/app:1"]), None)
            .await
            .unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.sku".to_string(), "FieldValueNotSupported".to_string())]);
        let msg = err.to_string();
        assert!(msg.contains("\"huge\"") && msg.contains("leases.skus"), "{msg}");
        assert!(msg.contains("\"large\", \"small\""), "{msg}");
        let none = OperatorConfig::default();
        let causes = lease_causes(&none, &lease("a", "acme", "small", &["busybox"]), jiff::Timestamp::now());
        assert!(causes[0].message.contains("defines no SKU"), "{causes:?}");
    }

    #[test]
    fn registries_follow_docker_resolution_with_local_for_references_without_a_registry() {
        let allow = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, &[&str], bool)] = &[
            ("busybox", &[], true),
            ("ghcr.io/x/y:1", &[], true),
            ("ghcr.io/acme/app:pr-1", &["ghcr.io"], true),
            ("GHCR.io/acme/app", &["ghcr.io"], true),
            ("quay.io/acme/app", &["ghcr.io"], false),
            ("busybox", &["docker.io"], true),
            ("docker.io/library/busybox", &["docker.io"], true),
            ("index.docker.io/library/busybox", &["docker.io"], true),
            ("busybox", &["local"], true),
            ("berth-e2e/busybox:latest", &["local"], true),
            ("docker.io/library/busybox", &["local"], false),
            ("localhost:5000/app", &["local"], false),
            ("localhost:5000/app", &["localhost:5000"], true),
            ("busybox", &["ghcr.io"], false),
            ("ghcr.io.evil.example/acme/app", &["ghcr.io"], false),
        ];
        for (image, list, ok) in cases {
            assert_eq!(image_allowed(image, &allow(list)).is_ok(), *ok, "{image} under {list:?}");
        }
        let msg = image_allowed("quay.io/acme/app", &allow(&["ghcr.io", "local"])).unwrap_err();
        assert!(msg.contains("quay.io") && msg.contains("ghcr.io, local") && msg.contains("leases.allowedRegistries"));
        let msg = image_allowed("busybox", &allow(&["ghcr.io"])).unwrap_err();
        assert!(msg.contains("names no registry") && msg.contains("docker.io nor local"), "{msg}");
    }

    #[tokio::test]
    async fn images_outside_the_allowlist_are_refused_per_service() {
        let e = env();
        let c = lease_config();
        let l = lease("a", "acme", "small", &["ghcr.io/acme/app:1", "berth-e2e/busybox:latest", "quay.io/x/y"]);
        let err = e.admit(&c, Operation::Create, &l, None).await.unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.services[2].image".to_string(), "FieldValueForbidden".to_string())]);
        assert!(err.to_string().contains("registry quay.io"), "{err}");
        let ok = lease("a", "acme", "small", &["ghcr.io/acme/app:1", "busybox"]);
        e.admit(&c, Operation::Create, &ok, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_lifetime_beyond_max_duration_is_refused_on_the_field_that_asks_for_it() {
        let e = env();
        let c = lease_config();
        let mut l = lease("a", "acme", "small", &["busybox"]);
        l.spec.duration = Some("24h".into());
        e.admit(&c, Operation::Create, &l, None).await.unwrap();
        l.spec.duration = Some("25h".into());
        let err = e.admit(&c, Operation::Create, &l, None).await.unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.duration".to_string(), "FieldValueInvalid".to_string())]);
        assert!(err.to_string().contains("leases.maxDuration (24h)") && err.to_string().contains("25h"), "{err}");

        // expiresAt counts from now on create…
        let now = jiff::Timestamp::now();
        l.spec.duration = None;
        l.spec.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(23)));
        e.admit(&c, Operation::Create, &l, None).await.unwrap();
        l.spec.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(30)));
        let err = e.admit(&c, Operation::Create, &l, None).await.unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.expiresAt".to_string(), "FieldValueInvalid".to_string())]);
        assert!(err.to_string().contains("leases.maxDuration"), "{err}");
        // …and from the creation on update: moving expiry 30h past a creation 10h ago is too far.
        let mut old = l.clone();
        old.metadata.creation_timestamp = Some(Time(now - jiff::SignedDuration::from_hours(10)));
        old.spec.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(1)));
        let mut new = old.clone();
        new.spec.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(20)));
        let err = e.admit(&c, Operation::Update, &new, Some(&old)).await.unwrap_err();
        assert!(err.to_string().contains("30h after the Lease's creation"), "{err}");
        new.spec.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(13)));
        e.admit(&c, Operation::Update, &new, Some(&old)).await.unwrap();

        // Neither: the default duration applies, which the config keeps within the maximum.
        l.spec.expires_at = None;
        e.admit(&c, Operation::Create, &l, None).await.unwrap();
    }

    #[tokio::test]
    async fn tenant_sku_and_restore_from_are_immutable() {
        let e = env();
        let c = lease_config();
        let old = lease("a", "acme", "small", &["busybox"]);
        for (field, change) in [
            ("spec.tenant", Box::new(|l: &mut Lease| l.spec.tenant = "globex".into()) as Box<dyn Fn(&mut Lease)>),
            ("spec.sku", Box::new(|l: &mut Lease| l.spec.sku = "large".into())),
            ("spec.restoreFrom", Box::new(|l: &mut Lease| l.spec.restore_from = Some("b".into()))),
        ] {
            let mut new = old.clone();
            change(&mut new);
            let err = e.admit(&c, Operation::Update, &new, Some(&old)).await.unwrap_err();
            assert_eq!(invalid_fields(&err), [(field.to_string(), "FieldValueInvalid".to_string())]);
            assert!(err.to_string().contains("field is immutable"), "{err}");
        }
        // Other spec changes, and unchanged immutable fields, are admitted.
        let mut new = old.clone();
        new.spec.services[0].image = "ghcr.io/acme/app:2".into();
        new.spec.closed = true;
        e.admit(&c, Operation::Update, &new, Some(&old)).await.unwrap();
    }

    #[tokio::test]
    async fn updates_refuse_only_new_field_violations() {
        let e = env();
        let c = lease_config();
        // Admitted before the operator removed its SKU and narrowed the registries.
        let old = lease("a", "acme", "retired", &["quay.io/x/y"]);
        let mut new = old.clone();
        new.metadata.finalizers = Some(vec![]);
        new.spec.closed = true;
        e.admit(&c, Operation::Update, &new, Some(&old)).await.unwrap();
        new.spec.services[0].image = "quay.io/x/z".into();
        let err = e.admit(&c, Operation::Update, &new, Some(&old)).await.unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.services[0].image".to_string(), "FieldValueForbidden".to_string())]);
    }

    #[tokio::test]
    async fn restore_from_must_name_a_retained_lease_of_the_same_tenant_when_it_exists() {
        let e = env();
        let c = lease_config();
        e.put(&in_phase(lease("kept", "acme", "small", &["busybox"]), LeasePhase::Retained)).await;
        e.put(&in_phase(lease("running", "acme", "small", &["busybox"]), LeasePhase::Ready)).await;
        e.put(&in_phase(lease("theirs", "globex", "small", &["busybox"]), LeasePhase::Retained)).await;
        let restoring = |from: &str| {
            let mut l = lease("new", "acme", "small", &["busybox"]);
            l.spec.restore_from = Some(from.into());
            l
        };
        e.admit(&c, Operation::Create, &restoring("kept"), None).await.unwrap();
        // Gone from the store: the controller looks for retained volumes on the hosts.
        e.admit(&c, Operation::Create, &restoring("long-gone"), None).await.unwrap();
        let err = e.admit(&c, Operation::Create, &restoring("running"), None).await.unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.restoreFrom".to_string(), "FieldValueInvalid".to_string())]);
        assert!(
            err.to_string().contains("lease running is in phase Ready; only a Retained Lease can be restored"),
            "{err}"
        );
        let err = e.admit(&c, Operation::Create, &restoring("theirs"), None).await.unwrap_err();
        assert_eq!(invalid_fields(&err), [("spec.restoreFrom".to_string(), "FieldValueInvalid".to_string())]);
        assert!(err.to_string().contains("belongs to tenant \"globex\""), "{err}");
        // Another namespace's Lease of that name is not the one meant.
        let mut elsewhere = restoring("running");
        elsewhere.metadata.namespace = Some("other".into());
        e.admit(&c, Operation::Create, &elsewhere, None).await.unwrap();
    }

    /// The 403's message, or panics.
    fn forbidden_message(err: &ApiError) -> String {
        assert_eq!(err.code().as_u16(), 403, "{err}");
        assert_eq!(err.reason(), "Forbidden");
        err.to_string()
    }

    #[tokio::test]
    async fn max_leases_counts_live_leases_of_the_tenant_in_every_namespace() {
        let e = env();
        let c = lease_config(); // acme: maxLeases 3
        let mut other_ns = in_phase(lease("b", "acme", "small", &["busybox"]), LeasePhase::Ready);
        other_ns.metadata.namespace = Some("elsewhere".into());
        e.put(&lease("a", "acme", "small", &["busybox"])).await; // no phase yet: live
        e.put(&other_ns).await;
        e.put(&in_phase(lease("c", "acme", "small", &["busybox"]), LeasePhase::Closed)).await;
        e.put(&in_phase(lease("d", "acme", "small", &["busybox"]), LeasePhase::Retained)).await;
        e.put(&in_phase(lease("g", "globex", "small", &["busybox"]), LeasePhase::Ready)).await;
        e.admit(&c, Operation::Create, &lease("x", "acme", "small", &["busybox"]), None).await.unwrap();
        e.put(&in_phase(lease("e", "acme", "small", &["busybox"]), LeasePhase::Failed)).await;
        let err = e.admit(&c, Operation::Create, &lease("x", "acme", "small", &["busybox"]), None).await.unwrap_err();
        let msg = forbidden_message(&err);
        assert!(
            msg.contains("exceeded quota")
                && msg.contains("leases.tenantQuotas.acme.maxLeases: tenant acme has 3 live Leases, the most allowed"),
            "{msg}"
        );
        // Tenants without a quota are not limited.
        e.admit(&c, Operation::Create, &lease("x", "globex", "large", &["busybox"]), None).await.unwrap();
        // An update of one of the three does not count it twice.
        let stored = in_phase(lease("e", "acme", "small", &["busybox"]), LeasePhase::Failed);
        let mut closing = stored.clone();
        closing.spec.closed = true;
        e.admit(&c, Operation::Update, &closing, Some(&stored)).await.unwrap();
    }

    #[tokio::test]
    async fn cpu_and_memory_quotas_count_sku_times_instances() {
        let e = env();
        let c = lease_config(); // acme: cpus 4, memoryMb 4096; large = 2 CPUs, 2048 MiB
        let mut big = lease("a", "acme", "large", &["busybox"]);
        e.put(&big).await;
        // Another large one fits exactly (4 CPUs, 4096 MiB)…
        e.admit(&c, Operation::Create, &lease("x", "acme", "large", &["busybox"]), None).await.unwrap();
        // …but not with two instances, nor with a second service.
        let mut two = lease("x", "acme", "large", &["busybox"]);
        two.spec.services[0].quantity = 2;
        let err = e.admit(&c, Operation::Create, &two, None).await.unwrap_err();
        let msg = forbidden_message(&err);
        assert!(msg.contains("leases.tenantQuotas.acme.cpus: this Lease needs 4 CPUs"), "{msg}");
        assert!(msg.contains("hold 2 of the 4 allowed"), "{msg}");
        assert!(msg.contains("leases.tenantQuotas.acme.memoryMb: this Lease needs 4096 MiB"), "{msg}");
        let causes = err.status()["details"]["causes"].as_array().unwrap().len();
        assert_eq!(causes, 2);
        let err = e
            .admit(&c, Operation::Create, &lease("x", "acme", "large", &["busybox", "busybox"]), None)
            .await
            .unwrap_err();
        forbidden_message(&err);
        // Small SKUs: 0.5 × 4 = 2 more CPUs fit beside the large one.
        let mut smalls = lease("x", "acme", "small", &["busybox"]);
        smalls.spec.services[0].quantity = 4;
        e.admit(&c, Operation::Create, &smalls, None).await.unwrap();

        // Update: growing past the quota is refused; staying over it (quota lowered) is not.
        let mut grown = big.clone();
        grown.spec.services[0].quantity = 3;
        let err = e.admit(&c, Operation::Update, &grown, Some(&big)).await.unwrap_err();
        forbidden_message(&err);
        let mut tight = c.clone();
        tight.leases.tenant_quotas.get_mut("acme").unwrap().cpus = Some(1.0);
        big.spec.closed = true;
        let stored = lease("a", "acme", "large", &["busybox"]);
        e.admit(&tight, Operation::Update, &big, Some(&stored)).await.unwrap();
        // Shrinking while still over is admitted too.
        let mut shrunk = stored.clone();
        shrunk.spec.services.push(LeaseService {
            name: "s1".into(),
            image: "busybox".into(),
            quantity: 1,
            ..Default::default()
        });
        let mut less = shrunk.clone();
        less.spec.services.pop();
        e.admit(&tight, Operation::Update, &less, Some(&shrunk)).await.unwrap();
    }

    #[test]
    fn quota_sums_print_as_written() {
        let q = TenantQuota { max_leases: None, cpus: Some(0.3), memory_mb: None };
        let others = TenantUsage { leases: 2, cpus: 0.1 + 0.2, memory_mb: 0 };
        let this = TenantUsage { leases: 1, cpus: 0.1, memory_mb: 0 };
        let causes = quota_causes("acme", &q, others, TenantUsage::default(), this);
        assert!(causes[0].message.contains("hold 0.3 of the 0.3 allowed"), "{causes:?}");
        // 0.1 + 0.2 is within a quota of 0.3, whatever floating point says.
        let fits = TenantUsage { leases: 1, cpus: 0.0, memory_mb: 0 };
        assert!(quota_causes("acme", &q, others, TenantUsage::default(), fits).is_empty());
    }

    #[tokio::test]
    async fn lease_writes_are_ordered_per_tenant_with_a_quota_only() {
        let config =
            OperatorConfig::parse("leases:\n  tenantQuotas: {acme: {maxLeases: 3}, globex: {maxLeases: 1}}\n", "test")
                .unwrap();
        let policy = OperatorPolicy::new(Arc::new(config));
        let registry = crate::apiserver::registry::Registry::builtin();
        let lease = registry.find_kind("berth.dev", "Lease").unwrap();
        let stack = registry.find_kind("berth.dev", "Stack").unwrap();
        let of = |tenant: &str| serde_json::json!({"spec": {"tenant": tenant}});

        let acme = policy.serialize(&lease, &of("acme")).await.expect("acme has a quota: its writes are ordered");
        // While acme's write holds its lock, another acme write waits; globex's does not.
        let waiting = tokio::time::timeout(Duration::from_millis(50), policy.serialize(&lease, &of("acme"))).await;
        assert!(waiting.is_err(), "a second acme write was not held back");
        assert!(policy.serialize(&lease, &of("globex")).await.is_some());
        drop(acme);
        assert!(policy.serialize(&lease, &of("acme")).await.is_some());
        // No quota, no lock; other kinds are never counted.
        assert!(policy.serialize(&lease, &of("initech")).await.is_none());
        assert!(policy.serialize(&stack, &of("acme")).await.is_none());
    }
}
