//! Every sample in `manifests/samples/` parses into its type and passes validation; the
//! deliberately invalid one fails with field paths.

use std::path::{Path, PathBuf};

use berth_crds::validation::{FieldError, validate_host, validate_lease, validate_stack};
use berth_crds::{Host, Lease, Stack};
use serde::Deserialize;

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples")
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn validate(doc: &serde_json::Value) -> Vec<FieldError> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    match kind {
        "Stack" => validate_stack(&serde_json::from_value::<Stack>(doc.clone()).unwrap()),
        "Lease" => validate_lease(&serde_json::from_value::<Lease>(doc.clone()).unwrap()),
        "Host" => validate_host(&serde_json::from_value::<Host>(doc.clone()).unwrap()),
        other => panic!("unexpected kind {other:?} in samples"),
    }
}

#[test]
fn every_sample_parses_and_is_valid() {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(samples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for doc in documents(&path) {
            assert_eq!(doc["apiVersion"], "berth.dev/v1alpha1", "{}", path.display());
            let errors = validate(&doc);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            kinds.push(doc["kind"].as_str().unwrap().to_string());
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["Host", "Lease", "Stack"], "samples must cover every kind");
}

#[test]
fn shop_sample_has_three_services_with_network_volume_health_and_dependencies() {
    let doc = documents(&samples_dir().join("stack-shop.yaml")).remove(0);
    let stack: Stack = serde_json::from_value(doc).unwrap();
    assert_eq!(stack.spec.services.len(), 3);
    assert!(!stack.spec.networks.is_empty() && !stack.spec.volumes.is_empty());
    assert!(stack.spec.services.iter().any(|s| s.healthcheck.is_some()));
    assert!(stack.spec.services.iter().any(|s| !s.depends_on.is_empty()));
}

#[test]
fn invalid_sample_fails_with_field_paths() {
    let doc = documents(&samples_dir().join("invalid/stack-invalid.yaml")).remove(0);
    let mut fields: Vec<String> = validate(&doc).into_iter().map(|e| e.field).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.services[0].dependsOn[0].service",
            "spec.services[0].mounts[0]",
            "spec.services[0].mounts[0].volume",
            "spec.services[0].ports[0].containerPort",
            "spec.services[0].replicas",
            "spec.services[1].name",
        ]
    );
}
