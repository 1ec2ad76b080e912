//! The sled implementation of [`Store`].
//!
//! On disk (one sled tree): `o\0{group}\0{resource}\0{namespace}\0{name}` holds each object as
//! the JSON served to clients (with its `metadata.resourceVersion`), `m\0last-rv` the
//! `resourceVersion` of the last deletion (written just before the object is removed, so versions
//! stay monotonic across restarts even when the newest object was deleted; otherwise the newest
//! object carries the last version), and `m\0format` the layout version. sled recovers a prefix
//! of its log, so after a crash the store holds every change up to some `resourceVersion` and
//! none after it.
//!
//! In memory: every object as its JSON bytes and labels (not as a parsed tree, which costs
//! several times the memory), indexed by resource, namespace and name (loaded at open), serving
//! `get` and `list` without touching sled; the watch history; the live watchers.
//!
//! A write, under one lock: checks its preconditions against the latest state (including writes
//! applied but not yet durable), takes the next `resourceVersion`, applies it to sled (in memory
//! and sled's log buffer, no I/O yet) and queues the change for group commit ([`super::commit`]). It returns once the flusher made it
//! durable and published it, so a reader never sees (and a watcher never receives) a change that
//! a crash could take back, and changes become visible in `resourceVersion` order.

use std::collections::{BTreeMap, HashMap};
use std::iter::Peekable;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine;
use serde_json::Value;
use tokio::sync::oneshot;

use super::commit::{CommitStats, Committer, Durable, Job};
use super::watch::{History, Watchers};
use super::{
    ListOptions, ListResult, ObjectKey, Precondition, ResourceRef, Store, StoreError, StoreOptions, StoredObject,
    WatchEvent, WatchEventType, WatchStream,
};

const OBJECT_PREFIX: &[u8] = b"o\0";
const LAST_RV_KEY: &[u8] = b"m\0last-rv";
const FORMAT_KEY: &[u8] = b"m\0format";
/// Layout version of the database; bumped when the key or value encoding changes.
const FORMAT_VERSION: &[u8] = b"1";
/// sled's page cache: reads are served from the in-memory index, so sled needs little.
const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Objects of one resource: namespace (empty when cluster-scoped) → name → object.
type ResourceIndex = BTreeMap<String, BTreeMap<String, StoredObject>>;

/// The state readers and watchers see: only durable changes.
struct Published {
    /// `resourceVersion` of the last published change.
    resource_version: u64,
    index: HashMap<ResourceRef, ResourceIndex>,
    history: History,
    watchers: Watchers,
}

impl Published {
    fn lookup(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.index.get(&key.resource)?.get(&key.namespace)?.get(&key.name)
    }

    fn apply(&mut self, event: &WatchEvent) {
        let key = &event.object.key;
        match event.type_ {
            WatchEventType::Added | WatchEventType::Modified => {
                if !self.index.contains_key(&key.resource) {
                    self.index.insert(key.resource.clone(), ResourceIndex::new());
                }
                let by_ns = self.index.get_mut(&key.resource).expect("inserted above");
                if !by_ns.contains_key(&key.namespace) {
                    by_ns.insert(key.namespace.clone(), BTreeMap::new());
                }
                let names = by_ns.get_mut(&key.namespace).expect("inserted above");
                names.insert(key.name.clone(), event.object.clone());
            }
            WatchEventType::Deleted => {
                if let Some(by_ns) = self.index.get_mut(&key.resource)
                    && let Some(names) = by_ns.get_mut(&key.namespace)
                {
                    names.remove(&key.name);
                    if names.is_empty() {
                        by_ns.remove(&key.namespace);
                    }
                }
            }
        }
        self.resource_version = event.resource_version;
        self.history.push(event.clone());
        self.watchers.publish(event);
    }
}

/// A write applied to sled but not yet published.
struct Pending {
    resource_version: u64,
    /// The object after the write; `None` once deleted.
    object: Option<StoredObject>,
}

/// State of the write path.
struct Writer {
    /// Last issued `resourceVersion` (published or not).
    last_rv: u64,
    /// Latest unpublished state per key, so preconditions see writes that are not durable yet.
    pending: HashMap<ObjectKey, Pending>,
    /// Set when a flush failed: durability can no longer be promised.
    failed: Option<String>,
}

/// What the store and its flusher thread share.
struct Shared {
    db: ::sled::Db,
    /// sled's log file, fdatasynced after each flush: sled itself only calls `sync_file_range`,
    /// which neither persists the file's size nor flushes the disk's write cache.
    log_file: std::fs::File,
    writer: Mutex<Writer>,
    published: RwLock<Published>,
}

