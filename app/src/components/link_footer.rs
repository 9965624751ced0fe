//! The footer: the live link's state and the dashboard version.

use crate::store::{HostStore, LinkState};
use leptos::prelude::*;

#[component]
pub fn LinkFooter() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let state = move || match store.link.get() {
        LinkState::Connecting => ("connecting", "Connecting…".to_owned()),
        LinkState::Connected => ("connected", "Connected".to_owned()),
        LinkState::Retrying { at } => {
            let left = (at.secs() - store.now.get().secs()).max(0);
            let when = if left == 0 {
                "now".to_owned()
            } else {
                format!("in {left} s")
            };
            ("disconnected", format!("Disconnected, retrying {when}"))
        }
    };
    view! {
        <footer class="footer">
            <span class="link-state" data-state=move || state().0>
                <span class="link-dot"></span>
                {move || state().1}
            </span>
            <Show when=move || store.stale_build.get()>
                <span class="stale-build" role="status" data-testid="stale-build">
                    "nixdeck was updated. "
                    <button type="button" class="reload" on:click=move |_| {
                        let _ = window().location().reload();
                    }>"Reload"</button>
                </span>
            </Show>
            <span class="version">"nixdeck " {move || store.dashboard_version.get()}</span>
        </footer>
    }
}
