//! The create-or-update rule of `apply` (and what `diff` shows): a three-way merge of the last
//! applied configuration, the new one and the live object, the rule kubectl uses for custom
//! resources. Fields the manifest sets are written; fields an earlier apply set and the manifest
//! no longer has are removed; everything else (status, server-owned metadata, labels and fields
//! others set) is kept. The last applied configuration is kept in kubectl's own annotation, so
//! `berth apply` and `kubectl apply` can take turns on the same objects.

use serde_json::{Map, Value};

/// kubectl's annotation holding the last applied configuration.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The metadata fields a manifest manages; the rest of metadata belongs to the server.
const MANAGED_METADATA: [&str; 2] = ["labels", "annotations"];

/// What a manifest is made into before merging: Secrets' `stringData` folded into base64 `data`
/// as the server stores it (so an unchanged Secret compares equal).
pub fn normalize(kind_is_secret: bool, mut applied: Value) -> Value {
    use base64::Engine;
    if kind_is_secret
        && let Some(obj) = applied.as_object_mut()
        && let Some(Value::Object(string_data)) = obj.remove("stringData")
    {
        let data = obj.entry("data").or_insert_with(|| Value::Object(Map::new()));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                if let Some(s) = v.as_str() {
                    data.insert(k, Value::from(base64::engine::general_purpose::STANDARD.encode(s)));
                }
            }
        }
    }
    applied
}

/// The annotation value recording `applied`. For Secrets only the keys are kept: values would
/// otherwise be readable by anyone who can read the object's metadata, and the merge only needs
/// to know which keys were applied.
pub fn last_applied_text(kind_is_secret: bool, applied: &Value) -> String {
    let mut v = applied.clone();
    if let Some(ann) = v.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        ann.remove(LAST_APPLIED);
        if ann.is_empty()
            && let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    if kind_is_secret {
        for field in ["data", "stringData"] {
            if let Some(map) = v.get_mut(field).and_then(Value::as_object_mut) {
                for value in map.values_mut() {
                    *value = Value::from("");
                }
            }
        }
    }
    format!("{}\n", serde_json::to_string(&v).unwrap_or_default())
}

/// `applied` with the last-applied annotation added: the object to create.
pub fn with_last_applied(kind_is_secret: bool, applied: &Value) -> Value {
    let text = last_applied_text(kind_is_secret, applied);
    let mut v = applied.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(LAST_APPLIED.into(), Value::from(text));
        }
    }
    v
}

