//! Query parameters of API requests, parsed leniently: kube-rs sends `?&labelSelector=…`, kubectl
//! sends `watch=1` or `watch=true`, and unknown parameters are ignored as Kubernetes does.

use std::collections::BTreeMap;

use super::errors::{ApiError, ApiResult};
use crate::store::{FieldSelector, LabelSelector, ListOptions};

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and return a `Warning` header for each (the default, as in Kubernetes ≥ 1.27).
    #[default]
    Warn,
    /// Refuse the request with 400 BadRequest naming each one.
    Strict,
}

/// Every query parameter berth understands.
#[derive(Debug, Clone, Default)]
pub struct Query {
    raw: BTreeMap<String, String>,
}

impl Query {
    /// Parse a raw query string (without the leading `?`), tolerating empty pairs.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = BTreeMap::new();
        if let Some(raw) = raw {
            for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
                if !k.is_empty() {
                    map.insert(k.into_owned(), v.into_owned());
                }
            }
        }
        Self { raw: map }
    }

    /// A parameter's value, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }

    /// A boolean parameter (`1`, `true`, `True` count as true).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True" | "TRUE"))
    }

    /// `watch=true`.
    pub fn watch(&self) -> bool {
        self.flag("watch")
    }

    /// `resourceVersion`, parsed: `None` when absent or empty, `Some(0)` for "0".
    pub fn resource_version(&self) -> ApiResult<Option<u64>> {
        match self.get("resourceVersion") {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {v:?} is not a resourceVersion this server issued"))
            }),
        }
    }

    /// `timeoutSeconds`.
    pub fn timeout_seconds(&self) -> Option<u64> {
        self.get("timeoutSeconds").and_then(|v| v.parse().ok())
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("dryRun {other:?} is not supported; use dryRun=All"))),
        }
    }

    /// `fieldValidation`.
    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("") => Ok(FieldValidation::default()),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation {other:?} is not supported; use Ignore, Warn or Strict"
            ))),
        }
    }

    /// `fieldManager`, defaulting like Kubernetes does for non-apply requests.
    pub fn field_manager(&self) -> Option<&str> {
        self.get("fieldManager").filter(|m| !m.is_empty())
    }

    /// `force=true` (server-side apply).
    pub fn force(&self) -> bool {
        self.flag("force")
    }

    /// List options: selectors, `limit`, `continue`.
    pub fn list_options(&self) -> ApiResult<ListOptions> {
        let label_selector = match self.get("labelSelector") {
            None | Some("") => None,
            Some(s) => Some(
                LabelSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector {s:?}: {e}")))?,
            ),
        };
        let field_selector = match self.get("fieldSelector") {
            None | Some("") => None,
            Some(s) => Some(
                FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector {s:?}: {e}")))?,
            ),
        };
        let limit = match self.get("limit") {
            None | Some("") | Some("0") => None,
            Some(l) => {
                Some(l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a number")))?)
            }
        };
        let continue_token = self.get("continue").filter(|c| !c.is_empty()).map(str::to_string);
        Ok(ListOptions { label_selector, field_selector, limit, continue_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_leading_ampersand_and_empty_pairs() {
        let q = Query::parse(Some("&watch=1&&resourceVersion=42&timeoutSeconds=290"));
        assert!(q.watch());
        assert_eq!(q.resource_version().unwrap(), Some(42));
        assert_eq!(q.timeout_seconds(), Some(290));
    }

    #[test]
    fn refuses_bad_values_with_the_parameter_named() {
        let q = Query::parse(Some("resourceVersion=abc&dryRun=Some&fieldValidation=Loose&limit=x"));
        assert!(q.resource_version().unwrap_err().to_string().contains("resourceVersion"));
        assert!(q.dry_run().unwrap_err().to_string().contains("dryRun"));
        assert!(q.field_validation().unwrap_err().to_string().contains("fieldValidation"));
        assert!(q.list_options().unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn defaults_match_kubernetes() {
        let q = Query::parse(None);
        assert!(!q.watch());
        assert_eq!(q.field_validation().unwrap(), FieldValidation::Warn);
        assert!(!q.dry_run().unwrap());
        assert_eq!(q.resource_version().unwrap(), None);
    }
}
