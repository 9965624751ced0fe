//! The host table, windowed (see `list_window`): only the rows in view and a margin exist,
//! with a spacer row above and below standing in for the rest. Below 768 px the same rows
//! are laid out as cards by CSS, so each host is rendered once whatever the viewport.

use crate::components::host_row::HostRow;
use crate::list_window::{spacer_style, ListWindow, ROW_ESTIMATE_PX};
use crate::page_state::PageState;
use crate::store::HostStore;
use leptos::prelude::*;

#[component]
pub fn HostTable() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    // A server-rendered page hydrates the rows it was rendered with; a page built here
    // (opened from the login form, still waiting for its snapshot) starts with the rows
    // its viewport shows, and `follow_scroll` adds the margin after the first paint.
    let first = if store.synced.get_untracked() {
        ListWindow::INITIAL
    } else {
        ListWindow::first_in(viewport_px())
    };
    let window = RwSignal::new(first);
    let row_px = RwSignal::new(ROW_ESTIMATE_PX);
    let shown = Memo::new(move |_| {
        let w = window.get();
        page.shown.with(|ids| w.slice(ids).to_vec())
    });
    let hidden = Memo::new(move |_| window.get().hidden(page.shown.with(Vec::len)));
    let above = move || spacer_style(hidden.get().0, row_px.get());
    let below = move || spacer_style(hidden.get().1, row_px.get());
    let body = NodeRef::<leptos::html::Tbody>::new();
    #[cfg(feature = "hydrate")]
    follow_scroll(page.shown, body, window, row_px);
    #[cfg(feature = "hydrate")]
    follow_sparks(store, page, shown);

    view! {
        <table class="host-table">
            <thead>
                <tr>
                    <th class="cell-select">
                        <SelectAll />
                    </th>
                    <th class="cell-status"></th>
                    <th>"Host"</th>
                    <th>"Type"</th>
                    <th>"CPU / RAM"</th>
                    <th>"Last seen"</th>
                    <th>"Agent"</th>
                    <th>"Gen"</th>
                    <th>"Status"</th>
                    <th>"Actions"</th>
                </tr>
            </thead>
            <tbody node_ref=body>
                <tr class="list-spacer" aria-hidden="true" style=above><td colspan="10"></td></tr>
                <For each=move || shown.get() key=|id| id.clone() let:id>
                    {store.host(&id).map(|host| view! { <HostRow host /> })}
                </For>
                <tr class="list-spacer" aria-hidden="true" style=below><td colspan="10"></td></tr>
            </tbody>
        </table>
    }
}

/// The sparklines of `ids` as SVG paths: the request, its answer's decoding and the path
/// building are a separate wasm chunk, out of the first download (P5).
#[cfg(feature = "hydrate")]
#[lazy]
async fn spark_paths(ids: Vec<String>) -> Option<Vec<(String, String)>> {
    let sparks = crate::api::cpu_sparklines(ids).await.ok()?;
    Some(
        sparks
            .into_iter()
            .map(|s| (s.host_id, crate::chart::sparkline_path(&s.cpu)))
            .collect(),
    )
}

/// Keep the rows' CPU sparklines (`PageState::sparks`) current with one request for the
/// rows in view, once the page's link is up: at once when rows without one appear, every 10 s while a row in view has
/// none drawn yet (its first heartbeats are on their way), else every minute (a point is a
/// minute).
#[cfg(feature = "hydrate")]
fn follow_sparks(store: HostStore, page: PageState, shown: Memo<Vec<String>>) {
    let ticks = RwSignal::new(0u32);
    if let Ok(h) = set_interval_with_handle(
        move || ticks.update(|t| *t += 1),
        std::time::Duration::from_secs(10),
    ) {
        on_cleanup(move || h.clear());
    }
    Effect::new(move |_| {
        let tick = ticks.get();
        // Only a page with a live link asks: not the login page's warm-up build of the
        // dashboard (`warm_up`), which has none and no session either.
        if !store
            .link
            .with(|l| *l == crate::store::LinkState::Connected)
        {
            return;
        }
        let ids = shown.get();
        let missing = page.sparks.with_untracked(|s| {
            ids.iter()
                .any(|id| !s.iter().any(|(h, d)| h == id && !d.is_empty()))
        });
        if !ids.is_empty() && (missing || tick.is_multiple_of(6)) {
            leptos::task::spawn_local(async move {
                if let Some(paths) = spark_paths(ids).await {
                    page.sparks.set(paths);
                }
            });
        }
    });
}

/// The browser window's height in CSS pixels (0 where there is none: the server).
fn viewport_px() -> f64 {
    #[cfg(feature = "hydrate")]
    return leptos::prelude::window()
        .inner_height()
        .ok()
        .and_then(|h| h.as_f64())
        .unwrap_or(0.0);
    #[cfg(not(feature = "hydrate"))]
    0.0
}

