//! Authentication: `auth = "none"` or bearer tokens mapped to identities.
//!
//! With tokens, every `/api/...` request needs `Authorization: Bearer
//! <token>` (401 otherwise); the token's identity owns the definitions it
//! creates and the runs it executes, and only their owner or an admin may
//! change, delete or terminate them; only admins and `reporter` tokens may
//! report a run's status; only admins manage clusters (403 otherwise). `/health`,
//! `/api/v6/health` (and v1's),
//! `/metrics`, `/api/openapi.json` and the UI page are public.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::config::{AuthMode, TokenConfig, TokenRole};
use crate::error::{Error, ErrorKind};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The owner name.
    pub owner: String,
    /// Whether the caller is an admin.
    pub admin: bool,
    /// Whether the caller may report run statuses (admins may too).
    pub reporter: bool,
}

/// The caller of a request: `None` when authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Identity>);

impl Caller {
    /// Fails with 403 unless the caller is `owner` or an admin (always
    /// allowed when authentication is off).
    pub fn require_owner(&self, owner: &str, action: &str) -> Result<(), Error> {
        match &self.0 {
            None => Ok(()),
            Some(id) if id.admin || id.owner == owner => Ok(()),
            Some(id) => Err(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "forbidden: '{}' may not {action}: only its owner '{owner}' or an admin may",
                    id.owner
                ),
            )),
        }
    }

    /// Fails with 403 unless the caller is an admin (or auth is off).
    pub fn require_admin(&self, action: &str) -> Result<(), Error> {
        match &self.0 {
            None => Ok(()),
            Some(id) if id.admin => Ok(()),
            Some(id) => Err(Error::new(
                ErrorKind::Forbidden,
                format!("forbidden: '{}' may not {action}: admins only", id.owner),
            )),
        }
    }

    /// Fails with 403 unless the caller may report run statuses: an admin
    /// or a `reporter` token (always allowed when authentication is off).
    pub fn require_reporter(&self, action: &str) -> Result<(), Error> {
        match &self.0 {
            None => Ok(()),
            Some(id) if id.admin || id.reporter => Ok(()),
            Some(id) => Err(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "forbidden: '{}' may not {action}: only admins and reporter tokens may",
                    id.owner
                ),
            )),
        }
    }

    /// The caller as the service's ownership checks see it. Without
    /// authentication every caller may do everything (there is no identity
    /// to check), so the anonymous caller is an admin named `api`.
    pub fn actor(&self) -> flotilla::Actor {
        match &self.0 {
            None => flotilla::Actor::admin(self.name()),
            Some(id) => flotilla::Actor {
                name: id.owner.clone(),
                admin: id.admin,
            },
        }
    }

    /// The name recorded as who did something.
    pub fn name(&self) -> &str {
        self.0.as_ref().map(|i| i.owner.as_str()).unwrap_or("api")
    }
}

/// The authentication settings in force.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    mode: AuthMode,
    tokens: HashMap<String, Identity>,
}

impl Auth {
    /// No authentication.
    pub fn none() -> Self {
        Auth::default()
    }

    /// From the configuration.
    pub fn new(mode: AuthMode, tokens: &[TokenConfig]) -> Self {
        Auth {
            mode,
            tokens: tokens
                .iter()
                .map(|t| {
                    (
                        t.token.clone(),
                        Identity {
                            owner: t.owner.clone(),
                            admin: t.effective_role() == TokenRole::Admin,
                            reporter: t.effective_role() == TokenRole::Reporter,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Resolves an `Authorization` header value.
    pub fn identify(&self, header: Option<&str>) -> Result<Caller, Error> {
        if self.mode == AuthMode::None {
            return Ok(Caller(None));
        }
        let Some(value) = header else {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "unauthorized: send 'Authorization: Bearer <token>'",
            ));
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "unauthorized: the Authorization header must be 'Bearer <token>'",
            ));
        };
        let token = token.trim();
        // Compare against every token in constant time per token, so the
        // time taken does not tell how much of a token matched.
        let mut found = None;
        for (known, id) in &self.tokens {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(id.clone());
            }
        }
        found.map(|id| Caller(Some(id))).ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthorized,
                "unauthorized: unknown or revoked token",
            )
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: resolves the caller and stores it in the request
/// extensions, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth().identify(header) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_resolve_and_unknown_ones_fail() {
        let auth = Auth::new(
            AuthMode::Tokens,
            &[TokenConfig {
                token: "alice-token".into(),
                owner: "alice".into(),
                ..TokenConfig::default()
            }],
        );
        let c = auth.identify(Some("Bearer alice-token")).expect("known");
        assert_eq!(c.name(), "alice");
        assert!(c.require_owner("alice", "terminate").is_ok());
        assert!(c.require_owner("bob", "terminate").is_err());
        assert!(c.require_admin("manage clusters").is_err());
        assert!(auth.identify(Some("Bearer nope")).is_err());
        assert!(auth.identify(None).is_err());
        assert!(auth.identify(Some("Basic xyz")).is_err());
        assert!(
            Auth::none()
                .identify(None)
                .expect("open")
                .require_admin("x")
                .is_ok()
        );
    }
}
