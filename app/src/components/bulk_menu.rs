//! The bulk actions menu: a command on the selected hosts, or on every online host.

use crate::store::{Confirm, HostStore};
use leptos::prelude::*;
use protocol::CommandKind;

const BULK: [(CommandKind, &str); 4] = [
    (CommandKind::Pull, "Pull"),
    (CommandKind::Switch, "Switch"),
    (CommandKind::PullSwitch, "Pull + switch"),
    (CommandKind::Test, "Test"),
];

#[component]
pub fn BulkMenu() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let selected = move || store.selection.with(|s| s.ids.len());
    let menu = NodeRef::<leptos::html::Details>::new();
    let ask = move |confirm: Confirm| {
        store.confirm.set(Some(confirm));
        if let Some(details) = menu.get() {
            details.set_open(false);
        }
    };
    let chosen = move || {
        Some(
            store
                .selection
                .with_untracked(|s| s.ids.iter().cloned().collect()),
        )
    };
    let items = BULK.map(|(kind, label)| {
        view! {
            <button type="button" role="menuitem" data-command=kind.as_str() data-scope="selected"
                disabled=move || selected() == 0
                on:click=move |_| ask(Confirm::Bulk(kind, chosen()))>
                {label} " selected (" {selected} ")"
            </button>
            <button type="button" role="menuitem" data-command=kind.as_str() data-scope="online"
                disabled=move || store.counts().0 == 0
                on:click=move |_| ask(Confirm::Bulk(kind, None))>
                {label} " all online"
            </button>
        }
    });
    view! {
        <details class="bulk-menu" id="bulk-actions-menu" node_ref=menu>
            <summary>"Bulk actions" {move || (selected() > 0).then(|| format!(" · {}", selected()))}</summary>
            <div class="menu" role="menu">
                {items.into_iter().collect_view()}
                <button type="button" role="menuitem" data-command="clear-selection"
                    disabled=move || selected() == 0
                    on:click=move |_| store.selection.update(|s| s.clear())>
                    "Clear selection"
                </button>
            </div>
        </details>
    }
}
