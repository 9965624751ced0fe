//! Security headers on every response. The Content-Security-Policy allows no inline script
//! but Leptos's hydration script, which carries a per-request nonce: the layer mints it, the
//! page shell stamps it on the script (`app::request::CspNonce`), and the header names it.

use app::request::CspNonce;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;

fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The policy for a response whose inline scripts carry `nonce`.
pub fn content_security_policy(nonce: &str) -> String {
    [
        "default-src 'self'".to_owned(),
        // wasm-unsafe-eval: instantiating the app's WebAssembly, nothing else.
        format!("script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'"),
        // Theme colours are inline style attributes.
        "style-src 'self' 'unsafe-inline'".to_owned(),
        "img-src 'self' data:".to_owned(),
        "connect-src 'self'".to_owned(),
        "object-src 'none'".to_owned(),
        "base-uri 'none'".to_owned(),
        "frame-ancestors 'none'".to_owned(),
        "form-action 'self'".to_owned(),
    ]
    .join("; ")
}

fn is_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

pub async fn security_headers(
    axum::extract::State(tls): axum::extract::State<bool>,
    mut req: Request,
    next: Next,
) -> Response {
    let nonce = new_nonce();
    req.extensions_mut().insert(CspNonce(nonce.clone()));
    let path = req.uri().path();
    let api = path.starts_with("/api/");
    let asset = path.starts_with("/pkg/");
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    // Pages carry the session's CSRF token (a meta tag) and `/api` answers carry host
    // tokens, TOTP secrets, recovery codes and new passwords: none of them may stay in a
    // browser's or a proxy's cache. The wasm, JS and CSS under `/pkg/` hold no secrets and
    // stay cacheable.
    if !asset && (api || is_html(headers)) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&nonce)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_has_no_inline_script_but_the_nonce() {
        let p = content_security_policy("abc");
        assert!(p.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval'"));
        assert!(!p.contains("script-src 'self' 'unsafe-inline'"));
        for d in [
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(p.contains(d), "{d}");
        }
    }
}
