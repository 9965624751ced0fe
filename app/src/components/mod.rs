//! Page components. Each derives what it shows from the `HostStore`; none writes host state.

pub mod account;
pub mod actions;
pub mod add_host;
pub mod admin;
pub mod bulk_menu;
pub mod confirm;
pub mod dashboard;
pub mod deploy_panel;
pub mod fleet_target;
pub mod host_list;
pub mod host_parts;
pub mod host_row;
pub mod link_footer;
pub mod log_panel;
pub mod login;
pub mod menu;
pub mod notices;
pub mod viewer;

use leptos::prelude::*;
use std::future::Future;

/// Fetch the dashboard's lazily loaded parts (dialogs, menus, panels) in the background,
/// once the page is up: their first use is then instant, and still works if the server
/// has become unreachable by then. The other pages' chunks load when visited.
#[cfg(feature = "hydrate")]
pub fn preload_lazy_parts() {
    let _ = (
        leptos::lazy_preload!(add_host::add_host_dialog),
        leptos::lazy_preload!(bulk_menu::bulk_menu_items),
        leptos::lazy_preload!(confirm::confirm_dialog),
        leptos::lazy_preload!(deploy_panel::deploy_panel),
        leptos::lazy_preload!(host_parts::host_menu_items),
        leptos::lazy_preload!(log_panel::log_panel),
    );
}

/// A view whose code is a separate wasm chunk (a `#[lazy]` function), fetched the first time
/// it shows (issue 7's P5). Its own, empty Suspense boundary: waiting for the chunk must not
/// send the page's boundary back to its fallback, which would rebuild the whole dashboard.
pub fn lazy_view<Fut>(load: impl Fn() -> Fut + Send + Sync + 'static) -> impl IntoView
where
    Fut: Future<Output = AnyView> + Send + 'static,
{
    let view = move || {
        // After an upgrade this build's chunks are gone: load the new build whole instead.
        #[cfg(feature = "hydrate")]
        if crate::socket::is_stale() {
            let _ = window().location().reload();
            return None;
        }
        Some(Suspend::new(load()))
    };
    view! { <Suspense fallback=|| ()>{view}</Suspense> }
}
