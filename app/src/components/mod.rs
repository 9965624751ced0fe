//! Page components. Each derives what it shows from the `HostStore` and the page's own
//! `PageState`; none writes host state.

pub mod account;
pub mod actions;
pub mod add_host;
pub mod admin;
pub mod bulk_menu;
pub mod confirm;
pub mod dashboard;
pub mod deploy_panel;
pub mod deploys;
pub mod fleet_diff_panel;
pub mod fleet_target;
pub mod generations;
pub mod host_edit;
pub mod host_list;
pub mod host_page;
pub mod host_parts;
pub mod host_row;
pub mod legend;
pub mod link_footer;
pub mod log_panel;
pub mod login;
pub mod menu;
pub mod notices;
pub mod notifications;
pub mod reauth;
pub mod theme;
pub mod viewer;

use leptos::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Fetch the dashboard's lazily loaded parts (dialogs, menus, panels) in the background,
/// once the page is up: their first use is then instant, and still works if the server
/// has become unreachable by then. The other pages' chunks load when visited.
#[cfg(feature = "hydrate")]
pub fn preload_lazy_parts() {
    // One task for all (the `__preload_*` functions come with each `#[lazy]` function).
    leptos::task::spawn_local(async {
        actions::__preload_run_host_action().await;
        actions::__preload_refresh_host_now().await;
        add_host::__preload_add_host_dialog().await;
        bulk_menu::__preload_bulk_menu_items().await;
        confirm::__preload_confirm_dialog().await;
        dashboard::__preload_tag_counts().await;
        deploy_panel::__preload_deploy_panel().await;
        fleet_diff_panel::__preload_fleet_diff_panel().await;
        fleet_diff_panel::__preload_deploy_diff_panel().await;
        generations::__preload_generations_panel().await;
        host_edit::__preload_host_edit_dialog().await;
        host_parts::__preload_host_menu_items().await;
        legend::__preload_legend_panel().await;
        log_panel::__preload_log_panel().await;
        notices::__preload_notice_list().await;
        // A marker for tests: every part is here (a dashboard stopped before this point
        // leaves the rest to load on first use, with the browser's fetch errors logged).
        let _ = js_sys::Reflect::set(&window(), &"__nixdeck_preloaded".into(), &true.into());
    });
}

/// A view shown while `when` holds, whose code is a separate wasm chunk (a `#[lazy]`
/// function) fetched the first time it shows, and built in the browser only: it keeps the
/// dashboard's first wasm download ≤ 300 kB brotli (P5 in docs/BENCHMARKS.md).
/// Its own, empty Suspense boundary: waiting for the chunk must not send the page's
/// boundary back to its fallback, which would rebuild the whole dashboard.
pub fn lazy_view<Fut>(
    when: impl Fn() -> bool + Send + Sync + 'static,
    load: impl Fn() -> Fut + Send + Sync + 'static,
) -> AnyView
where
    Fut: Future<Output = AnyView> + Send + 'static,
{
    lazy_view_erased(
        Arc::new(when),
        Arc::new(move || Box::pin(load()) as LazyLoad),
    )
}

type LazyLoad = Pin<Box<dyn Future<Output = AnyView> + Send>>;

// Not generic: one boundary's code for every lazy part.
fn lazy_view_erased(
    when: Arc<dyn Fn() -> bool + Send + Sync>,
    load: Arc<dyn Fn() -> LazyLoad + Send + Sync>,
) -> AnyView {
    // Built in the browser only, once the page is hydrated (effects run only there): the
    // server renders none of it, so hydration never has to wait for a chunk.
    let store = use_context::<crate::store::HostStore>();
    let mounted = RwSignal::new(false);
    Effect::new(move |_| mounted.set(true));
    // A memo, so the part is rebuilt only when it appears, not on every change `when` reads.
    let shown = Memo::new(move |_| mounted.get() && when());
    let view = move || {
        if !shown.get() {
            return None;
        }
        // After an upgrade this build's chunks are gone: load the new build whole instead.
        if store.is_some_and(|s| s.stale_build.get_untracked()) {
            #[cfg(feature = "hydrate")]
            let _ = window().location().reload();
            return None;
        }
        Some(Suspend::new(load()))
    };
    view! { <Suspense fallback=|| ()>{view}</Suspense> }.into_any()
}
