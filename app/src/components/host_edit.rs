//! The Edit host dialog (⋮ → Edit host…): location, device type, colour and the tags set
//! in the dashboard. The agent's own tags are shown but not editable: they change in its
//! configuration. Saved through `edit_host`; every open page sees the change from the hub.

use crate::api::edit_host;
use crate::components::lazy_view;
use crate::page_state::PageState;
use crate::store::HostStore;
use common::AppError;
use leptos::prelude::*;
use protocol::api::HostEdit;
use protocol::{is_valid_tag, is_valid_theme_color, Host};

/// Tags as typed: separated by spaces or commas, lower-cased; the first one that is not a
/// tag is named in the error (the server checks again, with the count).
pub fn parse_tags(text: &str) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for word in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let tag = word.to_lowercase();
        if !is_valid_tag(&tag) {
            return Err(format!(
                "“{word}” is not a tag: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 32 characters."
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// The edit a filled-in form asks for: every field, so the dialog shows what is saved.
pub fn form_edit(location: &str, device_type: &str, color: &str, tags: Vec<String>) -> HostEdit {
    HostEdit {
        // Empty clears (the service trims, and reads empty as none).
        location: Some(Some(location.to_owned())),
        device_type: Some(Some(device_type.to_owned())),
        theme_color: Some(color.to_owned()),
        tags: Some(tags),
    }
}

/// The dialog's code is a separate wasm chunk, fetched the first time it opens (P5).
#[component]
pub fn HostEditPanel() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
        {lazy_view(move || page.edit_host.with(Option::is_some), host_edit_dialog)}
    }
}

#[lazy]
pub(crate) fn host_edit_dialog() -> AnyView {
    view! { <HostEditBody /> }.into_any()
}

#[component]
fn HostEditBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    // The host as it is when the dialog opens; a new dialog for another host.
    let host = move || page.edit_host.get().and_then(|id| store.host_state(&id));
    view! {
        {move || host().map(|host| view! { <HostEditDialog host /> })}
    }
}

#[component]
fn HostEditDialog(host: Host) -> impl IntoView {
    let page = expect_context::<PageState>();
    let close = move || page.edit_host.set(None);
    let id = host.id.clone();
    let location = RwSignal::new(host.location.clone().unwrap_or_default());
    let device_type = RwSignal::new(host.device_type.clone().unwrap_or_default());
    let color = RwSignal::new(host.theme_color.clone());
    let tags = RwSignal::new(host.dashboard_tags().join(" "));
    let agent_tags = host.agent_tags.join(", ");
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let color_now = color.get_untracked();
        if !is_valid_theme_color(&color_now) {
            error.set(Some("Use a colour like #7aa2f7.".into()));
            return;
        }
        let parsed = match parse_tags(&tags.get_untracked()) {
            Ok(t) => t,
            Err(why) => {
                error.set(Some(why));
                return;
            }
        };
        let edit = form_edit(
            &location.get_untracked(),
            &device_type.get_untracked(),
            &color_now,
            parsed,
        );
        let id = id.clone();
        pending.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match edit_host(id, edit).await {
                Ok(_) => close(),
                Err(AppError::Invalid(why)) => error.set(Some(why)),
                Err(e) => error.set(Some(e.to_string())),
            }
            pending.set(false);
        });
    };
    view! {
        <div class="modal-backdrop" on:click=move |_| close()></div>
        <div class="modal host-edit" role="dialog" aria-modal="true" aria-labelledby="host-edit-title"
            data-testid="host-edit" on:keydown=move |ev| if ev.key() == "Escape" { close() }>
            <h2 id="host-edit-title">"Edit " {host.hostname.clone()}</h2>
            <form class="host-edit-form" on:submit=submit novalidate>
                <label>
                    "Location"
                    <input name="location" placeholder="home, work, cloud" bind:value=location />
                </label>
                <label>
                    "Device type"
                    <input name="device_type" placeholder="server, desktop, laptop" bind:value=device_type />
                </label>
                <label>
                    "Theme colour"
                    <input name="theme_color" type="color" bind:value=color />
                </label>
                <label>
                    "Tags"
                    <input name="tags" placeholder="web canary eu-west" autocomplete="off" bind:value=tags />
                    <span class="field-hint">"Separated by spaces or commas. Filter with tag:web; bulk actions and deploys can name them."</span>
                </label>
                <p class="field-hint" hidden=agent_tags.is_empty() data-testid="agent-tags">
                    "From the agent's configuration (--tags): " {agent_tags.clone()}
                </p>
                <p class="form-error" role="alert">{move || error.get()}</p>
                <div class="modal-actions">
                    <button type="button" class="cancel" on:click=move |_| close()>"Cancel"</button>
                    <button type="submit" class="confirm" disabled=move || pending.get()>
                        {move || if pending.get() { "Saving…" } else { "Save" }}
                    </button>
                </div>
            </form>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_as_typed_and_a_bad_one_is_named() {
        assert_eq!(
            parse_tags(" web, Canary  eu-west,web ").unwrap(),
            ["web", "canary", "eu-west"]
        );
        assert_eq!(parse_tags("").unwrap(), Vec::<String>::new());
        let err = parse_tags("web a/b").unwrap_err();
        assert!(err.contains("“a/b” is not a tag"), "{err}");
        assert!(parse_tags(&"a".repeat(33)).is_err());
    }

    #[test]
    fn the_form_sends_every_field_and_empty_text_clears() {
        let edit = form_edit("", "server", "#112233", vec!["web".into()]);
        assert_eq!(edit.location, Some(Some(String::new())));
        assert_eq!(edit.device_type, Some(Some("server".into())));
        assert_eq!(edit.theme_color.as_deref(), Some("#112233"));
        assert_eq!(edit.tags, Some(vec!["web".into()]));
    }
}
