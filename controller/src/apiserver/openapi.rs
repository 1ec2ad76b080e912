//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group/version with the
//! real schemas of the kinds and their operations. kubectl reads them to decide whether the server
//! validates fields itself (it looks for `fieldValidation` on the PATCH operation of the kind) and
//! for `kubectl explain`.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::registry::{Registry, ResourceInfo};

/// The index key of a group/version: `api/v1` or `apis/{group}/{version}`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// Schema name of a kind, in Kubernetes' reverse-DNS style (`dev.berth.v1alpha1.Stack`).
pub fn schema_name(r: &ResourceInfo, kind: &str) -> String {
    if r.group.is_empty() {
        return format!("io.k8s.api.core.{}.{kind}", r.version);
    }
    if r.group.ends_with(".k8s.io") {
        let short = r.group.trim_end_matches(".k8s.io");
        return format!("io.k8s.api.{short}.{}.{kind}", r.version);
    }
    let reversed: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{kind}", reversed.join("."), r.version)
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn gvk(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn query_param(name: &str, description: &str, type_: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": type_, "uniqueItems": true}})
}

fn write_params(with_force: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid value: All",
            "string",
        ),
        query_param(
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
            "string",
        ),
        query_param(
            "fieldValidation",
            "How the server handles unknown fields: Ignore, Warn (default) or Strict.",
            "string",
        ),
    ];
    if with_force {
        p.push(query_param("force", "Force is going to \"force\" Apply requests.", "boolean"));
    }
    p
}

fn list_params() -> Vec<Value> {
    vec![
        query_param("allowWatchBookmarks", "Request watch bookmarks.", "boolean"),
        query_param("continue", "The continue token of the previous page.", "string"),
        query_param("fieldSelector", "Selects by metadata.name and metadata.namespace.", "string"),
        query_param("labelSelector", "A label selector.", "string"),
        query_param("limit", "Maximum number of items to return.", "integer"),
        query_param(
            "resourceVersion",
            "Where to start a watch, or the version a list must be at least as new as.",
            "string",
        ),
        query_param("timeoutSeconds", "Timeout of a list or watch call.", "integer"),
        query_param("watch", "Watch for changes instead of listing.", "boolean"),
    ]
}

fn response(schema: Value) -> Value {
    json!({
        "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
        "401": {"description": "Unauthorized"},
    })
}

fn op(
    r: &ResourceInfo,
    action: &str,
    operation_id: String,
    params: Vec<Value>,
    body: Option<Value>,
    resp: Value,
) -> Value {
    let mut o = json!({
        "operationId": operation_id,
        "tags": [r.group.clone() + "_" + &r.version],
        "description": format!("{action} {}", r.kind),
        "parameters": params,
        "responses": resp,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in s.chars() {
        if c == '.' || c == '-' || c == '/' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn json_body(schema: Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

/// Patch content types. Strategic merge patch is offered only for core kinds: kubectl sends a
/// JSON merge patch to kinds that do not advertise it, which is what berth's kinds need.
fn patch_body(r: &ResourceInfo) -> Value {
    let schema = reference(PATCH);
    let mut content = json!({
        "application/apply-patch+yaml": {"schema": schema},
        "application/json-patch+json": {"schema": schema},
        "application/merge-patch+json": {"schema": schema},
    });
    if r.class != super::registry::ResourceClass::Custom {
        content["application/strategic-merge-patch+json"] = json!({"schema": schema});
    }
    json!({"content": content, "required": true})
}

fn add_paths(paths: &mut Map<String, Value>, r: &ResourceInfo) {
    let base = format!("/{}", gv_path(&r.group, &r.version));
    let id = format!("{}{}", camel(&r.group), camel(&r.version));
    let (scope, ns_param) = if r.namespaced {
        ("Namespaced", Some(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}})))
    } else {
        ("", None)
    };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let name_param = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let kind_ref = reference(&schema_name(r, &r.kind));
    let list_ref = reference(&schema_name(r, &r.list_kind()));

    let mut coll = json!({
        "get": op(r, "list", format!("list{id}{scope}{}", r.kind), list_params(), None, response(list_ref.clone())),
        "post": op(r, "post", format!("create{id}{scope}{}", r.kind), write_params(false), Some(json_body(kind_ref.clone())), response(kind_ref.clone())),
        "delete": op(r, "deletecollection", format!("deletecollection{id}{scope}{}", r.kind), list_params(), Some(json_body(reference(DELETE_OPTIONS))), response(reference(STATUS))),
    });
    if let Some(p) = &ns_param {
        coll["parameters"] = json!([p]);
    }
    paths.insert(collection.clone(), coll);

    let mut obj = json!({
        "get": op(r, "get", format!("read{id}{scope}{}", r.kind), vec![], None, response(kind_ref.clone())),
        "put": op(r, "put", format!("replace{id}{scope}{}", r.kind), write_params(false), Some(json_body(kind_ref.clone())), response(kind_ref.clone())),
        "patch": op(r, "patch", format!("patch{id}{scope}{}", r.kind), write_params(true), Some(patch_body(r)), response(kind_ref.clone())),
        "delete": op(r, "delete", format!("delete{id}{scope}{}", r.kind), write_params(false).into_iter().take(1).collect(), Some(json_body(reference(DELETE_OPTIONS))), response(reference(STATUS))),
    });
    let mut params = vec![name_param.clone()];
    params.extend(ns_param.clone());
    obj["parameters"] = Value::from(params.clone());
    paths.insert(item.clone(), obj);

    if r.has_status {
        let mut status = json!({
            "get": op(r, "get", format!("read{id}{scope}{}Status", r.kind), vec![], None, response(kind_ref.clone())),
            "put": op(r, "put", format!("replace{id}{scope}{}Status", r.kind), write_params(false), Some(json_body(kind_ref.clone())), response(kind_ref.clone())),
            "patch": op(r, "patch", format!("patch{id}{scope}{}Status", r.kind), write_params(true), Some(patch_body(r)), response(kind_ref.clone())),
        });
        status["parameters"] = Value::from(params);
        paths.insert(format!("{item}/status"), status);
    }
    if r.namespaced {
        paths.insert(
            format!("{base}/{}", r.plural),
            json!({"get": op(r, "list", format!("list{id}{}ForAllNamespaces", r.kind), list_params(), None, response(list_ref))}),
        );
    }
}

fn kind_schema(r: &ResourceInfo) -> Value {
    let mut schema = r.schema.clone();
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    let props = schema.as_object_mut().and_then(|s| {
        s.entry("properties").or_insert_with(|| json!({}));
        s.get_mut("properties").and_then(Value::as_object_mut)
    });
    if let Some(props) = props {
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
        );
        props.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
        );
        props.insert(
            "metadata".into(),
            json!({"allOf": [reference(OBJECT_META)], "description": "Standard object's metadata."}),
        );
    }
    schema["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
    schema
}

fn list_schema(r: &ResourceInfo) -> Value {
    json!({
        "type": "object",
        "description": format!("A list of {}.", r.kind),
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": reference(&schema_name(r, &r.kind))},
            "metadata": {"allOf": [reference(LIST_META)]},
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.list_kind()}],
    })
}

