//! Security headers on every response.
//!
//! - `Content-Security-Policy`: scripts, styles, images and API calls from
//!   this server only; no inline scripts or styles, no plugins, no framing,
//!   no `<base>` rewriting, forms post only here. The UI is one shell page
//!   plus `/ui/app.js` and `/ui/app.css`, which fits.
//! - `X-Content-Type-Options: nosniff`: a log served as text is never run
//!   as a script.
//! - `Referrer-Policy: no-referrer`: run ids and filters in page URLs do not
//!   leak to other sites.
//! - `X-Frame-Options: DENY`, for browsers without `frame-ancestors`.
//!
//! The UI never puts a token in a URL: it sends `Authorization: Bearer`
//! (live logs are read with `fetch`, not `EventSource`), and the server
//! reads tokens from that header only.

use axum::http::HeaderValue;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::Response;

/// The policy: only this server's own scripts and styles.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// Middleware (`map_response`): adds the headers unless a handler set them.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (X_FRAME_OPTIONS, "DENY"),
    ] {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}
