//! The confirm dialog for destructive or wide actions.

use crate::components::actions;
use crate::store::{Confirm, HostStore};
use leptos::prelude::*;

fn wording(confirm: &Confirm, online: usize) -> (String, String, &'static str) {
    match confirm {
        Confirm::RemoveHost(id) => (
            "Remove host".into(),
            format!("Remove {id}? Its token stops working at once and its agent is disconnected. Its command history is kept."),
            "Remove",
        ),
        Confirm::Bulk(kind, ids) => {
            let count = ids.as_ref().map_or(online, Vec::len);
            let whom = if ids.is_none() { "online host" } else { "selected host" };
            let plural = if count == 1 { "" } else { "s" };
            (
                format!("{} on {count} host{plural}", kind.as_str()),
                format!("Run {} on {count} {whom}{plural}?", kind.as_str()),
                "Run",
            )
        }
    }
}

#[component]
pub fn ConfirmDialog() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let text = move || {
        store
            .confirm
            .get()
            .map(|c| wording(&c, store.counts().0))
            .unwrap_or_else(|| (String::new(), String::new(), ""))
    };
    let proceed = move |_| {
        match store.confirm.get_untracked() {
            Some(Confirm::RemoveHost(id)) => actions::remove(store, id),
            Some(Confirm::Bulk(kind, ids)) => actions::bulk(store, kind, ids),
            None => {}
        }
        store.confirm.set(None);
    };
    view! {
        <Show when=move || store.confirm.with(Option::is_some)>
            <div class="modal-backdrop" on:click=move |_| store.confirm.set(None)></div>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title">
                <h2 id="confirm-title">{move || text().0}</h2>
                <p>{move || text().1}</p>
                <div class="modal-actions">
                    <button type="button" class="cancel" on:click=move |_| store.confirm.set(None)>"Cancel"</button>
                    <button type="button" class="danger confirm" on:click=proceed>{move || text().2}</button>
                </div>
            </div>
        </Show>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::CommandKind;

    #[test]
    fn bulk_wording_counts_hosts() {
        let (title, body, _) = wording(&Confirm::Bulk(CommandKind::Pull, None), 3);
        assert_eq!(title, "pull on 3 hosts");
        assert_eq!(body, "Run pull on 3 online hosts?");
        let (_, body, _) = wording(&Confirm::Bulk(CommandKind::Test, Some(vec!["a".into()])), 3);
        assert_eq!(body, "Run test on 1 selected host?");
    }
}
