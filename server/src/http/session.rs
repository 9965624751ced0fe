//! The session layer in front of every route: it resolves the session cookie into a
//! `Viewer`, sends pages without one to /login, and guards `/api`: 401 without a session,
//! 403 for a state-changing request without the session's CSRF token or from another site.
//!
//! A request to `/api` or `/ws` with `Authorization: Bearer <token>` is a script with a
//! personal API token (`service::tokens`) instead: the token alone decides (401 when it is
//! unknown, revoked or expired; a cookie beside it is never used instead), and there is no
//! CSRF or same-site check, since no cookie is involved that another site could ride on.
//! `/ws/agent` (host tokens) and `/metrics` (its token file) read their own bearer tokens.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use common::AppError;
use common::Viewer;
use nixdeck_core::secret::constant_time_eq;
use nixdeck_core::service;
use nixdeck_core::Core;
use std::net::IpAddr;

use super::error::error_response;

pub const COOKIE: &str = "nixdeck_session";
/// Over HTTPS (`Config::secure`) the cookie gets the `__Host-` prefix: Secure, no Domain,
/// Path=/, so no other host or path can set or shadow it.
pub const TLS_COOKIE: &str = "__Host-nixdeck_session";
/// Largest form body read for a `csrf_token` field.
const FORM_LIMIT: usize = 64 * 1024;

/// The raw session cookie of a request, kept so sockets can re-check the session.
#[derive(Clone, Debug)]
pub struct SessionCookie(pub String);

/// The personal API token a request came with, kept so sockets can re-check it. Its
/// `Debug` hides the value: a request's extensions must never print a secret.
#[derive(Clone)]
pub struct BearerToken(pub String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// The token of an `Authorization: Bearer` header (the scheme in any case), if the request
/// has one; another scheme is not ours and leaves the request to its cookie.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().unwrap_or("");
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Where an API token is read: the REST API and server functions (not the login), and the
/// browser socket.
fn takes_api_token(path: &str) -> bool {
    (path.starts_with("/api/") && path != "/api/login") || path == "/ws"
}

/// The client's address, as rate limits and the audit log see it (`client_ip`); put into
/// every request by the session layer. None only where no connection exists (tests that
/// call the router directly).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

/// The client of a connection from `peer`: `peer` itself, unless it is a trusted proxy;
/// then the nearest address in `X-Forwarded-For` that is not a trusted proxy (read from
/// the right: everything left of an untrusted hop could be forged by that hop).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed entry: nothing further left can be believed.
            Err(_) => break,
        }
    }
    client
}

/// The session cookie of a request. A secure site reads only the `__Host-` cookie: a plain
/// `nixdeck_session` can be planted by a sibling subdomain or over plain HTTP (cookie
/// tossing), and must never shadow the real one.
pub fn session_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    cookie_named(headers, if secure { TLS_COOKIE } else { COOKIE })
}

fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

pub fn set_cookie(value: &str, max_age_s: u64, secure: bool) -> String {
    if secure {
        format!(
            "{TLS_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_s}"
        )
    } else {
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}")
    }
}

pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request comes from a page of this site. A present `Origin` must name this host;
/// otherwise a present `Sec-Fetch-Site` must say same-origin. Clients that send neither
/// (scripts, curl) are not browsers, and still need the CSRF token.
pub fn same_site(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin_matches(origin.to_str().unwrap_or(""), headers, public_url);
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}

/// Whether `origin` is this site: the configured public URL, or the request's own Host.
pub fn origin_matches(origin: &str, headers: &HeaderMap, public_url: Option<&str>) -> bool {
    if let Some(public) = public_url {
        return origin.trim_end_matches('/') == public.trim_end_matches('/');
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest == host)
}

/// Paths that are neither pages nor API: assets, sockets and probes decide for themselves.
fn is_open_path(path: &str) -> bool {
    path.starts_with("/pkg/")
        || path == "/ws"
        || path == "/ws/agent"
        || path == "/healthz"
        || path == "/metrics"
        || path == "/favicon.ico"
}

