//! Subresources computed by the controllers rather than read from the store: a Stack's or a
//! Lease's `plan` (the `berth.dev/plan/v1` document of [`berth_crds::plan`]) and its container
//! `log` (the newline-delimited [`berth_crds::logs::LogRecord`] stream), served under the
//! object's path like kubectl's `pods/log`:
//!
//! - `GET /apis/berth.dev/v1alpha1/namespaces/{ns}/{stacks|leases}/{name}/plan`
//! - `GET /apis/berth.dev/v1alpha1/namespaces/{ns}/{stacks|leases}/{name}/log?service=&replica=&follow=&tailLines=&sinceSeconds=&timestamps=`
//!   (for a Lease, `replica` is the instance index)
//!
//! The API server knows only the [`Views`] trait; `berth serve` fills [`ApiState::views`] once
//! the controllers' context exists (the router is built before it). Without controllers
//! (`--no-controllers`) discovery does not list them and they answer 404 saying why. Logs can hold secrets, so reading them
//! needs the admin role; a plan redacts secret values and is open to read-only tokens.
//!
//! [`SUBRESOURCES`] lists what is served, for the router and for discovery; another kind joins
//! by adding its lines there and a branch in the implementation.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_crds::logs::LogRecord;
use berth_crds::plan::PlanList;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::ApiState;
use super::auth::{Identity, Role};
use super::errors::ApiError;
use super::objects::json_response;
use super::query::Query;
use super::registry::ResourceInfo;

/// The computed subresources: (kind, subresource).
pub const SUBRESOURCES: [(&str, &str); 4] = [("Stack", PLAN), ("Stack", LOG), ("Lease", PLAN), ("Lease", LOG)];
/// The plan subresource.
pub const PLAN: &str = "plan";
/// The log subresource.
pub const LOG: &str = "log";

/// Whether `kind` has the computed subresource `sub`.
pub fn serves(kind: &str, sub: &str) -> bool {
    SUBRESOURCES.iter().any(|(k, s)| *k == kind && *s == sub)
}

/// The computed subresources of `kind`, for discovery.
pub fn subresources_of(kind: &str) -> impl Iterator<Item = &'static str> + '_ {
    SUBRESOURCES.iter().filter(move |(k, _)| *k == kind).map(|(_, s)| *s)
}

/// Which log lines to read (the query of the `log` subresource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRequest {
    /// Only this service.
    pub service: Option<String>,
    /// Only this replica (a Lease's instance index).
    pub replica: Option<i32>,
    /// Keep streaming new lines.
    pub follow: bool,
    /// Only the last N lines of each container.
    pub tail_lines: Option<u64>,
    /// Only lines of the last N seconds.
    pub since_seconds: Option<i64>,
    /// Include Docker's timestamps.
    pub timestamps: bool,
}

impl LogRequest {
    /// Parses the query (kubectl's parameter names where they exist).
    pub fn from_query(q: &Query) -> Result<Self, ViewError> {
        fn number<T: std::str::FromStr>(q: &Query, key: &str, what: &str) -> Result<Option<T>, ViewError> {
            match q.get(key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| ViewError::BadRequest(format!("{key}={v:?} is not {what}"))),
            }
        }
        let replica = number::<i32>(q, "replica", "a replica index")?;
        if replica.is_some_and(|r| r < 0) {
            return Err(ViewError::BadRequest("replica must be 0 or more".into()));
        }
        let since_seconds = number::<i64>(q, "sinceSeconds", "a number of seconds")?;
        if since_seconds.is_some_and(|s| s <= 0) {
            return Err(ViewError::BadRequest("sinceSeconds must be more than 0".into()));
        }
        Ok(Self {
            service: q.get("service").filter(|s| !s.is_empty()).map(str::to_string),
            replica,
            follow: q.flag("follow"),
            tail_lines: number::<u64>(q, "tailLines", "a number of lines")?,
            since_seconds,
            timestamps: q.flag("timestamps"),
        })
    }
}

/// Why a computed subresource cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The object, or what the request selects in it, does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The controllers cannot answer now (not running, host unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// Computing the answer failed.
    #[error("{0}")]
    Failed(String),
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::NotFound(message) => ApiError::NotFound { message, details: None },
            ViewError::BadRequest(message) => ApiError::BadRequest { message },
            ViewError::Unavailable(message) => ApiError::ServiceUnavailable { message },
            ViewError::Failed(message) => ApiError::Internal { message },
        }
    }
}

/// What the controllers compute for the API.
#[async_trait::async_trait]
pub trait Views: Send + Sync + 'static {
    /// The plan of one object (`kind` is one with a `plan` subresource).
    async fn plan(&self, kind: &str, namespace: &str, name: &str) -> Result<PlanList, ViewError>;
    /// The log records of one object's containers; errors before the first record are returned,
    /// later ones arrive as `error` records.
    async fn log(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        request: &LogRequest,
    ) -> Result<BoxStream<'static, LogRecord>, ViewError>;
}

