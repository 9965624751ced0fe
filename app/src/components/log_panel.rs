//! The output panel: a tab per host that ran a command here, its live log (stderr marked,
//! a closing status line), following the output unless the operator scrolled up, and the
//! host's command history with downloads of the full logs.

use crate::api::{command_history, command_log_tail};
use crate::components::lazy_view;
use crate::page_state::PageState;
use crate::presentation::command_status_text;
use crate::store::{HostSignals, HostStore};
use leptos::prelude::*;
use protocol::api::CommandRecord;
use protocol::{CommandStatus, OutputStream};

/// The header's and tab's status: what the host's latest command here did.
fn result_text(status: Option<CommandStatus>, running: bool) -> &'static str {
    match (status, running) {
        (_, true) => "running",
        (Some(status), _) => command_status_text(status),
        (None, _) => "idle",
    }
}

fn status_of(h: HostSignals) -> &'static str {
    result_text(h.last_result.get(), h.pending_command.with(Option::is_some))
}

/// The panel's code is a separate wasm chunk, fetched the first time it opens (P5).
#[component]
pub fn LogPanel() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
        {lazy_view(move || page.log_host.with(Option::is_some), log_panel)}
    }
}

#[lazy]
pub(crate) fn log_panel() -> AnyView {
    view! { <LogPanelBody /> }.into_any()
}

#[component]
fn LogPanelBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let host = move || page.log_host.get().and_then(|id| store.host(&id));
    let lines_ref = NodeRef::<leptos::html::Div>::new();
    // Follow the output unless the operator scrolled up to read.
    let following = RwSignal::new(true);
    let scroll_to_end = move || {
        if let Some(el) = lines_ref.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
    };
    Effect::new(move |_| {
        if let Some(h) = host() {
            h.log.track();
        }
        if following.get_untracked() {
            scroll_to_end();
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = lines_ref.get_untracked() {
            let at_end = el.scroll_top() + el.client_height() >= el.scroll_height() - 8;
            if at_end != following.get_untracked() {
                following.set(at_end);
            }
        }
    };
    let show_history = RwSignal::new(false);

    view! {
        <Show when=move || host().is_some()>
            <section class="log-panel" aria-label="Command output">
                <nav class="log-tabs" role="tablist">
                    <For each=move || page.log_tabs.get() key=|id| id.clone() let:id>
                        <LogTab id />
                    </For>
                </nav>
                <header class="log-header">
                    <span class="log-host">{move || host().map(|h| h.hostname.get()).unwrap_or_default()}</span>
                    <span class="log-command">
                        {move || host().and_then(|h| h.pending_command.get()).map(|p| p.command.as_str().to_owned())}
                    </span>
                    <span class="log-status" data-status=move || host().map(status_of).unwrap_or("idle")>
                        {move || host().map(status_of).unwrap_or("idle")}
                    </span>
                    <span class="spacer"></span>
                    <Show when=move || !following.get()>
                        <button type="button" class="log-jump" on:click=move |_| {
                            following.set(true);
                            scroll_to_end();
                        }>"Jump to end ↓"</button>
                    </Show>
                    <button type="button" class="log-history-toggle" aria-pressed=move || show_history.get().to_string()
                        on:click=move |_| show_history.update(|v| *v = !*v)>
                        "History"
                    </button>
                </header>
                <Show when=move || show_history.get()>
                    {move || page.log_host.get().map(|id| view! { <History host_id=id /> })}
                </Show>
                {move || page.past_log.get().map(|id| view! { <PastLog command_id=id /> })}
                <div class="log-lines" node_ref=lines_ref on:scroll=on_scroll hidden=move || page.past_log.with(Option::is_some)>
                    <For each=move || host().map(|h| h.log.get()).unwrap_or_default() key=|entry| entry.seq let:entry>
                        <div class="log-line" class:stderr=entry.stream == OutputStream::Stderr class:log-end=entry.end>
                            {entry.line}
                        </div>
                    </For>
                </div>
            </section>
        </Show>
    }
}

#[component]
fn LogTab(id: String) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let host = store.host(&id);
    let active = {
        let id = id.clone();
        Memo::new(move |_| page.log_host.with(|h| h.as_deref() == Some(id.as_str())))
    };
    let label = host.map(|h| move || h.hostname.get());
    let state = move || host.map(status_of).unwrap_or("idle");
    let (select_id, close_id) = (id.clone(), id.clone());
    view! {
        <span class="log-tab" class:active=active data-host-id=id.clone() data-status=state>
            <button type="button" role="tab" aria-selected=move || active.get().to_string()
                on:click=move |_| page.show_log(&select_id)>
                {label}
            </button>
            <button type="button" class="log-tab-close" aria-label="Close this tab" on:click=move |_| page.close_log(&close_id)>
                "×"
            </button>
        </span>
    }
}

