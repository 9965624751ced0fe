//! "Confirm it's you": the password (and the code, with 2FA) once more, asked when a rare,
//! powerful action (token rotation, user management, Merge & Deploy) comes long after the
//! login (`AppError::ReauthRequired`). One form for every place that needs it; each lives
//! in a lazily loaded part (the confirm dialog, the Users page).

use crate::api::reauthenticate;
use leptos::prelude::*;

#[component]
pub fn ReauthPrompt(
    /// Runs once the server accepted the password: retry what asked for it.
    on_done: Callback<()>,
    on_cancel: Callback<()>,
) -> impl IntoView {
    let password = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (p, c) = (password.get_untracked(), code.get_untracked());
        let c = Some(c.trim().to_owned()).filter(|c| !c.is_empty());
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match reauthenticate(p, c).await {
                Ok(()) => on_done.run(()),
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    view! {
        <form class="reauth" on:submit=submit>
            <h3>"Confirm it's you"</h3>
            <p>"This action needs your password again: your login was a while ago."</p>
            <input name="password" type="password" placeholder="password" autocomplete="current-password" bind:value=password />
            <input name="code" inputmode="numeric" autocomplete="one-time-code"
                placeholder="code from your authenticator (with 2FA)" bind:value=code />
            <div class="modal-actions">
                <button type="button" class="cancel" on:click=move |_| on_cancel.run(())>"Cancel"</button>
                <button type="submit" class="confirm" disabled=move || busy.get()>"Confirm"</button>
            </div>
            <p class="form-error" role="alert">{move || error.get()}</p>
        </form>
    }
}
