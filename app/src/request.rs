//! What a server function or the page shell reads from the request being served (server
//! builds only): the viewer, the CSP nonce, and the `Core` the service functions work on.
//! The server puts the `Core` into Leptos context (`server/src/http/mod.rs`), so a server
//! function is one call into `nixdeck_core::service`.

use common::{AppError, Viewer};
use nixdeck_core::Core;

/// The Content-Security-Policy nonce of a request, minted by the server's header layer
/// and stamped on the hydration script by the page shell.
#[derive(Clone, Debug, PartialEq)]
pub struct CspNonce(pub String);

/// Which web build this server serves (a hash of its wasm), set once at startup. The page
/// shell carries it and every snapshot too, so a page can tell when the dashboard has
/// moved to another build (see `socket::check_build`).
pub static WEB_BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Make the request's CSP nonce the one Leptos puts on its inline scripts.
pub fn provide_request_nonce() {
    use leptos::prelude::{provide_context, use_context};
    if let Some(nonce) =
        use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<CspNonce>().cloned())
    {
        provide_context(leptos::nonce::Nonce::from_value(nonce.0));
    }
}

/// The colour theme of the request's user (`system` without one), which the session layer
/// read for a page.
pub fn current_theme() -> protocol::api::Theme {
    use leptos::prelude::use_context;
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<protocol::api::Theme>().copied())
        .unwrap_or_default()
}

/// The viewer of the request being served, if any.
pub fn current_viewer() -> Option<Viewer> {
    use leptos::prelude::use_context;
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
}

/// Give a server function's failure the same HTTP status the REST door would use, so
/// both doors answer alike (401, 403, 404, 409, 422, …).
pub fn with_status(e: AppError) -> AppError {
    if let Some(opts) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        if let Ok(code) = http::StatusCode::from_u16(e.status()) {
            opts.set_status(code);
        }
    }
    e
}

/// The body of every server function: find the core and the viewer, run `f` (one service
/// call), and give a failure its HTTP status.
pub async fn serve<T, F, Fut>(f: F) -> Result<T, AppError>
where
    F: FnOnce(Core, Viewer) -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>>,
{
    use leptos::prelude::use_context;
    let viewer = current_viewer()
        .ok_or(AppError::Unauthorized)
        .map_err(with_status)?;
    let core = use_context::<Core>().ok_or_else(|| {
        tracing::error!("no Core in the Leptos context");
        AppError::Internal
    })?;
    f(core, viewer).await.map_err(with_status)
}
