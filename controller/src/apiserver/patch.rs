//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch for core
//! kinds (served as a merge patch: berth's core kinds hold only maps of strings, where the two
//! agree), and a documented subset of server-side apply.
//!
//! Server-side apply subset: the applied configuration is merged into the live object (maps merge
//! recursively; lists and scalars are replaced whole, i.e. every list is `atomic`). The fields a
//! manager applied are recorded in `metadata.managedFields` (`operation: Apply`, `FieldsV1`), so a
//! field the same manager applied before and omits now is removed, unless another applier still
//! owns it (or a field inside it). An entry keeps its place and its `time` while its field set
//! stays the same, so re-applying an unchanged configuration writes nothing (the time does not
//! follow value changes under an unchanged field set, unlike Kubernetes). Conflicts between
//! managers are not detected: every apply behaves as `force=true`. Applying to a missing object
//! creates it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::errors::{ApiError, ApiResult};

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`.
    Apply,
}

impl PatchType {
    /// From a `Content-Type` header.
    pub fn from_content_type(ct: Option<&str>) -> ApiResult<Self> {
        let base = ct.unwrap_or("").split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "the body of the request was in an unknown format {other:?} - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                ),
            }),
        }
    }
}

/// Applies a merge or JSON patch to `target`.
pub fn apply_patch(kind: PatchType, target: &mut Value, body: &[u8]) -> ApiResult<()> {
    match kind {
        PatchType::Merge | PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the merge patch is not valid JSON: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            if kind == PatchType::Strategic && contains_directive(&patch) {
                return Err(ApiError::bad_request(
                    "strategic merge patch directives ($patch, $retainKeys, $setElementOrder, …) are not supported \
                     by berth; use a JSON merge patch",
                ));
            }
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not a valid RFC 6902 patch: {e}")))?;
            let patch = lenient_null_tests(target, patch)?;
            json_patch::patch(target, &patch).map_err(|e| {
                if matches!(e.kind, json_patch::PatchErrorKind::TestFailed) {
                    // A failed `test` op means the object changed under the client.
                    ApiError::Invalid {
                        message: "the server rejected our request due to an error in our request".into(),
                        details: Default::default(),
                    }
                } else {
                    ApiError::Invalid {
                        message: format!("the JSON patch could not be applied: {e}"),
                        details: Default::default(),
                    }
                }
            })
        }
        PatchType::Apply => Err(ApiError::internal("server-side apply goes through apply_configuration")),
    }
}

/// Kubernetes (evanphx/json-patch) lets `{"op": "test", "value": null}` pass when the path is
/// absent; kube-runtime's `finalizer()` relies on it. The json-patch crate fails such a test, so
/// those ops are checked here and dropped. Tests are evaluated against the document as it is
/// before the patch, which is what they guard when they come first (the only way clients use them).
fn lenient_null_tests(target: &Value, patch: json_patch::Patch) -> ApiResult<json_patch::Patch> {
    let mut kept = Vec::with_capacity(patch.0.len());
    for op in patch.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
        {
            match target.pointer(t.path.as_str()) {
                None | Some(Value::Null) => continue,
                Some(_) => {
                    return Err(ApiError::Invalid {
                        message: "the server rejected our request due to an error in our request".into(),
                        details: Default::default(),
                    });
                }
            }
        }
        kept.push(op);
    }
    Ok(json_patch::Patch(kept))
}

fn contains_directive(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k.starts_with('$') || contains_directive(v)),
        Value::Array(a) => a.iter().any(contains_directive),
        _ => false,
    }
}

/// Parses an apply body (YAML or JSON).
pub fn parse_apply_body(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the apply body is not UTF-8"))?;
    let v: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the apply body is not valid YAML or JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the apply body must be an object"));
    }
    Ok(v)
}

type FieldPath = Vec<String>;

/// Leaf field paths of an applied configuration (maps recurse; lists and scalars are leaves).
fn leaf_paths(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Field paths of an applied configuration, excluding identity fields.
pub fn applied_fields(config: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    leaf_paths(config, &mut Vec::new(), &mut out);
    out.retain(|p| {
        let first = p.first().map(String::as_str);
        let identity = matches!(first, Some("apiVersion" | "kind"))
            || (first == Some("metadata")
                && matches!(p.get(1).map(String::as_str), Some("name" | "namespace" | "resourceVersion" | "uid")));
        !identity
    });
    out
}

/// `FieldsV1` (`{"f:spec": {"f:replicas": {}}}`) of a set of paths.
pub fn to_fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            let entry = node.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            node = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

/// Paths recorded in a `FieldsV1` value.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    let Some(seg) = k.strip_prefix("f:") else { continue };
                    prefix.push(seg.to_string());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn remove_path(target: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = target;
    for seg in parents {
        node = match node.get_mut(seg) {
            Some(n) => n,
            None => return,
        };
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(last);
    }
}

/// Merges maps recursively; anything else in `patch` replaces what is in `target`.
fn merge_replace_lists(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_replace_lists(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Applies `config` as `manager` to `live`: removes fields the manager applied before and omits
/// now, merges the rest, and records the manager's field set. `subresource` is `"status"` for
/// status applies (only `status` is taken from the config then).
pub fn apply_configuration(live: &mut Value, config: &Value, manager: &str, subresource: Option<&str>, now: &str) {
    let scoped: Value = match subresource {
        Some("status") => json!({"status": config.get("status").cloned().unwrap_or(Value::Null)}),
        _ => {
            let mut c = config.clone();
            if let Some(m) = c.as_object_mut() {
                m.remove("status");
            }
            c
        }
    };
    let new_fields = applied_fields(&scoped);
    let managed = live.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let sub = subresource.unwrap_or("");
    let is_own = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str).unwrap_or("") == sub
    };
    let own_entry = managed.iter().position(is_own);
    let previous = own_entry.and_then(|i| managed[i].get("fieldsV1")).map(from_fields_v1).unwrap_or_default();
    // Fields other appliers own stay: dropping a field from one manager's configuration gives up
    // that manager's claim, not the other's (removing a map would remove their fields in it).
    let others: BTreeSet<FieldPath> = managed
        .iter()
        .filter(|e| e.get("operation").and_then(Value::as_str) == Some("Apply") && !is_own(e))
        .filter_map(|e| e.get("fieldsV1"))
        .flat_map(from_fields_v1)
        .collect();
    let overlaps = |a: &FieldPath, b: &FieldPath| a.starts_with(b) || b.starts_with(a);
    for stale in previous.difference(&new_fields) {
        if !others.iter().any(|o| overlaps(o, stale)) {
            remove_path(live, stale);
        }
    }
    merge_replace_lists(live, &scoped);
    let api_version = config.get("apiVersion").cloned().unwrap_or(Value::Null);
    let time = match own_entry.map(|i| &managed[i]) {
        Some(e) if previous == new_fields && e.get("apiVersion") == Some(&api_version) => {
            e.get("time").cloned().unwrap_or_else(|| json!(now))
        }
        _ => json!(now),
    };
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&new_fields),
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    let mut entries = managed;
    match own_entry {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    if let Some(meta) = live.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::from(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"spec": {"a": 1, "b": [1, 2], "c": {"d": 1}}});
        apply_patch(PatchType::Merge, &mut v, br#"{"spec": {"a": null, "b": [3], "c": {"e": 2}}}"#).unwrap();
        assert_eq!(v, json!({"spec": {"b": [3], "c": {"d": 1, "e": 2}}}));
    }

    #[test]
    fn json_patch_test_failure_is_reported() {
        let mut v = json!({"metadata": {"finalizers": ["a"]}});
        let err = apply_patch(
            PatchType::Json,
            &mut v,
            br#"[{"op": "test", "path": "/metadata/finalizers/0", "value": "b"}, {"op": "remove", "path": "/metadata/finalizers/0"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(v, json!({"metadata": {"finalizers": ["a"]}}), "a failed patch changes nothing");
    }

    #[test]
    fn strategic_directives_are_refused() {
        let mut v = json!({});
        let err = apply_patch(PatchType::Strategic, &mut v, br#"{"data": {"$patch": "replace"}}"#).unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn unknown_content_type_is_415() {
        assert_eq!(PatchType::from_content_type(Some("text/plain")).unwrap_err().code(), 415);
        assert_eq!(
            PatchType::from_content_type(Some("application/merge-patch+json; charset=utf-8")).unwrap(),
            PatchType::Merge
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let mut live = json!({"metadata": {"name": "x"}, "spec": {"a": 1, "b": 2, "keep": true}});
        let first = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}});
        apply_configuration(&mut live, &first, "ci", None, "t");
        let second =
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "x"}, "spec": {"a": 5}});
        apply_configuration(&mut live, &second, "ci", None, "t");
        assert_eq!(live["spec"], json!({"a": 5, "keep": true}), "b was applied by ci and dropped; keep was never ci's");
        let managed = live["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0]["fieldsV1"], json!({"f:spec": {"f:a": {}}}));
    }

    #[test]
    fn fields_another_applier_owns_are_kept() {
        let cfg =
            |labels: Value| json!({"apiVersion": "v", "kind": "Stack", "metadata": {"name": "x", "labels": labels}});
        let mut live = json!({"metadata": {"name": "x"}});
        apply_configuration(&mut live, &cfg(json!({"team": "a", "shared": "1"})), "kubectl", None, "t");
        apply_configuration(&mut live, &cfg(json!({"shared": "1", "ci": "yes"})), "ci", None, "t");
        // ci drops both its labels: `shared` is kubectl's too and stays, `ci` goes.
        apply_configuration(
            &mut live,
            &json!({"apiVersion": "v", "kind": "Stack", "metadata": {"name": "x"}}),
            "ci",
            None,
            "t",
        );
        assert_eq!(live["metadata"]["labels"], json!({"team": "a", "shared": "1"}));
        // A manager that applied the whole (empty) map and drops it leaves the others' labels.
        apply_configuration(&mut live, &cfg(json!({})), "ci", None, "t");
        apply_configuration(
            &mut live,
            &json!({"apiVersion": "v", "kind": "Stack", "metadata": {"name": "x"}}),
            "ci",
            None,
            "t",
        );
        assert_eq!(live["metadata"]["labels"], json!({"team": "a", "shared": "1"}));
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let cfg =
            |labels: Value| json!({"apiVersion": "v", "kind": "Stack", "metadata": {"name": "x", "labels": labels}});
        let mut live = json!({"metadata": {"name": "x"}});
        apply_configuration(&mut live, &cfg(json!({"a": "1"})), "kubectl", None, "t1");
        apply_configuration(&mut live, &cfg(json!({"b": "1"})), "ci", None, "t1");
        let before = live.clone();
        apply_configuration(&mut live, &cfg(json!({"a": "1"})), "kubectl", None, "t2");
        assert_eq!(live, before, "same field set: same time, same place");
        apply_configuration(&mut live, &cfg(json!({"a": "1", "c": "1"})), "kubectl", None, "t3");
        let managed = live["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!((managed[0]["manager"].as_str(), managed[0]["time"].as_str()), (Some("kubectl"), Some("t3")));
        assert_eq!(managed[1]["time"], "t1", "ci's entry is untouched");
    }

    #[test]
    fn status_apply_touches_only_status() {
        let mut live = json!({"metadata": {"name": "x"}, "spec": {"a": 1}, "status": {"phase": "Pending", "old": 1}});
        let cfg = json!({"apiVersion": "v", "kind": "Stack", "spec": {"a": 9}, "status": {"phase": "Ready"}});
        apply_configuration(&mut live, &cfg, "ctl", Some("status"), "t");
        assert_eq!(live["spec"], json!({"a": 1}));
        assert_eq!(live["status"], json!({"phase": "Ready", "old": 1}));
    }

    #[test]
    fn fields_v1_round_trips() {
        let cfg = json!({"spec": {"services": [1], "hosts": {"names": ["a"]}}, "metadata": {"labels": {"app": "x"}}});
        let f = applied_fields(&cfg);
        assert_eq!(from_fields_v1(&to_fields_v1(&f)), f);
    }
}
