//! The pieces of a host's view: each host is one `<tr>` (`HostRow`), which CSS lays out as
//! a card below 768 px, so every piece renders once from the host's signals whatever the
//! viewport. Each piece carries the seed's DOM hooks.

use crate::components::actions::{perform, Action};
use crate::components::lazy_view;
use crate::components::menu::want;
use crate::page_state::{Confirm, HostCommand, PageState};
use crate::presentation::*;
use crate::store::{HostSignals, HostStore};
use leptos::prelude::*;
use protocol::{CommandKind, UpdateStatus, DEFAULT_HEARTBEAT_S};

/// The selection checkbox; shift-click selects a range.
#[component]
pub fn SelectBox(host: HostSignals) -> impl IntoView {
    let page = expect_context::<PageState>();
    let id = host.id;
    let checked = move || page.selection.with(|s| s.ids.contains(&id.get_value()));
    let click = move |ev: leptos::ev::MouseEvent| {
        let order = page.shown.get_untracked();
        page.selection
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
        id,
        hostname,
        theme_color,
        pending_command,
        pending_approval,
        reboot_needed,
        ..
    } = host;
    view! {
        // "reboot needed" is this attribute and CSS (`.hostname[data-reboot-needed]::after`):
        // one attribute binding on an element the row has anyway, the smallest addition to
        // every row's build and to the first download (P4, P5). The name links to the
        // host's page (`/hosts/{id}`, a lazily loaded route).
        <a class="hostname" href=format!("/hosts/{}", id.get_value()) style:color=move || theme_color.get()
            data-reboot-needed=move || reboot_needed.get().then_some("true")>
            {move || hostname.get()}
        </a>
        // Enrolled by itself: no commands until an admin approves it (⋮ → Approve).
        <span class="pending-approval" hidden=move || !pending_approval.get()
            title="This host enrolled itself; an admin must approve it before it takes commands">
            "awaiting approval"
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
        tags,
        ..
    } = host;
    view! {
        <span class="host-type">{move || host_type.get().as_str()}</span>
        <span class="location">{move || location.get().unwrap_or_default()}</span>
        <span class="tags" data-cell="tags">
            {move || tags.get().into_iter().map(|t| view! { <span class="tag">{t}</span> }).collect_view()}
        </span>
    }
}

