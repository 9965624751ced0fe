//! The Add host dialog: validated inline, and on success it shows the new host's token once
//! with a ready-to-paste agent configuration.

use crate::api::add_host;
use crate::components::lazy_view;
use common::AppError;
use leptos::prelude::*;
use protocol::api::{CreateHost, HostCreated};
use protocol::{is_valid_host_id, is_valid_theme_color, HostType};

/// Why a hostname cannot be used, before asking the server.
pub fn hostname_problem(hostname: &str) -> Option<&'static str> {
    if hostname.is_empty() {
        Some("A hostname is required.")
    } else if !is_valid_host_id(&hostname.to_ascii_lowercase()) {
        Some("Use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters.")
    } else {
        None
    }
}

/// The shell lines that start an agent for a new host.
pub fn agent_snippet(origin: &str, hostname: &str, token: &str) -> String {
    format!(
        "NIXDECK_URL={origin} \\\nNIXDECK_TOKEN={token} \\\n  nixdeck-agent --hostname {hostname}"
    )
}

#[component]
pub fn AddHostButton() -> impl IntoView {
    let open = RwSignal::new(false);
    view! {
        <button type="button" class="btn-add-host" on:click=move |_| open.set(true)>
            "Add host"
        </button>
        {lazy_view(move || open.get(), move || add_host_dialog(open))}
    }
}

/// The dialog's code is a separate wasm chunk, fetched the first time it opens (P5).
#[lazy]
pub(crate) fn add_host_dialog(open: RwSignal<bool>) -> AnyView {
    view! { <AddHostDialog open /> }.into_any()
}

#[component]
fn AddHostDialog(open: RwSignal<bool>) -> impl IntoView {
    let hostname = RwSignal::new(String::new());
    let host_type = RwSignal::new(HostType::Nixos);
    let color = RwSignal::new(HostType::Nixos.default_color().to_owned());
    let location = RwSignal::new(String::new());
    let device_type = RwSignal::new(String::new());
    let touched = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let created = RwSignal::new(None::<HostCreated>);

    let hostname_error = move || {
        touched
            .get()
            .then(|| hostname_problem(&hostname.get()))
            .flatten()
    };
    let color_error =
        move || (!is_valid_theme_color(&color.get())).then_some("Use a colour like #7aa2f7.");
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        touched.set(true);
        if hostname_problem(&hostname.get_untracked()).is_some() || color_error().is_some() {
            return;
        }
        let optional = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let request = CreateHost {
            hostname: hostname.get_untracked().trim().to_owned(),
            host_type: host_type.get_untracked(),
            theme_color: Some(color.get_untracked()),
            location: optional(location.get_untracked()),
            device_type: optional(device_type.get_untracked()),
            tags: None,
        };
        pending.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match add_host(request).await {
                Ok(done) => created.set(Some(done)),
                Err(AppError::Invalid(why)) => error.set(Some(why)),
                Err(e) => error.set(Some(e.to_string())),
            }
            pending.set(false);
        });
    };
    let origin = move || window().location().origin().unwrap_or_default();
    let snippet = move || {
        created
            .get()
            .map(|c| agent_snippet(&origin(), &c.host.hostname, &c.agent_token))
            .unwrap_or_default()
    };
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        let _ = window().navigator().clipboard().write_text(&snippet());
    };

    view! {
        <div class="modal-backdrop" on:click=move |_| open.set(false)></div>
        <div class="modal add-host" role="dialog" aria-modal="true" aria-labelledby="add-host-title">
            <h2 id="add-host-title">"Add host"</h2>
            <Show
                when=move || created.with(Option::is_some)
                fallback=move || {
                    view! {
                        <form class="add-host-form" on:submit=submit novalidate>
                            <label>
                                "Hostname"
                                <input name="hostname" autocomplete="off" bind:value=hostname on:blur=move |_| touched.set(true) />
                                <span class="field-error">{hostname_error}</span>
                            </label>
                            <label>
                                "Type"
                                <select
                                    name="host_type"
                                    on:change=move |ev| {
                                        let t = HostType::parse(&event_target_value(&ev)).unwrap_or_default();
                                        // Keep a custom colour; follow the type's default otherwise.
                                        if color.get_untracked() == host_type.get_untracked().default_color() {
                                            color.set(t.default_color().to_owned());
                                        }
                                        host_type.set(t);
                                    }
                                >
                                    <option value="nixos">"NixOS"</option>
                                    <option value="macos">"macOS"</option>
                                </select>
                            </label>
                            <label>
                                "Theme colour"
                                <input name="theme_color" type="color" bind:value=color />
                                <span class="field-error">{color_error}</span>
                            </label>
                            <label>
                                "Location"
                                <input name="location" placeholder="home, work, cloud" bind:value=location />
                            </label>
                            <label>
                                "Device type"
                                <input name="device_type" placeholder="server, desktop, laptop" bind:value=device_type />
                            </label>
                            <p class="form-error" role="alert">{move || error.get()}</p>
                            <div class="modal-actions">
                                <button type="button" class="cancel" on:click=move |_| open.set(false)>"Cancel"</button>
                                <button type="submit" class="confirm" disabled=move || pending.get()>
                                    {move || if pending.get() { "Adding…" } else { "Add host" }}
                                </button>
                            </div>
                        </form>
                    }
                }
            >
                <p>
                    "Host " <strong>{move || created.get().map(|c| c.host.hostname)}</strong>
                    " added. This is its agent token; it is shown only now."
                </p>
                <pre class="agent-snippet">{snippet}</pre>
                <div class="modal-actions">
                    <button type="button" class="copy" on:click=copy>"Copy"</button>
                    <button type="button" class="confirm" on:click=move |_| open.set(false)>"Done"</button>
                </div>
            </Show>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked_before_sending() {
        assert!(hostname_problem("").is_some());
        assert!(hostname_problem("web 1").is_some());
        assert!(hostname_problem("-web").is_some());
        assert_eq!(hostname_problem("Web-1"), None);
    }

    #[test]
    fn snippet_names_url_token_and_host() {
        let s = agent_snippet("https://deck.example.org", "web-1", "t0k");
        assert!(s.contains("NIXDECK_URL=https://deck.example.org"));
        assert!(s.contains("NIXDECK_TOKEN=t0k"));
        assert!(s.contains("--hostname web-1"));
    }
}