/// A past command's stored log (its last `LOG_TAIL_LINES` lines; the download has all),
/// shown in place of the live output until the operator goes back to it.
#[component]
fn PastLog(command_id: String) -> impl IntoView {
    let page = expect_context::<PageState>();
    let id = command_id.clone();
    let lines = Resource::new(move || id.clone(), command_log_tail);
    view! {
        <div class="past-log" data-testid="past-log" data-command-id=command_id.clone()>
            <p class="past-log-head">
                "Stored log of command " <code>{command_id.clone()}</code> " "
                <a class="history-download" href=format!("/api/commands/{command_id}/log") download="">"Download"</a>
                " "
                <button type="button" class="past-log-close" on:click=move |_| page.past_log.set(None)>"Back to live output"</button>
            </p>
            <div class="log-lines">
                <Suspense fallback=|| view! { <p class="loading">"Loading the log…"</p> }>
                    {move || Suspend::new(async move {
                        match lines.await {
                            Ok(lines) if lines.is_empty() => view! { <p class="empty">"This command wrote no output."</p> }.into_any(),
                            Ok(lines) => lines.into_iter().map(|line| {
                                // The download's format: "[HH:MM:SS] [ERR] …" for stderr.
                                let stderr = line.get(10..16) == Some(" [ERR]");
                                view! { <div class="log-line" class:stderr=stderr>{line}</div> }
                            }).collect_view().into_any(),
                            Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        }
                    })}
                </Suspense>
            </div>
        </div>
    }
}

/// The host's latest commands, with their full logs to download.
#[component]
fn History(host_id: String) -> impl IntoView {
    let list = Resource::new(move || host_id.clone(), |id| command_history(id, 20));
    let row = |c: CommandRecord| {
        view! {
            <li class="history-item" data-status=c.status.as_str()>
                <span class="history-command">{c.command.as_str()}</span>
                <span class="history-status">{command_status_text(c.status)}</span>
                <span class="history-when">{c.queued_at.to_string()}</span>
                <span class="history-lines">{format!("{} lines", c.line_count)}</span>
                <a class="history-download" href=format!("/api/commands/{}/log", c.command_id) download="">"Download"</a>
            </li>
        }
    };
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading history…"</p> }>
            {move || Suspend::new(async move {
                match list.await {
                    Ok(items) if items.is_empty() => view! { <p class="empty">"No commands yet."</p> }.into_any(),
                    Ok(items) => view! { <ul class="history">{items.into_iter().map(row).collect_view()}</ul> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_rolled_back_not_ok() {
        assert_eq!(
            result_text(Some(CommandStatus::RolledBack), false),
            "rolled back"
        );
        assert_eq!(
            result_text(Some(CommandStatus::RolledBack), true),
            "running"
        );
        assert_eq!(result_text(Some(CommandStatus::Ok), false), "ok");
        assert_eq!(
            result_text(Some(CommandStatus::Timeout), false),
            "timed out"
        );
        assert_eq!(result_text(None, false), "idle");
    }
}
