//! Admin pages: users (add, disable, reset a password) and the audit log.

use crate::api::{add_user, audit_log, list_users, reset_user_password, set_user_disabled};
use crate::components::reauth::ReauthPrompt;
use common::AppError;
use leptos::either::Either;
use leptos::prelude::*;

/// The Users page's shared state: the list's version (bumped to reload), the message line,
/// and the action waiting for the password (`AppError::ReauthRequired`).
#[derive(Clone, Copy)]
struct UsersCtx {
    version: RwSignal<u32>,
    message: RwSignal<Option<String>>,
    reauth_then: RwSignal<Option<Callback<()>>>,
}

impl UsersCtx {
    fn reload(self) {
        self.version.update(|v| *v += 1);
    }

    /// A failure of `what`: the password prompt (then `retry`) when the server asks for it,
    /// else the message.
    fn failed(self, what: String, e: AppError, retry: Callback<()>) {
        match e {
            AppError::ReauthRequired => self.reauth_then.set(Some(retry)),
            e => self.message.set(Some(format!("{what}{e}"))),
        }
    }
}

fn add(ctx: UsersCtx, name: String, role: String, password: String, done: Callback<()>) {
    leptos::task::spawn_local(async move {
        match add_user(name.clone(), role.clone(), password.clone()).await {
            Ok(()) => {
                ctx.message.set(Some(format!("Added {name}.")));
                done.run(());
                ctx.reload();
            }
            Err(e) => ctx.failed(
                String::new(),
                e,
                Callback::new(move |()| {
                    add(ctx, name.clone(), role.clone(), password.clone(), done)
                }),
            ),
        }
    });
}

fn toggle(ctx: UsersCtx, user: String, disabled: bool) {
    leptos::task::spawn_local(async move {
        match set_user_disabled(user.clone(), disabled).await {
            Ok(()) => ctx.reload(),
            Err(e) => ctx.failed(
                format!("{user}: "),
                e,
                Callback::new(move |()| toggle(ctx, user.clone(), disabled)),
            ),
        }
    });
}

fn reset(ctx: UsersCtx, user: String) {
    leptos::task::spawn_local(async move {
        match reset_user_password(user.clone()).await {
            Ok(p) => ctx
                .message
                .set(Some(format!("New password for {user} (shown once): {p}"))),
            Err(e) => ctx.failed(
                format!("{user}: "),
                e,
                Callback::new(move |()| reset(ctx, user.clone())),
            ),
        }
    });
}

