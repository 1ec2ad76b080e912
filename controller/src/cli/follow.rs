//! Following changes of a collection (`get -w`, `events -w`, `wait`, `delete --wait`): a watch
//! that resumes from the last resourceVersion when the server ends it, and re-lists when the
//! server says the version is too old (410 Gone).

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;

/// One change seen.
#[derive(Debug, Clone)]
pub enum Change {
    /// An object appeared.
    Added(Value),
    /// An object changed.
    Modified(Value),
    /// An object went away (the last state it had).
    Deleted(Value),
    /// The watch history was lost: the collection as it is now.
    Relisted(Vec<Value>),
}

/// A resumable watch.
pub struct Follower {
    api: Api<DynamicObject>,
    params: WatchParams,
    list_params: ListParams,
    resource_version: String,
    stream: Option<BoxStream<'static, kube::Result<WatchEvent<DynamicObject>>>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("resource_version", &self.resource_version).finish()
    }
}

/// The objects of a collection and the version to watch from.
pub async fn list(api: &Api<DynamicObject>, params: &ListParams) -> kube::Result<(Vec<Value>, String)> {
    let list = api.list(params).await?;
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let items = list.items.into_iter().map(to_value).collect();
    Ok((items, rv))
}

/// A dynamic object as plain JSON.
pub fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn rv_of(v: &Value) -> Option<String> {
    v.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string)
}

impl Follower {
    /// Watches `api` (with the selectors of `list_params`) from `resource_version`.
    pub fn new(api: Api<DynamicObject>, list_params: &ListParams, resource_version: String) -> Self {
        let mut params = WatchParams::default().timeout(290);
        if let Some(l) = &list_params.label_selector {
            params = params.labels(l);
        }
        if let Some(f) = &list_params.field_selector {
            params = params.fields(f);
        }
        Self { api, params, list_params: list_params.clone(), resource_version, stream: None }
    }

    /// The next change; waits as long as it takes.
    pub async fn next(&mut self) -> anyhow::Result<Change> {
        loop {
            if self.stream.is_none() {
                let s = self.api.watch(&self.params, &self.resource_version).await?;
                self.stream = Some(s.boxed());
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            let event = match stream.try_next().await {
                Ok(Some(e)) => e,
                // The server ended the watch (its timeout): resume where it stopped.
                Ok(None) => {
                    self.stream = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (change, v) = match event {
                WatchEvent::Added(o) => {
                    let v = to_value(o);
                    (Change::Added(v.clone()), v)
                }
                WatchEvent::Modified(o) => {
                    let v = to_value(o);
                    (Change::Modified(v.clone()), v)
                }
                WatchEvent::Deleted(o) => {
                    let v = to_value(o);
                    (Change::Deleted(v.clone()), v)
                }
                WatchEvent::Bookmark(b) => {
                    self.resource_version = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => {
                    self.stream = None;
                    let (items, rv) = list(&self.api, &self.list_params).await?;
                    self.resource_version = rv;
                    return Ok(Change::Relisted(items));
                }
                WatchEvent::Error(status) => return Err(kube::Error::Api(status).into()),
            };
            if let Some(rv) = rv_of(&v) {
                self.resource_version = rv;
            }
            return Ok(change);
        }
    }
}
