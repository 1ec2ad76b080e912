//! Decoding of Kubernetes' protobuf encoding for the kinds kubectl sends that way:
//! `kubectl create secret generic`, `kubectl create configmap` and `kubectl create namespace`
//! POST a protobuf `Secret`, `ConfigMap` or `Namespace` (client-go's typed clients default to
//! protobuf). berth answers in JSON, which kubectl accepts. Only the fields those commands set
//! are decoded; the rest are skipped.
//!
//! Wire layout: the magic `k8s\0`, then a `runtime.Unknown` message whose field 1 is the type
//! meta (`apiVersion`, `kind`) and field 2 the raw bytes of the object message.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::errors::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\0";

/// One decoded protobuf field.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf body could not be decoded: {what}; send JSON instead"))
}

fn varint(buf: &[u8], pos: &mut usize) -> ApiResult<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("varint too long"))
}

/// Splits a message into `(field number, value)` pairs.
fn fields(buf: &[u8]) -> ApiResult<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((number, Field::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad("length overflow"))?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len()).ok_or_else(|| bad("truncated field"))?;
                out.push((number, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => return Err(bad("unsupported wire type")),
        }
    }
    Ok(out)
}

fn string(b: &[u8]) -> ApiResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string field is not UTF-8"))
}

/// A map entry message `{1: key, 2: value}`.
fn map_entry(b: &[u8]) -> ApiResult<(String, &[u8])> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = string(k)?,
            (2, Field::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(b: &[u8]) -> ApiResult<Value> {
    let mut meta = Map::new();
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        let Field::Bytes(v) = f else { continue };
        match n {
            1..=3 => {
                let s = string(v)?;
                if !s.is_empty() {
                    let key = ["name", "generateName", "namespace"][(n - 1) as usize];
                    meta.insert(key.into(), json!(s));
                }
            }
            11 => {
                let (k, val) = map_entry(v)?;
                labels.insert(k, string(val)?);
            }
            12 => {
                let (k, val) = map_entry(v)?;
                annotations.insert(k, string(val)?);
            }
            14 => finalizers.push(string(v)?),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), json!(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), json!(finalizers));
    }
    Ok(Value::Object(meta))
}

fn b64(v: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(v))
}

fn secret(raw: &[u8]) -> ApiResult<Value> {
    let mut obj = json!({"apiVersion": "v1", "kind": "Secret"});
    let (mut data, mut string_data) = (Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(m)) => obj["metadata"] = object_meta(m)?,
            (2, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                data.insert(k, b64(v));
            }
            (3, Field::Bytes(t)) => {
                let t = string(t)?;
                obj["type"] = json!(if t.is_empty() { "Opaque".to_string() } else { t });
            }
            (4, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                string_data.insert(k, json!(string(v)?));
            }
            (5, Field::Varint(b)) if b != 0 => obj["immutable"] = json!(true),
            _ => {}
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    Ok(obj)
}

fn config_map(raw: &[u8]) -> ApiResult<Value> {
    let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    let (mut data, mut binary) = (Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(m)) => obj["metadata"] = object_meta(m)?,
            (2, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                data.insert(k, json!(string(v)?));
            }
            (3, Field::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                binary.insert(k, b64(v));
            }
            (4, Field::Varint(b)) if b != 0 => obj["immutable"] = json!(true),
            _ => {}
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    Ok(obj)
}

/// A Namespace: only its metadata (the server sets the status; berth keeps no spec finalizers).
fn namespace(raw: &[u8]) -> ApiResult<Value> {
    let mut obj = json!({"apiVersion": "v1", "kind": "Namespace"});
    for (n, f) in fields(raw)? {
        if let (1, Field::Bytes(m)) = (n, f) {
            obj["metadata"] = object_meta(m)?;
        }
    }
    Ok(obj)
}

/// Decodes a protobuf-encoded Secret, ConfigMap or Namespace into its JSON form.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| bad("missing the k8s protobuf magic"))?;
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    if let (2, Field::Bytes(k)) = (tn, tf) {
                        kind = string(k)?;
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    match kind.as_str() {
        "Secret" => secret(raw),
        "ConfigMap" => config_map(raw),
        "Namespace" => namespace(raw),
        other => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "berth accepts protobuf only for Secret, ConfigMap and Namespace, not {other:?}; the body of the request was in an \
                 unknown format - accepted media types include: application/json, application/yaml"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn decodes_what_kubectl_create_secret_sends() {
        // Captured from kubectl 1.32: create secret generic db --from-literal=password=x
        // --from-literal=user=admin --type=Opaque
        let body = hex(
            "6b3873000a0c0a0276311206536563726574123a0a120a02646212001a0022002a00320038004200120d0a0870617373776f7264120178120d0a0475736572120561646d696e1a064f70617175651a002200",
        );
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["name"], "db");
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["data"]["password"], b64(b"x"));
        assert_eq!(v["data"]["user"], b64(b"admin"));
    }

    #[test]
    fn decodes_what_kubectl_create_namespace_sends() {
        // Captured from kubectl 1.32: create namespace team-a
        let body = hex(concat!(
            "6b3873000a0f0a02763112094e616d657370616365",
            "121e0a160a067465616d2d6112001a0022002a003200380042001200",
            "1a020a001a002200",
        ));
        let v = decode(&body).unwrap();
        assert_eq!(v, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    }

    #[test]
    fn refuses_garbage_with_a_bad_request() {
        assert_eq!(decode(b"nope").unwrap_err().code(), 400);
        assert_eq!(decode(b"k8s\0\x0a\xff").unwrap_err().code(), 400);
    }
}
