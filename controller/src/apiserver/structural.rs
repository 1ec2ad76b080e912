//! The structural schema walk of admission: types, enums, required fields, formats and bounds
//! checked, unknown fields and non-nullable nulls pruned (as Kubernetes prunes them), defaults
//! filled in.
//!
//! A kind's OpenAPI schema is compiled once into a [`Schema`] tree, so a write pays no map
//! lookups of schema keywords, and field paths are built only for the fields an error or a
//! warning names: every create and update of every kind passes here.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::admission::{cause, show};
use super::errors::Cause;

/// What a schema walk found.
#[derive(Debug, Default)]
pub struct SchemaOutcome {
    /// Values that violate the schema.
    pub errors: Vec<Cause>,
    /// Paths of fields the schema does not know (already removed from the value).
    pub unknown_fields: Vec<String>,
}

/// A node's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Object,
    Array,
    String,
    Boolean,
    Integer,
    Number,
    /// A type name this walk does not know: no value has it.
    Unknown,
}

/// What a node's `additionalProperties` allows.
#[derive(Debug)]
enum Additional {
    /// Not set.
    Absent,
    /// `true`: any value.
    Any,
    /// `false` (or anything but `true` and a schema): nothing.
    Denied,
    /// Values of this schema (a map).
    Schema(Box<Schema>),
}

/// One node of a structural schema, compiled from its JSON form.
#[derive(Debug)]
pub struct Schema {
    /// `type`, as written (for messages) and parsed.
    type_: Option<(String, Type)>,
    preserve_unknown_fields: bool,
    int_or_string: bool,
    nullable: bool,
    enum_: Option<Vec<Value>>,
    properties: Option<BTreeMap<String, Schema>>,
    additional: Additional,
    items: Option<Box<Schema>>,
    format: Option<String>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    /// The properties that have a `default`, with it.
    defaults: Vec<(String, Value)>,
    required: Vec<String>,
}

