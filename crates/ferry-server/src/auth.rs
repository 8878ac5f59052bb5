//! The authentication and authorization seam. Every request passes [`authorize`] — one
//! middleware on the whole router — which finds the route in the route table, establishes who is
//! calling (unless the route is on the explicit public list), and asks the [`Authorizer`] whether
//! they may perform the route's [`Action`]. No route bypasses it: the route table is the router.
//!
//! Today there is one principal, the local admin, whose token is created at first start and
//! written (mode 0600) where the CLI on the same machine finds it. Later issues plug LDAP, OIDC
//! and role-based rules in behind the same two traits.

use crate::error::ApiError;
use crate::routes::find_route;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a route does, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Anyone, without credentials (health, readiness, metrics, the OpenAPI document).
    Public,
    /// Read applications, pipelines, executions.
    Read,
    /// Create, change or delete applications and pipelines.
    Write,
    /// Run pipelines and act on executions (cancel, judge, restart).
    Execute,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name, recorded as who changed or ran something.
    pub name: String,
    /// Whether the principal is an administrator.
    pub admin: bool,
}

/// Establishes who is calling from the request headers.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller, or why they could not be identified.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError>;
}

/// Decides whether a principal may perform an action.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok` to allow.
    fn authorize(&self, who: &Principal, action: Action) -> Result<(), ApiError>;
}

/// The single local administrator, identified by a bearer token.
pub struct LocalAdmin {
    token: String,
}

/// Name of the file holding the local admin token, inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

impl LocalAdmin {
    /// Uses an existing token.
    pub fn with_token(token: impl Into<String>) -> Self {
        LocalAdmin {
            token: token.into(),
        }
    }

    /// Reads the token from `data_dir/admin.token`, creating it (mode 0600, 256 random bits)
    /// on first start.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<(LocalAdmin, PathBuf)> {
        let path = data_dir.join(TOKEN_FILE);
        if let Ok(t) = std::fs::read_to_string(&path) {
            let t = t.trim().to_string();
            if t.len() >= 32 {
                return Ok((LocalAdmin { token: t }, path));
            }
        }
        std::fs::create_dir_all(data_dir)?;
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, &token)?;
        Ok((LocalAdmin { token }, path))
    }
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for LocalAdmin {
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated(
                "missing credentials: send \"Authorization: Bearer <token>\"".into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if constant_time_eq(token.as_bytes(), self.token.as_bytes()) {
            Ok(Principal {
                name: "admin".into(),
                admin: true,
            })
        } else {
            Err(ApiError::Unauthenticated("invalid token".into()))
        }
    }
}

/// Allows administrators everything and others only reads (no other principals exist yet).
pub struct AdminOnly;

impl Authorizer for AdminOnly {
    fn authorize(&self, who: &Principal, action: Action) -> Result<(), ApiError> {
        if who.admin || matches!(action, Action::Public | Action::Read) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("{} may not do this", who.name)))
        }
    }
}

/// The middleware every request passes.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let Some(route) = path.as_deref().and_then(|p| find_route(req.method(), p)) else {
        // Unknown routes fall through to the 404/405 handlers, which disclose nothing.
        return next.run(req).await;
    };
    if route.action == Action::Public {
        return next.run(req).await;
    }
    let who = match state.auth.authenticate(req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.authz.authorize(&who, route.action) {
        return e.into_response();
    }
    req.extensions_mut().insert(Arc::new(who));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, path) = LocalAdmin::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, _) = LocalAdmin::load_or_create(dir.path()).unwrap();
        assert_eq!(a.token, b.token);
        assert_eq!(a.token.len(), 64);
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let a = LocalAdmin::with_token("s3cret-token-value-that-is-long-enough");
        let mut h = HeaderMap::new();
        assert!(a.authenticate(&h).is_err());
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(a.authenticate(&h).is_err());
        h.insert(
            "authorization",
            "Bearer s3cret-token-value-that-is-long-enough"
                .parse()
                .unwrap(),
        );
        assert_eq!(a.authenticate(&h).unwrap().name, "admin");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