#[component]
pub fn MetricsView(host: HostSignals) -> impl IntoView {
    let page = expect_context::<PageState>();
    let id = host.id;
    // The last hour of CPU, from the page's sparklines (`HostTable` fetches them for the
    // rows in view, one request for all).
    let spark = move || {
        page.sparks.with(|all| {
            id.with_value(|id| all.iter().find(|(host, _)| host == id))
                .map(|(_, d)| d.clone())
        })
    };
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
        // Beside the figures, not inside their box: that box is as wide as its longest text
        // (a stable table), and the sparkline has a fixed width of its own.
        <svg class="spark" data-testid="sparkline" viewBox="0 0 600 100" preserveAspectRatio="none" aria-hidden="true">
            <path d=spark />
        </svg>
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

/// The five update compartments. They change when a check's result or the waiting PR
/// changes, minutes apart, so the cell is one binding that re-renders its plain markup
/// (the rebuild writes only the attributes and text that differ); binding each attribute
/// of each compartment separately cost ~40 reactive nodes per row, most of a row's build
/// time in the browser (P4). The store sets `update_status` only when it changed, so a
/// heartbeat repeating it touches nothing.
#[component]
pub fn Compartments(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let HostSignals {
        update_status,
        agent_outdated,
        ..
    } = host;
    move || {
        let pr_note = store.pending_pr.with(|pr| pr.as_ref().map(pr_note));
        let outdated = agent_outdated.get();
        update_status.with(|u| {
            let checks = u.checks();
            let compartments = std::array::from_fn::<_, 5, _>(|i| {
                let (name, check) = (UpdateStatus::NAMES[i], checks[i]);
                let is_lock = name == "lock";
                let mut title = compartment_title(&compartment_label(name), check);
                let mut class = compartment_class(check.status).to_owned();
                if let (true, Some(note)) = (is_lock, &pr_note) {
                    title = format!("{title}\n{note}");
                    class.push_str(" has-pr");
                }
                let status = check.status.as_str();
                view! {
                    <span class=class data-compartment=name title=title.clone() aria-label=title>
                        <span class="compartment-name">{name}</span>
                        <span class=format!("compartment-indicator compartment-indicator--{status}")></span>
                        <span class="compartment-code">{compartment_code(check.status)}</span>
                        {(is_lock && outdated).then(|| view! {
                            <span class="agent-badge" title="The agent is outdated">"A"</span>
                        })}
                    </span>
                }
            });
            view! { <span class="update-status">{compartments}</span> }
        })
    }
}

/// Pull, Switch, Test/Stop, refresh and the ⋮ menu.
#[component]
pub fn HostActions(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let HostSignals { id, online, .. } = host;
    let busy = host.busy();
    // Pull, Switch and Test need an online, idle host; while busy, Test becomes Stop.
    let can_run = move || online.get() && !busy.get();
    let host_id = move || id.get_value();
    let run = move |kind| move |_| perform(page, host_id(), Action::Run(kind));
    let test_or_stop = move |_| {
        let action = if busy.get_untracked() {
            Action::Stop
        } else {
            Action::Run(CommandKind::Test)
        };
        perform(page, host_id(), action);
    };
    let refreshing = RwSignal::new(false);
    let refresh = move |_| {
        if refreshing.get_untracked() {
            return;
        }
        refreshing.set(true);
        crate::components::actions::refresh(store, page, host_id(), refreshing);
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
    let page = expect_context::<PageState>();
    let HostSignals {
        id,
        online,
        pending_approval,
        ..
    } = host;
    let busy = host.busy();
    let can_run = move || online.get() && !busy.get();
    let host_id = move || id.get_value();
    let menu_item = move |kind: CommandKind, label: &'static str| {
        view! {
            <button type="button" role="menuitem" data-command=kind.as_str() disabled=move || !can_run()
                on:click=move |_| perform(page, host_id(), Action::Run(kind))>
                {label}
            </button>
        }
    };
    let ask = move |kind: CommandKind| {
        move |_| {
            page.confirm
                .set(Some(Confirm::Commands(vec![HostCommand::new(
                    host_id(),
                    kind,
                )])))
        }
    };
    view! {
        <button type="button" role="menuitem" data-command="approve" hidden=move || !pending_approval.get()
            on:click=move |_| crate::components::actions::approve(page, host_id())>
            "Approve host"
        </button>
        // Builds and diffs, activates nothing: no confirm. The diff shows in the fleet
        // diff panel when it ends.
        {menu_item(CommandKind::Preview, "Preview switch")}
        {menu_item(CommandKind::PullSwitch, "Pull + switch")}
        <button type="button" role="menuitem" data-command="boot" disabled=move || !can_run()
            on:click=ask(CommandKind::Boot)>
            "Boot into new build…"
        </button>
        {menu_item(CommandKind::Update, "Update flake.lock")}
        {menu_item(CommandKind::Rollback, "Rollback")}
        <button type="button" role="menuitem" data-command="generations"
            on:click=move |_| page.generations_host.set(Some(host_id()))>
            "Generations…"
        </button>
        <button type="button" role="menuitem" data-command="edit"
            on:click=move |_| page.edit_host.set(Some(host_id()))>
            "Edit host…"
        </button>
        {menu_item(CommandKind::Restart, "Restart agent")}
        <button type="button" role="menuitem" data-command="unlock" disabled=move || !busy.get()
            on:click=move |_| perform(page, host_id(), Action::Unlock)>
            "Unlock"
        </button>
        <button type="button" role="menuitem" data-command="log" on:click=move |_| page.show_log(&host_id())>
            "Show output"
        </button>
        <button type="button" role="menuitem" data-command="download-logs"
            on:click=move |_| crate::components::actions::download_latest_log(page, host_id())>
            "Download logs"
        </button>
        <button type="button" role="menuitem" class="danger" data-command="remove"
            on:click=move |_| page.confirm.set(Some(Confirm::RemoveHost(host_id())))>
            "Remove host…"
        </button>
    }
}
