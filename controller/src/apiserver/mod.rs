//! The Kubernetes-compatible HTTP API over the object store.
//!
//! [`router`] builds one axum `Router` serving discovery, OpenAPI v3, CRUD/list/watch/patch on
//! every resource of the [`registry::Registry`], health and metrics. The same router serves
//! `kubectl` over TCP (wrapped by [`auth`]) and the controllers in-process through
//! `kube::Client::new(router, "default")`, with no socket in between.
//!
//! Architecture invariant: handlers never touch sled; they go through [`crate::store::Store`].

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod errors;
pub mod events_gc;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod query;
pub mod registry;
pub mod structural;
pub mod table;
pub mod views;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;

use self::admission::{AdmissionPolicy, AdmitAll};
use self::errors::{ApiError, ApiResult};
use self::objects::{Target, json_response};
use self::query::Query;
use self::registry::Registry;
use crate::metrics::Metrics;
use crate::store::Store;

/// Default request body limit (Kubernetes' is 3 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiState {
    /// The object store.
    pub store: Arc<dyn Store>,
    /// Served resources.
    pub registry: Arc<Registry>,
    /// Operator admission policy.
    pub policy: Arc<dyn AdmissionPolicy>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// Interval of watch bookmarks.
    pub bookmark_interval: Duration,
    /// Cancelled when the server shuts down: watches end so shutdown can finish.
    pub shutdown: CancellationToken,
    /// Whether the server is ready (store open, not shutting down).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The controllers' plans and logs, once they run (see [`views`]).
    pub views: views::ViewSlot,
}

impl ApiState {
    /// State with the built-in registry, no operator policy and default limits.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            registry: Arc::new(Registry::builtin()),
            policy: Arc::new(AdmitAll),
            metrics: Arc::new(Metrics::new()),
            body_limit: DEFAULT_BODY_LIMIT,
            bookmark_interval: Duration::from_secs(10),
            shutdown: CancellationToken::new(),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            views: Default::default(),
        }
    }
}

/// The API router (no authentication: wrap it with [`with_auth`] before exposing it).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/version", get(|| async { axum::Json(discovery::version()) }))
        // The Python client's VersionApi asks for `/version/`, which Kubernetes serves too.
        .route("/version/", get(|| async { axum::Json(discovery::version()) }))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_group))
        .route("/api", any(api_entry))
        .route("/api/{*rest}", any(api_entry))
        .route("/apis", any(api_entry))
        .route("/apis/{*rest}", any(api_entry))
        .fallback(not_found)
        .with_state(state)
}

/// The router with bearer-token authentication and request logging in front.
pub fn with_auth(router: Router, mode: auth::AuthMode) -> Router {
    router.layer(axum::middleware::from_fn_with_state(mode, auth::authenticate))
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(state): State<ApiState>) -> Response {
    if state.ready.load(std::sync::atomic::Ordering::Relaxed) && !state.shutdown.is_cancelled() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down or starting").into_response()
    }
}

