//! Operator admission policy: the rules of the operator configuration (`berth serve --config`)
//! that the API server applies to every create and update after schema and semantic
//! validation, so that an object the operator does not allow is never stored.
//!
//! One function per kind: [`OperatorPolicy::admit`] dispatches on the resource. Stack rule:
//! `hostPath` mounts must lie under `stacks.allowedHostPaths`. Lease rules (SKU, registry
//! allowlist, tenant quota) belong in a `lease_causes` beside [`stack_causes`].

use std::sync::Arc;

use async_trait::async_trait;
use berth_crds::Stack;
use serde::Deserialize;

use crate::apiserver::admission::{AdmissionPolicy, AdmissionRequest, Operation};
use crate::apiserver::errors::{ApiError, Cause};
use crate::config::OperatorConfig;
use crate::controllers::stack::render::host_path_allowed;

/// The policy of an operator configuration.
#[derive(Debug, Clone)]
pub struct OperatorPolicy {
    config: Arc<OperatorConfig>,
}

impl OperatorPolicy {
    /// The policy of `config`.
    pub fn new(config: Arc<OperatorConfig>) -> Self {
        Self { config }
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

fn stack_rules(config: &OperatorConfig, request: &AdmissionRequest<'_>) -> Result<(), ApiError> {
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

#[async_trait]
impl AdmissionPolicy for OperatorPolicy {
    async fn admit(&self, request: &AdmissionRequest<'_>) -> Result<(), ApiError> {
        match (request.resource.group.as_str(), request.resource.kind.as_str()) {
            ("berth.dev", "Stack") => stack_rules(&self.config, request),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_crds::StackSpec;
    use berth_crds::common::MountSpec;
    use berth_crds::stack::ServiceSpec;

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
    }
}
