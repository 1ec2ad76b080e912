//! Admission: every create and update passes the kind's structural schema (types, enums,
//! required fields, formats; unknown fields pruned per `fieldValidation`), metadata rules, the
//! kind's semantic validation from `berth-crds`, and the operator's policy (SKUs, registry
//! allowlist, quotas, host paths). Nothing invalid is ever stored.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::errors::{ApiError, Cause};
use super::registry::ResourceInfo;
use super::structural::SchemaOutcome;
use crate::store::Store;

pub(super) fn cause(reason: &str, field: &str, message: impl Into<String>) -> Cause {
    Cause { reason: reason.to_string(), field: field.to_string(), message: message.into() }
}

/// A short rendering of a value for messages (never used for Secret data).
pub(super) fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 { format!("{}…", &s[..57.min(s.len())]) } else { s }
}

/// Why `key` is not a valid Kubernetes label key, if it isn't.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && let Some(problem) = berth_crds::validation::dns_subdomain_problem(p)
    {
        return Some(format!("prefix part {problem}"));
    }
    label_value_problem(name, false).map(|p| format!("name part {p}"))
}

/// Why `v` is not a valid label value (or name part), if it isn't.
fn label_value_problem(v: &str, allow_empty: bool) -> Option<String> {
    if v.is_empty() {
        return if allow_empty { None } else { Some("must not be empty".into()) };
    }
    if v.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ends_ok = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    let chars_ok = v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !(ends_ok && chars_ok) {
        return Some(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character"
                .into(),
        );
    }
    None
}

/// Checks the parts of `metadata` every kind shares: name, labels, annotations, finalizers.
pub fn validate_metadata(meta: &Value, causes: &mut Vec<Cause>) {
    if let Some(name) = meta.get("name").and_then(Value::as_str)
        && let Some(p) = berth_crds::validation::dns_subdomain_problem(name)
    {
        causes.push(cause("FieldValueInvalid", "metadata.name", format!("Invalid value: {name:?}: {p}")));
    }
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                if let Some(p) = label_key_problem(k) {
                    causes.push(cause("FieldValueInvalid", "metadata.labels", format!("Invalid value: {k:?}: {p}")));
                }
                match v.as_str() {
                    Some(s) => {
                        if let Some(p) = label_value_problem(s, true) {
                            causes.push(cause(
                                "FieldValueInvalid",
                                &format!("metadata.labels[{k}]"),
                                format!("Invalid value: {s:?}: {p}"),
                            ));
                        }
                    }
                    None => causes.push(cause(
                        "FieldValueTypeInvalid",
                        &format!("metadata.labels[{k}]"),
                        "label values must be strings",
                    )),
                }
            }
        }
        Some(_) => causes.push(cause("FieldValueTypeInvalid", "metadata.labels", "labels must be a map of strings")),
    }
    match meta.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => {
            let size: usize = a.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
            if size > 256 * 1024 {
                causes.push(cause(
                    "FieldValueTooLong",
                    "metadata.annotations",
                    "Too long: must have at most 262144 bytes",
                ));
            }
            for (k, v) in a {
                if let Some(p) = label_key_problem(k) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        "metadata.annotations",
                        format!("Invalid value: {k:?}: {p}"),
                    ));
                }
                if !v.is_string() {
                    causes.push(cause(
                        "FieldValueTypeInvalid",
                        &format!("metadata.annotations[{k}]"),
                        "annotation values must be strings",
                    ));
                }
            }
        }
        Some(_) => {
            causes.push(cause("FieldValueTypeInvalid", "metadata.annotations", "annotations must be a map of strings"))
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(f)) => {
            for (i, item) in f.iter().enumerate() {
                let ok = item.as_str().is_some_and(|s| label_key_problem(s).is_none());
                if !ok {
                    causes.push(cause(
                        "FieldValueInvalid",
                        &format!("metadata.finalizers[{i}]"),
                        format!(
                            "Invalid value: {}: a finalizer must be a qualified name like example.com/cleanup",
                            show(item)
                        ),
                    ));
                }
            }
        }
        Some(_) => {
            causes.push(cause("FieldValueTypeInvalid", "metadata.finalizers", "finalizers must be a list of strings"))
        }
    }
}