/// The part of an object a manifest manages: everything but `status` and server metadata.
fn managed_view(v: &Value) -> Value {
    let mut out = Map::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            match k.as_str() {
                "status" | "apiVersion" | "kind" => {}
                "metadata" => {
                    let mut meta = Map::new();
                    for f in MANAGED_METADATA {
                        if let Some(x) = val.get(f) {
                            meta.insert(f.into(), x.clone());
                        }
                    }
                    out.insert(k.clone(), Value::Object(meta));
                }
                _ => {
                    out.insert(k.clone(), val.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// Changes that turn `current` into `modified`, ignoring what `modified` lacks.
fn changes(current: &Value, modified: &Value) -> Map<String, Value> {
    let mut patch = Map::new();
    let (Some(c), Some(m)) = (current.as_object(), modified.as_object()) else { return patch };
    for (k, mv) in m {
        match c.get(k) {
            Some(cv) if cv == mv => {}
            Some(cv) if cv.is_object() && mv.is_object() => {
                let sub = changes(cv, mv);
                if !sub.is_empty() {
                    patch.insert(k.clone(), Value::Object(sub));
                }
            }
            _ => {
                patch.insert(k.clone(), mv.clone());
            }
        }
    }
    patch
}

/// Deletions of what `original` had and `modified` no longer has.
fn deletions(original: &Value, modified: &Value) -> Map<String, Value> {
    let mut patch = Map::new();
    let (Some(o), Some(m)) = (original.as_object(), modified.as_object()) else { return patch };
    for (k, ov) in o {
        match m.get(k) {
            None => {
                patch.insert(k.clone(), Value::Null);
            }
            Some(mv) if ov.is_object() && mv.is_object() => {
                let sub = deletions(ov, mv);
                if !sub.is_empty() {
                    patch.insert(k.clone(), Value::Object(sub));
                }
            }
            Some(_) => {}
        }
    }
    patch
}

fn deep_merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => deep_merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The JSON merge patch a three-way merge produces (kubectl's `CreateThreeWayJSONMergePatch`).
pub fn three_way_patch(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    let modified = managed_view(modified);
    let current = managed_view(current);
    let mut patch = changes(&current, &modified);
    if let Some(original) = original {
        deep_merge(&mut patch, deletions(&managed_view(original), &modified));
    }
    Value::Object(patch)
}

/// The object `apply` writes over `live` for the (normalized) manifest `applied`: the live
/// object with the three-way patch merged in, the last-applied annotation refreshed.
pub fn merged(kind_is_secret: bool, live: &Value, applied: &Value) -> Value {
    let original: Option<Value> = live
        .pointer(&format!("/metadata/annotations/{}", LAST_APPLIED.replace('/', "~1")))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    let modified = with_last_applied(kind_is_secret, applied);
    let patch = three_way_patch(original.as_ref(), &modified, live);
    let mut out = live.clone();
    json_patch::merge(&mut out, &patch);
    // A merge patch leaves `labels: {}` behind when the last label goes; the server would keep
    // it too, but comparing with an object that never had labels must not see a change.
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in MANAGED_METADATA {
            if meta.get(f).is_some_and(|v| v.as_object().is_some_and(Map::is_empty)) {
                meta.remove(f);
            }
        }
    }
    out
}

/// The object as `diff` shows it: no status, no server bookkeeping, no last-applied annotation.
pub fn diff_view(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(f);
            }
            if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                ann.remove(LAST_APPLIED);
                if ann.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stack(image: &str) -> Value {
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "shop"}},
            "spec": {"services": [{"name": "web", "image": image}]}
        })
    }

    /// What the server holds after a create of `applied`: bookkeeping and status added.
    fn live_of(applied: &Value) -> Value {
        let mut live = with_last_applied(false, applied);
        live["metadata"]["uid"] = json!("u1");
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["generation"] = json!(1);
        live["status"] = json!({"phase": "Ready"});
        live
    }

    #[test]
    fn applying_the_same_manifest_changes_nothing() {
        let live = live_of(&stack("a:1"));
        assert_eq!(merged(false, &live, &stack("a:1")), live);
    }

    #[test]
    fn a_changed_field_is_written_and_status_and_server_fields_are_kept() {
        let live = live_of(&stack("a:1"));
        let out = merged(false, &live, &stack("a:2"));
        assert_eq!(out["spec"]["services"][0]["image"], "a:2");
        assert_eq!(out["status"], json!({"phase": "Ready"}));
        assert_eq!(out["metadata"]["uid"], "u1");
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        let recorded: Value =
            serde_json::from_str(out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap()).unwrap();
        assert_eq!(recorded["spec"]["services"][0]["image"], "a:2");
    }

    #[test]
    fn a_field_removed_from_the_manifest_is_removed_but_fields_set_by_others_stay() {
        let mut first = stack("a:1");
        first["spec"]["suspend"] = json!(true);
        first["metadata"]["labels"]["tier"] = json!("front");
        let mut live = live_of(&first);
        // Someone else added a label and a field afterwards.
        live["metadata"]["labels"]["team"] = json!("ops");
        live["spec"]["driftPolicy"] = json!("Report");
        let out = merged(false, &live, &stack("a:1"));
        assert!(out["spec"].get("suspend").is_none(), "{out}");
        assert_eq!(out["spec"]["driftPolicy"], "Report");
        assert_eq!(out["metadata"]["labels"], json!({"app": "shop", "team": "ops"}));
    }

    #[test]
    fn without_a_last_applied_annotation_nothing_is_removed() {
        let mut live = stack("a:1");
        live["spec"]["suspend"] = json!(true);
        let out = merged(false, &live, &stack("a:1"));
        assert_eq!(out["spec"]["suspend"], true);
        assert!(out["metadata"]["annotations"][LAST_APPLIED].is_string());
    }

    #[test]
    fn lists_are_replaced_whole() {
        let mut two = stack("a:1");
        two["spec"]["services"] = json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]);
        let live = live_of(&two);
        let out = merged(false, &live, &stack("a:1"));
        assert_eq!(out["spec"]["services"], json!([{"name": "web", "image": "a:1"}]));
    }

    #[test]
    fn secrets_compare_folded_and_keep_no_values_in_the_annotation() {
        let applied = normalize(
            true,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "hunter2"}}),
        );
        assert_eq!(applied["data"]["password"], "aHVudGVyMg==");
        assert!(applied.get("stringData").is_none());
        let live = with_last_applied(true, &applied);
        let text = live["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap();
        assert!(!text.contains("aHVudGVyMg") && text.contains("password"), "{text}");
        assert_eq!(merged(true, &live, &applied), live);
        // Removing a key removes it on the server.
        let mut fewer = applied.clone();
        fewer["data"] = json!({});
        let out = merged(true, &live, &fewer);
        assert_eq!(out["data"], json!({}));
    }

    #[test]
    fn removing_the_last_label_leaves_no_empty_map() {
        let live = live_of(&stack("a:1"));
        let mut bare = stack("a:1");
        bare["metadata"].as_object_mut().unwrap().remove("labels");
        let out = merged(false, &live, &bare);
        assert!(out["metadata"].get("labels").is_none(), "{out}");
    }

    #[test]
    fn diff_view_hides_bookkeeping() {
        let v = diff_view(&live_of(&stack("a:1")));
        assert_eq!(v, stack("a:1"));
    }
}
