//! Object semantics on top of the store: create, get, list, update, patch, delete and
//! deletecollection, with Kubernetes' rules for `uid`, `creationTimestamp`, `generation`, the
//! `status` subresource, finalizers and `deletionTimestamp`, dry runs and admission.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::admission::{AdmissionRequest, Operation, validate_object_value};
use super::errors::{ApiError, ApiResult, Cause};
use super::patch::{PatchType, apply_configuration, apply_patch, parse_apply_body};
use super::query::Query;
use super::registry::{ResourceClass, ResourceInfo};
use super::table::{IncludeObject, table, wants_table};
use crate::store::{ObjectKey, Precondition, StoreError, StoredObject};

/// How many times a write without a resourceVersion is retried when the object changes between
/// read and write. Each round lets at least one contender win (retries wait until the winning
/// write is visible), so this bounds only pathological contention; Kubernetes retries without
/// bound.
const PATCH_RETRIES: usize = 100;

/// Waits until every write issued so far is visible to reads. Reads show only durable writes
/// while preconditions are checked against pending ones too, so a retry after a conflict must
/// wait, or it would read the same stale object again.
async fn settle(state: &ApiState) -> ApiResult<()> {
    state.store.flush().await.map_err(|e| ApiError::from_store(e, "", "", ""))
}

/// Current time as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A request addressed to one resource.
pub struct Target {
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// Namespace from the path (None: cluster-scoped, or all namespaces).
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource (`status`).
    pub subresource: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            resource: self.info.resource_ref(),
            namespace: if self.info.namespaced { self.namespace.clone().unwrap_or_default() } else { String::new() },
            name: name.to_string(),
        }
    }

    fn err(&self, e: StoreError, name: &str) -> ApiError {
        ApiError::from_store(e, &self.info.group, &self.info.plural, name)
    }
}

/// A JSON response with optional `Warning` headers.
pub fn json_response(code: StatusCode, body: Bytes, warnings: &[String]) -> Response {
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn value_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    json_response(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()), warnings)
}

fn stored_response(code: StatusCode, obj: &StoredObject, warnings: &[String]) -> Response {
    json_response(code, obj.bytes.clone(), warnings)
}

/// Parses a request body as JSON (or YAML when the content type says so).
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let v: Value = if ct.starts_with("application/vnd.kubernetes.protobuf") {
        super::protobuf::decode(body)?
    } else if ct.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        serde_yaml_ng::from_str(text).map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body is not valid JSON: {e}; send a JSON object of the resource's kind"))
        })?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata was just made an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Checks `apiVersion`/`kind` of a body against the resource, filling them in when absent.
fn check_type_meta(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let want_av = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the apiVersion {av:?} of the object does not match the request's {want_av:?}"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(info.kind),
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind {k:?} of the object does not match the resource {} (kind {})",
                info.qualified(),
                info.kind
            )));
        }
    }
    Ok(())
}

/// Kubernetes' write-time normal form of a Secret: `stringData` folded into base64 `data`, and
/// `type` defaulted to `Opaque` (clients such as the Python one omit it and read it back).
fn normalize_secret(obj: &mut Value) {
    if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        obj["type"] = json!("Opaque");
    }
    fold_string_data(obj);
}

/// Folds a Secret's `stringData` into base64 `data`, as Kubernetes does on write.
fn fold_string_data(obj: &mut Value) {
    let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    let Some(sd) = string_data.as_object() else { return };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    if let Some(data) = obj["data"].as_object_mut() {
        for (k, v) in sd {
            if let Some(s) = v.as_str() {
                data.insert(k.clone(), json!(base64::engine::general_purpose::STANDARD.encode(s)));
            }
        }
    }
}

/// Everything but `metadata` and `status`: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// Server-owned metadata fields copied from the stored object on every update.
const IMMUTABLE_META: [&str; 6] =
    ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"];

