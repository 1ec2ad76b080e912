//! Bearer-token authentication from a tokens file, two roles (admin, read-only), and the request
//! log line that records every request with its identity.
//!
//! The tokens file is CSV, one token per line: `token,user,role` with role `admin` or
//! `read-only`; `#` starts a comment. `berth serve` creates it with one admin token on first start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;

/// What an identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// get, list and watch only.
    ReadOnly,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name from the tokens file (or `system:anonymous`, `system:berth` in-process).
    pub user: String,
    /// Role.
    pub role: Role,
}

/// Errors reading a tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("reading tokens file {path}: {source}; check the path and its permissions")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("tokens file {path}, line {line}: {message}; lines are `token,user,role` with role admin or read-only")]
    Parse {
        /// Path.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Tokens and the identities they stand for.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_token: HashMap<String, Identity>,
}

impl Tokens {
    /// Parses the CSV text of a tokens file (`path` is only used in messages).
    pub fn parse(text: &str, path: &str) -> Result<Self, TokensError> {
        let mut by_token = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split(',').map(str::trim).collect();
            let err = |message: &str| TokensError::Parse {
                path: path.to_string(),
                line: i + 1,
                message: message.to_string(),
            };
            if parts.len() != 3 {
                return Err(err("expected 3 comma-separated fields"));
            }
            if parts[0].len() < 16 {
                return Err(err("the token is shorter than 16 characters"));
            }
            let role = match parts[2] {
                "admin" => Role::Admin,
                "read-only" | "readonly" | "viewer" => Role::ReadOnly,
                other => return Err(err(&format!("unknown role {other:?}"))),
            };
            if parts[1].is_empty() {
                return Err(err("the user name is empty"));
            }
            by_token.insert(parts[0].to_string(), Identity { user: parts[1].to_string(), role });
        }
        Ok(Self { by_token })
    }

    /// Loads a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokensError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The identity of a token.
    pub fn identify(&self, token: &str) -> Option<&Identity> {
        self.by_token.get(token)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// No tokens at all.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// A fresh random token (32 hex characters).
pub fn generate_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// No authentication: every request is admin (only for the in-process client and `--insecure`).
    Open,
    /// Bearer tokens.
    Tokens(Arc<Tokens>),
}

/// Paths anyone may read: health and version, as in Kubernetes.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Axum middleware: authenticates, authorizes by role, and logs the request with its identity.
pub async fn authenticate(State(mode): State<AuthMode>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let identity = match &mode {
        AuthMode::Open => Some(Identity { user: "system:admin".into(), role: Role::Admin }),
        AuthMode::Tokens(tokens) => {
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim);
            token.and_then(|t| tokens.identify(t).cloned())
        }
    };
    let response = match identity {
        None if is_public(&path) => next.run(req).await,
        None => ApiError::Unauthorized {
            message:
                "Unauthorized: send a valid bearer token (see the kubeconfig berth serve wrote, or the tokens file)"
                    .into(),
        }
        .into_response(),
        Some(id) => {
            let read = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
            if id.role == Role::ReadOnly && !read {
                ApiError::Forbidden {
                    message: format!(
                        "user {:?} has the read-only role and cannot {} {path}; use an admin token",
                        id.user,
                        method.as_str().to_lowercase()
                    ),
                    details: None,
                }
                .into_response()
            } else {
                req.extensions_mut().insert(id.clone());
                let resp = next.run(req).await;
                tracing::info!(
                    target: "berth::api",
                    user = %id.user,
                    method = %method,
                    path = %path,
                    code = resp.status().as_u16(),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
                return resp;
            }
        }
    };
    tracing::info!(
        target: "berth::api",
        user = "system:anonymous",
        method = %method,
        path = %path,
        code = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_roles() {
        let t = Tokens::parse(
            "# comment\n0123456789abcdef0123,alice,admin\n\nfedcba9876543210fedc,bob,read-only\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.identify("0123456789abcdef0123").unwrap().role, Role::Admin);
        assert_eq!(t.identify("fedcba9876543210fedc").unwrap().user, "bob");
        assert!(t.identify("nope").is_none());
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let err = Tokens::parse("0123456789abcdef0123,alice,admin\nshort,bob,admin\n", "t.csv").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Tokens::parse("0123456789abcdef0123,alice,root\n", "t.csv").unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
    }
}
