//! The OpenAPI 3.1 document of the REST API (`GET /api/openapi.json`, `nixdeck openapi`,
//! `docs/openapi.json`).
//!
//! Every REST route is registered here, through utoipa-axum's `OpenApiRouter`, from the
//! `#[utoipa::path]` on its handler: the router and the document are built from the one
//! list, so a route cannot be served undocumented or documented unserved. What every route
//! shares (who may call it, the errors of the session layer and of JSON bodies) is added
//! once by `conventions`, from the same rules the session layer applies.

use super::{api, metrics};
use crate::state::AppState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use protocol::api::ApiError;
use std::sync::LazyLock;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the document is served. Open without a session: it holds no secret, and tools
/// (code generators, API explorers) fetch it before they have a login.
pub const PATH: &str = "/api/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "nixdeck",
        description = "The REST API of the nixdeck dashboard. The WebSocket protocols \
                       (`/ws/agent` for agents, `/ws` for browsers) are in docs/API.md; their \
                       frames are the `AgentMessage`, `ServerMessage` and `BrowserEvent` \
                       schemas below. Every JSON error body is `ApiError`. A request \
                       authenticates with the session cookie (state-changing requests also \
                       with the session's `X-CSRF-Token` and a same-site `Origin`) or with an \
                       API token as `Authorization: Bearer`, which needs no CSRF token.",
        license(name = "MIT"),
    ),
    components(schemas(
        ApiError,
        protocol::AgentMessage,
        protocol::ServerMessage,
        protocol::BrowserEvent,
    )),
    tags(
        (name = "session", description = "Login, logout, the current session"),
        (name = "hosts", description = "The fleet's hosts and their agent tokens"),
        (name = "commands", description = "Commands on hosts, their history and logs"),
        (name = "deploy", description = "The desired state, the flake.lock PR, deploys"),
        (name = "audit", description = "Who did what"),
        (name = "account", description = "The logged-in user's own account"),
        (name = "tokens", description = "Personal API tokens, for scripts (Authorization: Bearer)"),
        (name = "notifications", description = "Notification targets, rules and delivery logs (admin)"),
        (name = "server", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

/// Every REST route with its handler and documentation. `http::router` serves what this
/// returns; `document` describes it.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::healthz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(api::login))
        .routes(routes!(api::logout))
        .routes(routes!(api::session))
        .routes(routes!(api::list_hosts, api::create_host))
        .routes(routes!(api::delete_host, api::edit_host))
        .routes(routes!(api::rotate_token))
        .routes(routes!(api::approve_host))
        .routes(routes!(api::command_history, api::run_command))
        .routes(routes!(api::stop_command))
        .routes(routes!(api::refresh_host))
        .routes(routes!(api::unlock_host))
        .routes(routes!(api::host_metrics))
        .routes(routes!(api::command_detail))
        .routes(routes!(api::command_log))
        .routes(routes!(api::bulk))
        .routes(routes!(api::desired))
        .routes(routes!(api::pending_pr))
        .routes(routes!(api::check_pr))
        .routes(routes!(api::deploy))
        .routes(routes!(api::deploy_status))
        .routes(routes!(api::deploy_history))
        .routes(routes!(api::deploy_cancel))
        .routes(routes!(api::deploy_confirm))
        .routes(routes!(api::audit))
        .routes(routes!(api::reauth))
        .routes(routes!(api::set_theme))
        .routes(routes!(api::totp_setup))
        .routes(routes!(api::totp_confirm))
        .routes(routes!(api::list_api_tokens, api::create_api_token))
        .routes(routes!(api::revoke_api_token))
        .routes(routes!(api::list_notify_targets, api::create_notify_target))
        .routes(routes!(api::delete_notify_target))
        .routes(routes!(api::test_notify_target))
        .routes(routes!(api::notify_deliveries))
        .routes(routes!(api::list_notify_rules, api::create_notify_rule))
        .routes(routes!(api::delete_notify_rule))
}

/// The document: the routes' own parts plus the shared conventions.
pub fn document() -> OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    conventions(&mut doc);
    doc
}

/// The document as served and checked in: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
}

/// Built once: the document is the same for the life of the process.
static DOCUMENT: LazyLock<String> = LazyLock::new(document_json);

#[utoipa::path(
    get, path = "/api/openapi.json", tag = "server", security(()),
    description = "This document. No session needed.",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

