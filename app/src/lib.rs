//! nixdeck's Leptos app, compiled for the server (`ssr`) and the browser (`hydrate`).

pub mod api;
pub mod chart;
pub mod components;
pub mod fleet_diff;
pub mod list_window;
#[cfg(feature = "hydrate")]
pub mod page_meta;
pub mod page_state;
pub mod presentation;
#[cfg(feature = "ssr")]
pub mod request;
pub mod selection;
#[cfg(feature = "hydrate")]
pub mod socket;
pub mod store;
#[cfg(feature = "hydrate")]
mod warm_up;

use components::dashboard::DashboardPage;
use leptos::prelude::*;
#[cfg(feature = "ssr")]
use leptos_meta::MetaTags;
use leptos_meta::{provide_meta_context, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    lazy_route, path, Lazy, LazyRoute, SsrMode,
};

/// The HTML document around the app; rendered on the server only.
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    request::provide_request_nonce();
    let viewer = request::current_viewer();
    // The user's colour theme, from the server, so the first paint has it (style/main.css:
    // `system` follows the browser's prefers-color-scheme).
    let theme = request::current_theme().as_str();
    view! {
        <!DOCTYPE html>
        <html lang="en" data-theme=theme>
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                {viewer.map(|v| view! {
                    <meta name="csrf-token" content=v.csrf_token />
                    // Read by the browser to show the same buttons as the server rendered.
                    <meta name="viewer-role" content=v.role.as_str() />
                })}
                <meta name="nixdeck-build" content=request::WEB_BUILD.get().cloned().unwrap_or_default() />
                <link rel="icon" href="data:," />
                <link rel="stylesheet" id="leptos" href="/pkg/nixdeck.css" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // A marker for tests and scripts: the page is hydrated and interactive.
    Effect::new(|_| {
        #[cfg(feature = "hydrate")]
        let _ = js_sys::Reflect::set(&window(), &"__nixdeck_hydrated".into(), &true.into());
    });
    view! {
        <Title text="nixdeck" />
        <Router>
            <Routes fallback=|| view! { <p class="error">"Page not found."</p> }>
                // Async: the whole page waits for the snapshot, so it arrives complete.
                <Route path=path!("/") view=DashboardPage ssr=SsrMode::Async />
                // Every other page's code is a separate wasm chunk, fetched on its first
                // visit (`cargo leptos build --split`): the dashboard's own download carries
                // only the dashboard, and stays ≤ 300 kB brotli (P5 in docs/BENCHMARKS.md).
                <Route path=path!("/login") view={Lazy::<LoginRoute>::new()} />
                <Route path=path!("/account") view={Lazy::<AccountRoute>::new()} />
                <Route path=path!("/users") view={Lazy::<UsersRoute>::new()} />
                <Route path=path!("/audit") view={Lazy::<AuditRoute>::new()} />
                <Route path=path!("/notifications") view={Lazy::<NotificationsRoute>::new()} />
                <Route path=path!("/deploys") view={Lazy::<DeploysRoute>::new()} />
                // Async like the dashboard: the page waits for the fleet's snapshot. A lazy
                // route cost the first download less than a plain route with a `#[lazy]`
                // body (307 156 B against 316 948 B, P5 in docs/BENCHMARKS.md).
                <Route path=path!("/hosts/:id") view={Lazy::<HostRoute>::new()} ssr=SsrMode::Async />
            </Routes>
        </Router>
    }
}

/// A page whose code is its own wasm chunk, fetched on its first visit, out of the
/// dashboard's first wasm download (≤ 300 kB brotli, P5 in docs/BENCHMARKS.md). The chunk
/// is named after the route's type, so each page needs a type of its own.
macro_rules! lazy_page {
    ($route:ident, $page:path) => {
        struct $route;

        #[lazy_route]
        impl LazyRoute for $route {
            fn data() -> Self {
                Self
            }

            fn view(_this: Self) -> AnyView {
                $page().into_any()
            }
        }
    };
}

lazy_page!(LoginRoute, components::login::LoginPage);
lazy_page!(AccountRoute, components::account::AccountPage);
lazy_page!(UsersRoute, components::admin::UsersPage);
lazy_page!(AuditRoute, components::admin::AuditPage);
lazy_page!(
    NotificationsRoute,
    components::notifications::NotificationsPage
);
lazy_page!(DeploysRoute, components::deploys::DeploysPage);
lazy_page!(HostRoute, components::host_page::HostPage);

/// A debug line in the browser console (ignored frames and the like).
pub fn console_debug(message: &str) {
    #[cfg(feature = "hydrate")]
    web_sys::console::debug_1(&message.into());
    #[cfg(not(feature = "hydrate"))]
    let _ = message;
}
