//! The resources the API serves: berth's kinds (from their CRDs, so the served schema and printer
//! columns are exactly the generated YAML's), core `v1` Secrets and ConfigMaps, and
//! `events.k8s.io/v1` Events. Discovery, OpenAPI, admission and table output all read this one
//! description, so they cannot disagree.

use std::sync::{Arc, OnceLock};

use berth_crds::validation::{FieldError, validate_host, validate_lease, validate_stack};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use super::structural::Schema;
use crate::store::ResourceRef;

/// Which built-in behaviour a resource gets beyond generic object semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceClass {
    /// A berth custom resource: status subresource, generation, CRD printer columns.
    Custom,
    /// Core Secret: `stringData` folded into base64 `data`; values never echoed in errors.
    Secret,
    /// Core ConfigMap.
    ConfigMap,
    /// events.k8s.io Event: garbage-collected after a TTL.
    Event,
    /// Core Namespace: `status.phase` is `Active`. berth does not require objects' namespaces
    /// to exist; Namespaces are served so `kubectl create namespace` and `get ns` work.
    Namespace,
}

/// A computed table column for built-in kinds.
pub type CellFn = fn(&Value) -> Value;

/// Where a table cell comes from.
#[derive(Clone)]
pub enum ColumnSource {
    /// A CRD printer column JSONPath (Kubernetes syntax, e.g. `.status.phase`).
    JsonPath(Arc<serde_json_path::JsonPath>),
    /// A function of the object.
    Computed(CellFn),
}

impl std::fmt::Debug for ColumnSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JsonPath(p) => write!(f, "JsonPath({p})"),
            Self::Computed(_) => write!(f, "Computed"),
        }
    }
}

/// One column of `kubectl get` output.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header.
    pub name: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// OpenAPI format (`name` for the name column).
    pub format: String,
    /// Description.
    pub description: String,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
    /// Value source.
    pub source: ColumnSource,
}

/// Semantic validation of a whole object (after the schema passed).
pub type SemanticFn = fn(&Value) -> Vec<FieldError>;

/// Everything the API needs to know about one served resource.
#[derive(Debug)]
pub struct ResourceInfo {
    /// API group, `""` for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural (the URL segment).
    pub plural: String,
    /// Singular.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories for kubectl (`kubectl get berth`).
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub has_status: bool,
    /// Table columns after the Name column.
    pub columns: Vec<Column>,
    /// The structural OpenAPI v3 schema of the whole object.
    pub schema: Value,
    /// [`Self::schema`] compiled for admission, on first use.
    validator: OnceLock<Schema>,
    /// Built-in behaviour.
    pub class: ResourceClass,
    /// Semantic validation.
    pub semantic: Option<SemanticFn>,
}

impl ResourceInfo {
    /// The schema walk of admission for this resource.
    pub fn validator(&self) -> &Schema {
        self.validator.get_or_init(|| Schema::compile(&self.schema))
    }

    /// `group/version` (or `v1` for core).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The store collection of this resource.
    pub fn resource_ref(&self) -> ResourceRef {
        ResourceRef { group: self.group.clone(), resource: self.plural.clone() }
    }

    /// `Kind` + `List`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `plural.group`, e.g. `stacks.berth.dev`.
    pub fn qualified(&self) -> String {
        super::errors::qualified(&self.group, &self.plural)
    }
}

/// The set of served resources.
#[derive(Debug)]
pub struct Registry {
    resources: Vec<Arc<ResourceInfo>>,
}

fn jsonpath(k8s_path: &str) -> Arc<serde_json_path::JsonPath> {
    // Kubernetes printer-column paths start at the object (`.status.phase`); RFC 9535 needs `$`.
    let path = format!("${k8s_path}");
    Arc::new(serde_json_path::JsonPath::parse(&path).unwrap_or_else(|e| panic!("printer column path {path}: {e}")))
}

fn typed_semantic<T: serde::de::DeserializeOwned>(
    value: &Value,
    validate: fn(&T) -> Vec<FieldError>,
) -> Vec<FieldError> {
    // Deserialized from the borrowed value: no copy of the object.
    match T::deserialize(value) {
        Ok(obj) => validate(&obj),
        Err(e) => vec![FieldError {
            field: "<object>".to_string(),
            reason: berth_crds::validation::FieldErrorReason::Invalid,
            message: format!("does not decode: {e}"),
        }],
    }
}

fn stack_semantic(v: &Value) -> Vec<FieldError> {
    typed_semantic(v, validate_stack)
}
fn lease_semantic(v: &Value) -> Vec<FieldError> {
    typed_semantic(v, validate_lease)
}
fn host_semantic(v: &Value) -> Vec<FieldError> {
    typed_semantic(v, validate_host)
}

