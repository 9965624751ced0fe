//! The composition root's state: the core (what the service functions work on), the
//! Leptos options and who may read /metrics. Axum handlers take whichever part they need
//! (`State<Core>`); server functions find the `Core` in Leptos context (`http::router`).

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use nixdeck_core::Core;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub core: Core,
    pub leptos_options: LeptosOptions,
    pub metrics: crate::http::metrics::Guard,
}