#[component]
pub fn AdminHeader(title: &'static str) -> impl IntoView {
    view! {
        <header class="topbar">
            <a class="brand" href="/">"nixdeck"</a>
            <span class="fleet-count">{title}</span>
            <span class="spacer"></span>
            <a class="account-link" href="/users">"Users"</a>
            <a class="account-link" href="/audit">"Audit log"</a>
            <a class="account-link" href="/notifications">"Notifications"</a>
            <a class="account-link" href="/account">"Account"</a>
            <crate::components::theme::ThemeMenu />
        </header>
    }
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let ctx = UsersCtx {
        version: RwSignal::new(0u32),
        message: RwSignal::new(None::<String>),
        reauth_then: RwSignal::new(None),
    };
    let (version, message) = (ctx.version, ctx.message);
    let users = Resource::new(move || version.get(), |_| list_users());
    let (name, role, password) = (
        RwSignal::new(String::new()),
        RwSignal::new("operator".to_owned()),
        RwSignal::new(String::new()),
    );
    let cleared = Callback::new(move |()| {
        name.set(String::new());
        password.set(String::new());
    });
    let on_add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        add(
            ctx,
            name.get_untracked(),
            role.get_untracked(),
            password.get_untracked(),
            cleared,
        );
    };
    let reauthed = Callback::new(move |()| {
        if let Some(retry) = ctx.reauth_then.get_untracked() {
            ctx.reauth_then.set(None);
            retry.run(());
        }
    });
    let reauth_cancelled = Callback::new(move |()| ctx.reauth_then.set(None));
    view! {
        <AdminHeader title="Users" />
        <main class="admin">
            <Suspense fallback=|| view! { <p class="loading">"Loading users…"</p> }>
                {move || Suspend::new(async move {
                    match users.await {
                        Ok(list) => Either::Left(view! {
                            <table class="users">
                                <thead><tr><th>"User"</th><th>"Role"</th><th>"State"</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|u| {
                                        let (a, b, key) = (u.username.clone(), u.username.clone(), u.username.clone());
                                        let disabled = u.disabled;
                                        view! {
                                            <tr data-user=key>
                                                <td>{u.username}</td>
                                                <td>{u.role.as_str()}</td>
                                                <td class="user-state">{if disabled { "disabled" } else { "active" }}</td>
                                                <td>
                                                    <button type="button" class="btn-toggle-user" on:click=move |_| toggle(ctx, a.clone(), !disabled)>
                                                        {if disabled { "Enable" } else { "Disable" }}
                                                    </button>
                                                    <button type="button" class="btn-reset-password" on:click=move |_| reset(ctx, b.clone())>"Reset password"</button>
                                                </td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }),
                        Err(e) => Either::Right(view! { <p class="error">{e.to_string()}</p> }),
                    }
                })}
            </Suspense>
            <Show when=move || ctx.reauth_then.with(Option::is_some)>
                <ReauthPrompt on_done=reauthed on_cancel=reauth_cancelled />
            </Show>
            <form class="add-user" on:submit=on_add>
                <h3>"Add a user"</h3>
                <input name="username" placeholder="username" bind:value=name />
                <select name="role" on:change=move |ev| role.set(event_target_value(&ev))>
                    <option value="viewer">"viewer"</option>
                    <option value="operator" selected>"operator"</option>
                    <option value="admin">"admin"</option>
                </select>
                <input name="password" type="password" placeholder="password (12+ characters)" autocomplete="new-password" bind:value=password />
                <button type="submit">"Add"</button>
            </form>
            <p class="admin-message" role="status">{move || message.get()}</p>
        </main>
    }
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let actor = RwSignal::new(String::new());
    let action = RwSignal::new(String::new());
    let filter = RwSignal::new((String::new(), String::new()));
    let entries = Resource::new(
        move || filter.get(),
        |(a, b)| audit_log(Some(a), Some(b), 200),
    );
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        filter.set((actor.get_untracked(), action.get_untracked()));
    };
    view! {
        <AdminHeader title="Audit log" />
        <main class="admin">
            <form class="audit-filter" on:submit=apply>
                <input name="actor" placeholder="who" bind:value=actor />
                <input name="action" placeholder="action (login, command.pull, host.add …)" bind:value=action />
                <button type="submit">"Filter"</button>
            </form>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match entries.await {
                        Ok(list) => Either::Left(view! {
                            <table class="audit">
                                <thead><tr><th>"When"</th><th>"Who"</th><th>"From"</th><th>"What"</th><th>"On"</th><th>"Result"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|e| {
                                        let result = e.result.clone();
                                        view! {
                                        <tr class="audit-entry" data-result=result>
                                            <td>{e.at.to_string()}</td>
                                            <td>{match e.token {
                                                Some(token) => format!("{} (token {token})", e.actor),
                                                None => e.actor,
                                            }}</td>
                                            <td>{e.ip.unwrap_or_default()}</td>
                                            <td>{e.action}</td>
                                            <td>{e.target.unwrap_or_default()}</td>
                                            <td title=e.detail.unwrap_or_default()>{e.result}</td>
                                        </tr>
                                    }}).collect_view()}
                                </tbody>
                            </table>
                        }),
                        Err(e) => Either::Right(view! { <p class="error">{e.to_string()}</p> }),
                    }
                })}
            </Suspense>
        </main>
    }
}
