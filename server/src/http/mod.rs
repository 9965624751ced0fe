//! The HTTP surface: REST routes, sockets, Leptos pages and server functions, static
//! files, and the layers in front of them.

pub mod api;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod security;
pub mod session;
pub mod ws_agent;
pub mod ws_browser;

use crate::state::AppState;
use app::{shell, App};
use axum::http::StatusCode;
use axum::routing::{any, get};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    // Server functions reach the service layer through the `Core` in Leptos context.
    let core = state.core.clone();
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();

    Router::new()
        // Every REST route, as documented in /api/openapi.json (http/openapi.rs).
        .merge(openapi::routes().split_for_parts().0)
        .route("/ws", get(ws_browser::handler))
        .route("/ws/agent", get(ws_agent::handler))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(core.clone()),
            move || shell(options.clone()),
        )
        .route("/api/{*rest}", any(api::not_found))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn_with_state(
            state.core.clone(),
            session::session_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.core.config.secure(),
            security::security_headers,
        ))
        // Every body, server functions included (Leptos reads theirs without a limit).
        .layer(RequestBodyLimitLayer::new(
            (state.core.config.max_body_kb * 1024) as usize,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(state.core.config.request_timeout_s),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use clap::Parser;
    use leptos::config::LeptosOptions;
    use nixdeck_core::hub::Hub;
    use nixdeck_core::storage::Db;
    use nixdeck_core::Core;
    use std::sync::Arc;
    use tower::ServiceExt;

    /// Who may use a route.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Access {
        /// Any logged-in user (reads, and logout).
        Viewer,
        /// Operators and admins (commands).
        Operator,
        /// Admins only (hosts, tokens).
        Admin,
    }

    /// Every REST route under `/api` but login and the OpenAPI document (both open), with a
    /// sample id, and who may use it. The
    /// session layer guards all of `/api` whatever is listed; the access matrix test walks
    /// this list and every registered server function, so a route that slips through fails.
    const API_ROUTES: &[(&str, &str, Access)] = &[
        ("POST", "/api/logout", Access::Viewer),
        ("GET", "/api/session", Access::Viewer),
        ("GET", "/api/hosts", Access::Viewer),
        ("POST", "/api/hosts", Access::Admin),
        ("DELETE", "/api/hosts/nohost", Access::Admin),
        ("PATCH", "/api/hosts/nohost", Access::Operator),
        ("POST", "/api/hosts/nohost/token", Access::Admin),
        ("POST", "/api/hosts/nohost/approve", Access::Admin),
        ("GET", "/api/hosts/nohost/commands", Access::Viewer),
        ("POST", "/api/hosts/nohost/commands", Access::Operator),
        ("POST", "/api/hosts/nohost/stop", Access::Operator),
        ("POST", "/api/hosts/nohost/refresh", Access::Viewer),
        ("POST", "/api/hosts/nohost/unlock", Access::Operator),
        ("GET", "/api/hosts/nohost/metrics", Access::Viewer),
        ("GET", "/api/commands/nocommand", Access::Viewer),
        ("GET", "/api/commands/nocommand/log", Access::Viewer),
        ("POST", "/api/bulk", Access::Operator),
        ("GET", "/api/audit", Access::Admin),
        ("POST", "/api/account/totp/setup", Access::Viewer),
        ("POST", "/api/account/reauth", Access::Viewer),
        ("PUT", "/api/account/theme", Access::Viewer),
        ("POST", "/api/account/totp/confirm", Access::Viewer),
        ("GET", "/api/pending-pr", Access::Viewer),
        ("GET", "/api/desired", Access::Viewer),
        ("POST", "/api/pending-pr/check", Access::Operator),
        ("POST", "/api/deploy", Access::Operator),
        ("GET", "/api/deploy/nojob", Access::Viewer),
        ("GET", "/api/deploys", Access::Viewer),
        ("POST", "/api/deploy/nojob/cancel", Access::Operator),
        ("POST", "/api/deploy/nojob/confirm", Access::Operator),
        ("GET", "/api/tokens", Access::Viewer),
        ("GET", "/api/tokens?all=true", Access::Admin),
        ("POST", "/api/tokens", Access::Viewer),
        ("DELETE", "/api/tokens/notoken", Access::Viewer),
        ("GET", "/api/notifications/targets", Access::Admin),
        ("POST", "/api/notifications/targets", Access::Admin),
        (
            "DELETE",
            "/api/notifications/targets/notarget",
            Access::Admin,
        ),
        (
            "POST",
            "/api/notifications/targets/notarget/test",
            Access::Admin,
        ),
        (
            "GET",
            "/api/notifications/targets/notarget/deliveries",
            Access::Admin,
        ),
        ("GET", "/api/notifications/rules", Access::Admin),
        ("POST", "/api/notifications/rules", Access::Admin),
        ("DELETE", "/api/notifications/rules/norule", Access::Admin),
    ];

    async fn state(dir: &std::path::Path) -> AppState {
        state_with(dir, &["nixdeck"]).await
    }

    async fn state_with(dir: &std::path::Path, args: &[&str]) -> AppState {
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.display()))
            .await
            .unwrap();
        for (user, role) in [("admin", "admin"), ("op", "operator"), ("viewer", "viewer")] {
            let hash = nixdeck_core::service::auth::hash_password(format!("{user}-password-1"))
                .await
                .unwrap();
            db.insert_user(user, &hash, role).await.unwrap();
        }
        let config = Cli::parse_from(args).config;
        let hub = Hub::new(Vec::new(), 5, None);
        let core = Core {
            db,
            hub: hub.clone(),
            desired: Arc::new(nixdeck_core::desired::Desired::new(&config.github, hub).unwrap()),
            deploys: Arc::default(),
            unsaved: Arc::default(),
            refusals: Arc::default(),
            enroll_until: None,
            secret_key: Arc::new(nixdeck_core::secret::SecretKey::random()),
            replica: nixdeck_core::replica_name(),
            leader: nixdeck_core::service::lease::Leader::new(true),
            peers: Default::default(),
            limits: Arc::new(nixdeck_core::service::limits::Limits::new(
                config.login_failures_per_min,
            )),
            config: Arc::new(config),
        };
        AppState {
            metrics: metrics::Guard::from_config(&core.config).unwrap(),
            core,
            leptos_options: LeptosOptions::builder().output_name("nixdeck").build(),
        }
    }

    /// Every route to check: the REST list plus every registered server function.
    fn routes() -> Vec<(Method, String, Access)> {
        let mut all: Vec<_> = API_ROUTES
            .iter()
            .map(|(m, p, a)| (m.parse().unwrap(), p.to_string(), *a))
            .collect();
        let fns: Vec<_> = leptos::server_fn::axum::server_fn_paths().collect();
        assert!(fns.len() >= 9, "server functions are registered");
        for (path, method) in fns {
            let access = match path {
                p if [
                    "fleet_snapshot",
                    "refresh_host",
                    "host_metrics",
                    "command_history",
                    "command_detail",
                    "deploy_history",
                    "command_log_tail",
                    "cpu_sparklines",
                    "totp",
                    "reauthenticate",
                    "api_token",
                ]
                .iter()
                .any(|f| p.contains(f)) =>
                {
                    Access::Viewer
                }
                p if [
                    "add_host",
                    "remove_host",
                    "approve_host",
                    "rotate_host_token",
                    "user",
                    "audit_log",
                    "notify",
                ]
                .iter()
                .any(|f| p.contains(f)) =>
                {
                    Access::Admin
                }
                _ => Access::Operator,
            };
            all.push((method, path.to_owned(), access));
        }
        all
    }

    /// A well-formed body for each route, so that only access decides the answer.
    fn request_body(path: &str) -> (&'static str, &'static str) {
        const FORM: &str = "application/x-www-form-urlencoded";
        const JSON: &str = "application/json";
        let server_fn = |name: &str| path.contains(name) && !path.starts_with("/api/hosts");
        match path {
            "/api/bulk" => (JSON, r#"{"command":"pull","host_ids":["nohost"]}"#),
            "/api/deploy" => (JSON, r#"{"pr_number":1,"host_ids":["nohost"]}"#),
            "/api/hosts" => (JSON, r#"{"hostname":"newhost","host_type":"nixos"}"#),
            "/api/tokens" => (JSON, r#"{"name":"matrix","role":"viewer"}"#),
            "/api/notifications/targets" => (
                JSON,
                r#"{"name":"matrix","kind":"webhook","url":"http://127.0.0.1:9/hook"}"#,
            ),
            "/api/notifications/rules" => (
                JSON,
                r#"{"event":"host_offline","target_ids":["notarget"]}"#,
            ),
            _ if server_fn("make_api_token") => (FORM, "req[name]=matrix-fn&req[role]=viewer"),
            _ if server_fn("list_api_tokens") => (FORM, "all=false"),
            _ if server_fn("add_notify_target") => (
                JSON,
                r#"{"req":{"name":"matrix-fn","kind":"webhook","url":"http://127.0.0.1:9/h"}}"#,
            ),
            _ if server_fn("add_notify_rule") => (
                JSON,
                r#"{"req":{"event":"host_offline","target_ids":["notarget"]}}"#,
            ),
            _ if server_fn("list_notify") => (FORM, ""),
            _ if server_fn("notify") => (FORM, "id=notarget"),
            _ if server_fn("revoke_api_token") => (FORM, "id=notoken"),
            p if p.starts_with("/api/hosts/") && p.ends_with("/commands") => {
                (JSON, r#"{"command":"pull"}"#)
            }
            _ if server_fn("run_command") => (FORM, "host_id=nohost&command=pull"),
            _ if server_fn("command_history") => (FORM, "host_id=nohost&limit=5"),
            _ if server_fn("host_metrics") => (FORM, "host_id=nohost&range=1h"),
            _ if server_fn("command_detail") => (FORM, "command_id=nocommand"),
            _ if server_fn("command_log_tail") => (FORM, "command_id=nocommand"),
            _ if server_fn("cpu_sparklines") => (JSON, r#"{"host_ids":["nohost"]}"#),
            _ if server_fn("bulk_command") => (FORM, "command=pull"),
            _ if server_fn("add_host") => (FORM, "host[hostname]=newhost2&host[host_type]=nixos"),
            _ if server_fn("edit_host") => (JSON, r#"{"host_id":"nohost","edit":{"tags":[]}}"#),
            _ if server_fn("fleet_snapshot") => (FORM, ""),
            _ if path == "/api/account/theme" => (JSON, r#"{"theme":"dark"}"#),
            // A wrong password: refused with 422, after the access checks.
            _ if server_fn("start_totp_setup") => (FORM, "password=not-the-password"),
            _ if server_fn("confirm_totp") => (FORM, "code=123456"),
            _ if server_fn("list_users") => (FORM, ""),
            _ if server_fn("add_user") => (
                FORM,
                "username=newuser&role=viewer&password=new-user-password-1",
            ),
            _ if server_fn("set_user_disabled") => (FORM, "username=nouser&disabled=true"),
            _ if server_fn("reset_user_password") => (FORM, "username=nouser"),
            _ if server_fn("audit_log") => (FORM, "limit=5"),
            _ if server_fn("merge_and_deploy") => {
                (FORM, "pr_number=1&host_ids[0]=nohost&preview=false")
            }
            _ if server_fn("cancel_deploy") => (FORM, "job_id=nojob"),
            _ if server_fn("deploy_history") => (FORM, "limit=5"),
            _ if server_fn("confirm_deploy") => (FORM, "job_id=nojob"),
            _ if server_fn("check_pr_now") => (FORM, ""),
            _ if !path.starts_with("/api/hosts")
                && !path.starts_with("/api/commands")
                && !path.starts_with("/api/session")
                && !path.starts_with("/api/logout") =>
            {
                (FORM, "host_id=nohost")
            }
            _ => (JSON, "{}"),
        }
    }

    async fn call(
        app: &Router,
        method: &Method,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
    ) -> StatusCode {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", "127.0.0.1:3000");
        if let Some(c) = cookie {
            req = req.header("cookie", format!("{}={c}", session::COOKIE));
        }
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        let (content_type, body) = request_body(path);
        let req = req
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_access_matrix_holds_for_every_route_and_server_function() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app = router(state.clone());
        let routes = routes();
        let mut sessions = std::collections::HashMap::new();
        for user in ["admin", "op", "viewer"] {
            let s = nixdeck_core::service::auth::login(
                &state.core,
                user,
                &format!("{user}-password-1"),
                None,
                None,
            )
            .await
            .unwrap();
            sessions.insert(user, s);
        }

        for (method, path, access) in &routes {
            let mutating = *method != Method::GET;
            // No session: 401, whatever the route.
            assert_eq!(
                call(&app, method, path, None, None).await,
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            if mutating && !path.ends_with("/logout") {
                // A session without the CSRF token: 403.
                let admin = &sessions["admin"];
                assert_eq!(
                    call(&app, method, path, Some(&admin.cookie_value), None).await,
                    StatusCode::FORBIDDEN,
                    "{method} {path} without CSRF"
                );
            }
            if path.ends_with("/logout") {
                continue; // it would end the sessions the rest of the walk needs; checked last
            }
            for (user, allowed) in [
                ("viewer", *access == Access::Viewer),
                ("op", *access != Access::Admin),
                ("admin", true),
            ] {
                let s = &sessions[user];
                let status = call(
                    &app,
                    method,
                    path,
                    Some(&s.cookie_value),
                    Some(&s.csrf_token),
                )
                .await;
                if allowed {
                    assert_ne!(status, StatusCode::FORBIDDEN, "{user}: {method} {path}");
                    assert_ne!(status, StatusCode::UNAUTHORIZED, "{user}: {method} {path}");
                } else {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{user} must not: {method} {path}"
                    );
                }
            }
        }
        // Unknown hosts and commands are 404 for those who may ask, by either door.
        let admin = &sessions["admin"];
        let about_nothing = |p: &str| {
            p.contains("nohost")
                || p.contains("nocommand")
                || p.contains("notoken")
                || [
                    "run_command",
                    "stop_command",
                    "unlock_host",
                    "refresh_host",
                    "remove_host",
                    "command_history",
                    "command_log_tail",
                    "rotate_host_token",
                    "revoke_api_token",
                ]
                .iter()
                .any(|f| p.contains(f))
        };
        for (method, path, _) in routes.iter().filter(|(_, p, _)| about_nothing(p)) {
            let status = call(
                &app,
                method,
                path,
                Some(&admin.cookie_value),
                Some(&admin.csrf_token),
            )
            .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        }
        // Logout works for everyone, and ends the session.
        for user in ["viewer", "op", "admin"] {
            let s = &sessions[user];
            let logout = call(
                &app,
                &Method::POST,
                "/api/logout",
                Some(&s.cookie_value),
                Some(&s.csrf_token),
            )
            .await;
            assert_eq!(logout, StatusCode::NO_CONTENT);
            let after = call(
                &app,
                &Method::GET,
                "/api/session",
                Some(&s.cookie_value),
                None,
            )
            .await;
            assert_eq!(after, StatusCode::UNAUTHORIZED);
        }
        let admin = &admin_session(&state).await;
        // A path nobody registered is a JSON 404 behind the same session check.
        assert_eq!(
            call(&app, &Method::GET, "/api/nothing-here", None, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(
                &app,
                &Method::GET,
                "/api/nothing-here",
                Some(&admin.cookie_value),
                None
            )
            .await,
            StatusCode::NOT_FOUND
        );
    }

    /// A fresh session of the test's admin.
    /// Whether a documented path template (`/api/hosts/{id}`) names `path`.
    fn template_matches(template: &str, path: &str) -> bool {
        let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len()
            && t.iter()
                .zip(&p)
                .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
    }

    /// The OpenAPI document and the router cannot drift: routes are registered with their
    /// documentation (`openapi::routes`), and here every route of `API_ROUTES` is
    /// documented, every documented `/api` route is in `API_ROUTES` (so it is in the access
    /// matrix), and every documented route is really served: it answers other than the
    /// `/api/{*rest}` fallback, the page fallback or 405.
    #[tokio::test]
    async fn every_route_is_documented_and_every_documented_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app = router(state.clone());
        let doc = serde_json::to_value(openapi::document()).unwrap();
        let mut documented = Vec::new();
        for (template, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if let Ok(m) = method.to_uppercase().parse::<Method>() {
                    if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                        documented.push((m, template.clone()));
                    }
                }
            }
        }
        assert!(documented.len() > API_ROUTES.len(), "{documented:?}");
        for (method, path, _) in API_ROUTES {
            // A query (`?all=true`) is a parameter of the documented path, not a path.
            let bare = path.split('?').next().unwrap_or(path);
            assert!(
                documented
                    .iter()
                    .any(|(m, t)| m == method && template_matches(t, bare)),
                "{method} {path} is served but not in the OpenAPI document"
            );
        }
        for (method, template) in &documented {
            let open = ["/api/login", openapi::PATH].contains(&template.as_str());
            if template.starts_with("/api/") && !open {
                assert!(
                    API_ROUTES
                        .iter()
                        .any(|(m, p, _)| m == method && template_matches(template, p)),
                    "{method} {template} is documented but not in API_ROUTES (the access matrix)"
                );
            }
        }
        // Served: as the admin, with sample ids; logout last, as it ends the session.
        let admin = admin_session(&state).await;
        documented.sort_by_key(|(_, t)| t.ends_with("/logout"));
        for (method, template) in &documented {
            let path = template.replace("{id}", "nohost");
            assert!(!path.contains('{'), "a sample value for {template}");
            let mut req = request(
                method.clone(),
                &path,
                Some("127.0.0.1:40000"),
                Some(&admin),
                None,
            );
            let (content_type, body) = request_body(&path);
            req = req.header("content-type", content_type);
            let resp = send(&app, req, body).await;
            let status = resp.status();
            let html = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html"));
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template}"
            );
            assert!(
                !text.contains("no such API route") && !html,
                "{method} {template} is documented but not served: {status} {text}"
            );
        }
        // The document itself needs no session.
        let resp = send(
            &app,
            request(Method::GET, openapi::PATH, None, None, None),
            "",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        assert_eq!(body, openapi::document_json().as_bytes());
    }

    async fn admin_session(state: &AppState) -> nixdeck_core::service::auth::NewSession {
        nixdeck_core::service::auth::login(&state.core, "admin", "admin-password-1", None, None)
            .await
            .unwrap()
    }

    /// The log download is streamed a page at a time (one body chunk per page read from
    /// the database), and the bytes are those of the whole log built at once: every line,
    /// in order, past several pages.
    #[tokio::test]
    async fn a_long_log_downloads_page_by_page_complete_and_in_order() {
        use futures::StreamExt;
        use nixdeck_core::service::commands::{log_line, LOG_PAGE_LINES};
        use protocol::messages::Output;
        use protocol::{CommandKind, OutputStream, Timestamp};
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let db = &state.core.db;
        db.insert_command("c1", "web-1", CommandKind::Test, Timestamp(100), "admin")
            .await
            .unwrap();
        let total = 2 * u64::from(LOG_PAGE_LINES) + 17;
        let lines: Vec<Output> = (1..=total)
            .map(|seq| Output {
                command_id: "c1".into(),
                seq,
                stream: if seq % 3 == 0 {
                    OutputStream::Stderr
                } else {
                    OutputStream::Stdout
                },
                line: format!("line {seq} ✓"),
            })
            .collect();
        for batch in lines.chunks(512) {
            db.store_output("c1", batch, Timestamp(3_725), u64::MAX / 2)
                .await
                .unwrap();
        }
        // The log as the download built it whole before it was streamed.
        let whole: String = db
            .output_page("c1", 0, u32::MAX)
            .await
            .unwrap()
            .iter()
            .map(|l| format!("{}\n", log_line(l)))
            .collect();
        assert_eq!(whole.lines().count() as u64, total);
        assert!(whole
            .starts_with("[01:02:05] line 1 ✓\n[01:02:05] line 2 ✓\n[01:02:05] [ERR] line 3 ✓\n"));

        let app = router(state.clone());
        let viewer = nixdeck_core::service::auth::login(
            &state.core,
            "viewer",
            "viewer-password-1",
            None,
            None,
        )
        .await
        .unwrap();
        let req = Request::builder()
            .uri("/api/commands/c1/log")
            .header("host", "127.0.0.1:3000")
            .header(
                "cookie",
                format!("{}={}", session::COOKIE, viewer.cookie_value),
            )
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            resp.headers()["content-disposition"],
            "attachment; filename=\"web-1-test-100.log\""
        );
        let chunks: Vec<_> = resp
            .into_body()
            .into_data_stream()
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        assert_eq!(
            chunks.len(),
            3,
            "one chunk per page of {LOG_PAGE_LINES} lines"
        );
        assert_eq!(chunks.concat(), whole.as_bytes());
    }

    async fn login(app: &Router, origin: Option<&str>) -> axum::response::Response {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/login")
            .header("host", "127.0.0.1:3000")
            .header("content-type", "application/json");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let body = r#"{"username":"admin","password":"admin-password-1"}"#;
        app.clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap()
    }

    /// Login CSRF: another site cannot log a browser into an account of its choosing.
    #[tokio::test]
    async fn a_login_from_another_site_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await);
        let evil = login(&app, Some("http://evil.example")).await;
        assert_eq!(evil.status(), StatusCode::FORBIDDEN);
        assert!(evil.headers().get("set-cookie").is_none());
        let here = login(&app, Some("http://127.0.0.1:3000")).await;
        assert_eq!(here.status(), StatusCode::OK);
        // Scripts send no Origin at all, and still log in.
        assert_eq!(login(&app, None).await.status(), StatusCode::OK);
    }

    /// Behind an HTTPS proxy the site is secure although it serves plain HTTP itself: the
    /// `__Host-` cookie with `Secure`, HSTS, and a planted plain cookie is not a session.
    #[tokio::test]
    async fn an_https_public_url_makes_the_site_secure() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with(
            dir.path(),
            &["nixdeck", "--public-url", "https://deck.example.org"],
        )
        .await;
        let app = router(state.clone());
        let resp = login(&app, Some("https://deck.example.org")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.starts_with("__Host-nixdeck_session=") && cookie.contains("; Secure;"),
            "{cookie}"
        );
        assert!(resp.headers().contains_key("strict-transport-security"));
        let session = admin_session(&state).await;
        // The same session under the plain name (as a tossed cookie would be) is nobody.
        assert_eq!(
            call(
                &app,
                &Method::GET,
                "/api/session",
                Some(&session.cookie_value),
                None
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
        let real = Request::builder()
            .uri("/api/session")
            .header("host", "127.0.0.1:3000")
            .header(
                "cookie",
                format!("{}={}", session::TLS_COOKIE, session.cookie_value),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(real).await.unwrap().status(),
            StatusCode::OK
        );
    }

    /// Bodies are bounded for every route, server functions included (Leptos reads
    /// theirs whole): 10 MB to a server function is refused with 413 before it is read.
    #[tokio::test]
    async fn a_huge_server_function_body_gets_413() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app = router(state.clone());
        let admin = admin_session(&state).await;
        let (path, _) = leptos::server_fn::axum::server_fn_paths()
            .find(|(p, _)| p.contains("run_command"))
            .expect("the run_command server function");
        let send = |len: usize| {
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("host", "127.0.0.1:3000")
                .header(
                    "cookie",
                    format!("{}={}", session::COOKIE, admin.cookie_value),
                )
                .header("x-csrf-token", &admin.csrf_token)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", len.to_string())
                .body(Body::from(vec![b'a'; len]))
                .unwrap();
            app.clone().oneshot(req)
        };
        let huge = send(10 * 1024 * 1024).await.unwrap();
        assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A body under the limit reaches the server function (which then finds no such
        // host): the limit is not what refused it.
        let small = send(1024).await.unwrap();
        assert_ne!(small.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A request as it arrives over a connection from `peer` (the session layer reads the
    /// client's address from `ConnectInfo`, as `into_make_service_with_connect_info` puts
    /// it there), with `session`'s cookie and CSRF token.
    fn request(
        method: Method,
        path: &str,
        peer: Option<&str>,
        session: Option<&nixdeck_core::service::auth::NewSession>,
        form: Option<&str>,
    ) -> axum::http::request::Builder {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1:3000");
        if let Some(s) = session {
            req = req
                .header("cookie", format!("{}={}", session::COOKIE, s.cookie_value))
                .header("x-csrf-token", &s.csrf_token);
        }
        if form.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        if let Some(peer) = peer {
            let addr: std::net::SocketAddr = peer.parse().unwrap();
            req = req.extension(axum::extract::ConnectInfo(addr));
        }
        req
    }

    async fn send(
        app: &Router,
        req: axum::http::request::Builder,
        body: &str,
    ) -> axum::response::Response {
        app.clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap()
    }

    async fn audit_rows(state: &AppState, action: &str) -> Vec<protocol::api::AuditEntry> {
        state
            .core
            .db
            .audit(&nixdeck_core::storage::AuditFilter {
                actor: None,
                action: Some(action.to_owned()),
                target: None,
                limit: 100,
            })
            .await
            .unwrap()
    }

    /// The TOTP service functions write their audit entries; the REST handlers once wrote
    /// a second one each.
    #[tokio::test]
    async fn a_rest_totp_setup_and_confirm_are_audited_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app = router(state.clone());
        let admin = admin_session(&state).await;
        let setup = send(
            &app,
            request(
                Method::POST,
                "/api/account/totp/setup",
                None,
                Some(&admin),
                None,
            )
            .header("content-type", "application/json"),
            r#"{"password":"admin-password-1"}"#,
        )
        .await;
        assert_eq!(setup.status(), StatusCode::OK);
        assert_eq!(audit_rows(&state, "totp.setup").await.len(), 1);
        // Right or wrong (a wrong code is refused with 422), the attempt is one row.
        let confirm = send(
            &app,
            request(
                Method::POST,
                "/api/account/totp/confirm",
                None,
                Some(&admin),
                None,
            )
            .header("content-type", "application/json"),
            r#"{"code":"000000"}"#,
        )
        .await;
        assert_ne!(confirm.status(), StatusCode::FORBIDDEN);
        assert_eq!(audit_rows(&state, "totp.confirm").await.len(), 1);
    }

    /// User changes made on the Users page carry the admin's address, like every other
    /// audited action; the CLI's carry none.
    #[tokio::test]
    async fn user_changes_from_the_page_are_audited_with_the_source_address() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app = router(state.clone());
        let admin = admin_session(&state).await;
        let server_fn = |name: &str| {
            leptos::server_fn::axum::server_fn_paths()
                .find(|(p, _)| p.contains(name))
                .unwrap_or_else(|| panic!("the {name} server function"))
                .0
        };
        for (name, form) in [
            (
                "add_user",
                "username=carol&role=viewer&password=carol-password-1",
            ),
            ("set_user_disabled", "username=carol&disabled=true"),
            ("reset_user_password", "username=carol"),
        ] {
            let resp = send(
                &app,
                request(
                    Method::POST,
                    server_fn(name),
                    Some("203.0.113.7:50000"),
                    Some(&admin),
                    Some(form),
                ),
                form,
            )
            .await;
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
        }
        for action in ["user.add", "user.disable", "user.passwd"] {
            let rows = audit_rows(&state, action).await;
            assert_eq!(rows.len(), 1, "{action}");
            assert_eq!(rows[0].actor, "admin");
            assert_eq!(rows[0].ip.as_deref(), Some("203.0.113.7"), "{action}");
        }
        nixdeck_core::service::users::set_disabled(&state.core.db, "cli", "carol", false)
            .await
            .unwrap();
        let enabled = audit_rows(&state, "user.enable").await;
        assert_eq!(
            (enabled[0].actor.as_str(), enabled[0].ip.as_deref()),
            ("cli", None)
        );
    }

    async fn scrape(
        app: &Router,
        peer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut req = request(Method::GET, "/metrics", peer, None, None);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send(app, req, "").await;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// By default only this machine may scrape: another peer, a request a proxy forwarded,
    /// and a request with no known peer are refused.
    #[tokio::test]
    async fn metrics_are_for_loopback_peers_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await);
        assert_eq!(
            scrape(&app, Some("127.0.0.1:40000"), &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            scrape(&app, Some("[::1]:40000"), &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            scrape(&app, Some("192.0.2.10:40000"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            scrape(
                &app,
                Some("127.0.0.1:40000"),
                &[("x-forwarded-for", "192.0.2.10")]
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(scrape(&app, None, &[]).await.0, StatusCode::FORBIDDEN);

        let (open_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = router(state_with(open_dir.path(), &["nixdeck", "--metrics", "open"]).await);
        assert_eq!(
            scrape(&open, Some("192.0.2.10:40000"), &[]).await.0,
            StatusCode::OK
        );
        let off = router(state_with(off_dir.path(), &["nixdeck", "--metrics", "off"]).await);
        assert_eq!(
            scrape(&off, Some("127.0.0.1:40000"), &[]).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn metrics_with_a_token_file_need_that_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics-token");
        std::fs::write(&file, "scrape-token-0123456789\n").unwrap();
        let state = state_with(
            dir.path(),
            &[
                "nixdeck",
                "--metrics",
                "open",
                "--metrics-token-file",
                file.to_str().unwrap(),
            ],
        )
        .await;
        let app = router(state);
        let peer = Some("192.0.2.10:40000");
        assert_eq!(scrape(&app, peer, &[]).await.0, StatusCode::UNAUTHORIZED);
        for wrong in [
            "Bearer nope",
            "Bearer ",
            "scrape-token-0123456789",
            "Basic c2NyYXBl",
        ] {
            assert_eq!(
                scrape(&app, peer, &[("authorization", wrong)]).await.0,
                StatusCode::UNAUTHORIZED,
                "{wrong}"
            );
        }
        assert_eq!(
            scrape(
                &app,
                peer,
                &[("authorization", "Bearer scrape-token-0123456789")]
            )
            .await
            .0,
            StatusCode::OK
        );
        // An empty token file stops the start instead of letting an empty token through.
        std::fs::write(&file, "\n").unwrap();
        let config =
            Cli::parse_from(["nixdeck", "--metrics-token-file", file.to_str().unwrap()]).config;
        assert!(metrics::Guard::from_config(&config).is_err());
    }

    /// The numbers come from counts the hub keeps, and match the fleet.
    #[tokio::test]
    async fn metrics_count_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app = router(state.clone());
        let hub = &state.core.hub;
        for id in ["a", "b", "c"] {
            hub.add_host(protocol::Host::new(id, protocol::HostType::Nixos));
        }
        let register: protocol::messages::Register = serde_json::from_value(
            serde_json::json!({"hostname": "a", "host_type": "nixos", "agent_version": protocol::VERSION}),
        )
        .unwrap();
        let _link = hub.attach_agent("a", &register, None).unwrap();
        hub.remove_host("c");
        let (status, text) = scrape(&app, Some("127.0.0.1:40000"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            "nixdeck_hosts{state=\"online\"} 1",
            "nixdeck_hosts{state=\"offline\"} 1",
            "nixdeck_hosts_busy 0",
            "nixdeck_compartments{compartment=\"agent\",status=\"ok\"} 1",
            "nixdeck_desired_state_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    /// Pages (with their CSRF meta tag) and every /api answer are never cached; assets
    /// under /pkg/ may be.
    #[tokio::test]
    async fn pages_and_api_answers_are_not_stored_but_assets_are_cacheable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("site/pkg")).unwrap();
        std::fs::write(dir.path().join("site/pkg/nixdeck.css"), "body {}").unwrap();
        let mut state = state(dir.path()).await;
        state.leptos_options = LeptosOptions::builder()
            .output_name("nixdeck")
            .site_root(dir.path().join("site").to_string_lossy().to_string())
            .build();
        let app = router(state.clone());
        let admin = admin_session(&state).await;
        let cache = |resp: &axum::response::Response| {
            resp.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let no_store = Some("no-store".to_owned());
        let login_page = send(&app, request(Method::GET, "/login", None, None, None), "").await;
        assert_eq!(login_page.status(), StatusCode::OK);
        assert_eq!(cache(&login_page), no_store, "the login page");
        let page = send(
            &app,
            request(Method::GET, "/", None, Some(&admin), None),
            "",
        )
        .await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(cache(&page), no_store, "the dashboard");
        let login = send(
            &app,
            request(Method::POST, "/api/login", None, None, None)
                .header("content-type", "application/json"),
            r#"{"username":"admin","password":"admin-password-1"}"#,
        )
        .await;
        assert_eq!(login.status(), StatusCode::OK);
        assert_eq!(cache(&login), no_store, "the login answer (CSRF token)");
        let session = send(
            &app,
            request(Method::GET, "/api/session", None, Some(&admin), None),
            "",
        )
        .await;
        assert_eq!(cache(&session), no_store, "/api/session");
        let token = send(
            &app,
            request(
                Method::POST,
                "/api/account/totp/setup",
                None,
                Some(&admin),
                None,
            )
            .header("content-type", "application/json"),
            r#"{"password":"admin-password-1"}"#,
        )
        .await;
        assert_eq!(token.status(), StatusCode::OK);
        assert_eq!(cache(&token), no_store, "the TOTP secret");
        let refused = send(
            &app,
            request(Method::GET, "/api/hosts", None, None, None),
            "",
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(cache(&refused), no_store, "a refused /api request");
        let asset = send(
            &app,
            request(Method::GET, "/pkg/nixdeck.css", None, None, None),
            "",
        )
        .await;
        assert_eq!(asset.status(), StatusCode::OK);
        assert_eq!(cache(&asset), None, "assets stay cacheable");
    }
}
