//! What the logged-in user may do, known on both sides of hydration: the server reads the
//! request's `Viewer`, the browser the `<meta name="viewer-role">` the shell wrote from it,
//! so both render the same buttons. Only cosmetic: every service function checks the role.

use crate::presentation::may_run_commands;
use leptos::prelude::*;

/// Whether the viewer may run commands (operator or admin). Provided by the dashboard;
/// missing means no.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MayRun(pub bool);

impl MayRun {
    /// Read the viewer's role (call while rendering, where the request is in context).
    pub fn from_viewer() -> Self {
        MayRun(viewer_role().is_some_and(|role| may_run_commands(&role)))
    }

    /// The dashboard's value, or no.
    pub fn get() -> bool {
        use_context::<MayRun>().is_some_and(|m| m.0)
    }
}

#[cfg(feature = "ssr")]
fn viewer_role() -> Option<String> {
    crate::request::current_viewer().map(|v| v.role.as_str().to_owned())
}

#[cfg(all(feature = "hydrate", not(feature = "ssr")))]
fn viewer_role() -> Option<String> {
    crate::page_meta::viewer_role()
}

#[cfg(not(any(feature = "ssr", feature = "hydrate")))]
fn viewer_role() -> Option<String> {
    None
}
