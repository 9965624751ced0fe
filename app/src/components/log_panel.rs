//! The output panel: the live log of one host's latest command.

use crate::store::HostStore;
use leptos::prelude::*;
use protocol::{CommandStatus, OutputStream};

fn result_text(status: Option<CommandStatus>, running: bool) -> &'static str {
    match (status, running) {
        (_, true) => "running",
        (Some(CommandStatus::Ok), _) => "ok",
        (Some(CommandStatus::Error), _) => "error",
        (Some(CommandStatus::Stopped), _) => "stopped",
        (Some(CommandStatus::Timeout), _) => "timed out",
        (Some(CommandStatus::Lost), _) => "lost",
        (Some(CommandStatus::Abandoned), _) => "abandoned",
        _ => "idle",
    }
}

#[component]
pub fn LogPanel() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let host = move || store.log_host.get().and_then(|id| store.host(&id));
    let lines_ref = NodeRef::<leptos::html::Div>::new();
    // Keep the newest line in view as output streams in.
    Effect::new(move |_| {
        if let Some(h) = host() {
            h.log.track();
        }
        if let Some(el) = lines_ref.get() {
            el.set_scroll_top(el.scroll_height());
        }
    });

    view! {
        <Show when=move || host().is_some()>
            <section class="log-panel" aria-label="Command output">
                <header class="log-header">
                    <span class="log-host">
                        {move || host().map(|h| h.hostname.get()).unwrap_or_default()}
                    </span>
                    <span class="log-command">
                        {move || {
                            host()
                                .and_then(|h| h.pending_command.get())
                                .map(|p| p.command.as_str().to_owned())
                                .unwrap_or_default()
                        }}
                    </span>
                    <span
                        class="log-status"
                        data-status=move || {
                            host()
                                .map(|h| result_text(h.last_result.get(), h.pending_command.with(Option::is_some)))
                                .unwrap_or("idle")
                        }
                    >
                        {move || {
                            host()
                                .map(|h| result_text(h.last_result.get(), h.pending_command.with(Option::is_some)))
                                .unwrap_or("idle")
                        }}
                    </span>
                    <span class="spacer"></span>
                    <button class="log-close" type="button" on:click=move |_| store.log_host.set(None)>
                        "Close"
                    </button>
                </header>
                <div class="log-lines" node_ref=lines_ref>
                    <For
                        each=move || host().map(|h| h.log.get()).unwrap_or_default()
                        key=|entry| entry.seq
                        let:entry
                    >
                        <div class="log-line" class:stderr=entry.stream == OutputStream::Stderr>
                            {entry.line}
                        </div>
                    </For>
                </div>
            </section>
        </Show>
    }
}
