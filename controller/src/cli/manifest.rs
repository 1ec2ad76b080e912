//! Reading manifests for `apply`, `diff` and `delete -f`: files, directories (`-R` to recurse) and
//! stdin; multi-document YAML (and JSON, and `kind: List`); and validating every document before
//! anything is sent: kind known, name present, namespace consistent, the served schema (unknown
//! fields are errors, as with kubectl's default strict validation), the typed decode and berth's
//! semantic rules. Each problem names the file, the document, the object and the field.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::resources;
use crate::apiserver::admission::validate_object_value;
use crate::apiserver::errors::ApiError;
use crate::apiserver::query::FieldValidation;
use crate::apiserver::registry::{ResourceClass, ResourceInfo};

/// The text of one input and what to call it in messages.
#[derive(Debug, Clone)]
pub struct Input {
    /// The path as given (or `<stdin>`).
    pub label: String,
    /// The text.
    pub text: String,
}

/// Which files `-f` names: a file, a directory's `.yaml`/`.yml`/`.json` files in name order (with
/// subdirectories when `recursive`), or `-` for stdin.
pub fn read_inputs(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut stdin_used = false;
    for path in paths {
        if path.as_os_str() == "-" {
            if stdin_used {
                anyhow::bail!("`-f -` (stdin) can be given only once");
            }
            stdin_used = true;
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
            inputs.push(Input { label: "<stdin>".into(), text });
            continue;
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("the path {:?} cannot be read: {e}", path.display().to_string()))?;
        if meta.is_dir() {
            for file in manifest_files(path, recursive)? {
                inputs.push(read_file(&file)?);
            }
        } else {
            inputs.push(read_file(path)?);
        }
    }
    Ok(inputs)
}

fn read_file(path: &Path) -> anyhow::Result<Input> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(Input { label: path.display().to_string(), text })
}

/// Manifest files of a directory, sorted, recursing when asked.
pub fn manifest_files(dir: &Path, recursive: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                out.extend(manifest_files(&p, true)?);
            }
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")) {
            out.push(p);
        }
    }
    Ok(out)
}

/// One problem with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File label.
    pub file: String,
    /// `document 2`, `document 2 items[0]`; empty for whole-file problems.
    pub position: String,
    /// `stack.berth.dev/web`, when the document got that far.
    pub object: Option<String>,
    /// Field path, when the problem is one field's.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.position.is_empty() {
            write!(f, ": {}", self.position)?;
        }
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found; nothing is sent when there is one.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One `error:` line per problem, as kubectl prints several errors.
        for p in &self.0 {
            writeln!(f, "error: {p}")?;
        }
        let docs: std::collections::BTreeSet<(&str, &str)> =
            self.0.iter().map(|p| (p.file.as_str(), p.position.as_str())).collect();
        write!(
            f,
            "{} problem{} in {} document{}; nothing was sent to the server. Fix them and run the command again",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" },
            docs.len(),
            if docs.len() == 1 { "" } else { "s" },
        )
    }
}

impl std::error::Error for Problems {}

/// One validated object ready to be sent.
#[derive(Debug, Clone)]
pub struct Document {
    /// File label.
    pub file: String,
    /// Position in the file.
    pub position: String,
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// Namespace (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The object as written, with the namespace filled in and what the server owns removed.
    pub object: Value,
}

impl Document {
    /// `stack.berth.dev/web`.
    pub fn display(&self) -> String {
        resources::display_name(&self.info, &self.name)
    }

    /// Identity used to match live objects: group, kind, namespace, name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.info.group.clone(),
            kind: self.info.kind.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        }
    }
}

/// Identity of an object across input and server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty for cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The documents of one YAML stream, with their 1-based positions; empty documents are skipped.
/// A syntax error ends the stream: nothing after it can be trusted.
pub fn split_documents(input: &Input) -> Result<Vec<(usize, Value)>, Problem> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&input.text).enumerate() {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => out.push((i + 1, v)),
            Err(e) => {
                return Err(Problem {
                    file: input.label.clone(),
                    position: format!("document {}", i + 1),
                    object: None,
                    field: None,
                    message: format!("not valid YAML: {e}"),
                });
            }
        }
    }
    Ok(out)
}

