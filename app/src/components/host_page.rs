//! One host's page (`/hosts/{id}`, linked from the hostname in each row): every fact the
//! agent reports, the compartments explained, the metrics history as charts with the
//! host's commands on the same time axis, the command history (any past log opens in the
//! log panel), the generations, token rotation and the Edit host dialog. A route of its
//! own wasm chunk (a `Lazy` route in `lib.rs`), so none of this is in the dashboard's
//! first download (P5).
//! It reads the same live `HostStore` as the dashboard (`dashboard::fleet_page`), so it
//! changes with every heartbeat without a reload; the dialogs and panels are the
//! dashboard's own.

use crate::api::{command_detail, command_history, host_metrics, rotate_host_token};
use crate::chart::{deploy_marks, line_path, Frame, HEIGHT, WIDTH};
use crate::components::confirm::ConfirmDialog;
use crate::components::dashboard::fleet_page;
use crate::components::fleet_diff_panel::FleetDiffPanel;
use crate::components::generations::GenerationsPanel;
use crate::components::host_edit::HostEditPanel;
use crate::components::host_parts::{HostActions, StatusIndicator};
use crate::components::link_footer::LinkFooter;
use crate::components::log_panel::LogPanel;
use crate::components::notices::Notices;
use crate::components::reauth::ReauthPrompt;
use crate::page_state::PageState;
use crate::presentation::*;
use crate::store::{current_generation, HostSignals, HostStore, Preview};
use common::AppError;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use protocol::api::{CommandRecord, MetricsHistory, MetricsPoint};
use protocol::{CommandKind, Timestamp, UpdateStatus, DEFAULT_HEARTBEAT_S};

/// The ranges the charts offer, with their length in seconds (as `service::history`).
const RANGES: [(&str, i64); 5] = [
    ("1h", 3600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
    ("1y", 365 * 86_400),
];

/// Commands the history lists, and marks on the charts.
const HISTORY_LIMIT: u32 = 50;

#[component]
pub fn HostPage() -> impl IntoView {
    fleet_page(|| {
        let id = use_params_map().with_untracked(|p| p.get("id").unwrap_or_default());
        view! { <HostView id /> }
    })
}

#[component]
fn HostView(id: String) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let host_id = id.clone();
    // Signals for this host once the store has it (at once from a server render; after
    // the socket's snapshot when opened inside the app).
    let present = {
        let id = id.clone();
        Memo::new(move |_| store.ids.with(|ids| ids.contains(&id)))
    };
    let host = move || present.get().then(|| store.host(&host_id)).flatten();
    let missing = {
        let id = id.clone();
        move || {
            (store.synced.get() && !present.get())
                .then(|| view! { <p class="error" data-testid="host-missing">"No host “" {id.clone()} "” in this fleet."</p> })
        }
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"nixdeck"</a>
            <span class="fleet-count">"Host " {id.clone()}</span>
            <span class="spacer"></span>
            <a class="account-link" href="/">"Fleet"</a>
        </header>
        <main class="host-page" data-host-id=id.clone()>
            <Show when=move || !store.synced.get()>
                <p class="loading">"Loading the fleet…"</p>
            </Show>
            {missing}
            {move || host().map(|host| view! { <HostDetails host /> })}
            <GenerationsPanel />
            <FleetDiffPanel />
            <HostEditPanel />
            <LogPanel />
        </main>
        <Notices />
        <ConfirmDialog />
        <LinkFooter />
    }
}

#[component]
fn HostDetails(host: HostSignals) -> impl IntoView {
    let page = expect_context::<PageState>();
    let id = host.id.get_value();
    // The page's panels are about this host: its generations open inline, and the fleet
    // diff panel shows its preview (the panel narrows to the selection).
    page.generations_host.set(Some(id.clone()));
    page.selection.update(|s| {
        s.ids.clear();
        s.ids.insert(id.clone());
    });
    // A version that moves when a command starts or ends, so the history and the charts'
    // marks follow without a reload.
    let commands_version = Memo::new(move |_| {
        (
            host.pending_command
                .with(|p| p.as_ref().map(|p| p.command_id.clone())),
            host.last_result.get(),
        )
    });
    let history = {
        let id = id.clone();
        Resource::new(
            move || (id.clone(), commands_version.get()),
            |(id, _)| command_history(id, HISTORY_LIMIT),
        )
    };
    view! {
        <section class="host-head">
            <StatusIndicator host />
            <h2 class="host-title" style:color=move || host.theme_color.get()>{move || host.hostname.get()}</h2>
            <span class="spacer"></span>
            <HostActions host />
            <button type="button" class="btn-edit-host" data-command="edit"
                on:click={
                    let id = id.clone();
                    move |_| page.edit_host.set(Some(id.clone()))
                }>
                "Edit host…"
            </button>
        </section>
        <Facts host />
        <CompartmentsExplained host />
        <Charts host history />
        <History host history />
        <TokenRotation host_id=id.clone() />
    }
}

