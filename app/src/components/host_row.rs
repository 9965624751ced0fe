//! One host as a table row. Every class and text is derived from the host's signals.

use crate::components::actions::{perform, Action};
use crate::presentation::*;
use crate::store::{HostSignals, HostStore};
use leptos::prelude::*;
use protocol::{CommandKind, DEFAULT_HEARTBEAT_S};

#[component]
pub fn HostRow(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let HostSignals {
        id,
        hostname,
        host_type,
        theme_color,
        location,
        online,
        last_seen,
        pending_command,
        metrics,
        generation,
        agent_version,
        beats,
        ..
    } = host;
    let busy = host.busy();
    let cpu = Memo::new(move |_| metrics.with(|m| m.map(|m| m.cpu)));
    let ram = Memo::new(move |_| metrics.with(|m| m.map(|m| m.ram)));
    let seen = Memo::new(move |_| {
        crate::presentation::last_seen(last_seen.get(), store.now.get(), DEFAULT_HEARTBEAT_S)
    });
    // Alternating between two identical animations restarts the pulse on every beat.
    let indicator = move || {
        let pulse = match beats.get() {
            0 => "",
            n if n % 2 == 0 => " pulse-a",
            _ => " pulse-b",
        };
        format!("{}{pulse}", indicator_class(online.get(), busy.get()))
    };

    // Pull, Switch and Test need an online, idle host; while busy, Test becomes Stop.
    let can_run = move || online.get() && !busy.get();
    let host_id = move || id.get_value();
    let run = move |kind| move |_| perform(store, host_id(), Action::Run(kind));
    let test_or_stop = move |_| {
        let action = if busy.get_untracked() {
            Action::Stop
        } else {
            Action::Run(CommandKind::Test)
        };
        perform(store, host_id(), action);
    };

    view! {
        <tr class="host-row" class:host-offline=move || !online.get() data-host-id=id.get_value()>
            <td class="cell-status">
                <span class=indicator title=move || indicator_title(online.get(), busy.get())></span>
            </td>
            <td class="cell-host">
                <span class="hostname" style:color=move || theme_color.get()>
                    {move || hostname.get()}
                </span>
                {move || {
                    pending_command
                        .get()
                        .map(|p| view! { <span class="progress-badge-mini">{p.command.as_str()}</span> })
                }}
            </td>
            <td class="cell-type">
                <span class="host-type">{move || host_type.get().as_str()}</span>
                <span class="location">{move || location.get().unwrap_or_default()}</span>
            </td>
            <td class="cell-metrics" data-cell="metrics" title=move || metrics_title(metrics.get())>
                <span class=move || metric_class(cpu.get()) data-metric="cpu" data-value=move || cpu.get().map(|v| v.to_string())>
                    "CPU " <span class="metric-val">{move || percent(cpu.get())}</span>
                </span>
                " "
                <span class=move || metric_class(ram.get()) data-metric="ram" data-value=move || ram.get().map(|v| v.to_string())>
                    "RAM " <span class="metric-val">{move || percent(ram.get())}</span>
                </span>
            </td>
            <td
                class=move || seen.get().1
                data-cell="last-seen"
                data-timestamp=move || last_seen.get().map(|t| t.to_string())
            >
                {move || seen.get().0}
            </td>
            <td class="cell-agent">{move || agent_version.get().unwrap_or_else(|| "—".into())}</td>
            <td class="cell-gen" title=move || generation.get().unwrap_or_default()>
                {move || short_generation(generation.get().as_deref())}
            </td>
            <td class="cell-actions">
                <button type="button" class="btn-pull" data-command="pull" disabled=move || !can_run() on:click=run(CommandKind::Pull)>
                    "Pull"
                </button>
                <button type="button" class="btn-switch" data-command="switch" disabled=move || !can_run() on:click=run(CommandKind::Switch)>
                    "Switch"
                </button>
                <button
                    type="button"
                    class=move || if busy.get() { "btn-stop" } else { "btn-test" }
                    data-command=move || if busy.get() { "stop" } else { "test" }
                    disabled=move || !busy.get() && !can_run()
                    on:click=test_or_stop
                >
                    {move || if busy.get() { "Stop" } else { "Test" }}
                </button>
                <button
                    type="button"
                    class="btn-log"
                    title="Show this host's output"
                    on:click=move |_| store.log_host.set(Some(host_id()))
                >
                    "Log"
                </button>
            </td>
        </tr>
    }
}
