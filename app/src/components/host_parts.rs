//! The pieces of a host's view, shared by the table row and the mobile card so that both
//! render from the same signals with the same derivations. Each piece carries the seed's
//! DOM hooks.

use crate::components::actions::{perform, Action};
use crate::components::lazy_view;
use crate::components::menu::want;
use crate::presentation::*;
use crate::store::{HostSignals, HostStore};
use leptos::prelude::*;
use protocol::{CommandKind, DEFAULT_HEARTBEAT_S};

/// The selection checkbox; shift-click selects a range.
#[component]
pub fn SelectBox(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let id = host.id;
    let checked = move || store.selection.with(|s| s.ids.contains(&id.get_value()));
    let click = move |ev: leptos::ev::MouseEvent| {
        let order = store.shown.get_untracked();
        store
            .selection
            .update(|s| s.click(&order, &id.get_value(), ev.shift_key()));
    };
    view! {
        <input
            type="checkbox"
            class="select-host"
            aria-label=move || format!("Select {}", host.hostname.get())
            prop:checked=checked
            on:click=click
        />
    }
}

#[component]
pub fn StatusIndicator(host: HostSignals) -> impl IntoView {
    let HostSignals { online, beats, .. } = host;
    let busy = host.busy();
    // Alternating between two identical animations restarts the pulse on every beat.
    let class = move || {
        let pulse = match beats.get() {
            0 => "",
            n if n % 2 == 0 => " pulse-a",
            _ => " pulse-b",
        };
        format!("{}{pulse}", indicator_class(online.get(), busy.get()))
    };
    view! { <span class=class title=move || indicator_title(online.get(), busy.get())></span> }
}

#[component]
pub fn HostName(host: HostSignals) -> impl IntoView {
    let HostSignals {
        hostname,
        theme_color,
        pending_command,
        ..
    } = host;
    view! {
        <span class="hostname" style:color=move || theme_color.get()>
            {move || hostname.get()}
        </span>
        {move || {
            pending_command
                .get()
                .map(|p| view! { <span class="progress-badge-mini">{p.command.as_str()}</span> })
        }}
    }
}

#[component]
pub fn HostKind(host: HostSignals) -> impl IntoView {
    let HostSignals {
        host_type,
        location,
        ..
    } = host;
    view! {
        <span class="host-type">{move || host_type.get().as_str()}</span>
        <span class="location">{move || location.get().unwrap_or_default()}</span>
    }
}

#[component]
pub fn MetricsView(host: HostSignals) -> impl IntoView {
    let metrics = host.metrics;
    let cpu = Memo::new(move |_| metrics.with(|m| m.map(|m| m.cpu)));
    let ram = Memo::new(move |_| metrics.with(|m| m.map(|m| m.ram)));
    let metric = move |name: &'static str, label: &'static str, value: Memo<Option<f64>>| {
        view! {
            <span class=move || metric_class(value.get()) data-metric=name data-value=move || value.get().map(plain_number)>
                {label} " " <span class="metric-val">{move || percent(value.get())}</span>
            </span>
        }
    };
    view! {
        <span class="metrics" data-cell="metrics" title=move || metrics_title(metrics.get())>
            {metric("cpu", "CPU", cpu)}
            " "
            {metric("ram", "RAM", ram)}
        </span>
    }
}

#[component]
pub fn LastSeen(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let last_seen = host.last_seen;
    let seen = Memo::new(move |_| {
        crate::presentation::last_seen(last_seen.get(), store.now.get(), DEFAULT_HEARTBEAT_S)
    });
    view! {
        <span
            class=move || seen.get().1
            data-cell="last-seen"
            data-timestamp=move || last_seen.get().map(|t| t.to_string())
        >
            {move || seen.get().0}
        </span>
    }
}

#[component]
pub fn Generation(host: HostSignals) -> impl IntoView {
    let generation = host.generation;
    view! {
        <span class="generation" title=move || generation.get().unwrap_or_default()>
            {move || short_generation(generation.get().as_deref())}
        </span>
    }
}