impl Schema {
    /// Compiles a schema node (and everything under it). Keywords this walk does not use are
    /// ignored; a node that is not a JSON object accepts every value.
    pub fn compile(s: &Value) -> Schema {
        let flag = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(false);
        let properties = s.get("properties").and_then(Value::as_object);
        Schema {
            type_: s.get("type").and_then(Value::as_str).map(|t| {
                let parsed = match t {
                    "object" => Type::Object,
                    "array" => Type::Array,
                    "string" => Type::String,
                    "boolean" => Type::Boolean,
                    "integer" => Type::Integer,
                    "number" => Type::Number,
                    _ => Type::Unknown,
                };
                (t.to_string(), parsed)
            }),
            preserve_unknown_fields: flag("x-kubernetes-preserve-unknown-fields"),
            int_or_string: flag("x-kubernetes-int-or-string"),
            nullable: flag("nullable"),
            enum_: s.get("enum").and_then(Value::as_array).cloned(),
            properties: properties.map(|p| p.iter().map(|(k, v)| (k.clone(), Schema::compile(v))).collect()),
            additional: match s.get("additionalProperties") {
                None => Additional::Absent,
                Some(Value::Bool(true)) => Additional::Any,
                Some(v @ Value::Object(_)) => Additional::Schema(Box::new(Schema::compile(v))),
                Some(_) => Additional::Denied,
            },
            items: s.get("items").map(|i| Box::new(Schema::compile(i))),
            format: s.get("format").and_then(Value::as_str).map(str::to_string),
            max_length: s.get("maxLength").and_then(Value::as_u64),
            minimum: s.get("minimum").and_then(Value::as_f64),
            maximum: s.get("maximum").and_then(Value::as_f64),
            defaults: properties
                .into_iter()
                .flatten()
                .filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone())))
                .collect(),
            required: s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    /// Walks the fields of a whole object (this schema being the kind's root) except
    /// `apiVersion`, `kind` and `metadata`, which are checked elsewhere: unknown fields and nulls
    /// are removed, each field is walked, required fields must be there.
    pub fn validate_root(&self, obj: &mut Map<String, Value>, out: &mut SchemaOutcome) {
        let Some(properties) = &self.properties else { return };
        let root = Path::Root("");
        obj.retain(|key, value| {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                return true;
            }
            match properties.get(key) {
                Some(_) if value.is_null() => false,
                Some(schema) => {
                    schema.validate(value, &Path::Field(&root, key), out);
                    true
                }
                None => {
                    out.unknown_fields.push(key.clone());
                    false
                }
            }
        });
        for r in &self.required {
            if !obj.contains_key(r) {
                out.errors.push(cause("FieldValueRequired", r, "Required value"));
            }
        }
    }

    /// Validates `value` (at `path`) against this schema, removing unknown fields and nulls of
    /// non-nullable fields and filling in defaults.
    pub fn validate(&self, value: &mut Value, path: &Path<'_>, out: &mut SchemaOutcome) {
        if self.int_or_string {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                out.errors.push(cause(
                    "FieldValueTypeInvalid",
                    &path.to_string(),
                    format!("Invalid value: {}: must be an integer or a string", show(value)),
                ));
            }
            return;
        }
        // No type: only possible with preserve-unknown-fields; accept as is.
        let Some((expected, type_)) = &self.type_ else { return };
        let type_ok = match (type_, &*value) {
            (Type::Object, Value::Object(_))
            | (Type::Array, Value::Array(_))
            | (Type::String, Value::String(_))
            | (Type::Boolean, Value::Bool(_))
            | (Type::Number, Value::Number(_)) => true,
            (Type::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            _ => false,
        };
        if !type_ok {
            out.errors.push(cause(
                "FieldValueTypeInvalid",
                &path.to_string(),
                format!("Invalid value: {}: {path} must be of type {expected}, not {}", show(value), type_name(value)),
            ));
            return;
        }
        if let Some(options) = &self.enum_
            && !options.contains(value)
        {
            let supported: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            out.errors.push(cause(
                "FieldValueNotSupported",
                &path.to_string(),
                format!("Unsupported value: {}: supported values: {}", show(value), supported.join(", ")),
            ));
        }
        match value {
            Value::Object(map) => self.validate_object(map, path, out),
            Value::Array(items) => {
                if let Some(item_schema) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        let p = Path::Index(path, i);
                        if item.is_null() && !item_schema.nullable {
                            out.errors.push(cause(
                                "FieldValueRequired",
                                &p.to_string(),
                                "Required value: list items must not be null",
                            ));
                            continue;
                        }
                        item_schema.validate(item, &p, out);
                    }
                }
            }
            Value::String(s) => self.check_string(s, path, out),
            Value::Number(n) => self.check_number(n, path, out),
            _ => {}
        }
    }

    fn validate_object(&self, map: &mut Map<String, Value>, path: &Path<'_>, out: &mut SchemaOutcome) {
        // Keys of a map (additionalProperties without properties) are written `path[key]`.
        let keyed = self.properties.is_none() && !matches!(self.additional, Additional::Absent);
        let values = match &self.additional {
            Additional::Schema(s) => Some(&**s),
            _ => None,
        };
        let unknown_allowed = self.preserve_unknown_fields || matches!(self.additional, Additional::Any);
        map.retain(|key, value| {
            let child_path = if keyed { Path::Key(path, key) } else { Path::Field(path, key) };
            match self.properties.as_ref().and_then(|p| p.get(key)).or(values) {
                Some(child) if value.is_null() => child.nullable,
                Some(child) => {
                    child.validate(value, &child_path, out);
                    true
                }
                None => {
                    if !unknown_allowed {
                        out.unknown_fields.push(child_path.to_string());
                    }
                    unknown_allowed
                }
            }
        });
        // Defaulting, as Kubernetes does for structural schemas: a property with a `default` that
        // is absent (or was a pruned null) gets it, so every writer stores the same normal form
        // and a client that round-trips a typed object does not look like it changed the spec.
        for (key, default) in &self.defaults {
            if !map.contains_key(key) {
                map.insert(key.clone(), default.clone());
            }
        }
        for r in &self.required {
            if !map.contains_key(r) {
                out.errors.push(cause("FieldValueRequired", &Path::Field(path, r).to_string(), "Required value"));
            }
        }
    }

    fn check_string(&self, s: &str, path: &Path<'_>, out: &mut SchemaOutcome) {
        match self.format.as_deref() {
            Some("date-time") if s.parse::<jiff::Timestamp>().is_err() => out.errors.push(cause(
                "FieldValueInvalid",
                &path.to_string(),
                format!("Invalid value: {s:?}: {path} must be an RFC 3339 date-time, e.g. 2026-11-23T10:00:00Z"),
            )),
            Some("byte") if base64::engine::general_purpose::STANDARD.decode(s).is_err() => out.errors.push(cause(
                "FieldValueInvalid",
                &path.to_string(),
                // Never echo the value: this format is used for Secret data.
                format!("Invalid value: {path} must be base64-encoded"),
            )),
            _ => {}
        }
        if let Some(max) = self.max_length
            && s.chars().count() as u64 > max
        {
            out.errors.push(cause(
                "FieldValueTooLong",
                &path.to_string(),
                format!("Too long: may not be longer than {max}"),
            ));
        }
    }

    fn check_number(&self, n: &Number, path: &Path<'_>, out: &mut SchemaOutcome) {
        let Some(v) = n.as_f64() else { return };
        if let Some(min) = self.minimum
            && v < min
        {
            out.errors.push(cause(
                "FieldValueInvalid",
                &path.to_string(),
                format!("Invalid value: {n}: must be greater than or equal to {min}"),
            ));
        }
        if let Some(max) = self.maximum
            && v > max
        {
            out.errors.push(cause(
                "FieldValueInvalid",
                &path.to_string(),
                format!("Invalid value: {n}: must be less than or equal to {max}"),
            ));
        }
        if self.format.as_deref() == Some("int32") && (v < i32::MIN as f64 || v > i32::MAX as f64) {
            out.errors.push(cause(
                "FieldValueInvalid",
                &path.to_string(),
                format!("Invalid value: {n}: must fit in a 32-bit integer"),
            ));
        }
    }
}