/// The kind of write being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to an existing object's spec or metadata.
    Update,
}

/// A write presented to operator policy.
pub struct AdmissionRequest<'a> {
    /// The resource.
    pub resource: &'a ResourceInfo,
    /// Create or update.
    pub operation: Operation,
    /// The object as it would be stored.
    pub object: &'a Value,
    /// The stored object, for updates.
    pub old: Option<&'a Value>,
    /// The store, for policies that count (quotas).
    pub store: &'a dyn Store,
}

/// Operator policy consulted on every create and update after validation (the Lease SKU,
/// registry allowlist and quota checks; the Stack host-path allowlist).
#[async_trait]
pub trait AdmissionPolicy: Send + Sync {
    /// `Ok` to admit; `Invalid` (422) or `Forbidden` (403) errors to refuse.
    async fn admit(&self, request: &AdmissionRequest<'_>) -> Result<(), ApiError>;

    /// A guard that orders a create or update of `object` (a `resource`, as it would be stored)
    /// with every other write the policy counts it with (a tenant's quota): the API server takes
    /// it before [`admit`](Self::admit) and holds it until the write is stored, so two writes
    /// cannot both be admitted against the same remaining room. `None` (the default): the policy
    /// does not count this object, nothing to order.
    async fn serialize(&self, _resource: &ResourceInfo, _object: &Value) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        None
    }
}

/// A policy that admits everything (no operator configuration).
#[derive(Debug, Default)]
pub struct AdmitAll;

#[async_trait]
impl AdmissionPolicy for AdmitAll {
    async fn admit(&self, _request: &AdmissionRequest<'_>) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Validates a whole object of `resource`: schema of everything but `metadata` (pruning unknown
/// fields), metadata rules, then semantic rules. Returns the unknown fields found; errors are
/// returned as a 422 (or 400 for unknown fields under Strict validation).
pub fn validate_object_value(
    resource: &ResourceInfo,
    object: &mut Value,
    validation: super::query::FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let mut outcome = SchemaOutcome::default();
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(obj) = object.as_object_mut() {
        resource.validator().validate_root(obj, &mut outcome);
    }
    if !outcome.unknown_fields.is_empty() && validation == super::query::FieldValidation::Strict {
        let list: Vec<String> = outcome.unknown_fields.iter().map(|f| format!("unknown field {f:?}")).collect();
        return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
    }
    let mut causes = outcome.errors;
    if let Some(meta) = object.get("metadata") {
        validate_metadata(meta, &mut causes);
    }
    if causes.is_empty()
        && let Some(semantic) = resource.semantic
    {
        causes.extend(semantic(object).into_iter().map(|e| Cause {
            reason: e.reason.as_str().to_string(),
            field: e.field,
            message: e.message,
        }));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&resource.kind, &resource.group, &name, causes));
    }
    Ok(if validation == super::query::FieldValidation::Ignore { Vec::new() } else { outcome.unknown_fields })
}

