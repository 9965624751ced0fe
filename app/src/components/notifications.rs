//! The Notifications page (admins): targets with "Send test" and their delivery log, and
//! rules. Secrets typed here go to the server once and are never shown again.

use crate::api::{
    add_notify_rule, add_notify_target, list_notify_rules, list_notify_targets,
    notify_delivery_log, remove_notify_rule, remove_notify_target, test_notify_target,
};
use crate::components::admin::AdminHeader;
use leptos::either::Either;
use leptos::prelude::*;
use protocol::api::{
    CreateNotifyRule, CreateNotifyTarget, NotifyEvent, NotifyKind, NotifyScope, QuietHours,
};

/// A comma-separated list, trimmed, without empty items.
fn list_of(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[component]
pub fn NotificationsPage() -> impl IntoView {
    let version = RwSignal::new(0u32);
    let message = RwSignal::new(None::<String>);
    let log_of = RwSignal::new(None::<(String, String)>);
    let reload = move || version.update(|v| *v += 1);
    let targets = Resource::new(move || version.get(), |_| list_notify_targets());
    let rules = Resource::new(move || version.get(), |_| list_notify_rules());
    let log = Resource::new(
        move || (log_of.get(), version.get()),
        |(target, _)| async move {
            match target {
                Some((id, _)) => notify_delivery_log(id).await.map(Some),
                None => Ok(None),
            }
        },
    );

    let (t_name, t_kind, t_url, t_settings) = (
        RwSignal::new(String::new()),
        RwSignal::new("webhook".to_owned()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let add_target = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let settings = t_settings.get_untracked();
        let settings = if settings.trim().is_empty() {
            None
        } else {
            match serde_json::from_str(&settings) {
                Ok(v) => Some(v),
                Err(e) => {
                    message.set(Some(format!("Settings are not JSON: {e}")));
                    return;
                }
            }
        };
        let url = t_url.get_untracked();
        let req = CreateNotifyTarget {
            name: t_name.get_untracked(),
            kind: NotifyKind::parse(&t_kind.get_untracked()).unwrap_or(NotifyKind::Webhook),
            url: (!url.trim().is_empty()).then_some(url),
            settings,
        };
        leptos::task::spawn_local(async move {
            match add_notify_target(req).await {
                Ok(t) => {
                    message.set(Some(format!("Added target {}.", t.name)));
                    t_name.set(String::new());
                    t_url.set(String::new());
                    t_settings.set(String::new());
                    reload();
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };

    let (r_event, r_after, r_tags, r_hosts, r_target, r_cooldown, r_from, r_to) = (
        RwSignal::new("host_offline".to_owned()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let add_rule = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let number = |s: RwSignal<String>| s.get_untracked().trim().parse::<u32>().ok();
        let (from, to) = (r_from.get_untracked(), r_to.get_untracked());
        let req = CreateNotifyRule {
            event: NotifyEvent::parse(&r_event.get_untracked()).unwrap_or(NotifyEvent::HostOffline),
            after_s: number(r_after),
            scope: Some(NotifyScope {
                tags: list_of(&r_tags.get_untracked()),
                host_ids: list_of(&r_hosts.get_untracked()),
            }),
            target_ids: list_of(&r_target.get_untracked()),
            cooldown_s: number(r_cooldown),
            quiet: (!from.is_empty() || !to.is_empty()).then_some(QuietHours { from, to }),
        };
        leptos::task::spawn_local(async move {
            match add_notify_rule(req).await {
                Ok(_) => {
                    message.set(Some("Added the rule.".into()));
                    reload();
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };

    view! {
        <AdminHeader title="Notifications" />
        <main class="admin notifications">
            <h3>"Targets"</h3>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match targets.await {
                        Ok(list) => Either::Left(view! {
                            <table class="notify-targets">
                                <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Where"</th><th>"Id"</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|t| {
                                        let (test_id, log_id, del_id, name, key) = (t.id.clone(), t.id.clone(), t.id.clone(), t.name.clone(), t.id.clone());
                                        let place = t.url.clone().unwrap_or_else(|| t.settings.get("host").and_then(|h| h.as_str()).unwrap_or_default().to_owned());
                                        view! {
                                            <tr data-target=key>
                                                <td>{t.name}</td>
                                                <td>{t.kind.as_str()}</td>
                                                <td>{place}{if t.has_secret { " (secret stored)" } else { "" }}</td>
                                                <td><code>{t.id}</code></td>
                                                <td>
                                                    <button type="button" class="btn-notify-test" on:click=move |_| {
                                                        let id = test_id.clone();
                                                        leptos::task::spawn_local(async move {
                                                            match test_notify_target(id).await {
                                                                Ok(_) => { message.set(Some("Test message queued; see the log.".into())); reload(); }
                                                                Err(e) => message.set(Some(e.to_string())),
                                                            }
                                                        });
                                                    }>"Send test"</button>
                                                    <button type="button" class="btn-notify-log" on:click=move |_| log_of.set(Some((log_id.clone(), name.clone())))>"Log"</button>
                                                    <button type="button" class="btn-notify-delete" on:click=move |_| {
                                                        let id = del_id.clone();
                                                        leptos::task::spawn_local(async move {
                                                            match remove_notify_target(id).await {
                                                                Ok(()) => reload(),
                                                                Err(e) => message.set(Some(e.to_string())),
                                                            }
                                                        });
                                                    }>"Delete"</button>
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
            <form class="add-notify-target" on:submit=add_target>
                <input name="name" placeholder="name" bind:value=t_name />
                <select name="kind" on:change=move |ev| t_kind.set(event_target_value(&ev))>
                    {NotifyKind::NAMES.iter().map(|k| view! { <option value=*k>{*k}</option> }).collect_view()}
                </select>
                <input name="url" placeholder="https://… (not for email)" bind:value=t_url />
                <input name="settings" placeholder=r#"settings as JSON, e.g. {"token": "…"}"# bind:value=t_settings />
                <button type="submit">"Add target"</button>
            </form>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match (log.await, log_of.get()) {
                        (Ok(Some(entries)), Some((_, name))) => Either::Left(view! {
                            <h3>"Delivery log: " {name}</h3>
                            <table class="notify-log">
                                <thead><tr><th>"When"</th><th>"Event"</th><th>"Attempt"</th><th>"Status"</th><th>"Error"</th></tr></thead>
                                <tbody>
                                    {entries.into_iter().map(|d| { let status = d.status.clone(); view! {
                                        <tr data-status=status>
                                            <td>{d.at.to_string()}</td>
                                            <td>{d.event.as_str()}</td>
                                            <td>{d.attempt}</td>
                                            <td>{d.status}</td>
                                            <td>{d.error.unwrap_or_default()}</td>
                                        </tr>
                                    }}).collect_view()}
                                </tbody>
                            </table>
                        }),
                        (Err(e), _) => Either::Right(Some(view! { <p class="error">{e.to_string()}</p> })),
                        _ => Either::Right(None),
                    }
                })}
            </Suspense>
            <h3>"Rules"</h3>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match rules.await {
                        Ok(list) => Either::Left(view! {
                            <table class="notify-rules">
                                <thead><tr><th>"Event"</th><th>"After"</th><th>"Scope"</th><th>"Targets"</th><th>"Cooldown"</th><th>"Quiet (UTC)"</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|r| {
                                        let (id, key) = (r.id.clone(), r.id.clone());
                                        let scope = if r.scope.tags.is_empty() && r.scope.host_ids.is_empty() {
                                            "all hosts".to_owned()
                                        } else {
                                            r.scope.tags.iter().map(|t| format!("tag:{t}")).chain(r.scope.host_ids.iter().cloned()).collect::<Vec<_>>().join(", ")
                                        };
                                        view! {
                                            <tr data-rule=key>
                                                <td>{r.event.as_str()}</td>
                                                <td>{format!("{} s", r.after_s)}</td>
                                                <td>{scope}</td>
                                                <td>{r.target_ids.join(", ")}</td>
                                                <td>{format!("{} s", r.cooldown_s)}</td>
                                                <td>{r.quiet.map(|q| format!("{}–{}", q.from, q.to)).unwrap_or_default()}</td>
                                                <td><button type="button" class="btn-rule-delete" on:click=move |_| {
                                                    let id = id.clone();
                                                    leptos::task::spawn_local(async move {
                                                        match remove_notify_rule(id).await {
                                                            Ok(()) => reload(),
                                                            Err(e) => message.set(Some(e.to_string())),
                                                        }
                                                    });
                                                }>"Delete"</button></td>
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
            <form class="add-notify-rule" on:submit=add_rule>
                <select name="event" on:change=move |ev| r_event.set(event_target_value(&ev))>
                    {NotifyEvent::NAMES.iter().filter(|e| **e != "test").map(|e| view! { <option value=*e>{*e}</option> }).collect_view()}
                </select>
                <input name="after_s" placeholder="after (s)" bind:value=r_after />
                <input name="tags" placeholder="tags (comma-separated)" bind:value=r_tags />
                <input name="host_ids" placeholder="hosts (comma-separated)" bind:value=r_hosts />
                <input name="target_ids" placeholder="target ids (comma-separated)" bind:value=r_target />
                <input name="cooldown_s" placeholder="cooldown (s)" bind:value=r_cooldown />
                <input name="quiet_from" placeholder="quiet from HH:MM" bind:value=r_from />
                <input name="quiet_to" placeholder="quiet to HH:MM" bind:value=r_to />
                <button type="submit">"Add rule"</button>
            </form>
            <p class="admin-message" role="status">{move || message.get()}</p>
        </main>
    }
}