/// A field path, rendered only when a message needs it: `spec.services[0].env[2].name`,
/// `data[password]` for map keys.
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    /// The start (`""` for the object itself).
    Root(&'a str),
    /// `parent.field`.
    Field(&'a Path<'a>, &'a str),
    /// `parent[key]`, a key of a map.
    Key(&'a Path<'a>, &'a str),
    /// `parent[i]`, an item of a list.
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(s) => f.write_str(s),
            Path::Field(Path::Root(""), field) => f.write_str(field),
            Path::Field(parent, field) => write!(f, "{parent}.{field}"),
            Path::Key(parent, key) => write!(f, "{parent}[{key}]"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Runs the schema walk of `schema` over `value` at path `spec`; returns the pruned and
    /// defaulted value, the errors as `field: message` and the unknown fields.
    fn walk(schema: Value, mut value: Value) -> (Value, Vec<String>, Vec<String>) {
        let mut out = SchemaOutcome::default();
        Schema::compile(&schema).validate(&mut value, &Path::Root("spec"), &mut out);
        let errors = out.errors.iter().map(|c| format!("{}: {}: {}", c.reason, c.field, c.message)).collect();
        (value, errors, out.unknown_fields)
    }

    #[test]
    fn the_schema_walk_checks_every_rule_and_names_each_field() {
        let schema = json!({"type": "object", "required": ["name", "mode"], "properties": {
            "name": {"type": "string", "maxLength": 5},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "when": {"type": "string", "format": "date-time"},
            "blob": {"type": "string", "format": "byte"},
            "count": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "nullable": true},
            "port": {"x-kubernetes-int-or-string": true},
            "flag": {"type": "boolean"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                     "properties": {"known": {"type": "string"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 2}},
            "loose": {"type": "object", "additionalProperties": true},
        }});
        let (v, errors, unknown) = walk(
            schema.clone(),
            json!({"name": "abcdef", "mode": "c", "when": "yesterday", "blob": "%%", "count": 11, "ratio": null,
                   "port": 1.5, "flag": "yes", "items": [{"x": "1", "y": 2}, null], "extra": {"deep": 1},
                   "free": {"known": 1, "other": {"a": 1}}, "labels": {"ok": "v", "long": "vvv", "nul": null},
                   "loose": {"anything": [1]}}),
        );
        assert_eq!(
            errors,
            [
                "FieldValueInvalid: spec.blob: Invalid value: spec.blob must be base64-encoded",
                "FieldValueInvalid: spec.count: Invalid value: 11: must be less than or equal to 10",
                "FieldValueTypeInvalid: spec.flag: Invalid value: \"yes\": spec.flag must be of type boolean, not string",
                "FieldValueTypeInvalid: spec.free.known: Invalid value: 1: spec.free.known must be of type string, not integer",
                "FieldValueTypeInvalid: spec.items[0].x: Invalid value: \"1\": spec.items[0].x must be of type integer, not string",
                "FieldValueRequired: spec.items[1]: Required value: list items must not be null",
                "FieldValueTooLong: spec.labels[long]: Too long: may not be longer than 2",
                "FieldValueNotSupported: spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "FieldValueTooLong: spec.name: Too long: may not be longer than 5",
                "FieldValueTypeInvalid: spec.port: Invalid value: 1.5: must be an integer or a string",
                "FieldValueInvalid: spec.when: Invalid value: \"yesterday\": spec.when must be an RFC 3339 date-time, e.g. 2026-11-23T10:00:00Z",
            ]
        );
        assert_eq!(unknown, ["spec.extra", "spec.items[0].y"]);
        // Unknown fields are pruned, except under preserve-unknown-fields and additionalProperties;
        // a null is kept where the schema is nullable and pruned elsewhere.
        assert_eq!(v["free"]["other"], json!({"a": 1}));
        assert_eq!(v["loose"], json!({"anything": [1]}));
        assert_eq!(v["ratio"], Value::Null);
        assert!(v.get("extra").is_none() && v["items"][0].get("y").is_none());
        assert!(v["labels"].get("nul").is_none());

        let (v, errors, unknown) = walk(schema.clone(), json!({"count": 0, "port": "http"}));
        assert_eq!(
            errors,
            [
                "FieldValueInvalid: spec.count: Invalid value: 0: must be greater than or equal to 1",
                "FieldValueRequired: spec.name: Required value",
            ]
        );
        assert!(unknown.is_empty());
        assert_eq!(v["mode"], "a", "an absent field with a default gets it");
        let (_, errors, _) =
            walk(schema, json!({"name": "n", "count": 5_000_000_000u64, "when": "2026-11-23T10:00:00Z"}));
        assert_eq!(
            errors,
            [
                "FieldValueInvalid: spec.count: Invalid value: 5000000000: must be less than or equal to 10",
                "FieldValueInvalid: spec.count: Invalid value: 5000000000: must fit in a 32-bit integer"
            ]
        );
        let (_, errors, _) = walk(json!({"type": "array"}), json!({}));
        assert_eq!(errors, ["FieldValueTypeInvalid: spec: Invalid value: {}: spec must be of type array, not object"]);
    }
}
