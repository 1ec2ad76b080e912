//! Watch: newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`),
//! resumable from a `resourceVersion`, with label-selector transitions turned into ADDED/DELETED
//! as Kubernetes does, periodic bookmarks, `timeoutSeconds`, and `410 Expired` delivered as an
//! `ERROR` event when the requested version is older than the store's history.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::ApiState;
use super::errors::{ApiError, ApiResult};
use super::objects::Target;
use super::query::Query;
use super::table::{IncludeObject, row, table, wants_table};
use crate::store::{ListOptions, StoredObject, WatchEventType};

/// Default watch duration when the client gives no `timeoutSeconds` (Kubernetes picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How an event's object is rendered.
#[derive(Clone)]
struct Render {
    info: std::sync::Arc<super::registry::ResourceInfo>,
    as_table: bool,
    include: IncludeObject,
    headers_sent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Render {
    fn object(&self, obj: &StoredObject) -> Value {
        if self.as_table {
            // Kubernetes sends column definitions on the first event of a stream only.
            let first = !self.headers_sent.swap(true, std::sync::atomic::Ordering::Relaxed);
            let mut t = table(&self.info, std::iter::empty(), self.include, obj.resource_version, None, first);
            t["rows"] = json!([row(&self.info, &obj.value(), self.include)]);
            t
        } else {
            obj.value()
        }
    }

    fn event(&self, type_: &str, obj: &StoredObject) -> Bytes {
        if !self.as_table {
            // Fast path: splice the stored bytes instead of re-serializing.
            let mut out = Vec::with_capacity(obj.bytes.len() + 32);
            out.extend_from_slice(br#"{"type":""#);
            out.extend_from_slice(type_.as_bytes());
            out.extend_from_slice(br#"","object":"#);
            out.extend_from_slice(&obj.bytes);
            out.extend_from_slice(b"}\n");
            return Bytes::from(out);
        }
        line(&json!({"type": type_, "object": self.object(obj)}))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = if self.as_table {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": [], "rows": []})
        } else {
            json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata})
        };
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn error_event(err: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": err.status()}))
}

/// Decides whether an object passes the request's selectors.
#[derive(Clone)]
struct Filter(ListOptions);

impl Filter {
    fn matches(&self, o: &StoredObject) -> bool {
        self.0.label_selector.as_ref().is_none_or(|s| s.matches(&o.labels))
            && self.0.field_selector.as_ref().is_none_or(|s| s.matches(&o.key.namespace, &o.key.name))
    }
}

/// GET on a collection with `watch=true`.
pub async fn watch(state: &ApiState, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    let mut opts = q.list_options()?;
    opts.limit = None;
    opts.continue_token = None;
    let filter = Filter(opts.clone());
    let render = Render {
        info: t.info.clone(),
        as_table: wants_table(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())),
        include: IncludeObject::parse(q.get("includeObject")),
        headers_sent: Default::default(),
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = q.timeout_seconds().map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let ns = if t.info.namespaced { t.namespace.clone() } else { None };
    let resource = t.info.resource_ref();

    // Initial state: synthetic ADDED events when no resourceVersion (or "0") is given, or when
    // the client asks for them (streaming list).
    let requested = q.resource_version()?;
    let mut initial: Vec<Bytes> = Vec::new();
    let since = match requested {
        Some(rv) if rv > 0 && !send_initial => rv,
        _ => {
            let list = state
                .store
                .list(&resource, ns.as_deref(), &opts)
                .map_err(|e| ApiError::from_store(e, &t.info.group, &t.info.plural, ""))?;
            initial.extend(list.items.iter().map(|o| render.event("ADDED", o)));
            if send_initial && bookmarks {
                initial.push(render.bookmark(list.resource_version, true));
            }
            list.resource_version
        }
    };

    let mut body_stream: futures::stream::BoxStream<'static, Bytes> = futures::stream::iter(initial).boxed();
    match state.store.watch(&resource, ns.as_deref(), since) {
        Err(e) => {
            let err = ApiError::from_store(e, &t.info.group, &t.info.plural, "");
            body_stream = body_stream.chain(futures::stream::once(async move { error_event(&err) })).boxed();
        }
        Ok(events) => {
            let render2 = render.clone();
            let group = t.info.group.clone();
            let plural = t.info.plural.clone();
            let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(since));
            let seen_by_events = seen.clone();
            let mapped = events.filter_map(move |ev| {
                let out = match ev {
                    Err(e) => Some(error_event(&ApiError::from_store(e, &group, &plural, ""))),
                    Ok(ev) => {
                        seen_by_events.fetch_max(ev.resource_version, std::sync::atomic::Ordering::Relaxed);
                        let now = filter.matches(&ev.object);
                        let before = ev.previous.as_ref().map(|p| filter.matches(p));
                        let type_ = match (ev.type_, before, now) {
                            (WatchEventType::Added, _, true) => Some("ADDED"),
                            (WatchEventType::Modified, Some(true) | None, true) => Some("MODIFIED"),
                            (WatchEventType::Modified, Some(false), true) => Some("ADDED"),
                            (WatchEventType::Modified, Some(true), false) => Some("DELETED"),
                            (WatchEventType::Deleted, _, true) => Some("DELETED"),
                            _ => None,
                        };
                        type_.map(|ty| render2.event(ty, &ev.object))
                    }
                };
                futures::future::ready(out)
            });
            let events_stream = mapped.boxed();
            body_stream = if bookmarks {
                let interval = state.bookmark_interval;
                let render3 = render.clone();
                let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
                    tokio::time::Instant::now() + interval,
                    interval,
                ))
                .map(move |_| render3.bookmark(seen.load(std::sync::atomic::Ordering::Relaxed), false));
                body_stream.chain(futures::stream::select(events_stream, ticks)).boxed()
            } else {
                body_stream.chain(events_stream).boxed()
            };
        }
    }
    let shutdown = state.shutdown.clone();
    let deadline = tokio::time::sleep(timeout);
    let limited = body_stream
        .take_until(async move {
            tokio::select! {
                _ = deadline => {},
                _ = shutdown.cancelled() => {},
            }
        })
        .map(Ok::<Bytes, Infallible>);
    let mut resp = (StatusCode::OK, Body::from_stream(limited)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}
