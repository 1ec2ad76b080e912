//! What the words people type name: `stack`, `stacks`, `st`, `stk`, `stacks.berth.dev`, `bl`,
//! `cm`, … resolved against the API server's own registry (the same description the server
//! serves, so the CLI and the server cannot disagree), `KIND/NAME` argument forms, the apply
//! order of kinds, and the `stack.berth.dev/web` names kubectl prints.

use std::sync::{Arc, OnceLock};

use kube::api::{Api, ApiResource, DynamicObject};

use crate::apiserver::registry::{Registry, ResourceInfo};

/// The served resources, built once.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}

/// Every word that names `info`, lowercase.
fn names_of(info: &ResourceInfo) -> Vec<String> {
    let mut names = vec![info.kind.to_lowercase(), info.plural.clone(), info.singular.clone()];
    names.extend(info.short_names.iter().cloned());
    if !info.group.is_empty() {
        for n in [info.plural.clone(), info.singular.clone(), info.kind.to_lowercase()] {
            names.push(format!("{n}.{}", info.group));
        }
    }
    names
}

/// The resources a word names: one kind, or every kind of a category (`berth`).
pub fn resolve(word: &str) -> anyhow::Result<Vec<Arc<ResourceInfo>>> {
    let w = word.trim().to_lowercase();
    let reg = registry();
    if let Some(info) = reg.all().iter().find(|r| names_of(r).contains(&w)) {
        return Ok(vec![info.clone()]);
    }
    let in_category: Vec<_> = reg.all().iter().filter(|r| r.categories.contains(&w)).cloned().collect();
    if !in_category.is_empty() {
        return Ok(in_category);
    }
    Err(anyhow::anyhow!(
        "the server doesn't have a resource type {word:?}; berth serves {}",
        reg.all().iter().map(|r| r.plural.as_str()).collect::<Vec<_>>().join(", ")
    ))
}

/// Exactly one resource for a word (no categories).
pub fn resolve_one(word: &str) -> anyhow::Result<Arc<ResourceInfo>> {
    let mut found = resolve(word)?;
    if found.len() != 1 {
        anyhow::bail!("{word:?} names several kinds ({}); name one", plurals(&found));
    }
    Ok(found.remove(0))
}

fn plurals(infos: &[Arc<ResourceInfo>]) -> String {
    infos.iter().map(|r| r.plural.as_str()).collect::<Vec<_>>().join(", ")
}

/// The resource of a document's `apiVersion` and `kind`.
pub fn for_type(api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    registry().all().iter().find(|r| r.group == group && r.version == version && r.kind == kind).cloned()
}

/// kube-rs' description of a resource.
pub fn api_resource(info: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: info.group.clone(),
        version: info.version.clone(),
        api_version: info.api_version(),
        kind: info.kind.clone(),
        plural: info.plural.clone(),
    }
}

/// An `Api` for one namespace (ignored for cluster-scoped kinds), or every namespace (`None`).
pub fn api(client: &kube::Client, info: &ResourceInfo, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource(info);
    match namespace {
        Some(ns) if info.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// `stack.berth.dev`, `secret`, `event.events.k8s.io`: the type prefix kubectl prints.
pub fn type_name(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.kind.to_lowercase()
    } else {
        format!("{}.{}", info.kind.to_lowercase(), info.group)
    }
}

/// `stack.berth.dev/web`.
pub fn display_name(info: &ResourceInfo, name: &str) -> String {
    format!("{}/{name}", type_name(info))
}

/// Where a kind goes when applying: namespaces first, then Hosts (Stacks and Leases are placed on
/// them), then Secrets and ConfigMaps (Stacks and Leases reference them), then the workloads.
/// Deletion (prune) goes in the reverse order.
pub fn apply_rank(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("", "Namespace") => 0,
        (berth_crds::GROUP, "Host") => 1,
        ("", "Secret") | ("", "ConfigMap") => 2,
        (berth_crds::GROUP, "Stack") | (berth_crds::GROUP, "Lease") => 3,
        _ => 4,
    }
}

/// One resource (and possibly a name) from the command line.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// The object name; `None` means every object.
    pub name: Option<String>,
}

