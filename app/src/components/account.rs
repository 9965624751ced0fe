//! The account page: two-factor authentication (TOTP) enrollment, and personal API tokens.
//! Starting TOTP asks for the password, and once two-factor is on also for a current code
//! (the server says so with `TotpRequired`, as at login, and the field appears). A new API
//! token is shown once, with a copy button; the list shows each token's expiry and last use.

use crate::api::{
    confirm_totp, list_api_tokens, make_api_token, revoke_api_token, start_totp_setup,
};
use common::AppError;
use leptos::either::Either;
use leptos::prelude::*;
use protocol::api::{ApiTokenCreated, ApiTokenInfo, CreateApiToken, Role, TotpSetup};
use protocol::Timestamp;

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
            <span class="spacer"></span>
            <crate::components::theme::ThemeMenu />
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
            <ApiTokens />
        </main>
    }
}

/// What a new token's expiry field starts at.
const DEFAULT_DAYS: &str = "90";

fn when(t: Option<Timestamp>, none: &'static str) -> String {
    t.map_or_else(|| none.to_owned(), |t| t.to_string())
}

/// The "API tokens" section: make one (name, role up to the user's, expiry), see it once,
/// list and revoke.
#[component]
fn ApiTokens() -> impl IntoView {
    let version = RwSignal::new(0u32);
    let tokens = Resource::new(move || version.get(), |_| list_api_tokens(false));
    let created = RwSignal::new(None::<ApiTokenCreated>);
    let message = RwSignal::new(None::<String>);
    let name = RwSignal::new(String::new());
    let role = RwSignal::new(Role::Viewer);
    let days = RwSignal::new(DEFAULT_DAYS.to_owned());
    let never = RwSignal::new(false);
    // The roles a token may have: up to the user's own (the server refuses more anyway).
    // The browser reads the user's role from the page's meta tag; the server's render
    // offers viewer only, so the two agree until the page is live.
    let max_role = RwSignal::new(Role::Viewer);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if let Some(r) = crate::page_meta::viewer_role()
            .as_deref()
            .and_then(Role::parse)
        {
            max_role.set(r);
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        message.set(None);
        let expires_in_days = if never.get_untracked() {
            None
        } else {
            match days.get_untracked().trim().parse::<u32>() {
                Ok(d) => Some(d),
                Err(_) => {
                    message.set(Some(
                        "Enter the days until the token expires (1 to 3650), or tick \"never\"."
                            .into(),
                    ));
                    return;
                }
            }
        };
        let req = CreateApiToken {
            name: name.get_untracked().trim().to_owned(),
            role: role.get_untracked(),
            expires_in_days,
        };
        leptos::task::spawn_local(async move {
            match make_api_token(req).await {
                Ok(c) => {
                    name.set(String::new());
                    created.set(Some(c));
                    version.update(|v| *v += 1);
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };
    let revoke = move |id: String| {
        message.set(None);
        leptos::task::spawn_local(async move {
            match revoke_api_token(id.clone()).await {
                Ok(()) => {
                    if created.with_untracked(|c| c.as_ref().is_some_and(|c| c.id == id)) {
                        created.set(None);
                    }
                    version.update(|v| *v += 1);
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };
    let row = move |t: ApiTokenInfo| {
        let id = t.id.clone();
        let expires = if t.expired {
            format!("expired {}", when(t.expires_at, ""))
        } else {
            when(t.expires_at, "never")
        };
        view! {
            <tr data-token=t.id.clone() class:expired=t.expired>
                <td class="token-name">{t.name}</td>
                <td>{t.role.as_str()}</td>
                <td>{t.created_at.to_string()}</td>
                <td class="token-expires">{expires}</td>
                <td class="token-last-used">{when(t.last_used_at, "never")}</td>
                <td>
                    <button type="button" class="btn-revoke-token" on:click=move |_| revoke(id.clone())>"Revoke"</button>
                </td>
            </tr>
        }
    };
    view! {
        <section class="api-tokens">
            <h2>"API tokens"</h2>
            <p>"A script sends a token as " <code>"Authorization: Bearer …"</code> " and acts as you, with the token's role (never above yours). Tokens cannot manage users, deploy, rotate host tokens or make other tokens."</p>
            <form class="token-create" on:submit=submit>
                <label>"Name " <input name="token_name" autocomplete="off" required maxlength="64" bind:value=name /></label>
                <label>
                    "Role "
                    <select name="token_role" on:change=move |ev| role.set(Role::parse(&event_target_value(&ev)).unwrap_or_default())>
                        {move || {
                            Role::ALL
                                .into_iter()
                                .filter(|r| max_role.get().at_least(*r))
                                .map(|r| view! { <option value=r.as_str() selected=move || role.get() == r>{r.as_str()}</option> })
                                .collect_view()
                        }}
                    </select>
                </label>
                <label>"Expires in (days) " <input name="token_days" type="number" min="1" max="3650" prop:disabled=move || never.get() bind:value=days /></label>
                <label><input name="token_never" type="checkbox" bind:checked=never /> " never"</label>
                <button type="submit" class="btn-create-token">"Create token"</button>
            </form>
            {move || created.get().map(|c| {
                let token = c.token.clone();
                let copy = move |_| {
                    #[cfg(feature = "hydrate")]
                    let _ = window().navigator().clipboard().write_text(&token);
                    #[cfg(not(feature = "hydrate"))]
                    let _ = &token;
                };
                view! {
                    <div class="token-created" role="status">
                        <p class="warning">"Copy this token now: it is shown only once, and nixdeck keeps only a hash of it."</p>
                        <code class="new-token">{c.token}</code>
                        <button type="button" class="btn-copy-token" on:click=copy>"Copy"</button>
                        <button type="button" class="btn-dismiss-token" on:click=move |_| created.set(None)>"Done"</button>
                    </div>
                }
            })}
            <p class="token-error" role="alert">{move || message.get()}</p>
            <Suspense fallback=|| view! { <p class="loading">"Loading tokens…"</p> }>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Ok(list) if list.is_empty() => Either::Left(Either::Left(view! { <p class="no-tokens">"No tokens yet."</p> })),
                        Ok(list) => Either::Left(Either::Right(view! {
                            <table class="token-list">
                                <thead><tr><th>"Name"</th><th>"Role"</th><th>"Created"</th><th>"Expires"</th><th>"Last used"</th><th></th></tr></thead>
                                <tbody>{list.into_iter().map(row).collect_view()}</tbody>
                            </table>
                        })),
                        Err(e) => Either::Right(view! { <p class="error">{e.to_string()}</p> }),
                    }
                })}
            </Suspense>
        </section>
    }
}