/// Rows added per frame while the window grows to its margin (≈ 30 ms of work each).
#[cfg(feature = "hydrate")]
const GROW_STEP: usize = 12;

/// Move the window with the page: on scroll and resize (at most once per frame) and when
/// hosts come or go. The row height is measured from the rows rendered, so the same code
/// serves the table and the card layout.
#[cfg(feature = "hydrate")]
fn follow_scroll(
    shown: Memo<Vec<String>>,
    body: NodeRef<leptos::html::Tbody>,
    window: RwSignal<ListWindow>,
    row_px: RwSignal<f64>,
) {
    let follow = Follow {
        shown,
        body,
        window,
        row_px,
        scheduled: StoredValue::new(false),
    };
    let on_scroll = window_event_listener(leptos::ev::scroll, move |_| follow.before_paint());
    let on_resize = window_event_listener(leptos::ev::resize, move |_| follow.before_paint());
    on_cleanup(move || {
        on_scroll.remove();
        on_resize.remove();
    });
    // After the first paint, and whenever hosts come or go or the filter changes.
    Effect::new(move |_| {
        shown.track();
        follow.after_paint();
    });
}

#[cfg(feature = "hydrate")]
#[derive(Clone, Copy)]
struct Follow {
    /// The ids the list shows (`PageState::shown`).
    shown: Memo<Vec<String>>,
    body: NodeRef<leptos::html::Tbody>,
    window: RwSignal<ListWindow>,
    row_px: RwSignal<f64>,
    scheduled: StoredValue<bool>,
}

#[cfg(feature = "hydrate")]
impl Follow {
    /// Measure in the next animation frame, before it is painted: a scroll shows its rows
    /// in the frame it moves.
    fn before_paint(self) {
        if !self.scheduled.get_value() {
            self.scheduled.set_value(true);
            request_animation_frame(move || self.measure());
        }
    }

    /// Measure once the next frame is painted: what is on screen first, the margin after.
    fn after_paint(self) {
        if !self.scheduled.get_value() {
            self.scheduled.set_value(true);
            request_animation_frame(move || {
                set_timeout(move || self.measure(), std::time::Duration::ZERO)
            });
        }
    }

    fn measure(self) {
        // The table may be gone by the time a frame comes (a page left, `warm_up`).
        let Some(total) = self.shown.try_with_untracked(Vec::len) else {
            return;
        };
        if self.window.is_disposed() {
            return;
        }
        self.scheduled.set_value(false);
        // Nothing shown yet (a page waiting for its snapshot): nothing to measure, and the
        // margin must not grow ahead of the first rows.
        if total == 0 {
            return;
        }
        let Some(tbody) = self.body.get_untracked() else {
            return;
        };
        if let Some(pitch) = row_pitch(&tbody) {
            if (pitch - self.row_px.get_untracked()).abs() > 0.5 {
                self.row_px.set(pitch);
            }
        }
        let scrolled = -tbody.get_bounding_client_rect().top();
        let viewport = viewport_px();
        let px = self.row_px.get_untracked();
        let target = ListWindow::around(total, scrolled, viewport, px);
        let seen = ListWindow::in_view(total, scrolled, viewport, px);
        let next = self.window.get_untracked().toward(target, seen, GROW_STEP);
        if next != self.window.get_untracked() {
            self.window.set(next);
        }
        if next != target {
            self.after_paint();
        }
    }
}

/// Distance from the first rendered row to the last, per row: includes the gaps between
/// cards, which a single row's height would not.
#[cfg(feature = "hydrate")]
fn row_pitch(tbody: &web_sys::HtmlTableSectionElement) -> Option<f64> {
    use wasm_bindgen::JsCast;
    let rows = tbody.query_selector_all("tr.host-row").ok()?;
    let n = rows.length();
    let top = |i: u32| {
        rows.item(i)
            .and_then(|r| r.dyn_into::<web_sys::Element>().ok())
            .map(|r| r.get_bounding_client_rect())
    };
    let (first, last) = (top(0)?, top(n.checked_sub(1)?)?);
    let pitch = if n >= 2 {
        (last.top() - first.top()) / f64::from(n - 1)
    } else {
        first.height()
    };
    (pitch >= 1.0).then_some(pitch)
}

/// The header checkbox: select every host shown (all, or those the filter matches), or
/// clear the selection.
#[component]
fn SelectAll() -> impl IntoView {
    let page = expect_context::<PageState>();
    let all = move || {
        page.shown.with(|shown| {
            !shown.is_empty()
                && page
                    .selection
                    .with(|s| shown.iter().all(|id| s.ids.contains(id)))
        })
    };
    let toggle = move |_| {
        if all() {
            page.selection.update(|s| s.clear());
        } else {
            let ids = page.shown.get_untracked();
            page.selection.update(|s| s.ids = ids.into_iter().collect());
        }
    };
    view! { <input type="checkbox" aria-label="Select all hosts" prop:checked=all on:click=toggle /> }
}
