//! One host as a table row. Below 768 px CSS lays the same row out as a card (grid areas
//! per cell), so each host is rendered once whatever the viewport.

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