fn from_crd(crd: &CustomResourceDefinition) -> ResourceInfo {
    let names = &crd.spec.names;
    let version = &crd.spec.versions[0];
    let columns = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| Column {
            name: c.name.clone(),
            type_: c.type_.clone(),
            format: c.format.clone().unwrap_or_default(),
            description: c.description.clone().unwrap_or_default(),
            priority: c.priority.unwrap_or(0),
            source: ColumnSource::JsonPath(jsonpath(&c.json_path)),
        })
        .collect();
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let semantic: Option<SemanticFn> = match names.kind.as_str() {
        "Stack" => Some(stack_semantic),
        "Lease" => Some(lease_semantic),
        "Host" => Some(host_semantic),
        _ => None,
    };
    ResourceInfo {
        group: crd.spec.group.clone(),
        version: version.name.clone(),
        kind: names.kind.clone(),
        plural: names.plural.clone(),
        singular: names.singular.clone().unwrap_or_default(),
        namespaced: crd.spec.scope == "Namespaced",
        short_names: names.short_names.clone().unwrap_or_default(),
        categories: names.categories.clone().unwrap_or_default(),
        has_status: version.subresources.as_ref().is_some_and(|s| s.status.is_some()),
        columns,
        schema,
        validator: OnceLock::new(),
        class: ResourceClass::Custom,
        semantic,
    }
}

/// The structural schema of a Rust type, generated the way kube-derive generates CRD schemas.
pub fn structural_schema<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or(Value::Null)
}

fn computed(name: &str, type_: &str, priority: i32, description: &str, f: CellFn) -> Column {
    Column {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: description.to_string(),
        priority,
        source: ColumnSource::Computed(f),
    }
}

fn age_column() -> Column {
    Column {
        name: "Age".to_string(),
        type_: "date".to_string(),
        format: String::new(),
        description: "Time since the object was created".to_string(),
        priority: 0,
        source: ColumnSource::JsonPath(jsonpath(".metadata.creationTimestamp")),
    }
}

fn count_keys(v: &Value, fields: &[&str]) -> Value {
    let n: usize = fields.iter().filter_map(|f| v.get(*f).and_then(Value::as_object)).map(|m| m.len()).sum();
    Value::from(n)
}

fn secret_type(v: &Value) -> Value {
    v.get("type").cloned().unwrap_or_else(|| Value::from("Opaque"))
}
fn secret_data(v: &Value) -> Value {
    count_keys(v, &["data"])
}
fn configmap_data(v: &Value) -> Value {
    count_keys(v, &["data", "binaryData"])
}
fn event_last_seen(v: &Value) -> Value {
    let ts = v
        .pointer("/series/lastObservedTime")
        .or_else(|| v.get("eventTime"))
        .or_else(|| v.get("deprecatedLastTimestamp"))
        .or_else(|| v.pointer("/metadata/creationTimestamp"))
        .cloned()
        .unwrap_or(Value::Null);
    super::table::age_cell(&ts)
}
fn event_type(v: &Value) -> Value {
    v.get("type").cloned().unwrap_or(Value::Null)
}
fn event_reason(v: &Value) -> Value {
    v.get("reason").cloned().unwrap_or(Value::Null)
}
fn event_object(v: &Value) -> Value {
    let kind = v.pointer("/regarding/kind").and_then(Value::as_str).unwrap_or("");
    let name = v.pointer("/regarding/name").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() && name.is_empty() {
        Value::Null
    } else {
        Value::from(format!("{}/{name}", kind.to_lowercase()))
    }
}
fn event_note(v: &Value) -> Value {
    v.get("note").cloned().unwrap_or(Value::Null)
}

fn namespace_phase(v: &Value) -> Value {
    v.pointer("/status/phase").cloned().unwrap_or(Value::Null)
}

fn namespace_semantic(v: &Value) -> Vec<FieldError> {
    let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    match berth_crds::validation::dns_label_problem(name) {
        Some(p) => vec![FieldError {
            field: "metadata.name".into(),
            reason: berth_crds::validation::FieldErrorReason::Invalid,
            message: p,
        }],
        None => Vec::new(),
    }
}