#[component]
pub fn Compartments(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let HostSignals {
        update_status,
        agent_outdated,
        ..
    } = host;
    let compartments = COMPARTMENTS.map(|(name, label)| {
        let check = Memo::new(move |_| {
            update_status.with(|u| match name {
                "agent" => u.agent.clone(),
                "git" => u.git.clone(),
                "lock" => u.lock.clone(),
                "system" => u.system.clone(),
                _ => u.tests.clone(),
            })
        });
        let is_lock = name == "lock";
        let has_pr = move || is_lock && store.pending_pr.with(Option::is_some);
        // The lock compartment also says which update PR is waiting. One memo feeds both
        // title and aria-label, and only the lock compartment depends on the PR: at 1 000
        // hosts (row and card) every extra subscriber of a shared signal costs (P3).
        let title = Memo::new(move |_| {
            let text = compartment_title(label, &check.get());
            if !is_lock {
                return text;
            }
            match store.pending_pr.get() {
                Some(pr) => format!("{text}\n{}", pr_note(&pr)),
                None => text,
            }
        });
        let title = move || title.get();
        view! {
            <span
                class=move || compartment_class(check.get().status)
                class:has-pr=has_pr
                data-compartment=name
                title=title
                aria-label=title
            >
                <span class=move || format!("compartment-indicator compartment-indicator--{}", check.get().status.as_str())></span>
                <span class="compartment-code">{move || compartment_code(check.get().status)}</span>
                {is_lock.then(|| view! {
                    <Show when=move || agent_outdated.get()>
                        <span class="agent-badge" title="The agent is outdated">"A"</span>
                    </Show>
                })}
            </span>
        }
    });
    view! { <span class="update-status">{compartments.into_iter().collect_view()}</span> }
}

/// Pull, Switch, Test/Stop, refresh and the ⋮ menu.
#[component]
pub fn HostActions(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let HostSignals { id, online, .. } = host;
    let busy = host.busy();
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
    let refreshing = RwSignal::new(false);
    let refresh = move |_| {
        if refreshing.get_untracked() {
            return;
        }
        refreshing.set(true);
        crate::components::actions::refresh(store, host_id(), refreshing);
    };
    // Choosing an item closes the menu.
    let menu = NodeRef::<leptos::html::Details>::new();
    let close_menu = move |_| crate::components::menu::close(menu);
    let wanted = RwSignal::new(false);

    view! {
        <span class="host-actions">
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
                class="btn-refresh"
                class:loading=move || refreshing.get()
                aria-label="Refresh this host's status"
                title="Refresh status"
                on:click=refresh
            >
                "↻"
            </button>
            // The items exist only once the operator reaches for this menu: 8 buttons and
            // their bindings per row add up across a fleet (P4), and their code is a lazily
            // loaded chunk (P5).
            <details
                class="host-menu"
                node_ref=menu
                on:keydown=crate::components::menu::escape_closes(menu)
                on:toggle=want(wanted)
                on:pointerenter=want(wanted)
                on:focusin=want(wanted)
            >
                <summary aria-label="More actions">"⋮"</summary>
                <div class="menu" role="menu" on:click=close_menu>
                    {lazy_view(move || wanted.get(), move || host_menu_items(host))}
                </div>
            </details>
        </span>
    }
}

/// The ⋮ menu's items: their code is a separate wasm chunk, fetched the first time a menu
/// opens (P5).
#[lazy]
pub(crate) fn host_menu_items(host: HostSignals) -> AnyView {
    view! { <HostMenuItems host /> }.into_any()
}

#[component]
fn HostMenuItems(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let HostSignals { id, online, .. } = host;
    let busy = host.busy();
    let can_run = move || online.get() && !busy.get();
    let host_id = move || id.get_value();
    let menu_item = move |kind: CommandKind, label: &'static str| {
        view! {
            <button type="button" role="menuitem" data-command=kind.as_str() disabled=move || !can_run()
                on:click=move |_| perform(store, host_id(), Action::Run(kind))>
                {label}
            </button>
        }
    };
    view! {
        {menu_item(CommandKind::PullSwitch, "Pull + switch")}
        {menu_item(CommandKind::Update, "Update flake.lock")}
        {menu_item(CommandKind::Rollback, "Rollback")}
        {menu_item(CommandKind::Restart, "Restart agent")}
        <button type="button" role="menuitem" data-command="unlock" disabled=move || !busy.get()
            on:click=move |_| perform(store, host_id(), Action::Unlock)>
            "Unlock"
        </button>
        <button type="button" role="menuitem" data-command="log" on:click=move |_| store.show_log(&host_id())>
            "Show output"
        </button>
        <button type="button" role="menuitem" data-command="download-logs"
            on:click=move |_| crate::components::actions::download_latest_log(store, host_id())>
            "Download logs"
        </button>
        <button type="button" role="menuitem" class="danger" data-command="remove"
            on:click=move |_| store.confirm.set(Some(crate::store::Confirm::RemoveHost(host_id())))>
            "Remove host…"
        </button>
    }
}
