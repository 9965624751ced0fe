//! Admin pages: users (add, disable, reset a password) and the audit log.

use crate::api::{add_user, audit_log, list_users, reset_user_password, set_user_disabled};
use leptos::either::Either;
use leptos::prelude::*;

#[component]
fn AdminHeader(title: &'static str) -> impl IntoView {
    view! {
        <header class="topbar">
            <a class="brand" href="/">"nixdeck"</a>
            <span class="fleet-count">{title}</span>
            <span class="spacer"></span>
            <a class="account-link" href="/users">"Users"</a>
            <a class="account-link" href="/audit">"Audit log"</a>
            <a class="account-link" href="/account">"Account"</a>
        </header>
    }
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let version = RwSignal::new(0u32);
    let users = Resource::new(move || version.get(), |_| list_users());
    let message = RwSignal::new(None::<String>);
    let (name, role, password) = (
        RwSignal::new(String::new()),
        RwSignal::new("operator".to_owned()),
        RwSignal::new(String::new()),
    );
    let reload = move || version.update(|v| *v += 1);
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (n, r, p) = (
            name.get_untracked(),
            role.get_untracked(),
            password.get_untracked(),
        );
        leptos::task::spawn_local(async move {
            match add_user(n.clone(), r, p).await {
                Ok(()) => {
                    message.set(Some(format!("Added {n}.")));
                    name.set(String::new());
                    password.set(String::new());
                    reload();
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };
    let toggle = move |user: String, disabled: bool| {
        leptos::task::spawn_local(async move {
            match set_user_disabled(user.clone(), disabled).await {
                Ok(()) => reload(),
                Err(e) => message.set(Some(format!("{user}: {e}"))),
            }
        });
    };
    let reset = move |user: String| {
        leptos::task::spawn_local(async move {
            match reset_user_password(user.clone()).await {
                Ok(p) => message.set(Some(format!("New password for {user} (shown once): {p}"))),
                Err(e) => message.set(Some(format!("{user}: {e}"))),
            }
        });
    };
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
                                                    <button type="button" class="btn-toggle-user" on:click=move |_| toggle(a.clone(), !disabled)>
                                                        {if disabled { "Enable" } else { "Disable" }}
                                                    </button>
                                                    <button type="button" class="btn-reset-password" on:click=move |_| reset(b.clone())>"Reset password"</button>
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
            <form class="add-user" on:submit=add>
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
                                            <td>{e.actor}</td>
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