fn meta_schemas() -> Vec<(String, Value)> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    vec![
        (OBJECT_META.to_string(), super::registry::structural_schema::<meta::ObjectMeta>()),
        (LIST_META.to_string(), super::registry::structural_schema::<meta::ListMeta>()),
        (STATUS.to_string(), super::registry::structural_schema::<meta::Status>()),
        (DELETE_OPTIONS.to_string(), super::registry::structural_schema::<meta::DeleteOptions>()),
        (
            PATCH.to_string(),
            json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}),
        ),
    ]
}

/// The OpenAPI v3 document of one group/version, or `None` when it is not served.
pub fn group_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<_> = registry.in_group_version(group, version).collect();
    if resources.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in &resources {
        add_paths(&mut paths, r);
        schemas.insert(schema_name(r, &r.kind), kind_schema(r));
        schemas.insert(schema_name(r, &r.list_kind()), list_schema(r));
    }
    for (name, s) in meta_schemas() {
        schemas.insert(name, s);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "berth", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A short content hash, used as the `?hash=` of the index so clients can cache documents.
pub fn document_hash(doc: &Value) -> String {
    let digest = Sha256::digest(doc.to_string().as_bytes());
    hex::encode(&digest[..16]).to_uppercase()
}

/// `/openapi/v3`: the index of every group/version document.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in registry.group_versions() {
        if let Some(doc) = group_document(registry, &g, &v) {
            let key = gv_path(&g, &v);
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", document_hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_follow_kubernetes_conventions() {
        let reg = Registry::builtin();
        let stack = reg.find("berth.dev", "v1alpha1", "stacks").unwrap();
        assert_eq!(schema_name(&stack, "Stack"), "dev.berth.v1alpha1.Stack");
        let secret = reg.find("", "v1", "secrets").unwrap();
        assert_eq!(schema_name(&secret, "Secret"), "io.k8s.api.core.v1.Secret");
        let ev = reg.find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(schema_name(&ev, "Event"), "io.k8s.api.events.v1.Event");
    }

    #[test]
    fn patch_operations_declare_field_validation_and_gvk() {
        let reg = Registry::builtin();
        let doc = group_document(&reg, "berth.dev", "v1alpha1").unwrap();
        let patch = &doc["paths"]["/apis/berth.dev/v1alpha1/namespaces/{namespace}/stacks/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Stack");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let host_patch = &doc["paths"]["/apis/berth.dev/v1alpha1/hosts/{name}"]["patch"];
        assert_eq!(host_patch["x-kubernetes-group-version-kind"]["kind"], "Host");
        let schema = &doc["components"]["schemas"]["dev.berth.v1alpha1.Stack"];
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], "Stack");
        assert!(schema["properties"]["spec"]["properties"]["services"].is_object());
    }

    #[test]
    fn index_lists_every_group_version_with_a_hash() {
        let idx = index(&Registry::builtin());
        for key in ["api/v1", "apis/berth.dev/v1alpha1", "apis/events.k8s.io/v1"] {
            let url = idx["paths"][key]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{key}?hash=")), "{url}");
        }
    }
}
