//! Legacy discovery documents (`/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//! `/apis/{group}/{version}`) and `/version`. kubectl asks for aggregated discovery first and
//! falls back to these when the response is plain `application/json`.

use serde_json::{Value, json};

use super::registry::{Registry, ResourceInfo};

/// The Kubernetes minor version berth reports. kubectl's dispatcher on this kind of machine picks
/// its binary from it, and 32 is the kubectl berth is tested with; the API berth serves is a
/// subset of 1.32's.
pub const KUBE_MINOR: &str = "32";

/// `/version`.
pub fn version() -> Value {
    let ours = env!("CARGO_PKG_VERSION");
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0+berth-{ours}"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
        "berthVersion": ours,
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

fn versions_of(registry: &Registry, group: &str) -> Vec<String> {
    registry.group_versions().into_iter().filter(|(g, _)| g == group).map(|(_, v)| v).collect()
}

/// `/apis`.
pub fn groups(registry: &Registry) -> Value {
    let mut names: Vec<String> = Vec::new();
    for (g, _) in registry.group_versions() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    let groups: Vec<Value> = names.iter().map(|g| group_doc(g, &versions_of(registry, g))).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, or `None` when the group is not served.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    let versions = versions_of(registry, group);
    if group.is_empty() || versions.is_empty() {
        return None;
    }
    let mut doc = group_doc(group, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn resource_entry(r: &ResourceInfo) -> Value {
    let mut entry = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    entry
}

/// `/apis/{group}/{version}` or `/api/v1`: the APIResourceList, or `None` when not served.
/// `computed` says whether the controllers' subresources (`plan` and `log` of Stacks and Leases) are
/// served (not by `berth serve --no-controllers`).
pub fn resources(registry: &Registry, group: &str, version: &str, computed: bool) -> Option<Value> {
    let mut list = Vec::new();
    for r in registry.in_group_version(group, version) {
        list.push(resource_entry(r));
        if r.has_status {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        // Computed subresources (`stacks/plan`, `leases/log`, …): read-only, like `pods/log`, and
        // listed only when something computes them.
        for sub in super::views::subresources_of(&r.kind).filter(|_| computed) {
            list.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get"],
            }));
        }
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
}