/// Builds the object to store for an update of the main resource (`body` is the client's
/// desired object): server fields from `old`, status kept; `generation` is set by
/// [`bump_generation`] once the object is defaulted.
fn prepare_main_update(info: &ResourceInfo, old: &Value, mut body: Value) -> ApiResult<Value> {
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    {
        let meta = meta_mut(&mut body);
        for f in IMMUTABLE_META {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.to_string(), v.clone()),
                None => meta.remove(f),
            };
        }
        if !meta.contains_key("managedFields")
            && let Some(mf) = old_meta.get("managedFields")
        {
            meta.insert("managedFields".into(), mf.clone());
        }
        meta.remove("resourceVersion");
        meta.remove("generation");
        meta.remove("selfLink");
    }
    if info.has_status {
        match old.get("status") {
            Some(s) => body["status"] = s.clone(),
            None => {
                if let Some(m) = body.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if info.class == ResourceClass::Secret {
        normalize_secret(&mut body);
    }
    if old_meta.get("deletionTimestamp").is_some() {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(&body).into_iter().filter(|f| !before.contains(f)).collect();
        if !added.is_empty() {
            let name = old_meta.get("name").and_then(Value::as_str).unwrap_or("");
            return Err(ApiError::invalid(
                &info.kind,
                &info.group,
                name,
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    field: "metadata.finalizers".into(),
                    message: format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                }],
            ));
        }
    }
    Ok(body)
}

/// Sets `generation` of an updated object: the old one, plus one when the spec changed. Called
/// after admission has defaulted `new`, so a write that omits defaulted fields (kubectl's apply
/// patches replace whole lists without them) is no spec change, as in Kubernetes, where
/// defaulting happens when the request is decoded.
fn bump_generation(old: &Value, new: &mut Value) {
    if let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
        let changed = spec_part(old) != spec_part(new);
        meta_mut(new).insert("generation".into(), json!(if changed { g + 1 } else { g }));
    }
}

/// Builds the object to store for a status update: everything from `old` but `status`.
fn prepare_status_update(old: &Value, body: &Value) -> Value {
    let mut new = old.clone();
    match body.get("status") {
        Some(s) if !s.is_null() => new["status"] = s.clone(),
        _ => {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
    }
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    new
}

fn same_ignoring_rv(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn unknown_field_warnings(fields: Vec<String>) -> Vec<String> {
    fields.into_iter().map(|f| format!("unknown field {f:?}")).collect()
}

fn random_suffix() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// POST on a collection.
pub async fn create(state: &ApiState, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let mut obj = parse_body(headers, body)?;
    let (resp_code, stored, warnings) = create_value(state, t, q, &mut obj).await?;
    Ok(match stored {
        Some(s) => stored_response(resp_code, &s, &warnings),
        None => value_response(resp_code, &obj, &warnings),
    })
}

/// Creates `obj` (mutated into what is stored, and taken when it is stored). Returns the stored
/// object, or `None` on dry run (then `obj` is what would have been stored).
async fn create_value(
    state: &ApiState,
    t: &Target,
    q: &Query,
    obj: &mut Value,
) -> ApiResult<(StatusCode, Option<StoredObject>, Vec<String>)> {
    let info = &t.info;
    check_type_meta(info, obj)?;
    let dry_run = q.dry_run()?;
    {
        let meta = meta_mut(obj);
        let has_name = meta.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if !has_name {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &info.kind,
                        &info.group,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired".into(),
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ));
                }
            }
        }
        if info.namespaced {
            let ns = t.namespace.clone().unwrap_or_default();
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
                    )));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
    }
    if info.has_status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match info.class {
        ResourceClass::Secret => normalize_secret(obj),
        ResourceClass::Namespace => obj["status"] = json!({"phase": "Active"}),
        _ => {}
    }
    let unknown = validate_object_value(info, obj, q.field_validation()?)?;
    // Held until the object is stored (quotas count what is stored).
    let _ordered = state.policy.serialize(info, obj).await;
    state
        .policy
        .admit(&AdmissionRequest {
            resource: info,
            operation: Operation::Create,
            object: obj,
            old: None,
            store: &*state.store,
        })
        .await?;
    {
        let now = now_rfc3339();
        let meta = meta_mut(obj);
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now));
        if info.class == ResourceClass::Custom {
            meta.insert("generation".into(), json!(1));
        }
    }
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    let warnings = unknown_field_warnings(unknown);
    if dry_run {
        if state.store.get(&t.key(&name)).map_err(|e| t.err(e, &name))?.is_some() {
            return Err(ApiError::already_exists(&info.group, &info.plural, &name));
        }
        return Ok((StatusCode::CREATED, None, warnings));
    }
    // Taken, not cloned: callers read `obj` only on a dry run.
    let stored = state.store.create(&t.key(&name), std::mem::take(obj)).await.map_err(|e| t.err(e, &name))?;
    Ok((StatusCode::CREATED, Some(stored), warnings))
}

