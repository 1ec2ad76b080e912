//! TEMPORARY interface stand-in; replaced by the real sled store at merge.
#![allow(missing_docs, dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod selector;
pub use selector::{FieldSelector, LabelSelector};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    pub group: String,
    pub resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: ResourceRef,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: ObjectKey,
    pub resource_version: u64,
    pub value: Arc<serde_json::Value>,
    pub bytes: bytes::Bytes,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub type_: WatchEventType,
    pub object: StoredObject,
    pub previous: Option<StoredObject>,
    pub resource_version: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: Option<LabelSelector>,
    pub field_selector: Option<FieldSelector>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<StoredObject>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining_item_count: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Precondition {
    None,
    ResourceVersion(u64),
    Uid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {key:?}")]
    NotFound { key: ObjectKey },
    #[error("already exists: {key:?}")]
    AlreadyExists { key: ObjectKey },
    #[error("conflict on {key:?}: expected {expected}, actual {actual}")]
    Conflict { key: ObjectKey, expected: String, actual: String },
    #[error("expired: requested {requested}, oldest {oldest}")]
    Expired { requested: u64, oldest: u64 },
    #[error("invalid continue token: {message}")]
    InvalidContinue { message: String },
    #[error("invalid selector: {message}")]
    InvalidSelector { message: String },
    #[error("backend: {source}")]
    Backend { source: std::io::Error },
}

pub type WatchStream = futures::stream::BoxStream<'static, Result<WatchEvent, StoreError>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create(&self, key: &ObjectKey, object: serde_json::Value) -> Result<StoredObject, StoreError>;
    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError>;
    fn list(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, StoreError>;
    async fn update(
        &self,
        key: &ObjectKey,
        object: serde_json::Value,
        pre: Precondition,
    ) -> Result<StoredObject, StoreError>;
    async fn delete(&self, key: &ObjectKey, pre: Precondition) -> Result<StoredObject, StoreError>;
    fn watch(&self, resource: &ResourceRef, namespace: Option<&str>, since: u64) -> Result<WatchStream, StoreError>;
    fn current_resource_version(&self) -> u64;
    async fn flush(&self) -> Result<(), StoreError>;
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub history_capacity: usize,
}
impl Default for StoreOptions {
    fn default() -> Self {
        Self { history_capacity: 10_000 }
    }
}
pub fn open(_path: impl AsRef<std::path::Path>, _o: StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    unimplemented!("stand-in")
}