// The answers `conventions` adds to every route they apply to. The route reference in
// docs/API.md leaves them out (its preamble says them once).
const NO_SESSION: &str = "No session, or an expired or revoked token (`unauthorized`)";
const REFUSED: &str = "No or a wrong CSRF token, a cross-site request, a role that may not \
                       (`forbidden`), or a login too old for this (`reauth_required`)";
const MALFORMED: &str = "The body is not JSON (`malformed`)";
const NOT_JSON: &str = "The body is not sent as JSON (`unsupported_media_type`)";
const INVALID: &str = "The body does not fit the request (`invalid`)";
const TOO_LARGE: &str = "The body is over NIXDECK_MAX_BODY_KB";
const INTERNAL: &str = "An internal error; the details are in the server log";
const CONVENTIONAL: [&str; 7] = [
    NO_SESSION, REFUSED, MALFORMED, NOT_JSON, INVALID, TOO_LARGE, INTERNAL,
];

/// A route the session layer lets through without a session.
fn is_public(path: &str) -> bool {
    !path.starts_with("/api/") || path == "/api/login" || path == PATH
}

/// What the session layer and the JSON extractor (`error::JsonBody`) do for every route,
/// written once instead of on each handler: the security schemes and each operation's
/// requirement, 401 and 403 from the session layer, 400/413/415/422 for a request body, 500.
/// (Responses are a `BTreeMap`, so they come out sorted by status: the checked-in copy
/// keeps a stable order.)
fn conventions(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            super::session::COOKIE,
            "The session cookie set by POST /api/login (`__Host-nixdeck_session` over HTTPS)",
        ))),
    );
    components.add_security_scheme(
        "csrf",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "The session's CSRF token (from login or GET /api/session), needed with the \
             session cookie by POST, PUT, PATCH and DELETE; a form may send it as the \
             `csrf_token` field instead",
        ))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (POST /api/tokens): acts with the token's role, needs no \
                     CSRF token",
                ))
                .build(),
        ),
    );
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ApiError")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ];
        for (method, op) in operations {
            let Some(op) = op.as_mut() else { continue };
            let mutating = method != HttpMethod::Get;
            let add = |op: &mut Operation, status: &str, description: &str| {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description).into());
            };
            if !is_public(path) {
                let session = if mutating {
                    SecurityRequirement::new("session", Vec::<String>::new())
                        .add("csrf", Vec::<String>::new())
                } else {
                    SecurityRequirement::new("session", Vec::<String>::new())
                };
                op.security = Some(vec![
                    session,
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                ]);
                add(op, "401", NO_SESSION);
                if mutating {
                    add(op, "403", REFUSED);
                }
            }
            if op.request_body.is_some() {
                add(op, "400", MALFORMED);
                add(op, "415", NOT_JSON);
                add(op, "422", INVALID);
                // The body limit answers before any handler, in plain text.
                op.responses
                    .responses
                    .entry("413".into())
                    .or_insert_with(|| {
                        ResponseBuilder::new().description(TOO_LARGE).build().into()
                    });
            }
            if path.starts_with("/api/") && path != PATH {
                add(op, "500", INTERNAL);
            }
        }
    }
}

