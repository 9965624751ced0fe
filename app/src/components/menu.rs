//! The two `<details>` menus (bulk actions, a host's ⋮) behave alike: choosing an item
//! closes the menu, and Escape closes it and gives focus back to its button.

use leptos::html::Details;
use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;

pub fn close(menu: NodeRef<Details>) {
    if let Some(details) = menu.get_untracked() {
        details.set_open(false);
    }
}

/// A handler that latches `wanted` on: menu items are built the first time the operator
/// shows intent (hover, focus, open) and then kept. Their code is a lazily loaded wasm
/// chunk (P5); building ahead of the click means the items are there when the menu opens,
/// so a keyboard user's Enter then Tab finds them.
pub fn want<E>(wanted: RwSignal<bool>) -> impl Fn(E) + Copy {
    move |_| {
        if !wanted.get_untracked() {
            wanted.set(true);
        }
    }
}

/// Whether the menu is open now (for `toggle` handlers).
pub fn is_open(menu: NodeRef<Details>) -> bool {
    menu.get_untracked().is_some_and(|d| d.open())
}

/// A keydown handler for the menu's `<details>`.
pub fn escape_closes(menu: NodeRef<Details>) -> impl Fn(leptos::ev::KeyboardEvent) + Copy {
    move |ev| {
        if ev.key() != "Escape" {
            return;
        }
        let Some(details) = menu.get_untracked() else {
            return;
        };
        if details.open() {
            ev.prevent_default();
            details.set_open(false);
            if let Some(summary) = details
                .query_selector("summary")
                .ok()
                .flatten()
                .and_then(|e| e.dyn_into::<leptos::web_sys::HtmlElement>().ok())
            {
                let _ = summary.focus();
            }
        }
    }
}