fn event_semantic(v: &Value) -> Vec<FieldError> {
    use berth_crds::validation::FieldErrorReason;
    let mut errs = Vec::new();
    if let Some(t) = v.get("type").and_then(Value::as_str)
        && t != "Normal"
        && t != "Warning"
    {
        errs.push(FieldError {
            field: "type".into(),
            reason: FieldErrorReason::NotSupported,
            message: format!("{t:?} is not supported: use Normal or Warning"),
        });
    }
    if v.get("note").and_then(Value::as_str).is_some_and(|n| n.len() > 1024) {
        errs.push(FieldError {
            field: "note".into(),
            reason: FieldErrorReason::TooLong,
            message: "note must be at most 1024 bytes".into(),
        });
    }
    errs
}

fn data_keys_semantic(v: &Value, fields: &[&str]) -> Vec<FieldError> {
    use berth_crds::validation::FieldErrorReason;
    let mut errs = Vec::new();
    for field in fields {
        if let Some(map) = v.get(*field).and_then(Value::as_object) {
            for key in map.keys() {
                let ok = !key.is_empty()
                    && key.len() <= 253
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    // The key is named, never the value: values may be secret.
                    errs.push(FieldError {
                        field: format!("{field}[{key}]"),
                        reason: FieldErrorReason::Invalid,
                        message: "a valid key must consist of alphanumeric characters, '-', '_' or '.'".into(),
                    });
                }
            }
        }
    }
    errs
}
fn secret_semantic(v: &Value) -> Vec<FieldError> {
    data_keys_semantic(v, &["data", "stringData"])
}
fn configmap_semantic(v: &Value) -> Vec<FieldError> {
    data_keys_semantic(v, &["data", "binaryData"])
}

impl Registry {
    /// berth's kinds plus the built-in kinds it serves.
    pub fn builtin() -> Self {
        let mut resources: Vec<Arc<ResourceInfo>> = berth_crds::crds().iter().map(|c| Arc::new(from_crd(c))).collect();
        resources.push(Arc::new(ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            kind: "Secret".into(),
            plural: "secrets".into(),
            singular: "secret".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            has_status: false,
            columns: vec![
                computed("Type", "string", 0, "Secret type", secret_type),
                computed("Data", "integer", 0, "Number of keys", secret_data),
                age_column(),
            ],
            schema: structural_schema::<k8s_openapi::api::core::v1::Secret>(),
            validator: OnceLock::new(),
            class: ResourceClass::Secret,
            semantic: Some(secret_semantic),
        }));
        resources.push(Arc::new(ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            singular: "configmap".into(),
            namespaced: true,
            short_names: vec!["cm".into()],
            categories: vec![],
            has_status: false,
            columns: vec![computed("Data", "integer", 0, "Number of keys", configmap_data), age_column()],
            schema: structural_schema::<k8s_openapi::api::core::v1::ConfigMap>(),
            validator: OnceLock::new(),
            class: ResourceClass::ConfigMap,
            semantic: Some(configmap_semantic),
        }));
        resources.push(Arc::new(ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
            singular: "namespace".into(),
            namespaced: false,
            short_names: vec!["ns".into()],
            categories: vec![],
            has_status: false,
            columns: vec![computed("Status", "string", 0, "The phase of the namespace", namespace_phase), age_column()],
            schema: structural_schema::<k8s_openapi::api::core::v1::Namespace>(),
            validator: OnceLock::new(),
            class: ResourceClass::Namespace,
            semantic: Some(namespace_semantic),
        }));
        resources.push(Arc::new(ResourceInfo {
            group: "events.k8s.io".into(),
            version: "v1".into(),
            kind: "Event".into(),
            plural: "events".into(),
            singular: "event".into(),
            namespaced: true,
            short_names: vec!["ev".into()],
            categories: vec![],
            has_status: false,
            columns: vec![
                computed("Last Seen", "string", 0, "When the event was last observed", event_last_seen),
                computed("Type", "string", 0, "Normal or Warning", event_type),
                computed("Reason", "string", 0, "Why the event was emitted", event_reason),
                computed("Object", "string", 0, "The object the event is about", event_object),
                computed("Message", "string", 0, "What happened", event_note),
            ],
            schema: structural_schema::<k8s_openapi::api::events::v1::Event>(),
            validator: OnceLock::new(),
            class: ResourceClass::Event,
            semantic: Some(event_semantic),
        }));
        Self { resources }
    }

    /// Every resource.
    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.resources
    }

    /// Look up `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.plural == plural).cloned()
    }

    /// Look up by kind.
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.resources.iter().find(|r| r.group == group && r.kind == kind).cloned()
    }

    /// Distinct `(group, version)` pairs, core first.
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in &self.resources {
            let gv = (r.group.clone(), r.version.clone());
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
        out.sort_by_key(|(g, _)| !g.is_empty());
        out
    }

    /// Resources of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ResourceInfo>> {
        self.resources.iter().filter(move |r| r.group == group && r.version == version)
    }
}