/// `/metrics`: the Prometheus text format 0.0.4, or OpenMetrics when the scraper's `Accept`
/// names it (as Prometheus does when it prefers it).
async fn metrics(State(state): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if wants_openmetrics {
        (state.metrics.render_openmetrics(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        (state.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn not_found(req: Request) -> Response {
    ApiError::NotFound {
        message: format!("the server could not find the requested resource ({})", req.uri().path()),
        details: None,
    }
    .into_response()
}

fn json_value(v: &serde_json::Value) -> Response {
    json_response(StatusCode::OK, bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()), &[])
}

async fn openapi_index(State(state): State<ApiState>) -> Response {
    json_value(&openapi::index(&state.registry))
}

async fn openapi_group(
    State(state): State<ApiState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let parts: Vec<&str> = path.split('/').collect();
    let doc = match parts.as_slice() {
        ["api", v] => openapi::group_document(&state.registry, "", v),
        ["apis", g, v] => openapi::group_document(&state.registry, g, v),
        _ => None,
    };
    match doc {
        Some(d) => {
            let mut resp = json_value(&d);
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
            resp
        }
        None => not_found_path(&path),
    }
}

fn not_found_path(path: &str) -> Response {
    ApiError::NotFound { message: format!("the server could not find the requested resource ({path})"), details: None }
        .into_response()
}

/// A parsed API path.
enum Parsed<'a> {
    /// `/api` or `/apis`.
    Root { core: bool },
    /// `/apis/{group}`.
    Group(&'a str),
    /// `/api/v1` or `/apis/{group}/{version}`.
    GroupVersion(&'a str, &'a str),
    /// A resource path.
    Resource { group: &'a str, version: &'a str, namespace: Option<&'a str>, rest: Vec<&'a str> },
}

fn parse_path(path: &str) -> Option<Parsed<'_>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => return Some(Parsed::Root { core: true }),
        ["apis"] => return Some(Parsed::Root { core: false }),
        ["apis", g] => return Some(Parsed::Group(g)),
        ["api", v] => return Some(Parsed::GroupVersion("", v)),
        ["apis", g, v] => return Some(Parsed::GroupVersion(g, v)),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(*ns), tail.to_vec()),
        other => (None, other.to_vec()),
    };
    Some(Parsed::Resource { group, version, namespace, rest })
}

async fn api_entry(State(state): State<ApiState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let Some(parsed) = parse_path(&path) else { return not_found_path(&path) };
    let registry = state.registry.clone();
    match parsed {
        Parsed::Root { core: true } => json_value(&discovery::core_versions()),
        Parsed::Root { core: false } => json_value(&discovery::groups(&registry)),
        Parsed::Group(g) => match discovery::group(&registry, g) {
            Some(d) => json_value(&d),
            None => not_found_path(&path),
        },
        Parsed::GroupVersion(g, v) => match discovery::resources(&registry, g, v, state.views.get().is_some()) {
            Some(d) => json_value(&d),
            None => not_found_path(&path),
        },
        Parsed::Resource { group, version, namespace, rest } => {
            let (plural, name, sub) = match rest.as_slice() {
                [plural] => (*plural, None, None),
                [plural, name] => (*plural, Some(*name), None),
                [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
                _ => return not_found_path(&path),
            };
            let Some(info) = registry.find(group, version, plural) else { return not_found_path(&path) };
            if namespace.is_some() && !info.namespaced {
                return not_found_path(&path);
            }
            if let (Some(s), Some(n)) = (sub, name)
                && views::serves(&info.kind, s)
                && (namespace.is_some() || !info.namespaced)
            {
                let target = views::ViewTarget { info: &info, namespace: namespace.unwrap_or(""), name: n, sub: s };
                let resp = views::serve(&state, target, &parts.method, &parts.extensions, &query).await;
                // A followed log lasts as long as the client wants: no latency for it.
                let seconds = (s != views::LOG).then(|| started.elapsed().as_secs_f64());
                state.metrics.observe_request("get", &format!("{}/{s}", info.plural), resp.status().as_u16(), seconds);
                return resp;
            }
            if let Some(s) = sub
                && !(s == "status" && info.has_status)
            {
                return not_found_path(&path);
            }
            let target = Target {
                info: info.clone(),
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                subresource: sub.map(str::to_string),
            };
            let verb = verb_of(&parts.method, &target, &query);
            let result = dispatch(&state, &target, &parts.method, &query, &parts.headers, body).await;
            let resp = result.unwrap_or_else(IntoResponse::into_response);
            let seconds = (verb != "watch").then(|| started.elapsed().as_secs_f64());
            state.metrics.observe_request(verb, &info.plural, resp.status().as_u16(), seconds);
            resp
        }
    }
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    match (method, t.name.is_some()) {
        (&Method::GET, false) if q.watch() => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "other",
    }
}

async fn dispatch(
    state: &ApiState,
    t: &Target,
    method: &Method,
    q: &Query,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let namespaced_collection_without_ns = t.info.namespaced && t.namespace.is_none();
    let not_allowed = || ApiError::MethodNotAllowed {
        message: format!("{} is not supported on this path of {}", method.as_str(), t.info.qualified()),
    };
    match (method, t.name.is_some()) {
        (&Method::GET, false) if q.watch() => watch::watch(state, t, q, headers).await,
        (&Method::GET, false) => objects::list(state, t, q, headers).await,
        (&Method::GET, true) => objects::get(state, t, q, headers).await,
        (&Method::POST, false) if !namespaced_collection_without_ns => {
            let body = objects::read_body(body, state.body_limit).await?;
            objects::create(state, t, q, headers, &body).await
        }
        (&Method::PUT, true) => {
            let body = objects::read_body(body, state.body_limit).await?;
            objects::replace(state, t, q, headers, &body).await
        }
        (&Method::PATCH, true) => {
            let body = objects::read_body(body, state.body_limit).await?;
            objects::patch(state, t, q, headers, &body).await
        }
        (&Method::DELETE, true) if t.subresource.is_none() => {
            let body = objects::read_body(body, state.body_limit).await?;
            objects::delete(state, t, q, &body).await
        }
        (&Method::DELETE, false) if !namespaced_collection_without_ns => {
            let body = objects::read_body(body, state.body_limit).await?;
            objects::delete_collection(state, t, q, &body).await
        }
        _ => Err(not_allowed()),
    }
}