/// GET on an object (or its status).
pub async fn get(state: &ApiState, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or_default();
    let obj = state.store.get(&t.key(name)).map_err(|e| t.err(e, name))?;
    let obj = obj.ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.plural, name))?;
    if wants_table(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) {
        let include = IncludeObject::parse(q.get("includeObject"));
        let tbl = table(&t.info, std::iter::once(&obj.value()), include, obj.resource_version, None, true);
        return Ok(value_response(StatusCode::OK, &tbl, &[]));
    }
    Ok(stored_response(StatusCode::OK, &obj, &[]))
}

/// GET on a collection (not a watch).
pub async fn list(state: &ApiState, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    let opts = q.list_options()?;
    let ns = if t.info.namespaced { t.namespace.as_deref() } else { None };
    let result = state.store.list(&t.info.resource_ref(), ns, &opts).map_err(|e| t.err(e, ""))?;
    if wants_table(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) {
        let include = IncludeObject::parse(q.get("includeObject"));
        let tbl = table(
            &t.info,
            result.items.iter().map(|o| o.value()).collect::<Vec<_>>().iter(),
            include,
            result.resource_version,
            result.continue_token.as_deref(),
            true,
        );
        return Ok(value_response(StatusCode::OK, &tbl, &[]));
    }
    let mut metadata = json!({"resourceVersion": result.resource_version.to_string()});
    if let Some(c) = &result.continue_token {
        metadata["continue"] = json!(c);
        if let Some(n) = result.remaining_item_count {
            metadata["remainingItemCount"] = json!(n);
        }
    }
    let head = format!(
        r#"{{"apiVersion":{},"kind":{},"metadata":{},"items":["#,
        serde_json::to_string(&t.info.api_version()).unwrap_or_default(),
        serde_json::to_string(&t.info.list_kind()).unwrap_or_default(),
        metadata
    );
    let size: usize = head.len() + result.items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 2;
    let mut buf = BytesMut::with_capacity(size);
    buf.put_slice(head.as_bytes());
    for (i, item) in result.items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(&item.bytes);
    }
    buf.put_slice(b"]}");
    Ok(json_response(StatusCode::OK, buf.freeze(), &[]))
}

/// PUT on an object or its status.
pub async fn replace(state: &ApiState, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    let mut obj = parse_body(headers, body)?;
    check_type_meta(info, &mut obj)?;
    if let Some(n) = meta_str(&obj, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let precondition = match meta_str(&obj, "resourceVersion") {
        None | Some("") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion {rv:?} is not a resourceVersion this server issued"
            ))
        })?),
    };
    for _ in 0..PATCH_RETRIES {
        let old = state.store.get(&t.key(&name)).map_err(|e| t.err(e, &name))?;
        let old = old.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &name))?;
        if let Some(rv) = precondition
            && rv != old.resource_version
        {
            return Err(ApiError::conflict(&info.group, &info.plural, &name));
        }
        match write_update(state, t, q, &old, obj.clone()).await {
            Ok((code, resp, warnings)) => {
                return Ok(match resp {
                    Some(s) => stored_response(code, &s, &warnings),
                    None => value_response(code, &Value::Null, &warnings),
                });
            }
            // An unconditional update (no resourceVersion) applies to whatever is current.
            Err(ApiError::Conflict { .. }) if precondition.is_none() => settle(state).await?,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&info.group, &info.plural, &name))
}

/// Validates and stores an update of `old` to the client's `desired` object (main resource or
/// status, per the target), completing a pending deletion when the last finalizer goes.
async fn write_update(
    state: &ApiState,
    t: &Target,
    q: &Query,
    old: &StoredObject,
    desired: Value,
) -> ApiResult<(StatusCode, Option<StoredObject>, Vec<String>)> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    let is_status = t.subresource.as_deref() == Some("status");
    let old_value = old.value();
    let mut new = if is_status {
        prepare_status_update(&old_value, &desired)
    } else {
        prepare_main_update(info, &old_value, desired)?
    };
    let unknown = validate_object_value(info, &mut new, q.field_validation()?)?;
    // Held until the update is stored (quotas count what is stored); a status write is not
    // admitted by the policy and only ever frees quota.
    let _ordered = if is_status { None } else { state.policy.serialize(info, &new).await };
    if !is_status {
        bump_generation(&old_value, &mut new);
        state
            .policy
            .admit(&AdmissionRequest {
                resource: info,
                operation: Operation::Update,
                object: &new,
                old: Some(&old_value),
                store: &*state.store,
            })
            .await?;
    }
    let warnings = unknown_field_warnings(unknown);
    let dry_run = q.dry_run()?;
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && finalizers(&new).is_empty() {
        if dry_run {
            return Ok((StatusCode::OK, Some(old.clone()), warnings));
        }
        let deleted = state
            .store
            .delete(&t.key(&name), Precondition::ResourceVersion(old.resource_version))
            .await
            .map_err(|e| t.err(e, &name))?;
        return Ok((StatusCode::OK, Some(deleted), warnings));
    }
    if same_ignoring_rv(&new, &old_value) || dry_run {
        return Ok((StatusCode::OK, Some(old.clone()), warnings));
    }
    let stored = state
        .store
        .update(&t.key(&name), new, Precondition::ResourceVersion(old.resource_version))
        .await
        .map_err(|e| t.err(e, &name))?;
    Ok((StatusCode::OK, Some(stored), warnings))
}

