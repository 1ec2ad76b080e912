//! API errors and their wire form, `metav1.Status`, with the `reason` Kubernetes clients switch on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::StoreError;

/// One cause of an `Invalid` error: a field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, … (Kubernetes' `CauseType`).
    pub reason: String,
    /// Field path, e.g. `spec.services[0].replicas`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An error the API returns, rendered as a `metav1.Status` with the matching HTTP code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 404: the object, resource or path does not exist.
    #[error("{message}")]
    NotFound {
        /// Human-readable message, Kubernetes style (`stacks.berth.dev "web" not found`).
        message: String,
        /// Details: kind, group, name.
        details: Option<Details>,
    },
    /// 409: an object with that name already exists.
    #[error("{message}")]
    AlreadyExists {
        /// Message.
        message: String,
        /// Details.
        details: Details,
    },
    /// 409: the object changed since the client read it.
    #[error("{message}")]
    Conflict {
        /// Message.
        message: String,
        /// Details.
        details: Details,
    },
    /// 422: the object fails validation; one cause per bad field.
    #[error("{message}")]
    Invalid {
        /// Message summarizing every cause.
        message: String,
        /// Details with the causes.
        details: Details,
    },
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Message.
        message: String,
    },
    /// 401: no or an unknown bearer token.
    #[error("{message}")]
    Unauthorized {
        /// Message.
        message: String,
    },
    /// 403: the identity may not do this, or a policy (quota) forbids it.
    #[error("{message}")]
    Forbidden {
        /// Message.
        message: String,
        /// Details (with causes for quota refusals).
        details: Option<Details>,
    },
    /// 405: the verb is not supported on this path.
    #[error("{message}")]
    MethodNotAllowed {
        /// Message.
        message: String,
    },
    /// 410: the requested resourceVersion is older than the watch history.
    #[error("{message}")]
    Expired {
        /// Message.
        message: String,
    },
    /// 413: the request body is larger than the limit.
    #[error("{message}")]
    RequestEntityTooLarge {
        /// Message.
        message: String,
    },
    /// 415: the patch type is not supported for this resource.
    #[error("{message}")]
    UnsupportedMediaType {
        /// Message.
        message: String,
    },
    /// 500: the server failed; the message says what to check.
    #[error("{message}")]
    Internal {
        /// Message.
        message: String,
    },
    /// 503: the server is shutting down or not ready.
    #[error("{message}")]
    ServiceUnavailable {
        /// Message.
        message: String,
    },
}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// Object name.
    pub name: String,
    /// API group.
    pub group: String,
    /// Plural resource name (Kubernetes puts the resource in `kind` here).
    pub kind: String,
    /// Field causes.
    pub causes: Vec<Cause>,
}

impl Details {
    /// Details naming an object.
    pub fn new(group: &str, resource: &str, name: &str) -> Self {
        Self { name: name.to_string(), group: group.to_string(), kind: resource.to_string(), causes: Vec::new() }
    }
}

/// `plural.group` as Kubernetes prints it in messages (`stacks.berth.dev`, or `secrets`).
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

impl ApiError {
    /// 404 for a named object.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::NotFound {
            message: format!("{} {name:?} not found", qualified(group, resource)),
            details: Some(Details::new(group, resource, name)),
        }
    }

    /// 409 AlreadyExists for a named object.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::AlreadyExists {
            message: format!("{} {name:?} already exists", qualified(group, resource)),
            details: Details::new(group, resource, name),
        }
    }

    /// 409 Conflict for a stale write.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        Self::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your \
                 changes to the latest version and try again",
                qualified(group, resource)
            ),
            details: Details::new(group, resource, name),
        }
    }

    /// 422 with one cause per field.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let message = format!("{kind}.{group} {name:?} is invalid: {}", summary.join(", "));
        let mut details = Details::new(group, kind, name);
        details.causes = causes;
        Self::Invalid { message, details }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into() }
    }

    /// 500 with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal { message: message.into() }
    }

    /// HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Expired { .. } => StatusCode::GONE,
            Self::RequestEntityTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `metav1.StatusReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::Invalid { .. } => "Invalid",
            Self::BadRequest { .. } => "BadRequest",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::MethodNotAllowed { .. } => "MethodNotAllowed",
            Self::Expired { .. } => "Expired",
            Self::RequestEntityTooLarge { .. } => "RequestEntityTooLarge",
            Self::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            Self::Internal { .. } => "InternalError",
            Self::ServiceUnavailable { .. } => "ServiceUnavailable",
        }
    }

    fn details(&self) -> Option<&Details> {
        match self {
            Self::NotFound { details, .. } | Self::Forbidden { details, .. } => details.as_ref(),
            Self::AlreadyExists { details, .. } | Self::Conflict { details, .. } | Self::Invalid { details, .. } => {
                Some(details)
            }
            _ => None,
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(d) = self.details() {
            let mut details = json!({});
            if !d.name.is_empty() {
                details["name"] = json!(d.name);
            }
            if !d.group.is_empty() {
                details["group"] = json!(d.group);
            }
            if !d.kind.is_empty() {
                details["kind"] = json!(d.kind);
            }
            if !d.causes.is_empty() {
                details["causes"] = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
            }
            status["details"] = details;
        }
        status
    }

    /// Maps a store error onto the API error a client should see for `group/resource name`.
    pub fn from_store(err: StoreError, group: &str, resource: &str, name: &str) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::not_found(group, resource, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(group, resource, name),
            StoreError::Conflict { .. } => Self::conflict(group, resource, name),
            StoreError::Expired { requested, oldest } => Self::Expired {
                message: format!(
                    "too old resource version: {requested} ({oldest}); list again to get a current resourceVersion"
                ),
            },
            err @ (StoreError::WatcherTooSlow { .. } | StoreError::ContinueExpired { .. }) => {
                Self::Expired { message: err.to_string() }
            }
            err @ (StoreError::InvalidContinue { .. } | StoreError::InvalidObject { .. }) => {
                Self::BadRequest { message: err.to_string() }
            }
            other => Self::Internal {
                message: format!("storage error: {other}; check the server log and the data directory's disk"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let mut resp = (self.code(), body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

/// Result type of API handlers.
pub type ApiResult<T> = Result<T, ApiError>;
