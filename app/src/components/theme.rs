//! The colour theme: system (the browser's `prefers-color-scheme`), light or dark, kept
//! per user on the server. The colours themselves are CSS only (style/main.css, both
//! palettes paired with `light-dark()`, picked by `<html data-theme>`); the shell renders
//! the attribute from the user's stored choice, so a page paints in its theme from the
//! first frame, and the menu's button shows the choice through CSS too. What the first
//! wasm download (P5) pays for is a `<details>` like the bulk menu's: the items, and the
//! call that stores a pick, are a lazily loaded chunk built on the first sign of use.

use crate::components::lazy_view;
use crate::components::menu::{close, escape_closes, want};
use leptos::html::Details;
use leptos::prelude::*;
use protocol::api::Theme;

/// The theme `<html data-theme>` carries now (the shell's, the login's, or the last pick).
#[cfg(feature = "hydrate")]
fn shown_theme() -> Theme {
    document()
        .document_element()
        .and_then(|html| html.get_attribute("data-theme"))
        .and_then(|t| Theme::parse(&t))
        .unwrap_or_default()
}

/// Show the page in `theme` at once (no reload: the CSS follows the attribute).
pub fn apply_theme(theme: Theme) {
    #[cfg(feature = "hydrate")]
    if let Some(html) = document().document_element() {
        let _ = html.set_attribute("data-theme", theme.as_str());
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = theme;
}

/// The header's theme menu: three choices, the current one checked.
#[component]
pub fn ThemeMenu() -> impl IntoView {
    let menu = NodeRef::<Details>::new();
    let wanted = RwSignal::new(false);
    view! {
        <details class="theme-menu" data-testid="theme-menu" node_ref=menu on:keydown=escape_closes(menu)
            on:toggle=want(wanted) on:pointerenter=want(wanted) on:focusin=want(wanted)>
            // The current choice follows in CSS (`.theme-menu > summary::after`).
            <summary title="Colour theme (system follows your browser)">"Theme"</summary>
            <div class="menu" role="menu">
                {lazy_view(move || wanted.get(), move || theme_menu_items(menu))}
            </div>
        </details>
    }
}

#[lazy]
pub(crate) fn theme_menu_items(menu: NodeRef<Details>) -> AnyView {
    view! { <ThemeMenuItems menu /> }.into_any()
}

#[component]
fn ThemeMenuItems(menu: NodeRef<Details>) -> impl IntoView {
    // The dashboard's notices, for a failure to keep the pick (other pages have none).
    let page = use_context::<crate::page_state::PageState>();
    #[cfg(feature = "hydrate")]
    let shown = RwSignal::new(shown_theme());
    #[cfg(not(feature = "hydrate"))]
    let shown = RwSignal::new(Theme::default());
    let pick = move |theme: Theme| {
        apply_theme(theme);
        shown.set(theme);
        close(menu);
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            if let Err(e) = put_theme(theme).await {
                // The page keeps the picked colours until it reloads.
                match page {
                    Some(page) => page.notify(format!("Cannot keep the theme: {e}"), true),
                    None => leptos::logging::warn!("cannot keep the theme: {e}"),
                }
            }
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = page;
    };
    Theme::ALL.map(|theme| {
        view! {
            <button role="menuitemradio" data-theme-choice=theme.as_str()
                aria-checked=move || if shown.get() == theme { "true" } else { "false" }
                on:click=move |_| pick(theme)>
                {match theme {
                    Theme::System => "System (follow the browser)",
                    Theme::Light => "Light",
                    Theme::Dark => "Dark",
                }}
            </button>
        }
    })
}

/// `PUT /api/account/theme`, the REST door, as the login form uses `POST /api/login`: a
/// server function for this one call cost the first download ~14 kB (P5, docs/BENCHMARKS.md).
#[cfg(feature = "hydrate")]
async fn put_theme(theme: Theme) -> Result<(), String> {
    let token = crate::page_meta::csrf_token().unwrap_or_default();
    let resp = gloo_net::http::Request::put("/api/account/theme")
        .header("X-CSRF-Token", &token)
        .json(&protocol::api::ThemeSetting { theme })
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.ok() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(serde_json::from_str::<protocol::api::ApiError>(&text)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("HTTP {}", resp.status())))
}