/// Every fact the agent and the dashboard know of the host, live.
#[component]
fn Facts(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let HostSignals {
        id,
        host_type,
        device_type,
        location,
        tags,
        os_version,
        nixpkgs_version,
        agent_version,
        agent_outdated,
        generation,
        metrics,
        last_seen,
        online,
        reboot_needed,
        ..
    } = host;
    // The checkout comes with a registration, as does the agent's version.
    let checkout = Memo::new(move |_| {
        agent_version.track();
        store
            .host_state(&id.get_value())
            .map(|h| (h.repo_url, h.repo_dir))
            .unwrap_or_default()
    });
    let seen = move || last_seen_text(last_seen.get(), store.now.get());
    let metric = move |pick: fn(&protocol::Metrics) -> Option<f64>, load: bool| {
        move || match metrics.get().as_ref().and_then(pick) {
            Some(v) if load => fixed(v, 2),
            v => percent(v),
        }
    };
    let fact = |key: &'static str, label: &'static str, value: AnyView| {
        view! {
            <dt>{label}</dt>
            <dd data-fact=key>{value}</dd>
        }
    };
    let text = |f: Signal<String>| view! { {move || f.get()} }.into_any();
    let opt =
        |s: RwSignal<Option<String>>| Signal::derive(move || s.get().unwrap_or_else(|| "—".into()));
    view! {
        <section class="host-facts" aria-label="Facts">
            <dl class="facts">
                {fact("status", "Status", view! {
                    {move || if online.get() { "online" } else { "offline" }}
                    " · last seen " {seen}
                    {move || reboot_needed.get().then_some(" · reboot needed")}
                }.into_any())}
                {fact("type", "Type", text(Signal::derive(move || host_type.get().as_str().to_owned())))}
                {fact("device-type", "Device type", text(opt(device_type)))}
                {fact("location", "Location", text(opt(location)))}
                {fact("tags", "Tags", view! {
                    {move || tags.get().into_iter().map(|t| view! { <span class="tag">{t}</span> " " }).collect_view()}
                }.into_any())}
                {fact("os", "OS", text(opt(os_version)))}
                {fact("nixpkgs", "nixpkgs", text(opt(nixpkgs_version)))}
                {fact("agent", "Agent version", view! {
                    {move || agent_version.get().unwrap_or_else(|| "—".into())}
                    {move || agent_outdated.get().then_some(" (outdated)")}
                }.into_any())}
                {fact("generation", "Commit", text(opt(generation)))}
                {fact("repo", "Repository", text(Signal::derive(move || checkout.get().0.unwrap_or_else(|| "—".into()))))}
                {fact("checkout", "Checkout", text(Signal::derive(move || checkout.get().1.unwrap_or_else(|| "—".into()))))}
                {fact("branch", "Branch", text(Signal::derive(move || {
                    store.desired.with(|d| d.as_ref().map(|d| d.branch.clone())).unwrap_or_else(|| "— (no desired state configured)".into())
                })))}
                {fact("cpu", "CPU", text(Signal::derive(metric(|m| Some(m.cpu), false))))}
                {fact("ram", "RAM", text(Signal::derive(metric(|m| Some(m.ram), false))))}
                {fact("swap", "Swap", text(Signal::derive(metric(|m| Some(m.swap), false))))}
                {fact("load", "Load (1 min)", text(Signal::derive(metric(|m| Some(m.load), true))))}
                {fact("disk", "Root disk", text(Signal::derive(metric(|m| m.disk, false))))}
            </dl>
        </section>
    }
}

fn last_seen_text(seen: Option<Timestamp>, now: Timestamp) -> String {
    crate::presentation::last_seen(seen, now, DEFAULT_HEARTBEAT_S).0
}

