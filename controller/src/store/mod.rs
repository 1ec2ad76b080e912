//! The object store: every API object berth serves, keyed by resource, namespace and name, with a
//! global monotonic `resourceVersion`, optimistic concurrency, label/field selectors, paged lists
//! and resumable watches.
//!
//! [`Store`] is the interface the API server uses (and the only way anything reaches stored
//! data); [`open`] returns the sled implementation ([`sled`]), which keeps every object in an
//! in-memory index for reads, acknowledges a write only once it is on disk (group commit,
//! [`commit`]), and publishes writes to readers and watchers in `resourceVersion` order only after
//! they are durable ([`watch`]). Another backend (etcd) would implement the same trait.
//!
//! Architecture invariant: only this module touches sled.

use std::collections::BTreeMap;
use std::sync::Arc;

mod commit;
pub mod selector;
mod sled;
mod watch;

#[cfg(test)]
mod tests;

pub use self::commit::CommitStats;
pub use self::selector::{FieldSelector, LabelSelector, SelectorError};
pub use self::sled::SledStore;

/// A kind of stored object: API group (empty for the core group) and plural resource name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    /// API group, `""` for core (`secrets`, `configmaps`).
    pub group: String,
    /// Plural resource name (`stacks`).
    pub resource: String,
}

/// Where one object lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its resource.
    pub resource: ResourceRef,
    /// Its namespace; empty for cluster-scoped resources.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// One stored object as readers see it. Cloning is cheap (reference counts only), so lists of
/// thousands of objects cost no copying.
///
/// The object is held as its JSON only: a parsed `serde_json::Value` tree takes several times
/// the memory of its text (about 10 KiB against 1.2 KiB for a two-service Stack), and every
/// object of the store is held in memory. Reads are served from the bytes as they are; the few
/// callers that look inside an object parse it with [`StoredObject::value`].
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Where it lives.
    pub key: Arc<ObjectKey>,
    /// The `resourceVersion` of the write that produced this state (for a DELETED event: of the
    /// deletion).
    pub resource_version: u64,
    /// The object serialized as JSON, with `metadata.resourceVersion` set to
    /// [`Self::resource_version`], ready to be sent as it is.
    pub bytes: bytes::Bytes,
    /// `metadata.labels`, for selectors.
    pub labels: Arc<BTreeMap<String, String>>,
}

impl StoredObject {
    /// The object, parsed from [`Self::bytes`] (a new tree on each call).
    pub fn value(&self) -> serde_json::Value {
        // The bytes are either serde_json's own output or were parsed when the store loaded them.
        serde_json::from_slice(&self.bytes).expect("a stored object's bytes are valid JSON")
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

/// One change, as delivered to watchers.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// Created, updated or deleted.
    pub type_: WatchEventType,
    /// The object after the change; for a deletion, its last state carrying the deletion's
    /// `resourceVersion`.
    pub object: StoredObject,
    /// The object before the change (`None` for a creation). Lets a watcher with a label
    /// selector turn an update that leaves or enters the selection into DELETED or ADDED.
    pub previous: Option<StoredObject>,
    /// The change's `resourceVersion` (equal to `object.resource_version`).
    pub resource_version: u64,
}

/// Options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only objects whose labels match.
    pub label_selector: Option<LabelSelector>,
    /// Only objects whose name/namespace match.
    pub field_selector: Option<FieldSelector>,
    /// At most this many items; the rest is reachable with the returned continue token.
    pub limit: Option<usize>,
    /// Continue a paged list where a previous page stopped.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListResult {
    /// Matching objects in key order (namespace, then name).
    pub items: Vec<StoredObject>,
    /// The `resourceVersion` the list reflects; every page of a paged list reflects the same one,
    /// and a watch from it misses nothing.
    pub resource_version: u64,
    /// Set when more items match: pass it as [`ListOptions::continue_token`] for the next page.
    pub continue_token: Option<String>,
    /// How many items follow this page: set with [`Self::continue_token`] when no selector
    /// filtered the list (as in Kubernetes).
    pub remaining_item_count: Option<u64>,
}

