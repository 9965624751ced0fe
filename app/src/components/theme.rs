//! The colour theme: system (the browser's `prefers-color-scheme`), light or dark, kept
//! per user on the server. The colours themselves are CSS only (style/main.css, one
//! palette per theme on `<html data-theme>`); the shell renders the attribute from the
//! user's stored choice, so a page paints in its theme from the first frame. What this
//! costs the first wasm download (P5) is one `<select>` and a handler that sets the
//! attribute; the call that stores the choice is a lazily loaded chunk.

use leptos::prelude::*;
use protocol::api::Theme;

/// The theme the page is shown in: on the server the user's stored one, in the browser
/// the one `<html data-theme>` carries (the shell's, or the login's, or the last pick).
fn shown_theme() -> Theme {
    #[cfg(feature = "ssr")]
    {
        crate::request::current_theme()
    }
    #[cfg(not(feature = "ssr"))]
    {
        document()
            .document_element()
            .and_then(|html| html.get_attribute("data-theme"))
            .and_then(|t| Theme::parse(&t))
            .unwrap_or_default()
    }
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

/// The header's theme menu: three states, the current one selected.
#[component]
pub fn ThemeSelect() -> impl IntoView {
    let current = shown_theme();
    // The dashboard's notices, for a failure to keep the pick (other pages have none).
    let page = use_context::<crate::page_state::PageState>();
    let on_change = move |ev: leptos::ev::Event| {
        let Some(theme) = Theme::parse(&event_target_value(&ev)) else {
            return;
        };
        apply_theme(theme);
        leptos::task::spawn_local(save_theme(theme, page));
    };
    view! {
        <select class="theme-select" data-testid="theme-select" aria-label="Colour theme"
            title="Colour theme (system follows your browser)" on:change=on_change>
            {Theme::ALL
                .iter()
                .map(|t| {
                    view! {
                        <option value=t.as_str() selected=*t == current>
                            {t.as_str()}
                        </option>
                    }
                })
                .collect_view()}
        </select>
    }
}

/// Store the pick. Its own wasm chunk: the server-function call is needed only when the
/// theme changes, not on the first screen (P5). A failure is a notice on the dashboard;
/// the page keeps the picked colours until it reloads.
#[lazy]
pub(crate) async fn save_theme(theme: Theme, page: Option<crate::page_state::PageState>) {
    if let Err(e) = crate::api::set_theme(theme).await {
        match page {
            Some(page) => page.notify(format!("Cannot keep the theme: {e}"), true),
            None => leptos::logging::warn!("cannot keep the theme: {e}"),
        }
    }
}
