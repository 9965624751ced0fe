//! The dashboard page: the first render comes from the server's snapshot (so there is no
//! empty flash), then the store is patched live by the WebSocket.

use crate::components::add_host::AddHostButton;
use crate::components::bulk_menu::BulkMenu;
use crate::components::confirm::ConfirmDialog;
use crate::components::deploy_panel::DeployPanel;
use crate::components::fleet_diff_panel::FleetDiffPanel;
use crate::components::fleet_target::FleetTarget;
use crate::components::generations::GenerationsPanel;
use crate::components::host_edit::HostEditPanel;
use crate::components::host_list::HostTable;
use crate::components::lazy_view;
use crate::components::legend::LegendButton;
use crate::components::link_footer::LinkFooter;
use crate::components::log_panel::LogPanel;
use crate::components::notices::Notices;
use crate::components::viewer::MayRun;
use crate::page_state::PageState;
use crate::store::HostStore;
use leptos::either::Either;
use leptos::prelude::*;
use protocol::messages::Snapshot;

#[component]
pub fn DashboardPage() -> impl IntoView {
    fleet_page(|| view! { <FleetView /> })
}

/// A page over the live fleet: the `HostStore` and `PageState` in context, filled from the
/// server's snapshot and kept current by the socket; `inner` is the page itself (the
/// dashboard, the host page). Generic, not `fn() -> AnyView`: erasing the dashboard's view
/// type cost its first download ≈ 0.9 kB (P5 in docs/BENCHMARKS.md, session 10).
pub fn fleet_page<V: IntoView + 'static>(
    inner: impl Fn() -> V + Copy + Send + Sync + 'static,
) -> impl IntoView {
    // On the server this is the snapshot the page renders from, and hydration reads it back
    // from the page. In the browser the fetcher runs only after a navigation inside the app
    // (from the login form, say): there the socket's first frame is the same snapshot, so
    // the page opens at once and fills from it rather than fetching the fleet twice (P4).
    let snapshot = Resource::new(
        || (),
        |_| async {
            #[cfg(feature = "hydrate")]
            return Ok::<_, common::AppError>(None);
            #[cfg(not(feature = "hydrate"))]
            crate::api::fleet_snapshot().await.map(Some)
        },
    );
    // Read here, while the request is in context on the server.
    provide_context(MayRun::from_viewer());
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading the fleet…"</p> }>
            {move || Suspend::new(async move {
                match snapshot.await {
                    Ok(s) => {
                        start_fleet(s);
                        Either::Left(inner())
                    }
                    Err(e) => Either::Right(view! { <p class="error">{e.to_string()}</p> }),
                }
            })}
        </Suspense>
    }
}

/// The store from the snapshot (or waiting for the socket's), the page's state, both in
/// context, and the link that feeds them.
fn start_fleet(snapshot: Option<Snapshot>) {
    let store = match snapshot {
        Some(snapshot) => HostStore::new(snapshot),
        None => HostStore::waiting(),
    };
    let page = PageState::new(store);
    provide_context(store);
    provide_context(page);
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        crate::socket::start(store, page);
    });
}

/// The dashboard itself, for the `HostStore` and `PageState` in context: everything but
/// the link that feeds the store, so `warm_up` can build it too.
#[component]
pub(crate) fn FleetView() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let counts = move || {
        let (online, total) = store.counts();
        match store.synced.get() {
            true => format!("{online}/{total} online"),
            false => "Loading…".to_owned(),
        }
    };

    view! {
        <header class="topbar">
            <h1 class="brand">"nixdeck"</h1>
            <span class="fleet-count">{counts}</span>
            {lazy_view(move || store.synced.get(), tag_counts)}
            <Show when=move || store.synced.get()>
                <FleetTarget />
            </Show>
            <span class="spacer"></span>
            <HostFilter />
            <BulkMenu />
            <AddHostButton />
            <LegendButton />
            <a class="account-link" href="/deploys">"Deploys"</a>
            <a class="account-link" href="/users">"Users"</a>
            <a class="account-link" href="/audit">"Audit"</a>
            <a class="account-link" href="/account">"Account"</a>
            <crate::components::theme::ThemeMenu />
            <LogoutButton />
        </header>
        <main class="fleet">
            <DeployPanel />
            <FleetDiffPanel />
            <HostTable />
            <Show when=move || !store.synced.get()>
                <p class="loading">"Loading the fleet…"</p>
            </Show>
            <Show when=move || store.synced.get() && store.ids.with(Vec::is_empty)>
                <p class="empty">"No hosts yet. Add one with POST /api/hosts and start its agent."</p>
            </Show>
            <Show when=move || page.shown.with(Vec::is_empty) && !store.ids.with(Vec::is_empty)>
                <p class="empty">"No host matches “" {move || page.filter.get()} "”."</p>
            </Show>
            <GenerationsPanel />
            <HostEditPanel />
            <LogPanel />
        </main>
        <Notices />
        <ConfirmDialog />
        <LinkFooter />
    }
}