impl Shared {
    // Locks are never held across code that can leave the state half-updated by a panic, so a
    // poisoned lock still guards consistent data.
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> RwLockReadGuard<'_, Published> {
        self.published.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Published> {
        self.published.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Durable for Shared {
    fn make_durable(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| e.to_string())?;
        // fdatasync, as etcd's WAL: the data, the file size when the log grew and the disk's
        // write cache; only timestamps are left to the next full sync.
        self.log_file.sync_data().map_err(|e| e.to_string())
    }

    fn publish(&self, events: &[WatchEvent]) {
        {
            let mut published = self.write();
            for event in events {
                published.apply(event);
            }
        }
        // Only after the index holds them: a writer that finds no pending entry must find the
        // published one.
        let mut writer = self.writer();
        for event in events {
            let key = &*event.object.key;
            if writer.pending.get(key).is_some_and(|p| p.resource_version == event.resource_version) {
                writer.pending.remove(key);
            }
        }
    }

    fn fail(&self, message: &str) {
        self.writer().failed = Some(message.to_string());
    }
}

/// A change requested by a writer.
enum Change {
    Create(Value),
    Update(Value, Precondition),
    Delete(Precondition),
}

/// The sled-backed store. Dropping it makes every queued write durable and closes the database.
pub struct SledStore {
    shared: Arc<Shared>,
    committer: Committer,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("resource_version", &self.shared.read().resource_version).finish()
    }
}

fn open_error(path: &Path, message: impl ToString) -> StoreError {
    StoreError::Open { path: path.display().to_string(), message: message.to_string() }
}

fn encode_key(key: &ObjectKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(
        OBJECT_PREFIX.len()
            + key.resource.group.len()
            + key.resource.resource.len()
            + key.namespace.len()
            + key.name.len()
            + 3,
    );
    k.extend_from_slice(OBJECT_PREFIX);
    for (i, part) in [&key.resource.group, &key.resource.resource, &key.namespace, &key.name].into_iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part.as_bytes());
    }
    k
}

fn decode_key(raw: &[u8]) -> Result<ObjectKey, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(raw).replace('\0', "/"),
        message: message.to_string(),
    };
    let rest = raw.strip_prefix(OBJECT_PREFIX).ok_or_else(|| corrupt("not an object key"))?;
    let parts: Vec<&str> =
        std::str::from_utf8(rest).map_err(|_| corrupt("the key is not UTF-8"))?.split('\0').collect();
    let [group, resource, namespace, name] = parts.as_slice() else {
        return Err(corrupt("the key does not have four parts"));
    };
    Ok(ObjectKey {
        resource: ResourceRef { group: group.to_string(), resource: resource.to_string() },
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

fn labels_of(value: &Value) -> BTreeMap<String, String> {
    value
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// Builds the stored form of `value` at `resource_version`: sets `metadata.resourceVersion` and
/// serializes once.
fn stored(key: Arc<ObjectKey>, resource_version: u64, mut value: Value) -> Result<StoredObject, StoreError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(StoreError::InvalidObject {
            key: (*key).clone().into(),
            message: "it is not a JSON object".into(),
        });
    };
    let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(StoreError::InvalidObject {
            key: (*key).clone().into(),
            message: "metadata is not a JSON object".into(),
        });
    };
    meta.insert("resourceVersion".into(), Value::String(resource_version.to_string()));
    let bytes =
        serde_json::to_vec(&value).map_err(|source| StoreError::Encode { key: (*key).clone().into(), source })?;
    Ok(StoredObject { labels: Arc::new(labels_of(&value)), key, resource_version, bytes: bytes.into() })
}

/// Reads one object record back.
fn load(raw_key: &[u8], raw_value: &[u8]) -> Result<StoredObject, StoreError> {
    let key = decode_key(raw_key)?;
    let corrupt = |message: String| StoreError::Corrupt { key: format!("{key:?}"), message };
    let value: Value = serde_json::from_slice(raw_value).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    let resource_version = value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse::<u64>().ok())
        .ok_or_else(|| corrupt("metadata.resourceVersion is missing or not a number".into()))?;
    Ok(StoredObject {
        labels: Arc::new(labels_of(&value)),
        key: Arc::new(key),
        resource_version,
        bytes: bytes::Bytes::copy_from_slice(raw_value),
    })
}