/// Parses kubectl's argument forms: `KIND[,KIND…] [NAME…]` or `KIND/NAME…`.
pub fn parse_targets(args: &[String]) -> anyhow::Result<Vec<Target>> {
    let Some(first) = args.first() else {
        return Err(crate::cli::usage("name a resource type, e.g. `stacks`, or KIND/NAME"));
    };
    if first.contains('/') {
        let mut out = Vec::new();
        for arg in args {
            let Some((kind, name)) = arg.split_once('/') else {
                return Err(crate::cli::usage(format!(
                    "there is no need to give a resource type as a separate argument when using KIND/NAME: \
                     write `{first} KIND/{arg}` or only KIND/NAME arguments"
                )));
            };
            if name.is_empty() || name.contains('/') {
                return Err(crate::cli::usage(format!("{arg:?} is not KIND/NAME")));
            }
            out.push(Target { info: resolve_one(kind)?, name: Some(name.to_string()) });
        }
        return Ok(out);
    }
    let mut infos = Vec::new();
    for word in first.split(',').filter(|w| !w.is_empty()) {
        for info in resolve(word)? {
            if !infos.iter().any(|i: &Arc<ResourceInfo>| Arc::ptr_eq(i, &info)) {
                infos.push(info);
            }
        }
    }
    let names = &args[1..];
    if names.is_empty() {
        return Ok(infos.into_iter().map(|info| Target { info, name: None }).collect());
    }
    if infos.len() != 1 {
        return Err(crate::cli::usage(format!(
            "names can only be given with one resource type; {first:?} names {}",
            plurals(&infos)
        )));
    }
    Ok(names.iter().map(|n| Target { info: infos[0].clone(), name: Some(n.clone()) }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(word: &str) -> String {
        resolve_one(word).unwrap().kind.clone()
    }

    #[test]
    fn aliases_resolve_like_kubectl() {
        for w in ["stack", "stacks", "st", "stk", "Stack", "STACKS", "stacks.berth.dev", "stack.berth.dev"] {
            assert_eq!(kind(w), "Stack", "{w}");
        }
        for w in ["lease", "leases", "bl", "leases.berth.dev"] {
            assert_eq!(kind(w), "Lease", "{w}");
        }
        for w in ["host", "hosts", "hst"] {
            assert_eq!(kind(w), "Host", "{w}");
        }
        assert_eq!(kind("secret"), "Secret");
        assert_eq!(kind("secrets"), "Secret");
        assert_eq!(kind("cm"), "ConfigMap");
        assert_eq!(kind("configmap"), "ConfigMap");
        assert_eq!(kind("ev"), "Event");
        assert_eq!(kind("events.events.k8s.io"), "Event");
        assert_eq!(kind("ns"), "Namespace");
    }

    #[test]
    fn unknown_kinds_list_what_is_served() {
        let err = resolve("pods").unwrap_err().to_string();
        assert!(err.contains("\"pods\"") && err.contains("stacks") && err.contains("hosts"), "{err}");
    }

    #[test]
    fn category_berth_names_every_berth_kind() {
        let mut kinds: Vec<String> = resolve("berth").unwrap().iter().map(|r| r.kind.clone()).collect();
        kinds.sort();
        assert_eq!(kinds, ["Host", "Lease", "Stack"]);
    }

    #[test]
    fn target_forms() {
        let t = parse_targets(&["stacks,hosts".into()]).unwrap();
        assert_eq!(t.iter().map(|t| t.info.kind.as_str()).collect::<Vec<_>>(), ["Stack", "Host"]);
        assert!(t.iter().all(|t| t.name.is_none()));

        let t = parse_targets(&["st".into(), "web".into(), "api".into()]).unwrap();
        assert_eq!(t.iter().map(|t| t.name.clone().unwrap()).collect::<Vec<_>>(), ["web", "api"]);

        let t = parse_targets(&["stack/web".into(), "host/edge-1".into()]).unwrap();
        assert_eq!(t[0].info.kind, "Stack");
        assert_eq!(t[1].info.kind, "Host");
        assert_eq!(t[1].name.as_deref(), Some("edge-1"));

        assert!(parse_targets(&["stack/web".into(), "api".into()]).is_err());
        assert!(parse_targets(&["stacks,hosts".into(), "web".into()]).is_err());
        assert!(parse_targets(&[]).is_err());
        assert!(parse_targets(&["stack/".into()]).is_err());
    }

    #[test]
    fn display_names_match_kubectl() {
        assert_eq!(display_name(&resolve_one("st").unwrap(), "web"), "stack.berth.dev/web");
        assert_eq!(display_name(&resolve_one("secret").unwrap(), "db"), "secret/db");
    }

    #[test]
    fn apply_order_puts_hosts_and_secrets_before_workloads() {
        let order = |k: &str| {
            let info = resolve_one(k).unwrap();
            apply_rank(&info.group, &info.kind)
        };
        assert!(order("ns") < order("host"));
        assert!(order("host") < order("secret"));
        assert_eq!(order("secret"), order("cm"));
        assert!(order("cm") < order("stack"));
        assert_eq!(order("stack"), order("lease"));
        assert!(order("lease") < order("event"));
    }
}