/// Where `berth serve` puts the controllers' [`Views`] once they exist (shared by every clone of
/// the state).
pub type ViewSlot = Arc<OnceLock<Arc<dyn Views>>>;

/// The answer of a server without controllers. Not 503: the condition lasts until the server is
/// restarted differently, and kube-rs clients retry a 503 up to 15 times with growing delays (a
/// `berth plan` then hung for minutes). Discovery does not list the subresources either.
fn not_served_here(sub: &str) -> ApiError {
    let what = if sub == LOG { "read container logs" } else { "compute plans" };
    ApiError::NotFound {
        message: format!(
            "this berth server runs no controllers (berth serve --no-controllers), so it cannot {what}; \
             run `berth serve` without --no-controllers"
        ),
        details: None,
    }
}

/// The object and subresource of a request.
#[derive(Debug, Clone, Copy)]
pub struct ViewTarget<'a> {
    /// The resource.
    pub info: &'a ResourceInfo,
    /// Namespace.
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// Subresource (`plan`, `log`).
    pub sub: &'a str,
}

/// Serves `GET …/{plural}/{name}/{sub}` for a computed subresource.
pub async fn serve(
    state: &ApiState,
    target: ViewTarget<'_>,
    method: &Method,
    extensions: &http::Extensions,
    query: &Query,
) -> Response {
    serve_inner(state, target, method, extensions, query).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_inner(
    state: &ApiState,
    target: ViewTarget<'_>,
    method: &Method,
    extensions: &http::Extensions,
    query: &Query,
) -> Result<Response, ApiError> {
    let ViewTarget { info, namespace, name, sub } = target;
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed {
            message: format!("{} is not supported on {}/{sub}; use GET", method.as_str(), info.plural),
        });
    }
    if sub == LOG
        && let Some(id) = extensions.get::<Identity>()
        && id.role != Role::Admin
    {
        return Err(ApiError::Forbidden {
            message: format!(
                "user {:?} has the read-only role and cannot read container logs of {} {namespace}/{name}: \
                 logs can hold secrets, so they need an admin token",
                id.user, info.kind
            ),
            details: None,
        });
    }
    let views = state.views.get().cloned().ok_or_else(|| not_served_here(sub))?;
    match sub {
        PLAN => {
            let plan = views.plan(&info.kind, namespace, name).await?;
            let bytes = serde_json::to_vec(&plan).map_err(|e| ApiError::internal(format!("encoding the plan: {e}")))?;
            Ok(json_response(StatusCode::OK, bytes::Bytes::from(bytes), &[]))
        }
        LOG => {
            let request = LogRequest::from_query(query)?;
            let records = views.log(&info.kind, namespace, name, &request).await?;
            // Follow streams end with the server, like watches, so that shutdown can finish.
            let shutdown = state.shutdown.clone();
            let body = records.take_until(async move { shutdown.cancelled().await }).map(|r| {
                let mut line = serde_json::to_vec(&r).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
            });
            let mut resp = Response::new(Body::from_stream(body));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(resp)
        }
        other => Err(ApiError::NotFound {
            message: format!("the server could not find the requested resource ({}/{other})", info.plural),
            details: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_queries_use_kubectl_names_and_refuse_nonsense() {
        let q = Query::parse(Some("service=web&replica=1&follow=true&tailLines=5&sinceSeconds=600&timestamps=1"));
        assert_eq!(
            LogRequest::from_query(&q).unwrap(),
            LogRequest {
                service: Some("web".into()),
                replica: Some(1),
                follow: true,
                tail_lines: Some(5),
                since_seconds: Some(600),
                timestamps: true
            }
        );
        assert_eq!(LogRequest::from_query(&Query::parse(None)).unwrap(), LogRequest::default());
        for bad in ["replica=-1", "replica=x", "tailLines=-3", "sinceSeconds=0"] {
            assert!(matches!(LogRequest::from_query(&Query::parse(Some(bad))), Err(ViewError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn stacks_and_leases_have_plan_and_log() {
        assert!(serves("Stack", "plan") && serves("Stack", "log"));
        assert!(serves("Lease", "plan") && serves("Lease", "log"));
        assert!(!serves("Host", "plan") && !serves("Stack", "exec"));
        assert_eq!(subresources_of("Stack").collect::<Vec<_>>(), ["plan", "log"]);
        assert_eq!(subresources_of("Lease").collect::<Vec<_>>(), ["plan", "log"]);
        assert_eq!(subresources_of("Host").count(), 0);
    }
}
