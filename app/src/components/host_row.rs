//! One host as a table row (desktop) and as a card (below 768 px): the same parts, from the
//! same signals, in two layouts.

use crate::components::host_parts::*;
use crate::store::HostSignals;
use leptos::prelude::*;

#[component]
pub fn HostRow(host: HostSignals) -> impl IntoView {
    let online = host.online;
    view! {
        <tr class="host-row" class:host-offline=move || !online.get() data-host-id=host.id.get_value()>
            <td class="cell-select"><SelectBox host /></td>
            <td class="cell-status"><StatusIndicator host /></td>
            <td class="cell-host"><HostName host /></td>
            <td class="cell-type"><HostKind host /></td>
            <td class="cell-metrics"><MetricsView host /></td>
            <td class="cell-last-seen"><LastSeen host /></td>
            <td class="cell-agent">{move || host.agent_version.get().unwrap_or_else(|| "—".into())}</td>
            <td class="cell-gen"><Generation host /></td>
            <td class="cell-status-compartments"><Compartments host /></td>
            <td class="cell-actions"><HostActions host /></td>
        </tr>
    }
}

#[component]
pub fn HostCard(host: HostSignals) -> impl IntoView {
    let online = host.online;
    view! {
        <article class="host-card" class:host-offline=move || !online.get() data-host-id=host.id.get_value()>
            <header class="card-head">
                <SelectBox host />
                <StatusIndicator host />
                <HostName host />
                <span class="spacer"></span>
                <HostKind host />
            </header>
            <div class="card-body">
                <MetricsView host />
                <LastSeen host />
                <Generation host />
            </div>
            <Compartments host />
            <HostActions host />
        </article>
    }
}
