//! The confirm dialog for destructive actions.

use crate::components::actions;
use crate::store::{Confirm, HostStore};
use leptos::prelude::*;

#[component]
pub fn ConfirmDialog() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let text = move || {
        match store.confirm.get() {
        Some(Confirm::RemoveHost(id)) => format!(
            "Remove {id}? Its token stops working at once and its agent is disconnected. Its command history is kept."
        ),
        None => String::new(),
    }
    };
    let proceed = move |_| {
        if let Some(Confirm::RemoveHost(id)) = store.confirm.get_untracked() {
            actions::remove(store, id);
        }
        store.confirm.set(None);
    };
    view! {
        <Show when=move || store.confirm.with(Option::is_some)>
            <div class="modal-backdrop" on:click=move |_| store.confirm.set(None)></div>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title">
                <h2 id="confirm-title">"Remove host"</h2>
                <p>{text}</p>
                <div class="modal-actions">
                    <button type="button" class="cancel" on:click=move |_| store.confirm.set(None)>"Cancel"</button>
                    <button type="button" class="danger confirm" on:click=proceed>"Remove"</button>
                </div>
            </div>
        </Show>
    }
}