/// The route reference of docs/API.md, from the document: one row per operation.
pub fn markdown() -> String {
    let doc = serde_json::to_value(document()).expect("the document serialises");
    let mut out =
        String::from("| route | auth | request | responses | what |\n|---|---|---|---|---|\n");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let auth = match op["security"].as_array() {
                Some(alternatives) if alternatives.iter().any(|a| a.get("csrf").is_some()) => {
                    "session + CSRF, or bearer"
                }
                Some(alternatives) if alternatives.iter().any(|a| a.get("session").is_some()) => {
                    "session or bearer"
                }
                _ if path == "/metrics" => "loopback or bearer (see README)",
                _ => "none",
            };
            let request = op["requestBody"]["content"]
                .as_object()
                .map(|content| {
                    content
                        .iter()
                        .map(|(media, c)| format!("{} ({media})", type_name(&c["schema"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let params = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .map(|p| format!("{}?", p["name"].as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let request = match (params.is_empty(), request.is_empty()) {
                (true, _) => request,
                (false, true) => format!("query: {}", params.join(", ")),
                (false, false) => format!("query: {}; {request}", params.join(", ")),
            };
            let responses = op["responses"]
                .as_object()
                .map(|rs| {
                    rs.iter()
                        .filter(|(_, r)| {
                            !CONVENTIONAL.contains(&r["description"].as_str().unwrap_or(""))
                        })
                        .map(|(status, r)| match r["content"].as_object() {
                            Some(c) => {
                                let (media, c) = c.iter().next().expect("a content");
                                let name = type_name(&c["schema"]);
                                if media == "application/json" {
                                    format!("{status} {name}")
                                } else {
                                    format!("{status} {media}")
                                }
                            }
                            None => status.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let what = op["description"]
                .as_str()
                .or(op["summary"].as_str())
                .unwrap_or("")
                .trim_start_matches("Addition: ")
                .replace('\n', " ")
                .replace('|', "\\|");
            let mut chars = what.chars();
            let what: String = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
            // `PendingPr|null` in a table cell would end the cell.
            let (request, responses) = (request.replace('|', "\\|"), responses.replace('|', "\\|"));
            out.push_str(&format!(
                "| {} `{path}` | {auth} | {request} | {responses} | {what} |\n",
                method.to_uppercase()
            ));
        }
    }
    out
}

/// A schema as the reference names it: `Host`, `[Host]`, `PendingPr|null`, `text`.
fn type_name(schema: &serde_json::Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        return alternatives
            .iter()
            .map(type_name)
            .collect::<Vec<_>>()
            .join("|");
    }
    match schema["type"].as_str() {
        Some("array") => format!("[{}]", type_name(&schema["items"])),
        Some("null") => "null".into(),
        Some("string") => "text".into(),
        Some(other) => other.into(),
        None => "JSON".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Rewrites docs/openapi.json and the generated part of docs/API.md (the staleness test
    /// below names it when they are out of date).
    const REGENERATE: &str = "UPDATE_DOCS=1 cargo test -p nixdeck --bin nixdeck openapi";

    /// Around the generated route reference in docs/API.md; the rest of the page is written by
    /// hand.
    const BEGIN: &str = "<!-- BEGIN generated by `nixdeck openapi --markdown`; do not edit -->";
    const END: &str = "<!-- END generated -->";

    /// Replaces the generated part of docs/API.md, between the markers.
    fn with_reference(page: &str, reference: &str) -> Option<String> {
        let (before, rest) = page.split_once(BEGIN)?;
        let (_, after) = rest.split_once(END)?;
        Some(format!("{before}{BEGIN}\n{reference}{END}{after}"))
    }

    fn docs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    /// The checked-in copies (docs/openapi.json, the route reference in docs/API.md) are
    /// what this code generates. With UPDATE_DOCS=1 the test writes them instead.
    #[test]
    fn the_openapi_docs_are_up_to_date() {
        let json_path = docs().join("openapi.json");
        let api_path = docs().join("API.md");
        let json = document_json();
        let page = std::fs::read_to_string(&api_path).unwrap();
        let new_page = with_reference(&page, &markdown())
            .unwrap_or_else(|| panic!("docs/API.md lacks the markers {BEGIN} … {END}"));
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&json_path, &json).unwrap();
            std::fs::write(&api_path, &new_page).unwrap();
            return;
        }
        let old_json = std::fs::read_to_string(&json_path).unwrap_or_default();
        assert!(
            old_json == json,
            "docs/openapi.json is out of date; regenerate it with `{REGENERATE}`"
        );
        assert!(
            page == new_page,
            "the route reference in docs/API.md is out of date; regenerate it with \
             `{REGENERATE}`"
        );
    }

    /// The document is OpenAPI 3.1 and has what every client needs.
    #[test]
    fn the_document_is_openapi_3_1_with_its_security_schemes() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for scheme in ["session", "csrf", "bearer"] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
        // A wire_enum! is a string enum of its wire names.
        assert_eq!(
            doc["components"]["schemas"]["CommandStatus"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            protocol::CommandStatus::NAMES.len()
        );
        assert_eq!(
            doc["paths"]["/api/hosts/{id}"]["delete"]["security"][0]["csrf"],
            serde_json::json!([])
        );
        assert!(doc["paths"][PATH]["get"]["security"][0]
            .as_object()
            .unwrap()
            .is_empty());
    }
}
