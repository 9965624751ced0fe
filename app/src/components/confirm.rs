//! The confirm dialog for destructive or wide actions.

use crate::components::actions;
use crate::components::lazy_view;
use crate::components::reauth::ReauthPrompt;
use crate::page_state::{Confirm, MergeDeploy, PageState};
use crate::presentation::merge_deploy_question;
use crate::store::HostStore;
use leptos::prelude::*;

fn merge_wording(m: &MergeDeploy) -> (String, String, &'static str) {
    (
        format!("Merge & Deploy PR #{}", m.pr_number),
        merge_deploy_question(m.pr_number, &m.pr_title, &m.targets),
        "Merge & Deploy",
    )
}

fn wording(confirm: &Confirm, online: usize) -> (String, String, &'static str) {
    match confirm {
        Confirm::RemoveHost(id) => (
            "Remove host".into(),
            format!("Remove {id}? Its token stops working at once and its agent is disconnected. Its command history is kept."),
            "Remove",
        ),
        Confirm::MergeDeploy(m) => merge_wording(m),
        // The dialog shows the password form instead (`ConfirmBody`).
        Confirm::Reauth(..) => (String::new(), String::new(), ""),
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

/// The dialog's code is a separate wasm chunk, fetched the first time it shows (P5).
#[component]
pub fn ConfirmDialog() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
        {lazy_view(move || page.confirm.with(Option::is_some), confirm_dialog)}
    }
}

#[lazy]
pub(crate) fn confirm_dialog() -> AnyView {
    view! { <ConfirmBody /> }.into_any()
}

#[component]
fn ConfirmBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let text = move || {
        page.confirm
            .get()
            .map(|c| wording(&c, store.counts().0))
            .unwrap_or_else(|| (String::new(), String::new(), ""))
    };
    let close = move || page.confirm.set(None);
    let proceed = move |_| {
        match page.confirm.get_untracked() {
            Some(Confirm::RemoveHost(id)) => actions::remove(store, page, id),
            Some(Confirm::Bulk(kind, ids)) => actions::bulk(page, kind, ids),
            Some(Confirm::MergeDeploy(m)) => actions::merge_deploy(page, m),
            Some(Confirm::Reauth(..)) | None => {}
        }
        close();
    };
    // Focus starts on Cancel, the safe choice, so Enter never confirms by accident and
    // Escape closes from anywhere in the dialog.
    let cancel_ref = NodeRef::<leptos::html::Button>::new();
    // After the frame: the dialog is built before its lazy boundary mounts it, and a
    // detached button cannot take focus.
    Effect::new(move |_| {
        if let Some(button) = cancel_ref.get() {
            request_animation_frame(move || {
                let _ = button.focus();
            });
        }
    });
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            close();
        }
    };
    // After the password was accepted: start the deploy that asked for it.
    let reauthed = Callback::new(move |()| {
        if let Some(Confirm::Reauth(m)) = page.confirm.get_untracked() {
            close();
            actions::merge_deploy(page, m);
        }
    });
    let reauth = move || {
        page.confirm
            .with(|c| matches!(c, Some(Confirm::Reauth(..))))
    };
    view! {
            <div class="modal-backdrop" on:click=move |_| close()></div>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title" on:keydown=on_key>
                <Show when=reauth fallback=move || view! {
                    <h2 id="confirm-title">{move || text().0}</h2>
                    <p>{move || text().1}</p>
                    <div class="modal-actions">
                        <button type="button" class="cancel" node_ref=cancel_ref on:click=move |_| close()>"Cancel"</button>
                        <button type="button" class="danger confirm" on:click=proceed>{move || text().2}</button>
                    </div>
                }>
                    <ReauthPrompt on_done=reauthed on_cancel=Callback::new(move |()| close()) />
                </Show>
            </div>
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

    #[test]
    fn merge_wording_names_the_pr_and_hosts() {
        let m = MergeDeploy {
            pr_number: 7,
            pr_title: "<b>bump</b>".into(),
            host_ids: None,
            targets: vec!["a".into()],
            head_sha: None,
        };
        let (title, body, button) = merge_wording(&m);
        assert_eq!(title, "Merge & Deploy PR #7");
        assert_eq!(
            body,
            "Merge PR #7 “<b>bump</b>” on GitHub, then pull and switch on 1 host (a)?"
        );
        assert_eq!(button, "Merge & Deploy");
    }
}
