//! The Secrets and ConfigMaps a Stack's environment refers to: reading their values for rendering
//! (from the controller's reflector caches, or from maps fetched once for `berth plan`), and
//! finding the Stacks that refer to a changed object so that a rotated secret rolls out.

use std::collections::{BTreeMap, BTreeSet};

use berth_crds::Stack;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{ObjectRef, Store};

use super::render::References;

/// Kind of a referenced object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefKind {
    /// A core Secret.
    Secret,
    /// A core ConfigMap.
    ConfigMap,
}

/// Names of the Secrets and ConfigMaps (in the Stack's namespace) its services refer to.
pub fn referenced_objects(stack: &Stack) -> BTreeSet<(RefKind, String)> {
    let mut out = BTreeSet::new();
    for svc in &stack.spec.services {
        for e in &svc.env {
            let Some(src) = &e.value_from else { continue };
            if let Some(s) = &src.secret_key_ref {
                out.insert((RefKind::Secret, s.name.clone()));
            }
            if let Some(c) = &src.config_map_key_ref {
                out.insert((RefKind::ConfigMap, c.name.clone()));
            }
        }
    }
    out
}

/// The Stacks among `stacks` that refer to object `name` of `kind` in `namespace`.
pub fn stacks_referring_to(stacks: &Store<Stack>, kind: RefKind, namespace: &str, name: &str) -> Vec<ObjectRef<Stack>> {
    stacks
        .state()
        .iter()
        .filter(|s| s.namespace_or_default() == namespace)
        .filter(|s| referenced_objects(s).contains(&(kind, name.to_string())))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.0.clone());
    }
    // `stringData` is write-only on a real API server, but a cache may hold it verbatim.
    secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.as_bytes().to_vec())
}

fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data.as_ref().and_then(|d| d.get(key)).cloned()
}

/// [`References`] over the controller's reflector caches.
#[derive(Clone)]
pub struct CachedReferences {
    /// Secrets of every namespace.
    pub secrets: Store<Secret>,
    /// ConfigMaps of every namespace.
    pub config_maps: Store<ConfigMap>,
}

impl References for CachedReferences {
    fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.secrets.get(&ObjectRef::new(name).within(namespace))?;
        secret_value(&s, key)
    }

    fn config_map(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let c = self.config_maps.get(&ObjectRef::new(name).within(namespace))?;
        config_map_value(&c, key)
    }
}

/// [`References`] over objects fetched once (for `berth plan`, which has no caches).
#[derive(Default, Clone)]
pub struct FetchedReferences {
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), Secret>,
    /// ConfigMaps by (namespace, name).
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
}

impl References for FetchedReferences {
    fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        secret_value(self.secrets.get(&(namespace.to_string(), name.to_string()))?, key)
    }

    fn config_map(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        config_map_value(self.config_maps.get(&(namespace.to_string(), name.to_string()))?, key)
    }
}

#[cfg(test)]
mod tests {
    use berth_crds::StackSpec;
    use berth_crds::common::{EnvVar, EnvVarSource, SecretKeySelector};
    use berth_crds::stack::ServiceSpec;
    use k8s_openapi::ByteString;

    use super::*;

    fn env_from(secret: Option<&str>, cm: Option<&str>) -> EnvVar {
        let sel = |n: &str| SecretKeySelector { name: n.into(), key: "k".into(), optional: false };
        EnvVar {
            name: "X".into(),
            value: None,
            value_from: Some(EnvVarSource { secret_key_ref: secret.map(sel), config_map_key_ref: cm.map(sel) }),
        }
    }

    #[test]
    fn references_are_collected_per_kind() {
        let s = Stack::new(
            "a",
            StackSpec {
                services: vec![ServiceSpec {
                    name: "web".into(),
                    image: "i".into(),
                    env: vec![env_from(Some("db"), None), env_from(None, Some("settings"))],
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let refs = referenced_objects(&s);
        assert!(refs.contains(&(RefKind::Secret, "db".into())));
        assert!(refs.contains(&(RefKind::ConfigMap, "settings".into())));
        assert!(!refs.contains(&(RefKind::Secret, "settings".into())));
    }

    #[test]
    fn fetched_references_read_data() {
        let mut r = FetchedReferences::default();
        let secret =
            Secret { data: Some([("password".to_string(), ByteString(b"pw".to_vec()))].into()), ..Default::default() };
        r.secrets.insert(("ns".into(), "db".into()), secret);
        assert_eq!(r.secret("ns", "db", "password"), Some(b"pw".to_vec()));
        assert_eq!(r.secret("ns", "db", "other"), None);
        assert_eq!(r.secret("other", "db", "password"), None);
    }
}