/// Namespace rules for the documents: what `-n` says and whether it was given explicitly.
#[derive(Debug, Clone)]
pub struct NamespaceRule {
    /// The namespace for documents that name none.
    pub default: String,
    /// Set when `-n` was given: documents naming another namespace are refused, as kubectl does.
    pub enforce: bool,
}

/// Reads, checks and orders every document of every input. Returns all problems at once.
pub fn prepare(inputs: &[Input], ns: &NamespaceRule) -> Result<Vec<Document>, Problems> {
    prepare_with(inputs, ns, true)
}

/// Like [`prepare`], but checks only what identifies each object (kind, name, namespace): what
/// `delete -f` needs, so a file that no longer validates can still name what to delete.
pub fn prepare_identities(inputs: &[Input], ns: &NamespaceRule) -> Result<Vec<Document>, Problems> {
    prepare_with(inputs, ns, false)
}

fn prepare_with(inputs: &[Input], ns: &NamespaceRule, full: bool) -> Result<Vec<Document>, Problems> {
    let mut problems = Vec::new();
    let mut docs = Vec::new();
    for input in inputs {
        let raw = match split_documents(input) {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        for (index, value) in raw {
            let position = format!("document {index}");
            let is_list = value.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List")
                && value.get("items").is_some_and(Value::is_array);
            if is_list {
                for (j, item) in value["items"].as_array().into_iter().flatten().enumerate() {
                    match check_document(&input.label, &format!("{position} items[{j}]"), item.clone(), ns, full) {
                        Ok(d) => docs.push(d),
                        Err(mut p) => problems.append(&mut p),
                    }
                }
            } else {
                match check_document(&input.label, &position, value, ns, full) {
                    Ok(d) => docs.push(d),
                    Err(mut p) => problems.append(&mut p),
                }
            }
        }
    }
    let mut seen: BTreeMap<ObjectKey, String> = BTreeMap::new();
    for d in &docs {
        let here = format!("{}: {}", d.file, d.position);
        if let Some(first) = seen.insert(d.key(), here.clone()) {
            problems.push(Problem {
                file: d.file.clone(),
                position: d.position.clone(),
                object: Some(d.display()),
                field: None,
                message: format!("defined twice: already in {first}; keep one definition"),
            });
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    docs.sort_by_key(|d| resources::apply_rank(&d.info.group, &d.info.kind));
    Ok(docs)
}

/// Metadata fields the server owns: dropped from input so that applying the output of
/// `get -o yaml` does not conflict with itself.
const SERVER_OWNED_METADATA: [&str; 7] =
    ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "deletionTimestamp", "selfLink"];

fn check_document(
    file: &str,
    position: &str,
    mut value: Value,
    ns: &NamespaceRule,
    full: bool,
) -> Result<Document, Vec<Problem>> {
    let problem = |object: Option<String>, field: Option<&str>, message: String| Problem {
        file: file.to_string(),
        position: position.to_string(),
        object,
        field: field.map(str::to_string),
        message,
    };
    if !value.is_object() {
        return Err(vec![problem(None, None, "expected a mapping with apiVersion, kind and metadata".into())]);
    }
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let label = if name.is_empty() { None } else { Some(format!("{}/{name}", kind.to_lowercase())) };
    let mut missing = Vec::new();
    if api_version.is_empty() {
        missing.push(problem(label.clone(), Some("apiVersion"), "Required value: e.g. berth.dev/v1alpha1".into()));
    }
    if kind.is_empty() {
        missing.push(problem(label.clone(), Some("kind"), "Required value: e.g. Stack, Lease or Host".into()));
    }
    if name.is_empty() {
        missing.push(problem(label.clone(), Some("metadata.name"), "Required value: every object needs a name".into()));
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let Some(info) = resources::for_type(&api_version, &kind) else {
        let known: Vec<String> =
            resources::registry().all().iter().map(|r| format!("{} {}", r.api_version(), r.kind)).collect();
        return Err(vec![problem(
            label,
            None,
            format!(
                "berth does not serve kind {kind:?} in apiVersion {api_version:?}; it serves: {}",
                known.join(", ")
            ),
        )]);
    };
    let object = Some(resources::display_name(&info, &name));

    let meta = value.get_mut("metadata").and_then(Value::as_object_mut).expect("metadata.name was read above");
    for field in SERVER_OWNED_METADATA {
        meta.remove(field);
    }
    let namespace = if info.namespaced {
        let given = meta.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let namespace = match given {
            Some(g) if ns.enforce && g != ns.default => {
                return Err(vec![problem(
                    object,
                    Some("metadata.namespace"),
                    format!(
                        "the namespace of the object ({g:?}) does not match --namespace {:?}; pass --namespace={g} or remove one of them",
                        ns.default
                    ),
                )]);
            }
            Some(g) => g,
            None => ns.default.clone(),
        };
        meta.insert("namespace".into(), Value::from(namespace.clone()));
        Some(namespace)
    } else {
        meta.remove("namespace");
        None
    };
    if let Some(obj) = value.as_object_mut() {
        // status is the controllers'; the main resource ignores it, so the input may not set it.
        obj.remove("status");
    }

    if !full {
        return Ok(Document {
            file: file.to_string(),
            position: position.to_string(),
            info,
            namespace,
            name,
            object: value,
        });
    }
    let mut problems = Vec::new();
    let mut checked = value.clone();
    match validate_object_value(&info, &mut checked, FieldValidation::Warn) {
        Ok(unknown) => {
            for field in unknown {
                problems.push(problem(
                    object.clone(),
                    Some(&field),
                    "unknown field: the schema has no such field (misspelled, or at the wrong level?)".into(),
                ));
            }
        }
        Err(ApiError::Invalid { details, .. }) => {
            for cause in details.causes {
                if cause.field == "<object>" {
                    problems.extend(decode_problem(&info, &value).map(|(f, m)| problem(object.clone(), Some(&f), m)));
                    continue;
                }
                let message = if info.class == ResourceClass::Secret {
                    // Never echo what might be a secret value.
                    format!("{} (value not shown)", cause.reason)
                } else {
                    cause.message
                };
                problems.push(problem(object.clone(), Some(&cause.field), message));
            }
        }
        Err(other) => problems.push(problem(object.clone(), None, other.to_string())),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // `checked` is what the server will store (nulls pruned as it prunes them), so comparing it
    // with the live object tells "unchanged" exactly.
    Ok(Document { file: file.to_string(), position: position.to_string(), info, namespace, name, object: checked })
}

/// The field path and message of a typed decode failure, found with serde_path_to_error.
fn decode_problem(info: &ResourceInfo, value: &Value) -> Option<(String, String)> {
    fn path_of<T: serde::de::DeserializeOwned>(value: &Value) -> Option<(String, String)> {
        let result: Result<T, _> = serde_path_to_error::deserialize(value.clone());
        result.err().map(|e| {
            let path = e.path().to_string();
            (if path == "." { "<object>".to_string() } else { path }, e.into_inner().to_string())
        })
    }
    match info.kind.as_str() {
        "Stack" => path_of::<berth_crds::Stack>(value),
        "Lease" => path_of::<berth_crds::Lease>(value),
        "Host" => path_of::<berth_crds::Host>(value),
        _ => Some(("<object>".into(), "does not decode".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(label: &str, text: &str) -> Input {
        Input { label: label.into(), text: text.into() }
    }

    fn ns() -> NamespaceRule {
        NamespaceRule { default: "default".into(), enforce: false }
    }

    const HOST: &str = "apiVersion: berth.dev/v1alpha1\nkind: Host\nmetadata: {name: edge-1}\nspec: {endpoint: 'tcp://10.0.0.5:2375'}\n";
    const STACK: &str = "apiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {name: web, labels: {app: shop}}\nspec:\n  services:\n  - {name: web, image: 'busybox:1'}\n";
    const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n";

    #[test]
    fn splits_multi_document_yaml_and_skips_empty_documents() {
        let text = format!("---\n{STACK}---\n---\n{HOST}...\n");
        let docs = split_documents(&input("a.yaml", &text)).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|(_, v)| v["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Stack", "Host"]);
        // Positions count every document as written, so "document 3" is the third in the file.
        assert_eq!(docs[0].0, 1);
        assert_eq!(docs[1].0, 3);
    }

    #[test]
    fn json_input_is_accepted() {
        let text = r#"{"apiVersion": "berth.dev/v1alpha1", "kind": "Host", "metadata": {"name": "h"}, "spec": {"endpoint": "unix:///var/run/docker.sock"}}"#;
        let docs = prepare(&[input("h.json", text)], &ns()).unwrap();
        assert_eq!(docs[0].name, "h");
    }

    #[test]
    fn syntax_errors_name_file_document_and_line() {
        let text = format!("{HOST}---\nkind: Stack\nmetadata: {{name: x\n");
        let p = prepare(&[input("bad.yaml", &text)], &ns()).unwrap_err();
        assert_eq!(p.0.len(), 1);
        let line = p.0[0].to_string();
        assert!(line.starts_with("bad.yaml: document 2: not valid YAML"), "{line}");
        assert!(line.contains("line"), "{line}");
    }

    #[test]
    fn orders_namespaces_hosts_secrets_before_stacks() {
        let text =
            format!("{STACK}---\n{SECRET}---\n{HOST}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n");
        let docs = prepare(&[input("all.yaml", &text)], &ns()).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d.info.kind.as_str()).collect();
        assert_eq!(kinds, ["Namespace", "Host", "Secret", "Stack"]);
    }

    #[test]
    fn order_is_stable_within_a_kind_and_across_files() {
        let a = STACK.replace("name: web,", "name: a,");
        let b = STACK.replace("name: web,", "name: b,");
        let docs = prepare(&[input("1.yaml", &b), input("2.yaml", &a), input("3.yaml", HOST)], &ns()).unwrap();
        let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["edge-1", "b", "a"]);
    }

    #[test]
    fn fills_namespace_and_strips_it_from_cluster_scoped_kinds() {
        let host = HOST.replace("{name: edge-1}", "{name: edge-1, namespace: default}");
        let docs = prepare(
            &[input("x.yaml", &format!("{STACK}---\n{host}"))],
            &NamespaceRule { default: "shop".into(), enforce: false },
        )
        .unwrap();
        let host = docs.iter().find(|d| d.info.kind == "Host").unwrap();
        assert_eq!(host.namespace, None);
        assert!(host.object["metadata"].get("namespace").is_none());
        let stack = docs.iter().find(|d| d.info.kind == "Stack").unwrap();
        assert_eq!(stack.namespace.as_deref(), Some("shop"));
        assert_eq!(stack.object["metadata"]["namespace"], "shop");
    }

    #[test]
    fn explicit_namespace_conflicting_with_the_document_is_refused() {
        let text = STACK.replace("metadata: {name: web,", "metadata: {name: web, namespace: prod,");
        let rule = NamespaceRule { default: "staging".into(), enforce: true };
        let p = prepare(&[input("x.yaml", &text)], &rule).unwrap_err();
        assert!(p.0[0].to_string().contains("--namespace=prod"), "{}", p.0[0]);
        // Without -n the document's namespace wins.
        let docs =
            prepare(&[input("x.yaml", &text)], &NamespaceRule { default: "staging".into(), enforce: false }).unwrap();
        assert_eq!(docs[0].namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn server_owned_fields_and_status_are_dropped() {
        let text = STACK.replace("metadata: {name: web,", "metadata: {name: web, resourceVersion: '12', uid: abc,")
            + "status: {phase: Ready}\n";
        let docs = prepare(&[input("x.yaml", &text)], &ns()).unwrap();
        let meta = &docs[0].object["metadata"];
        assert!(meta.get("resourceVersion").is_none() && meta.get("uid").is_none());
        assert!(docs[0].object.get("status").is_none());
    }

    #[test]
    fn semantic_errors_name_file_document_object_and_field() {
        let bad = STACK.replace("image: 'busybox:1'}", "image: 'busybox:1', replicas: -1}");
        let p = prepare(&[input("ok.yaml", HOST), input("apps/bad.yaml", &format!("{HOST}---\n{bad}"))], &ns())
            .unwrap_err();
        // The host in bad.yaml duplicates the one in ok.yaml: reported too, with both places.
        let lines: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("apps/bad.yaml: document 2 (stack.berth.dev/web): spec.services[0].replicas: ")),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.contains("defined twice: already in ok.yaml: document 1")), "{lines:#?}");
        let text = p.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), p.0.len() + 1, "{text}");
        assert!(lines[..p.0.len()].iter().all(|l| l.starts_with("error: apps/bad.yaml: document ")), "{text}");
        assert!(lines.last().unwrap().contains("nothing was sent"), "{text}");
    }

    #[test]
    fn every_problem_of_the_invalid_sample_is_reported() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples/invalid/stack-invalid.yaml");
        let inputs = read_inputs(&[path], false).unwrap();
        let p = prepare(&inputs, &ns()).unwrap_err();
        let mut fields: Vec<String> = p.0.iter().filter_map(|p| p.field.clone()).collect();
        fields.sort();
        fields.dedup();
        // The schema refuses the out-of-range port before the semantic rules run; the rest of
        // the sample's problems come with it in one report.
        assert!(fields.iter().any(|f| f.starts_with("spec.services[0]")), "{fields:?}");
        assert!(
            p.0.iter().all(|p| p.position == "document 1" && p.object.as_deref() == Some("stack.berth.dev/broken"))
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let text = STACK.replace("image: 'busybox:1'}", "image: 'busybox:1', replica: 2}");
        let p = prepare(&[input("x.yaml", &text)], &ns()).unwrap_err();
        assert_eq!(p.0.len(), 1, "{p}");
        assert_eq!(p.0[0].field.as_deref(), Some("spec.services[0].replica"));
        assert!(p.0[0].message.contains("unknown field"));
    }

    #[test]
    fn identities_ignore_invalid_specs() {
        let text = STACK.replace("image: 'busybox:1'}", "image: 'busybox:1', replicas: -1}");
        assert!(prepare(&[input("x.yaml", &text)], &ns()).is_err());
        let docs = prepare_identities(&[input("x.yaml", &text)], &ns()).unwrap();
        assert_eq!((docs[0].name.as_str(), docs[0].namespace.as_deref()), ("web", Some("default")));
        assert!(prepare_identities(&[input("x.yaml", "kind: Stack\n")], &ns()).is_err(), "identity still required");
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = STACK.replace("image: 'busybox:1'}", "image: 'busybox:1', replicas: many}");
        let p = prepare(&[input("x.yaml", &text)], &ns()).unwrap_err();
        assert_eq!(p.0[0].field.as_deref(), Some("spec.services[0].replicas"), "{p}");
    }

    #[test]
    fn unknown_kinds_and_missing_names_are_reported() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: berth.dev/v1alpha1\nkind: Stack\nmetadata: {}\nspec: {services: []}\n";
        let p = prepare(&[input("x.yaml", text)], &ns()).unwrap_err();
        assert!(p.0[0].to_string().contains("does not serve kind \"Deployment\""), "{}", p.0[0]);
        assert_eq!(p.0[1].field.as_deref(), Some("metadata.name"));
        assert_eq!(p.0[1].position, "document 2");
    }

    #[test]
    fn secret_problems_never_show_values() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ndata: {password: {nested: s3cr3t-value}}\n";
        let p = prepare(&[input("s.yaml", text)], &ns()).unwrap_err();
        assert!(!p.to_string().contains("s3cr3t-value"), "{p}");
        assert!(p.0.iter().any(|p| p.field.as_deref().is_some_and(|f| f.contains("password"))), "{p}");
    }

    #[test]
    fn lists_are_expanded() {
        let text = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}\n",
            serde_json::to_string(&serde_yaml_ng::from_str::<Value>(HOST).unwrap()).unwrap()
        );
        let docs = prepare(&[input("l.yaml", &text)], &ns()).unwrap();
        assert_eq!(docs[0].position, "document 1 items[0]");
    }

    #[test]
    fn directories_are_read_in_name_order_and_recursed_only_with_r() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), STACK).unwrap();
        std::fs::write(dir.path().join("a.yml"), HOST).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.json"), "{}").unwrap();
        let labels = |r| -> Vec<String> {
            read_inputs(&[dir.path().to_path_buf()], r)
                .unwrap()
                .into_iter()
                .map(|i| Path::new(&i.label).file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(labels(false), ["a.yml", "b.yaml"]);
        assert_eq!(labels(true), ["a.yml", "b.yaml", "c.json"]);
        assert!(read_inputs(&[dir.path().join("missing.yaml")], false).is_err());
    }

    #[test]
    fn every_sample_is_accepted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples");
        let docs = prepare(&read_inputs(&[dir], false).unwrap(), &ns()).unwrap();
        assert!(docs.len() >= 4);
        assert_eq!(docs[0].info.kind, "Host");
    }
}