pub async fn session_layer(State(app): State<Core>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| client_ip(c.0.ip(), req.headers(), &app.config.trusted_proxies));
    req.extensions_mut().insert(ClientIp(ip));
    if let Some(token) = bearer_token(req.headers()).filter(|_| takes_api_token(&path)) {
        let mut viewer = match service::tokens::authenticate(&app, &token).await {
            Ok(Some(v)) => v,
            Ok(None) => return error_response(&AppError::Unauthorized),
            Err(e) => return error_response(&e),
        };
        viewer.ip = ip.map(|ip| ip.to_string());
        req.extensions_mut().insert(viewer);
        req.extensions_mut().insert(BearerToken(token));
        return next.run(req).await;
    }
    let cookie = session_cookie(req.headers(), app.config.secure());
    let viewer = match &cookie {
        Some(c) => match service::auth::session(&app, c).await {
            Ok(v) => v,
            Err(e) => return error_response(&e),
        },
        None => None,
    };
    if let (Some(v), Some(c)) = (&viewer, cookie) {
        let mut v = v.clone();
        v.ip = ip.map(|ip| ip.to_string());
        req.extensions_mut().insert(v);
        req.extensions_mut().insert(SessionCookie(c));
    }

    if path.starts_with("/api/") {
        if path == "/api/login" {
            // Login CSRF: another site must not log a browser into an account of its
            // choosing, so the login too must come from a page of this site.
            if !same_site(req.headers(), app.config.public_url.as_deref()) {
                return error_response(&AppError::Forbidden("cross-site request refused".into()));
            }
            return next.run(req).await;
        }
        // The API's description holds no secret; tools fetch it before they can log in.
        if path == super::openapi::PATH && req.method() == axum::http::Method::GET {
            return next.run(req).await;
        }
        let Some(viewer) = viewer else {
            return error_response(&AppError::Unauthorized);
        };
        if is_mutating(req.method()) {
            if !same_site(req.headers(), app.config.public_url.as_deref()) {
                return error_response(&AppError::Forbidden("cross-site request refused".into()));
            }
            req = match check_csrf(req, &viewer).await {
                Ok(req) => req,
                Err(resp) => return resp,
            };
        }
        return next.run(req).await;
    }
    if is_open_path(&path) {
        return next.run(req).await;
    }
    // Pages, rendered in the user's colour theme (the shell's `<html data-theme>`). A
    // theme that cannot be read is no reason to refuse the page: it follows the browser.
    if let Some(v) = &viewer {
        let theme = service::users::theme(&app, &v.username)
            .await
            .unwrap_or_default();
        req.extensions_mut().insert(theme);
    }
    match (path.as_str(), viewer.is_some()) {
        ("/login", true) => Redirect::to("/").into_response(),
        ("/login", false) | (_, true) => next.run(req).await,
        (_, false) => Redirect::to("/login").into_response(),
    }
}

/// The CSRF token from the `X-CSRF-Token` header or, for forms, the `csrf_token` field.
async fn check_csrf(req: Request, viewer: &Viewer) -> Result<Request, Response> {
    let forbidden = || error_response(&AppError::Forbidden("missing or wrong CSRF token".into()));
    if let Some(token) = req.headers().get("x-csrf-token") {
        return if constant_time_eq(token.to_str().unwrap_or(""), &viewer.csrf_token) {
            Ok(req)
        } else {
            Err(forbidden())
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(forbidden());
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, FORM_LIMIT).await.map_err(|_| forbidden())?;
    let ok = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == "csrf_token"))
        .is_some_and(|(_, v)| constant_time_eq(&v, &viewer.csrf_token));
    if ok {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(forbidden())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookie_parsing() {
        let h = headers(&[("cookie", "a=1; nixdeck_session=abc; b=2")]);
        assert_eq!(session_cookie(&h, false).as_deref(), Some("abc"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "nixdeck_session=")]), false),
            None
        );
        assert_eq!(session_cookie(&HeaderMap::new(), false), None);
    }

    /// Cookie tossing: on a secure site a planted plain cookie is never read, whichever
    /// comes first, and the real `__Host-` one is.
    #[test]
    fn a_secure_site_reads_only_the_host_cookie() {
        let both = headers(&[(
            "cookie",
            "nixdeck_session=planted; __Host-nixdeck_session=real",
        )]);
        assert_eq!(session_cookie(&both, true).as_deref(), Some("real"));
        let planted = headers(&[("cookie", "nixdeck_session=planted")]);
        assert_eq!(session_cookie(&planted, true), None);
        assert!(set_cookie("v", 60, true).starts_with("__Host-nixdeck_session=v; Path=/; Secure;"));
        assert!(!set_cookie("v", 60, false).contains("Secure"));
    }

    #[test]
    fn origins() {
        let h = headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://127.0.0.1:3000"),
        ]);
        assert!(same_site(&h, None));
        let evil = headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!same_site(&evil, None));
        let prefix = headers(&[("host", "a.b"), ("origin", "http://a.b.evil")]);
        assert!(!same_site(&prefix, None));
        assert!(!same_site(
            &headers(&[("sec-fetch-site", "cross-site")]),
            None
        ));
        assert!(same_site(
            &headers(&[("sec-fetch-site", "same-origin")]),
            None
        ));
        assert!(same_site(&HeaderMap::new(), None));
        let proxied = headers(&[
            ("host", "internal:3000"),
            ("origin", "https://deck.example.org"),
        ]);
        assert!(same_site(&proxied, Some("https://deck.example.org/")));
    }

    #[test]
    fn the_client_address_behind_trusted_proxies_only() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.4, 10.0.0.2")]);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // Through two trusted hops: the first untrusted address from the right.
        assert_eq!(
            client_ip(proxy, &xff, &trusted),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        // From an untrusted peer the header is ignored (anyone can send it).
        let direct: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(client_ip(direct, &xff, &trusted), direct);
        // No trusted proxies configured: the peer, always.
        assert_eq!(client_ip(proxy, &xff, &[]), proxy);
        // A malformed hop stops the walk at the last believable address.
        let junk = headers(&[("x-forwarded-for", "203.0.113.9, junk, 10.0.0.3")]);
        assert_eq!(
            client_ip(proxy, &junk, &trusted),
            "10.0.0.3".parse::<IpAddr>().unwrap()
        );
    }
}