/// PATCH on an object or its status.
pub async fn patch(state: &ApiState, t: &Target, q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    let kind = PatchType::from_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))?;
    if kind == PatchType::Strategic && info.class == ResourceClass::Custom {
        return Err(ApiError::UnsupportedMediaType {
            message: format!(
                "strategic merge patch is not supported for {}; use a JSON merge patch \
                 (kubectl patch --type=merge) or a JSON patch",
                info.qualified()
            ),
        });
    }
    let is_status = t.subresource.as_deref() == Some("status");
    let apply_config = if kind == PatchType::Apply {
        let cfg = parse_apply_body(body)?;
        if let Some(n) = meta_str(&cfg, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Some(cfg)
    } else {
        None
    };
    let manager = q.field_manager().map(str::to_string);
    if kind == PatchType::Apply && manager.is_none() {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                field: "fieldManager".into(),
                message: "Required value: is required for apply patch; add ?fieldManager=NAME".into(),
            }],
        ));
    }
    if kind != PatchType::Apply && q.get("force").is_some() {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![Cause {
                reason: "FieldValueForbidden".into(),
                field: "force".into(),
                message: "Forbidden: may not be specified for non-apply patch".into(),
            }],
        ));
    }
    let pinned = kind != PatchType::Apply && patch_names_resource_version(kind, body);
    for _ in 0..PATCH_RETRIES {
        let old = state.store.get(&t.key(&name)).map_err(|e| t.err(e, &name))?;
        let Some(old) = old else {
            if let (Some(cfg), false) = (&apply_config, is_status) {
                // Server-side apply creates missing objects.
                let mut obj = cfg.clone();
                if let Some(ns) = &t.namespace
                    && info.namespaced
                {
                    meta_mut(&mut obj).insert("namespace".into(), json!(ns));
                }
                let mut live = json!({"metadata": {}});
                apply_configuration(&mut live, &obj, manager.as_deref().unwrap_or("unknown"), None, &now_rfc3339());
                let mut merged = obj.clone();
                meta_mut(&mut merged).insert("managedFields".into(), live["metadata"]["managedFields"].clone());
                let (code, stored, warnings) = create_value(state, t, q, &mut merged).await?;
                return Ok(match stored {
                    Some(s) => stored_response(code, &s, &warnings),
                    None => value_response(code, &merged, &warnings),
                });
            }
            return Err(ApiError::not_found(&info.group, &info.plural, &name));
        };
        let mut desired = old.value();
        match &apply_config {
            Some(cfg) => {
                check_type_meta(info, &mut cfg.clone())?;
                apply_configuration(
                    &mut desired,
                    cfg,
                    manager.as_deref().unwrap_or("unknown"),
                    if is_status { Some("status") } else { None },
                    &now_rfc3339(),
                );
            }
            None => apply_patch(kind, &mut desired, body)?,
        }
        // A patch that names a resourceVersion asks for optimistic concurrency; any other patch
        // applies to whatever is current and is retried when the object changes underneath.
        if pinned && meta_str(&desired, "resourceVersion") != Some(old.resource_version.to_string().as_str()) {
            return Err(ApiError::conflict(&info.group, &info.plural, &name));
        }
        match write_update(state, t, q, &old, desired).await {
            Ok((code, stored, warnings)) => {
                return Ok(match stored {
                    Some(s) => stored_response(code, &s, &warnings),
                    None => value_response(code, &Value::Null, &warnings),
                });
            }
            Err(ApiError::Conflict { .. }) if !pinned => settle(state).await?,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&info.group, &info.plural, &name))
}

