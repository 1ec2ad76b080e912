//! Which hosts run a Stack: every host named in `spec.hosts.names`, plus every Host whose labels
//! match `spec.hosts.selector`; with neither, the `local` host. A named host need not have a Host
//! object (yet): it then shows `Unreachable` with a message saying so, rather than silently
//! running nowhere.

use std::collections::BTreeSet;

use berth_crds::host::{Host, LOCAL_HOST};
use berth_crds::stack::StackSpec;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::error::StackError;

/// Names of the hosts that run the Stack, sorted.
pub fn selected_hosts<'a>(
    spec: &StackSpec,
    hosts: impl IntoIterator<Item = &'a Host>,
) -> Result<Vec<String>, StackError> {
    let Some(selection) = spec.hosts.as_ref().filter(|h| !h.names.is_empty() || h.selector.is_some()) else {
        return Ok(vec![LOCAL_HOST.to_string()]);
    };
    let mut names: BTreeSet<String> = selection.names.iter().cloned().collect();
    if let Some(selector) = &selection.selector {
        let selector =
            Selector::try_from(selector.clone()).map_err(|e| StackError::InvalidSelector { message: e.to_string() })?;
        for host in hosts {
            if selector.matches(host.labels()) {
                names.insert(host.name_any());
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// Whether a change to `host` can change the hosts of a Stack with `spec` (for triggering).
pub fn may_select(spec: &StackSpec, host: &str) -> bool {
    match &spec.hosts {
        None => host == LOCAL_HOST,
        Some(h) if h.names.is_empty() && h.selector.is_none() => host == LOCAL_HOST,
        Some(h) => h.selector.is_some() || h.names.iter().any(|n| n == host),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use berth_crds::host::HostSpec;
    use berth_crds::stack::HostSelection;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn host(name: &str, labels: &[(&str, &str)]) -> Host {
        let mut h = Host::new(name, HostSpec { endpoint: "tcp://x:2375".into(), ..Default::default() });
        h.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        h
    }

    fn spec(names: &[&str], match_labels: Option<&[(&str, &str)]>) -> StackSpec {
        StackSpec {
            hosts: Some(HostSelection {
                names: names.iter().map(|s| s.to_string()).collect(),
                selector: match_labels.map(|m| LabelSelector {
                    match_labels: Some(
                        m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                    ),
                    match_expressions: None,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn selection_table() {
        let fleet = [host("edge-1", &[("env", "prod")]), host("edge-2", &[("env", "dev")]), host("local", &[])];
        let cases: Vec<(StackSpec, Vec<&str>)> = vec![
            (StackSpec::default(), vec!["local"]),
            (spec(&[], None), vec!["local"]),
            (spec(&["edge-2"], None), vec!["edge-2"]),
            (spec(&[], Some(&[("env", "prod")])), vec!["edge-1"]),
            (spec(&["edge-2"], Some(&[("env", "prod")])), vec!["edge-1", "edge-2"]),
            (spec(&["ghost"], None), vec!["ghost"]),
            (spec(&[], Some(&[("env", "staging")])), vec![]),
        ];
        for (s, want) in cases {
            assert_eq!(selected_hosts(&s, fleet.iter()).unwrap(), want, "{:?}", s.hosts);
        }
    }

    #[test]
    fn host_changes_trigger_only_stacks_they_may_concern() {
        assert!(may_select(&StackSpec::default(), "local"));
        assert!(!may_select(&StackSpec::default(), "edge-1"));
        assert!(may_select(&spec(&["edge-1"], None), "edge-1"));
        assert!(!may_select(&spec(&["edge-1"], None), "edge-2"));
        assert!(may_select(&spec(&[], Some(&[("env", "prod")])), "edge-9"));
    }
}