fn check_precondition(key: &ObjectKey, current: &StoredObject, pre: &Precondition) -> Result<(), StoreError> {
    match pre {
        Precondition::None => Ok(()),
        Precondition::ResourceVersion(rv) if *rv == current.resource_version => Ok(()),
        Precondition::ResourceVersion(rv) => Err(StoreError::Conflict {
            key: key.clone().into(),
            expected: format!("resourceVersion {rv}"),
            actual: format!("resourceVersion {}", current.resource_version),
        }),
        Precondition::Uid(uid) => {
            let current = current.value();
            let actual = current.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
            if actual == uid {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    key: key.clone().into(),
                    expected: format!("uid {uid}"),
                    actual: format!("uid {actual}"),
                })
            }
        }
    }
}

/// Where a paged list continues: the snapshot it reads and the last key it returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> Result<Self, StoreError> {
        let invalid = |message: &str| StoreError::InvalidContinue { message: message.to_string() };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| invalid("not base64"))?;
        serde_json::from_slice(&raw).map_err(|_| invalid("not a token this server issued"))
    }
}

/// A key position in list order.
type Position<'a> = (&'a str, &'a str);

fn position(o: &StoredObject) -> Position<'_> {
    (o.key.namespace.as_str(), o.key.name.as_str())
}

/// The published objects of one resource after `cursor`, in key order.
fn index_after<'a>(
    by_ns: &'a ResourceIndex,
    namespace: Option<&'a str>,
    cursor: Option<Position<'a>>,
) -> Box<dyn Iterator<Item = &'a StoredObject> + 'a> {
    let names_after =
        move |ns: &str, names: &'a BTreeMap<String, StoredObject>| -> Box<dyn Iterator<Item = &'a StoredObject> + 'a> {
            match cursor {
                Some((cns, cname)) if cns == ns => {
                    Box::new(names.range::<str, _>((Bound::Excluded(cname), Bound::Unbounded)).map(|(_, o)| o))
                }
                _ => Box::new(names.values()),
            }
        };
    match namespace {
        Some(ns) => match (by_ns.get(ns), cursor) {
            (None, _) => Box::new(std::iter::empty()),
            (Some(_), Some((cns, _))) if cns > ns => Box::new(std::iter::empty()),
            (Some(names), _) => names_after(ns, names),
        },
        None => {
            let start = cursor.map_or(Bound::Unbounded, |(cns, _)| Bound::Included(cns));
            Box::new(
                by_ns.range::<str, _>((start, Bound::Unbounded)).flat_map(move |(ns, names)| names_after(ns, names)),
            )
        }
    }
}

/// Merges the published objects with the state a list snapshot had for keys changed since (the
/// overlay wins; `None` there means the key did not exist in the snapshot).
struct Merge<'a, L: Iterator<Item = &'a StoredObject>, O: Iterator<Item = (Position<'a>, Option<&'a StoredObject>)>> {
    live: Peekable<L>,
    overlay: Peekable<O>,
}

impl<'a, L, O> Iterator for Merge<'a, L, O>
where
    L: Iterator<Item = &'a StoredObject>,
    O: Iterator<Item = (Position<'a>, Option<&'a StoredObject>)>,
{
    type Item = &'a StoredObject;

    fn next(&mut self) -> Option<&'a StoredObject> {
        loop {
            let live = self.live.peek().map(|o| position(o));
            let over = self.overlay.peek().map(|(p, _)| *p);
            match (live, over) {
                (None, None) => return None,
                (Some(_), None) => return self.live.next(),
                (Some(l), Some(o)) if l < o => return self.live.next(),
                (l, Some(o)) => {
                    if l == Some(o) {
                        self.live.next();
                    }
                    if let Some((_, Some(obj))) = self.overlay.next() {
                        return Some(obj);
                    }
                }
            }
        }
    }
}

