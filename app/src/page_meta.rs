//! The page shell's `<meta>` tags (written by `shell` in lib.rs), read in the browser.

use leptos::prelude::document;

/// A `<meta name=…>` of the page shell.
fn meta(name: &str) -> Option<String> {
    document()
        .query_selector(&format!("meta[name={name}]"))
        .ok()
        .flatten()
        .and_then(|m| m.get_attribute("content"))
}

/// The page's CSRF token, from `<meta name="csrf-token">`.
pub fn csrf_token() -> Option<String> {
    meta("csrf-token")
}

/// The viewer's role, from `<meta name="viewer-role">`.
pub fn viewer_role() -> Option<String> {
    meta("viewer-role")
}

/// The web build this page's code came from, from `<meta name="nixdeck-build">`.
pub fn build() -> Option<String> {
    meta("nixdeck-build")
}