/// Counts labels for policy checks; re-exported for policies.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::query::FieldValidation;
    use crate::apiserver::registry::Registry;

    fn stack() -> Value {
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"services": [{"name": "web", "image": "berth-e2e/busybox:latest", "ports": [{"containerPort": 80}]}]}
        })
    }

    fn check(mut obj: Value, validation: FieldValidation) -> (Result<Vec<String>, ApiError>, Value) {
        let reg = Registry::builtin();
        let info = reg.find("berth.dev", "v1alpha1", "stacks").unwrap();
        let r = validate_object_value(&info, &mut obj, validation);
        (r, obj)
    }

    /// `stack()` as stored: with the schema's defaults filled in.
    fn defaulted_stack() -> Value {
        let mut s = stack();
        s["spec"]["services"][0]["replicas"] = json!(1);
        s
    }

    #[test]
    fn valid_stack_passes_with_schema_defaults_applied() {
        let (r, obj) = check(stack(), FieldValidation::Strict);
        assert_eq!(r.unwrap(), Vec::<String>::new());
        assert_eq!(obj, defaulted_stack());
        let (_, again) = check(obj, FieldValidation::Strict);
        assert_eq!(again, defaulted_stack(), "defaulting is idempotent");
    }

    #[test]
    fn type_errors_name_the_field() {
        let mut s = stack();
        s["spec"]["services"][0]["ports"][0]["containerPort"] = json!("eighty");
        let err = check(s, FieldValidation::Strict).0.unwrap_err();
        let status = err.status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["causes"][0]["field"], "spec.services[0].ports[0].containerPort");
    }

    #[test]
    fn unknown_fields_follow_field_validation() {
        let mut s = stack();
        s["spec"]["servicez"] = json!([]);
        s["spec"]["services"][0]["imagePullSecret"] = json!("x");
        let err = check(s.clone(), FieldValidation::Strict).0.unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(err.to_string().contains("unknown field \"spec.servicez\""), "{err}");
        assert!(err.to_string().contains("spec.services[0].imagePullSecret"), "{err}");

        let (r, pruned) = check(s.clone(), FieldValidation::Warn);
        assert_eq!(r.unwrap().len(), 2);
        assert_eq!(pruned, defaulted_stack(), "unknown fields are pruned");

        let (r, pruned) = check(s, FieldValidation::Ignore);
        assert!(r.unwrap().is_empty());
        assert_eq!(pruned, defaulted_stack());
    }

    #[test]
    fn enums_and_required_fields_are_enforced() {
        let mut s = stack();
        s["spec"]["driftPolicy"] = json!("Sometimes");
        s["spec"]["services"][0].as_object_mut().unwrap().remove("image");
        let status = check(s, FieldValidation::Strict).0.unwrap_err().status();
        let fields: Vec<&str> =
            status["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["spec.driftPolicy", "spec.services[0].image"]);
    }

    #[test]
    fn semantic_errors_follow_schema_errors() {
        let mut s = stack();
        s["spec"]["services"][0]["replicas"] = json!(-1);
        let status = check(s, FieldValidation::Strict).0.unwrap_err().status();
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.services[0].replicas");
    }

    #[test]
    fn metadata_labels_are_checked() {
        let mut s = stack();
        s["metadata"]["labels"] = json!({"bad key!": "x", "ok": "bad value!"});
        let status = check(s, FieldValidation::Strict).0.unwrap_err().status();
        assert_eq!(status["details"]["causes"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let reg = Registry::builtin();
        let info = reg.find("", "v1", "secrets").unwrap();
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "data": {"password": "not base64 hunter2!"}});
        let err = validate_object_value(&info, &mut secret, FieldValidation::Strict).unwrap_err();
        assert!(!err.status().to_string().contains("hunter2"), "{}", err.status());
        assert!(err.to_string().contains("data[password]"), "{err}");
    }

    #[test]
    fn every_served_schema_is_structural() {
        // A structural schema has a type on every node (or preserve-unknown-fields / int-or-string),
        // and never mixes properties with additionalProperties.
        fn walk(s: &Value, path: &str) {
            let special = s.get("x-kubernetes-preserve-unknown-fields").is_some()
                || s.get("x-kubernetes-int-or-string").is_some();
            assert!(s.get("type").is_some() || special, "{path}: no type in {s}");
            assert!(!(s.get("properties").is_some() && s.get("additionalProperties").is_some()), "{path}: both");
            for key in ["$ref", "anyOf", "oneOf", "allOf", "definitions", "$defs"] {
                if key == "anyOf" && s.get("x-kubernetes-int-or-string").is_some() {
                    continue;
                }
                assert!(s.get(key).is_none(), "{path}: {key} is not allowed in a structural schema");
            }
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    walk(v, &format!("{path}.{k}"));
                }
            }
            if let Some(items) = s.get("items") {
                walk(items, &format!("{path}[]"));
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                walk(ap, &format!("{path}{{}}"));
            }
        }
        for r in Registry::builtin().all() {
            walk(&r.schema, &r.kind);
        }
    }
}