/// The five compartments, each with its state in words, what it found and what it checks.
#[component]
fn CompartmentsExplained(host: HostSignals) -> impl IntoView {
    let update_status = host.update_status;
    let rows = move || {
        update_status.with(|u| {
            UpdateStatus::NAMES
                .iter()
                .zip(u.checks())
                .map(|(name, check)| {
                    let label = compartment_label(name);
                    view! {
                        <tr class=compartment_class(check.status) data-compartment=*name>
                            <th scope="row">{label.clone()}</th>
                            <td class="compartment-code">{compartment_code(check.status)}</td>
                            <td class="compartment-found">{compartment_title(&label, check)}</td>
                            <td class="compartment-meaning">{compartment_meaning(name)}</td>
                        </tr>
                    }
                })
                .collect_view()
        })
    };
    view! {
        <section class="host-compartments" aria-label="Compartments">
            <h3>"Compartments"</h3>
            <table class="compartments-explained">
                <thead><tr><th>"Compartment"</th><th>"State"</th><th>"Found"</th><th>"Checks"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    }
}

/// The metrics history over a chosen range, a chart per figure, with the host's commands
/// marked on the same time axis.
#[component]
fn Charts(
    host: HostSignals,
    history: Resource<Result<Vec<CommandRecord>, AppError>>,
) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let range = RwSignal::new(0usize);
    // Re-read every minute: a 1-hour chart gains a point a minute.
    let minute = Memo::new(move |_| store.now.get().secs() / 60);
    let id = host.id.get_value();
    let data = Resource::new(
        move || (id.clone(), range.get(), minute.get()),
        |(id, r, _)| host_metrics(id, RANGES[r].0.to_owned()),
    );
    let buttons = RANGES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            view! {
                <button type="button" class="range" data-range=*name
                    aria-pressed=move || (range.get() == i).to_string()
                    on:click=move |_| range.set(i)>
                    {*name}
                </button>
            }
        })
        .collect_view();
    view! {
        <section class="host-charts" aria-label="Metrics history">
            <header class="charts-head">
                <h3>"Metrics history"</h3>
                <span class="range-switch" role="group" aria-label="Range">{buttons}</span>
            </header>
            <Transition fallback=|| view! { <p class="loading">"Loading the history…"</p> }>
                {move || Suspend::new(async move {
                    let commands = history.await.unwrap_or_default();
                    match data.await {
                        Ok(h) => {
                            let end = store.now.get_untracked().secs();
                            let length = RANGES[range.get_untracked()].1;
                            view! { <ChartSet history=h commands start=end - length end /> }.into_any()
                        }
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The five charts of one answer.
#[component]
fn ChartSet(
    history: MetricsHistory,
    commands: Vec<CommandRecord>,
    start: i64,
    end: i64,
) -> impl IntoView {
    let step = f64::from(history.step_s.max(1));
    // A missing step (the host was off) breaks the line.
    let gap = step * 1.5;
    let points = history.points;
    let marks: Vec<(i64, CommandRecord)> = commands
        .into_iter()
        .map(|c| (c.started_at.unwrap_or(c.queued_at).secs(), c))
        .filter(|(t, _)| (start..=end).contains(t))
        .collect();
    let load_max = points.iter().map(|p| p.load).fold(1.0f64, f64::max);
    type Pick = fn(&MetricsPoint) -> Option<f64>;
    let charts: [(&str, &str, Pick, f64); 5] = [
        ("cpu", "CPU", |p| Some(p.cpu), 100.0),
        ("ram", "RAM", |p| Some(p.ram), 100.0),
        ("swap", "Swap", |p| Some(p.swap), 100.0),
        ("load", "Load", |p| Some(p.load), load_max),
        ("disk", "Root disk", |p| p.disk, 100.0),
    ];
    let views = charts
        .into_iter()
        .map(|(key, label, pick, y_max)| {
            let frame = Frame {
                x0: start as f64,
                x1: end as f64,
                y_max,
            };
            let d = line_path(points.iter().map(|p| (p.t.secs() as f64, pick(p))), &frame, gap);
            let values: Vec<f64> = points.iter().filter_map(pick).collect();
            let summary = match (values.last(), key) {
                (None, _) => "no data in this range".to_owned(),
                (Some(&now), "load") => format!("now {}, max {}", fixed(now, 2), fixed(load_max, 2)),
                (Some(&now), _) => format!(
                    "now {}, max {}",
                    percent(Some(now)),
                    percent(values.iter().copied().reduce(f64::max))
                ),
            };
            // A deploy's steps are drawn as its own (solid, `chart-mark--deploy`), and the
            // deploy gets one labelled link above the drawing, to the Deploys page.
            let mark_views = marks
                .iter()
                .map(|(t, c)| {
                    let x = frame.x(*t as f64);
                    let deploy = c.deploy_id.as_ref().map(|id| {
                        let pr = c.deploy_pr.map_or_else(String::new, |n| format!(" of PR #{n}"));
                        format!(" — Merge & Deploy{pr} (deploy {id})")
                    });
                    let title = format!(
                        "{} {} — {}{}",
                        c.command.as_str(),
                        command_status_text(c.status),
                        absolute_time(Timestamp(*t)),
                        deploy.unwrap_or_default()
                    );
                    let class = if c.deploy_id.is_some() { "chart-mark chart-mark--deploy" } else { "chart-mark" };
                    view! {
                        <line class=class data-command=c.command.as_str() data-status=c.status.as_str()
                            data-deploy=c.deploy_id.clone() x1=x x2=x y1="0" y2=HEIGHT>
                            <title>{title}</title>
                        </line>
                    }
                })
                .collect_view();
            let deploy_links = deploy_marks(
                marks.iter().filter_map(|(t, c)| {
                    let id = c.deploy_id.as_deref()?;
                    Some((*t, id, c.deploy_pr, c.command.as_str()))
                }),
                &frame,
            )
            .into_iter()
            .map(|m| {
                // A whole-number `calc`, not a formatted float (P5, see `chart.rs`).
                let left = format!("left: calc(100% * {} / {WIDTH})", m.x);
                view! {
                    <a class="chart-deploy" href="/deploys" data-deploy=m.deploy_id style=left title=m.title>{m.label}</a>
                }
            })
            .collect_view();
            view! {
                <figure class="chart" data-chart=key data-points=values.len()>
                    <figcaption>{label} " " <span class="chart-summary">{summary}</span></figcaption>
                    <div class="chart-deploys">{deploy_links}</div>
                    <svg class="chart-svg" viewBox=format!("0 0 {WIDTH} {HEIGHT}") preserveAspectRatio="none" role="img"
                        aria-label=format!("{label} over the range")>
                        {mark_views}
                        <path class="chart-line" d=d />
                    </svg>
                </figure>
            }
        })
        .collect_view();
    view! {
        <div class="charts">{views}</div>
        <p class="chart-axis">
            <span>{absolute_time(Timestamp(start))}</span>
            <span class="spacer"></span>
            <span>"now"</span>
        </p>
    }
}

/// The host's latest commands: status, exit code, duration, who started it; any log opens
/// in the log panel or downloads.
#[component]
fn History(
    host: HostSignals,
    history: Resource<Result<Vec<CommandRecord>, AppError>>,
) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let host_id = host.id;
    // `changed_since`: a switch, pull + switch or rollback ended ok after this command (the
    // list is newest first), so a preview's diff is no longer against the running system.
    let row = move |(c, changed_since): (CommandRecord, bool)| {
        let id = c.command_id.clone();
        // A past preview that ended ok keeps its closure diff: shown in the page's diff
        // panel (the one render of a diff), as if it had just ended.
        let diff_button = (c.command == CommandKind::Preview && c.status.is_success()).then(|| {
            let command_id = c.command_id.clone();
            view! {
                <button type="button" class="history-diff" data-testid="history-diff"
                    on:click=move |_| show_past_preview(store, page, host_id.get_value(), command_id.clone(), changed_since)>
                    "Show diff"
                </button>
                " "
            }
        });
        let duration = duration_text(c.started_at, c.finished_at, store.now.get_untracked());
        view! {
            <tr class="history-item" data-testid="history-item" data-command-id=c.command_id.clone() data-status=c.status.as_str()>
                <td class="history-command">{c.command.as_str()}</td>
                <td class="history-status">{command_status_text(c.status)}</td>
                <td class="history-exit" data-testid="exit-code">{c.exit_code.map(|e| e.to_string()).unwrap_or_else(|| "—".into())}</td>
                <td class="history-when" title=absolute_time(c.queued_at)>{absolute_time(c.queued_at)}</td>
                <td class="history-duration">{duration}</td>
                <td class="history-by">{c.requested_by.unwrap_or_else(|| "—".into())}</td>
                <td class="history-lines">{c.line_count}</td>
                <td class="history-actions">
                    {diff_button}
                    <button type="button" class="history-open" data-testid="history-open"
                        on:click=move |_| page.show_past_log(&host_id.get_value(), &id)>
                        "Open log"
                    </button>
                    " "
                    <a class="history-download" href=format!("/api/commands/{}/log", c.command_id) download="">"Download"</a>
                </td>
            </tr>
        }
    };
    view! {
        <section class="host-history" aria-label="Command history">
            <h3>"Command history"</h3>
            <Transition fallback=|| view! { <p class="loading">"Loading history…"</p> }>
                {move || Suspend::new(async move {
                    match history.await {
                        Ok(items) if items.is_empty() => view! { <p class="empty">"No commands yet."</p> }.into_any(),
                        Ok(items) => view! {
                            <table class="history-table">
                                <thead><tr>
                                    <th>"Command"</th><th>"Status"</th><th>"Exit"</th><th>"Queued"</th>
                                    <th>"Duration"</th><th>"By"</th><th>"Lines"</th><th></th>
                                </tr></thead>
                                <tbody>{with_changes_since(items).map(row).collect_view()}</tbody>
                            </table>
                        }.into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// Each command of a newest-first history, with whether a switch, pull + switch or rollback
/// ended ok after it (what makes a preview's diff stale, as `HostStore::follow_previews`).
fn with_changes_since(items: Vec<CommandRecord>) -> impl Iterator<Item = (CommandRecord, bool)> {
    let mut changed = false;
    items.into_iter().map(move |c| {
        let since = changed;
        changed |= c.status.is_success()
            && matches!(
                c.command,
                CommandKind::Switch | CommandKind::PullSwitch | CommandKind::Rollback
            );
        (c, since)
    })
}

/// Reads a past preview's stored result (`command_detail`) and makes it the host's preview
/// in the page's store, which the diff panel shows.
fn show_past_preview(
    store: HostStore,
    page: PageState,
    host_id: String,
    command_id: String,
    changed_since: bool,
) {
    leptos::task::spawn_local(async move {
        let result = match command_detail(command_id.clone()).await {
            Ok(detail) => detail.result,
            Err(e) => return page.notify(e.to_string(), true),
        };
        let Some((diff, store_path)) = result.and_then(|r| Some((r.diff?, r.store_path))) else {
            return page.notify("This preview has no stored diff.", true);
        };
        let current = store.with_state(|s| {
            s.hosts
                .get(&host_id)
                .and_then(|h| current_generation(&h.generations))
        });
        // Profile generations are numbered from 1: base 0 is never current, so a preview
        // the host has switched past shows as stale (and offers no switch).
        let base_generation = if changed_since { Some(0) } else { current };
        store.previews.update(|p| {
            p.retain(|old| old.host_id != host_id);
            p.push(Preview {
                host_id,
                command_id,
                diff,
                store_path,
                base_generation,
            });
        });
    });
}

/// A new agent token, shown once (admins, with a recent authentication).
#[component]
fn TokenRotation(host_id: String) -> impl IntoView {
    let token = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<String>);
    let asking = RwSignal::new(false);
    let sure = RwSignal::new(false);
    let host_id = StoredValue::new(host_id);
    let rotate = move || {
        error.set(None);
        leptos::task::spawn_local(async move {
            match rotate_host_token(host_id.get_value()).await {
                Ok(t) => {
                    sure.set(false);
                    token.set(Some(t));
                }
                Err(AppError::ReauthRequired) => asking.set(true),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let reauthed = Callback::new(move |()| {
        asking.set(false);
        rotate();
    });
    let cancelled = Callback::new(move |()| {
        asking.set(false);
        sure.set(false);
    });
    view! {
        <section class="host-token" aria-label="Agent token">
            <h3>"Agent token"</h3>
            <p>"A new token stops the old one at once: the agent disconnects until it is configured with the new one."</p>
            <Show when=move || !sure.get() && token.with(Option::is_none)>
                <button type="button" class="btn-rotate-token" on:click=move |_| sure.set(true)>"Rotate agent token…"</button>
            </Show>
            <Show when=move || sure.get() && !asking.get()>
                <p>"Rotate the token of " {host_id.get_value()} "?"</p>
                <button type="button" class="cancel" on:click=move |_| sure.set(false)>"Cancel"</button>
                <button type="button" class="confirm btn-rotate-confirm" on:click=move |_| rotate()>"Rotate"</button>
            </Show>
            <Show when=move || asking.get()>
                <ReauthPrompt on_done=reauthed on_cancel=cancelled />
            </Show>
            {move || token.get().map(|t| view! {
                <p class="token-once">"The new token, shown once: put it in the agent's token file."</p>
                <code class="new-token" data-testid="new-agent-token">{t}</code>
            })}
            <p class="form-error" role="alert">{move || error.get()}</p>
        </section>
    }
}