/// Tags shown in the header; the rest are summed up as "+N more", so a fleet with many
/// tags does not push the header's controls off the line.
const HEADER_TAGS: usize = 8;

/// The header's counts per tag are a separate wasm chunk, shown once the page is hydrated:
/// in the first download they took ≈ 3–4 kB brotli of a P5 budget with < 1 kB left
/// (docs/BENCHMARKS.md).
#[lazy]
pub(crate) fn tag_counts() -> AnyView {
    view! { <TagCounts /> }.into_any()
}

/// Online / total per tag, e.g. "web 3/4"; a click sets the `tag:` filter (one click
/// handler for all the buttons, each names its tag in `data-tag`). Past the first
/// `HEADER_TAGS`, "+N more" shows the rest in place, and "fewer" hides them again.
#[component]
fn TagCounts() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let counts = Memo::new(move |_| store.tag_counts());
    let all = RwSignal::new(false);
    let on_click = move |ev: leptos::ev::MouseEvent| {
        let tag = event_target::<leptos::web_sys::Element>(&ev).get_attribute("data-tag");
        if let Some(tag) = tag {
            page.filter.set(format!("tag:{tag}"));
        }
    };
    let buttons = move || {
        let shown = if all.get() { usize::MAX } else { HEADER_TAGS };
        counts.with(|counts| {
            let more = counts.len().saturating_sub(HEADER_TAGS);
            let buttons = counts.iter().take(shown).map(|c| {
                let text = format!("{} {}/{}", c.tag, c.online, c.total);
                view! { <button type="button" class="tag-count" data-tag=c.tag.clone()>{text}</button> }
            });
            let toggle = (more > 0).then(|| {
                let text = if all.get() { "fewer".to_owned() } else { format!("+{more} more") };
                view! {
                    <button type="button" class="tag-more" aria-expanded=all.get().to_string()
                        on:click=move |_| all.update(|a| *a = !*a)>
                        {text}
                    </button>
                }
            });
            (buttons.collect_view(), toggle)
        })
    };
    view! {
        <span class="tag-counts" title="Hosts online / tagged; click one to filter" on:click=on_click>
            {buttons}
        </span>
    }
}

/// Narrows the host list (the list is windowed, so the browser's find cannot see every
/// host); "/" focuses it, Escape clears it.
#[component]
fn HostFilter() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let input = NodeRef::<leptos::html::Input>::new();
    #[cfg(feature = "hydrate")]
    {
        let handle = window_event_listener(leptos::ev::keydown, move |ev| {
            let typing = document()
                .active_element()
                .is_some_and(|e| matches!(e.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
            if ev.key() == "/" && !typing && !ev.ctrl_key() && !ev.meta_key() {
                if let Some(el) = input.get_untracked() {
                    ev.prevent_default();
                    let _ = el.focus();
                }
            }
        });
        on_cleanup(move || handle.remove());
    }
    let shown = move || {
        let (shown, total) = (page.shown.with(Vec::len), store.ids.with(Vec::len));
        (shown != total).then(|| format!("{shown} shown"))
    };
    view! {
        <input
            type="search"
            class="host-filter"
            node_ref=input
            placeholder="Filter hosts  /"
            aria-label="Filter hosts by name, type or location"
            prop:value=move || page.filter.get()
            on:input=move |ev| page.filter.set(event_target_value(&ev))
            on:keydown=move |ev| {
                if ev.key() == "Escape" {
                    page.filter.set(String::new());
                }
            }
        />
        <span class="filter-count">{shown}</span>
    }
}

#[component]
fn LogoutButton() -> impl IntoView {
    let on_click = move |_| {
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async {
            let mut req = gloo_net::http::Request::post("/api/logout");
            if let Some(token) = crate::page_meta::csrf_token() {
                req = req.header("X-CSRF-Token", &token);
            }
            let _ = req.send().await;
            let _ = window().location().set_href("/login");
        });
    };
    view! {
        <button class="logout" type="button" on:click=on_click>
            "Log out"
        </button>
    }
}
