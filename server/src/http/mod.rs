//! The HTTP surface: REST routes, sockets, Leptos pages and server functions, static
//! files, and the layers in front of them.

pub mod api;
pub mod error;
pub mod session;

use crate::hub::{agent_socket, browser_socket};
use crate::service::Services;
use crate::state::AppState;
use app::backend::SharedBackend;
use app::{shell, App};
use axum::http::{header, HeaderValue};
use axum::routing::{any, delete, get, post};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    let backend: SharedBackend = Arc::new(Services(state.clone()));
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();

    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/session", get(api::session))
        .route("/api/hosts", get(api::list_hosts).post(api::create_host))
        .route("/api/hosts/{id}", delete(api::delete_host))
        .route("/api/hosts/{id}/token", post(api::rotate_token))
        .route(
            "/api/hosts/{id}/commands",
            get(api::command_history).post(api::run_command),
        )
        .route("/api/hosts/{id}/stop", post(api::stop_command))
        .route("/api/hosts/{id}/refresh", post(api::refresh_host))
        .route("/api/hosts/{id}/unlock", post(api::unlock_host))
        .route("/api/commands/{id}/log", get(api::command_log))
        .route("/api/bulk", post(api::bulk))
        .route("/ws", get(browser_socket::handler))
        .route("/ws/agent", get(agent_socket::handler))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(backend.clone()),
            move || shell(options.clone()),
        )
        .route("/api/{*rest}", any(api::not_found))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::session_layer,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