/// Whether a merge or JSON patch sets `metadata.resourceVersion` (a precondition).
fn patch_names_resource_version(kind: PatchType, body: &[u8]) -> bool {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else { return false };
    match kind {
        PatchType::Json => patch.as_array().is_some_and(|ops| {
            ops.iter().any(|op| op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion"))
        }),
        _ => patch.pointer("/metadata/resourceVersion").is_some_and(|rv| !rv.is_null()),
    }
}

/// Preconditions of a DeleteOptions body.
fn delete_preconditions(body: &[u8]) -> ApiResult<(Option<u64>, Option<String>, bool)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None, false));
    }
    let opts: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("DeleteOptions are not valid JSON: {e}")))?;
    let rv = match opts.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request("preconditions.resourceVersion is not valid"))?)
        }
        None => None,
    };
    let uid = opts.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
    let dry = opts.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok((rv, uid, dry))
}

/// Deletes one object: marks it with `deletionTimestamp` while finalizers remain, removes it
/// otherwise. Returns the object as the client should see it.
async fn delete_one(
    state: &ApiState,
    t: &Target,
    name: &str,
    pre_rv: Option<u64>,
    pre_uid: Option<&str>,
    dry_run: bool,
) -> ApiResult<StoredObject> {
    let info = &t.info;
    for _ in 0..PATCH_RETRIES {
        let old = state.store.get(&t.key(name)).map_err(|e| t.err(e, name))?;
        let old = old.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        if let Some(rv) = pre_rv
            && rv != old.resource_version
        {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        let old_value = old.value();
        if let Some(uid) = pre_uid
            && meta_str(&old_value, "uid") != Some(uid)
        {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        if dry_run {
            return Ok(old);
        }
        if finalizers(&old_value).is_empty() {
            match state.store.delete(&t.key(name), Precondition::ResourceVersion(old.resource_version)).await {
                Ok(deleted) => return Ok(deleted),
                // Changed since read: a delete without preconditions tries again on the new state.
                Err(StoreError::Conflict { .. }) if pre_rv.is_none() && pre_uid.is_none() => {
                    settle(state).await?;
                    continue;
                }
                Err(e) => return Err(t.err(e, name)),
            }
        }
        if old_value.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut marked = old_value;
        {
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta.remove("resourceVersion");
        }
        match state.store.update(&t.key(name), marked, Precondition::ResourceVersion(old.resource_version)).await {
            Ok(s) => return Ok(s),
            Err(StoreError::Conflict { .. }) if pre_rv.is_none() && pre_uid.is_none() => settle(state).await?,
            Err(e) => return Err(t.err(e, name)),
        }
    }
    Err(ApiError::conflict(&info.group, &info.plural, name))
}

/// DELETE on an object.
pub async fn delete(state: &ApiState, t: &Target, q: &Query, body: &[u8]) -> ApiResult<Response> {
    let name = t.name.clone().unwrap_or_default();
    let (rv, uid, body_dry) = delete_preconditions(body)?;
    let dry_run = body_dry || q.dry_run()?;
    let obj = delete_one(state, t, &name, rv, uid.as_deref(), dry_run).await?;
    Ok(stored_response(StatusCode::OK, &obj, &[]))
}

/// DELETE on a collection: deletes every object the selectors match.
pub async fn delete_collection(state: &ApiState, t: &Target, q: &Query, body: &[u8]) -> ApiResult<Response> {
    let (_, _, body_dry) = delete_preconditions(body)?;
    let dry_run = body_dry || q.dry_run()?;
    let mut opts = q.list_options()?;
    opts.limit = None;
    opts.continue_token = None;
    let ns = if t.info.namespaced { t.namespace.as_deref() } else { None };
    let result = state.store.list(&t.info.resource_ref(), ns, &opts).map_err(|e| t.err(e, ""))?;
    let mut items = Vec::new();
    for obj in result.items {
        let sub = Target {
            info: t.info.clone(),
            namespace: Some(obj.key.namespace.clone()),
            name: Some(obj.key.name.clone()),
            subresource: None,
        };
        match delete_one(state, &sub, &obj.key.name, None, None, dry_run).await {
            Ok(o) => items.push(o.value()),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "apiVersion": t.info.api_version(),
        "kind": t.info.list_kind(),
        "metadata": {"resourceVersion": state.store.current_resource_version().to_string()},
        "items": items,
    });
    Ok(value_response(StatusCode::OK, &list, &[]))
}

/// Reads a body up to the limit, answering 413 beyond it.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::RequestEntityTooLarge {
                message: format!(
                    "Request entity too large: limit is {limit}; split the object or raise berth serve --max-body-bytes"
                ),
            }
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}
