//! The account page: two-factor authentication (TOTP) enrollment. Starting it asks for the
//! password, and once two-factor is on also for a current code (the server says so with
//! `TotpRequired`, as at login, and the field appears).

use crate::api::{confirm_totp, start_totp_setup};
use common::AppError;
use leptos::prelude::*;
use protocol::api::TotpSetup;

#[component]
pub fn AccountPage() -> impl IntoView {
    let setup = RwSignal::new(None::<TotpSetup>);
    let codes = RwSignal::new(None::<Vec<String>>);
    let error = RwSignal::new(None::<String>);
    let password = RwSignal::new(String::new());
    let current = RwSignal::new(String::new());
    // Shown once the server says two-factor is on already.
    let needs_code = RwSignal::new(false);
    let code = RwSignal::new(String::new());
    let start = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let (entered, now) = (password.get_untracked(), current.get_untracked());
        leptos::task::spawn_local(async move {
            match start_totp_setup(entered, Some(now).filter(|c| !c.is_empty())).await {
                Ok(s) => {
                    password.set(String::new());
                    current.set(String::new());
                    setup.set(Some(s));
                }
                Err(AppError::TotpRequired) => {
                    needs_code.set(true);
                    error.set(Some(
                        "Two-factor authentication is on: enter a current code from your app, or a recovery code."
                            .into(),
                    ));
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let confirm = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let entered = code.get_untracked();
        leptos::task::spawn_local(async move {
            match confirm_totp(entered).await {
                Ok(r) => {
                    setup.set(None);
                    codes.set(Some(r.recovery_codes));
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"nixdeck"</a>
            <span class="fleet-count">"Account"</span>
        </header>
        <main class="account">
            <h2>"Two-factor authentication"</h2>
            <p>"With it on, logging in also asks for a code from an authenticator app. Turning it on logs you out everywhere else."</p>
            <Show when=move || setup.with(Option::is_none) && codes.with(Option::is_none)>
                <form class="totp-start" on:submit=start>
                    <label>"Your password " <input name="password" type="password" autocomplete="current-password" required bind:value=password /></label>
                    <Show when=move || needs_code.get()>
                        <label>"Current code " <input name="current_code" inputmode="numeric" autocomplete="one-time-code" required bind:value=current /></label>
                    </Show>
                    <button type="submit" class="btn-totp-setup">"Set up two-factor authentication"</button>
                </form>
            </Show>
            {move || setup.get().map(|s| view! {
                <div class="totp-setup">
                    <img class="totp-qr" src=s.qr_data_uri alt="QR code for your authenticator app" width="200" height="200" />
                    <p>"Or enter this key by hand: " <code class="totp-secret">{s.secret}</code></p>
                    <form on:submit=confirm>
                        <label>"Code from the app " <input name="code" inputmode="numeric" autocomplete="one-time-code" bind:value=code /></label>
                        <button type="submit">"Turn on"</button>
                    </form>
                </div>
            })}
            {move || codes.get().map(|list| view! {
                <div class="recovery-codes">
                    <p>"Two-factor authentication is on. Keep these recovery codes somewhere safe; each works once, and they are shown only now:"</p>
                    <ul>{list.into_iter().map(|c| view! { <li><code>{c}</code></li> }).collect_view()}</ul>
                </div>
            })}
            <p class="form-error" role="alert">{move || error.get()}</p>
        </main>
    }
}