fn selected(opts: &ListOptions, o: &StoredObject) -> bool {
    opts.label_selector.as_ref().is_none_or(|s| s.matches(&o.labels))
        && opts.field_selector.as_ref().is_none_or(|s| s.matches(&o.key.namespace, &o.key.name))
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path` and loads every object.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = ::sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES)
            // Every write is flushed by the group commit; sled's timer would only add flushes.
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(path, e))?;
        match db.get(FORMAT_KEY).map_err(|e| open_error(path, e))? {
            None => {
                db.insert(FORMAT_KEY, FORMAT_VERSION).map_err(|e| open_error(path, e))?;
                db.flush().map_err(|e| open_error(path, e))?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION => {}
            Some(v) => {
                return Err(open_error(
                    path,
                    format!(
                        "the data has layout version {}, this berth reads version {}; run the berth that wrote it",
                        String::from_utf8_lossy(&v),
                        String::from_utf8_lossy(FORMAT_VERSION)
                    ),
                ));
            }
        }
        let mut last_rv = match db.get(LAST_RV_KEY).map_err(|e| open_error(path, e))? {
            None => 0,
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                key: "last-rv".into(),
                message: format!("expected 8 bytes, found {}", v.len()),
            })?),
        };
        let mut index: HashMap<ResourceRef, ResourceIndex> = HashMap::new();
        let mut count = 0usize;
        for item in db.scan_prefix(OBJECT_PREFIX) {
            let (k, v) = item.map_err(|e| open_error(path, e))?;
            let obj = load(&k, &v)?;
            last_rv = last_rv.max(obj.resource_version);
            index
                .entry(obj.key.resource.clone())
                .or_default()
                .entry(obj.key.namespace.clone())
                .or_default()
                .insert(obj.key.name.clone(), obj);
            count += 1;
        }
        let log_file = std::fs::File::open(path.join("db"))
            .map_err(|e| open_error(path, format!("opening sled's log file for fsync: {e}")))?;
        tracing::info!(path = %path.display(), objects = count, resource_version = last_rv, "opened the store");
        let shared = Arc::new(Shared {
            db,
            log_file,
            writer: Mutex::new(Writer { last_rv, pending: HashMap::new(), failed: None }),
            published: RwLock::new(Published {
                resource_version: last_rv,
                index,
                history: History::new(options.history_capacity, last_rv),
                watchers: Watchers::new(options.watcher_buffer),
            }),
        });
        let committer = Committer::start(shared.clone())
            .map_err(|e| open_error(path, format!("starting the commit thread: {e}")))?;
        Ok(Self { shared, committer })
    }

    /// Group commit counters: how many flushes made how many writes durable.
    pub fn commit_stats(&self) -> &CommitStats {
        self.committer.stats()
    }

    async fn write(&self, key: &ObjectKey, change: Change) -> Result<StoredObject, StoreError> {
        if [&key.resource.group, &key.resource.resource, &key.namespace, &key.name].iter().any(|p| p.contains('\0')) {
            return Err(StoreError::InvalidObject {
                key: key.clone().into(),
                message: "the key contains a NUL byte".into(),
            });
        }
        let reply = {
            let mut writer = self.shared.writer();
            if let Some(message) = &writer.failed {
                return Err(StoreError::Flush { message: message.clone() });
            }
            let current = match writer.pending.get(key) {
                Some(p) => p.object.clone(),
                None => self.shared.read().lookup(key).cloned(),
            };
            let rv = writer.last_rv + 1;
            let event = match change {
                Change::Create(value) => {
                    if current.is_some() {
                        return Err(StoreError::AlreadyExists { key: key.clone().into() });
                    }
                    let object = stored(Arc::new(key.clone()), rv, value)?;
                    WatchEvent { type_: WatchEventType::Added, object, previous: None, resource_version: rv }
                }
                Change::Update(value, pre) => {
                    let current = current.ok_or_else(|| StoreError::NotFound { key: key.clone().into() })?;
                    check_precondition(key, &current, &pre)?;
                    let object = stored(current.key.clone(), rv, value)?;
                    WatchEvent {
                        type_: WatchEventType::Modified,
                        object,
                        previous: Some(current),
                        resource_version: rv,
                    }
                }
                Change::Delete(pre) => {
                    let current = current.ok_or_else(|| StoreError::NotFound { key: key.clone().into() })?;
                    check_precondition(key, &current, &pre)?;
                    let object = stored(current.key.clone(), rv, current.value())?;
                    WatchEvent { type_: WatchEventType::Deleted, object, previous: Some(current), resource_version: rv }
                }
            };
            // Plain inserts, not a sled `Batch`: sled writes out its log buffer before and after
            // every batch (two small writes, each waited for), which capped the store at a few
            // thousand writes per second whatever the group commit did. Atomicity comes from
            // sled recovering a prefix of its log, in this (resourceVersion) order.
            let raw_key = encode_key(key);
            let applied = if event.type_ == WatchEventType::Deleted {
                // The deleted object no longer carries the newest version: record it first, so
                // a crash between the two leaves at worst an unused version, never a reused one.
                self.shared.db.insert(LAST_RV_KEY, &rv.to_be_bytes()).and_then(|_| self.shared.db.remove(raw_key))
            } else {
                self.shared.db.insert(raw_key, event.object.bytes.as_ref())
            };
            if let Err(e) = applied {
                // Half a change may be in sled's memory: accept no further write until restart.
                let message = e.to_string();
                writer.failed = Some(message.clone());
                return Err(StoreError::Write { message });
            }
            writer.last_rv = rv;
            let after = (event.type_ != WatchEventType::Deleted).then(|| event.object.clone());
            writer.pending.insert(key.clone(), Pending { resource_version: rv, object: after });
            let (tx, rx) = oneshot::channel();
            self.committer.submit(Job::Write { event, reply: tx })?;
            rx
        };
        reply.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn create(&self, key: &ObjectKey, object: Value) -> Result<StoredObject, StoreError> {
        self.write(key, Change::Create(object)).await
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        Ok(self.shared.read().lookup(key).cloned())
    }

    fn list(
        &self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, StoreError> {
        let token = opts.continue_token.as_deref().map(ContinueToken::decode).transpose()?;
        let published = self.shared.read();
        let snapshot = token.as_ref().map_or(published.resource_version, |t| t.rv);
        if snapshot > published.resource_version {
            return Err(StoreError::InvalidContinue { message: "it refers to a future resourceVersion".into() });
        }
        let cursor = token.as_ref().map(|t| (t.ns.as_str(), t.name.as_str()));
        // Later pages read the snapshot of the first: undo every change made since, using the
        // history (the first change of a key after the snapshot knows its state at the snapshot).
        let mut overlay: BTreeMap<Position<'_>, Option<&StoredObject>> = BTreeMap::new();
        if snapshot < published.resource_version {
            let changes = published.history.after(snapshot).ok_or(StoreError::ContinueExpired {
                requested: snapshot,
                oldest: published.history.complete_after(),
            })?;
            for ev in changes {
                let key = &ev.object.key;
                if key.resource != *resource || namespace.is_some_and(|ns| ns != key.namespace) {
                    continue;
                }
                overlay.entry(position(&ev.object)).or_insert(ev.previous.as_ref());
            }
        }
        let empty = ResourceIndex::new();
        let by_ns = published.index.get(resource).unwrap_or(&empty);
        let overlay_after = match cursor {
            Some(c) => overlay.range((Bound::Excluded(c), Bound::Unbounded)),
            None => overlay.range::<Position<'_>, _>(..),
        };
        let merged = Merge {
            live: index_after(by_ns, namespace, cursor).peekable(),
            overlay: overlay_after.map(|(p, o)| (*p, *o)).peekable(),
        };
        let limit = opts.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut remaining = 0u64;
        for o in merged.filter(|o| selected(opts, o)) {
            if items.len() < limit {
                items.push(o.clone());
            } else {
                remaining += 1;
            }
        }
        let continue_token = match items.last() {
            Some(last) if remaining > 0 => Some(
                ContinueToken { rv: snapshot, ns: last.key.namespace.clone(), name: last.key.name.clone() }.encode(),
            ),
            _ => None,
        };
        // As in Kubernetes, the count is only given for unfiltered lists.
        let filtered = opts.label_selector.as_ref().is_some_and(|s| !s.is_empty())
            || opts.field_selector.as_ref().is_some_and(|s| !s.is_empty());
        let remaining_item_count = continue_token.as_ref().filter(|_| !filtered).map(|_| remaining);
        Ok(ListResult { items, resource_version: snapshot, continue_token, remaining_item_count })
    }

    async fn update(&self, key: &ObjectKey, object: Value, pre: Precondition) -> Result<StoredObject, StoreError> {
        self.write(key, Change::Update(object, pre)).await
    }

    async fn delete(&self, key: &ObjectKey, pre: Precondition) -> Result<StoredObject, StoreError> {
        self.write(key, Change::Delete(pre)).await
    }

    fn watch(&self, resource: &ResourceRef, namespace: Option<&str>, since: u64) -> Result<WatchStream, StoreError> {
        let mut published = self.shared.write();
        let since = if since == 0 { published.resource_version } else { since };
        let replay: Vec<WatchEvent> = published
            .history
            .after(since)
            .ok_or(StoreError::Expired { requested: since, oldest: published.history.complete_after() })?
            .filter(|e| e.object.key.resource == *resource && namespace.is_none_or(|ns| ns == e.object.key.namespace))
            .cloned()
            .collect();
        Ok(published.watchers.subscribe(resource, namespace, since, replay))
    }

    fn current_resource_version(&self) -> u64 {
        self.shared.read().resource_version
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let writer = self.shared.writer();
            if let Some(message) = &writer.failed {
                return Err(StoreError::Flush { message: message.clone() });
            }
            self.committer.submit(Job::Barrier { reply: tx })?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