/// A condition a write must meet, checked against the latest state (including writes not yet
/// durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// The object's `resourceVersion` must be this one.
    ResourceVersion(u64),
    /// The object's `metadata.uid` must be this one.
    Uid(String),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{} {:?} not found in namespace {:?}", qualified(&key.resource), key.name, key.namespace)]
    NotFound {
        /// The object.
        key: Box<ObjectKey>,
    },
    /// An object with this key exists already.
    #[error("{} {:?} already exists in namespace {:?}", qualified(&key.resource), key.name, key.namespace)]
    AlreadyExists {
        /// The object.
        key: Box<ObjectKey>,
    },
    /// A precondition failed: the object changed since the caller read it.
    #[error(
        "{} {:?} was modified: expected {expected}, found {actual}; read it again and retry",
        qualified(&key.resource),
        key.name
    )]
    Conflict {
        /// The object.
        key: Box<ObjectKey>,
        /// What the caller expected (`resourceVersion 12`, `uid …`).
        expected: String,
        /// What the store holds.
        actual: String,
    },
    /// A watch asked for changes older than the history window.
    #[error(
        "too old resource version: {requested} ({oldest}); the watch history no longer reaches back that far, \
         list again to get a current resourceVersion"
    )]
    Expired {
        /// The requested `resourceVersion`.
        requested: u64,
        /// The oldest `resourceVersion` a watch can start from.
        oldest: u64,
    },
    /// A watcher did not read its events fast enough and was dropped so it could not hold back
    /// writers; it must list again.
    #[error(
        "the watch fell more than {capacity} events behind after resourceVersion {resource_version} and was \
         closed; list again and watch from the list's resourceVersion"
    )]
    WatcherTooSlow {
        /// The last `resourceVersion` delivered to the watcher.
        resource_version: u64,
        /// The watcher's buffer size.
        capacity: usize,
    },
    /// A continue token refers to a list snapshot older than the history window.
    #[error(
        "the continue token refers to resourceVersion {requested}, older than the watch history ({oldest}); \
         start the list again without a continue token"
    )]
    ContinueExpired {
        /// The snapshot the token refers to.
        requested: u64,
        /// The oldest snapshot still available.
        oldest: u64,
    },
    /// A continue token is not one this store issued.
    #[error("invalid continue token: {message}; start the list again without a continue token")]
    InvalidContinue {
        /// What is wrong with it.
        message: String,
    },
    /// The object or its key cannot be stored (not a JSON object, a NUL byte in the key).
    #[error("cannot store {key:?}: {message}")]
    InvalidObject {
        /// The object.
        key: Box<ObjectKey>,
        /// What is wrong.
        message: String,
    },
    /// An object could not be serialized for storage.
    #[error("could not encode {key:?} as JSON: {source}")]
    Encode {
        /// The object.
        key: Box<ObjectKey>,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The database could not be opened.
    #[error("could not open the store at {path}: {message}; check that no other berth uses this data directory")]
    Open {
        /// The database directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be read back (disk corruption or a foreign file).
    #[error("stored record {key:?} is corrupt: {message}; restore the data directory from a backup")]
    Corrupt {
        /// The raw key, lossily decoded.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Writing to the database failed.
    #[error("writing to the store failed: {message}; check the disk of the data directory")]
    Write {
        /// What failed.
        message: String,
    },
    /// Flushing to disk failed: durability can no longer be promised, so the store refuses
    /// writes until it is restarted.
    #[error(
        "flushing the store to disk failed: {message}; the store refuses writes, restart berth after fixing the disk"
    )]
    Flush {
        /// What failed.
        message: String,
    },
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// `resource.group` (or `resource` for core), as messages print it.
fn qualified(r: &ResourceRef) -> String {
    if r.group.is_empty() { r.resource.clone() } else { format!("{}.{}", r.resource, r.group) }
}

/// A stream of changes; ends with an error when the watcher must list again.
pub type WatchStream = futures::stream::BoxStream<'static, Result<WatchEvent, StoreError>>;

/// The object store. Reads (`get`, `list`, `watch`) see only durable writes; writes return once
/// durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new object; `AlreadyExists` if the key is taken.
    async fn create(&self, key: &ObjectKey, object: serde_json::Value) -> Result<StoredObject, StoreError>;

    /// The object at `key`, if any.
    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError>;

    /// Objects of a resource in key order; `namespace: None` lists every namespace.
    fn list(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, StoreError>;

    /// Replaces an existing object; `NotFound` if absent, `Conflict` if the precondition fails.
    async fn update(
        &self,
        key: &ObjectKey,
        object: serde_json::Value,
        pre: Precondition,
    ) -> Result<StoredObject, StoreError>;

    /// Deletes an object; returns its last state with the deletion's `resourceVersion`.
    async fn delete(&self, key: &ObjectKey, pre: Precondition) -> Result<StoredObject, StoreError>;

    /// Every change of `resource` (in `namespace`, if given) with a `resourceVersion` greater than
    /// `since`, in order, with no gap between history and live events. `since = 0` means from
    /// now. `Expired` when `since` is older than the history window.
    fn watch(&self, resource: &ResourceRef, namespace: Option<&str>, since: u64) -> Result<WatchStream, StoreError>;

    /// The `resourceVersion` of the latest durable write.
    fn current_resource_version(&self) -> u64;

    /// Waits until every write issued before the call is durable and visible to readers.
    async fn flush(&self) -> Result<(), StoreError>;
}

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many recent changes are kept in memory for watches that resume from a
    /// `resourceVersion` and for paged lists; older ones get `410 Expired`.
    pub history_capacity: usize,
    /// How many undelivered events one watcher may have before it is closed with
    /// [`StoreError::WatcherTooSlow`] (so a stalled client never holds back writers).
    pub watcher_buffer: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { history_capacity: 10_000, watcher_buffer: 1_000 }
    }
}

/// Opens (creating if needed) the sled store in directory `path`.
pub fn open(path: impl AsRef<std::path::Path>, options: StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SledStore::open(path.as_ref(), options)?))
}
