//! The fleet diff: what switching to the previewed builds would change, identical changes
//! grouped. One view, two uses:
//! - the hosts' own previews (the selected hosts that have one, or every previewed host),
//!   from which the operator switches one host, or all of them, to exactly what was
//!   previewed;
//! - a deploy's previews of its PR's head, inside the deploy panel, to review before the
//!   merge. Those are builds of a PR that is not merged: nothing here switches to them.

use crate::api::command_detail;
use crate::components::lazy_view;
use crate::components::viewer::MayRun;
use crate::fleet_diff::{
    aggregate, change_mark, change_text, on_hosts, reboot_text, size_change, FleetDiff,
};
use crate::page_state::{Confirm, HostCommand, PageState};
use crate::store::{current_generation, HostStore, Preview};
use leptos::prelude::*;
use protocol::messages::DeployHostState;
use protocol::CommandKind;

/// The panel's code is a separate wasm chunk, fetched when a first preview ends (P5). It
/// shows nothing while every preview is a deploy's (the deploy panel shows those).
#[component]
pub fn FleetDiffPanel() -> impl IntoView {
    let store = expect_context::<HostStore>();
    view! {
        {lazy_view(move || store.previews.with(|p| !p.is_empty()), fleet_diff_panel)}
    }
}

#[lazy]
pub(crate) fn fleet_diff_panel() -> AnyView {
    view! { <FleetDiffBody /> }.into_any()
}

/// The deploy's previews for the deploy panel (itself a lazily loaded chunk): a chunk of
/// its own, so the deploy panel stays small for the deploys that do not preview.
#[lazy]
pub(crate) fn deploy_diff_panel() -> AnyView {
    view! { <DeployDiffBody /> }.into_any()
}

/// One previewed host as the panel shows it (also its row's key: a change rebuilds it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PreviewRow {
    id: String,
    name: String,
    preview_id: String,
    size: String,
    changes: usize,
    reboot_needed: bool,
    /// The host runs another generation than the one the diff was made against.
    stale: bool,
    /// Online and idle: a switch can start now.
    ready: bool,
}

/// Which previews a panel shows.
#[derive(Clone, Debug, PartialEq)]
enum Scope {
    /// The hosts' own previews; narrowed to the selection (else every previewed host).
    Hosts { selected_only: bool },
    /// A deploy's previews of PR `pr_number`; `waiting`: targets whose preview has not
    /// ended yet (or whose result is still on its way from the server).
    Deploy { pr_number: u64, waiting: usize },
}

impl Default for Scope {
    fn default() -> Self {
        Scope::Hosts {
            selected_only: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    rows: Vec<PreviewRow>,
    fleet: FleetDiff,
    scope: Scope,
}

impl Model {
    /// The rows and grouped changes of `shown`, by host id.
    fn of(store: HostStore, mut shown: Vec<&Preview>, scope: Scope) -> Self {
        shown.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        let rows = shown.iter().map(|p| preview_row(store, p)).collect();
        let fleet = aggregate(shown.iter().map(|p| (p.host_id.as_str(), &p.diff)));
        Model { rows, fleet, scope }
    }

    fn title(&self) -> String {
        let hosts = self.fleet.hosts;
        let plural = if hosts == 1 { "" } else { "s" };
        match self.scope {
            Scope::Hosts { selected_only } => {
                let whom = if selected_only { " selected" } else { "" };
                format!("Preview of {hosts}{whom} host{plural}")
            }
            Scope::Deploy { pr_number, waiting } => {
                let more = match waiting {
                    0 => String::new(),
                    1 => " (1 preview to come)".to_owned(),
                    n => format!(" ({n} previews to come)"),
                };
                format!("What PR #{pr_number} changes on {hosts} host{plural}{more}")
            }
        }
    }
}

/// Reads the host's signals, so the row follows its name, its generation and whether it
/// can run a command.
fn preview_row(store: HostStore, p: &Preview) -> PreviewRow {
    let id = &p.host_id;
    let host = store.host(id);
    if let Some(h) = host {
        h.generations_key.track();
    }
    let current = store.with_state(|s| {
        s.hosts
            .get(id)
            .and_then(|h| current_generation(&h.generations))
    });
    PreviewRow {
        id: id.clone(),
        name: host.map_or_else(|| id.clone(), |h| h.hostname.get()),
        preview_id: p.command_id.clone(),
        size: size_change(p.diff.closure_bytes_before, p.diff.closure_bytes_after),
        changes: p.diff.changes.len(),
        reboot_needed: p.diff.reboot_needed,
        stale: matches!((p.base_generation, current), (Some(a), Some(b)) if a != b),
        ready: host.is_some_and(|h| h.online.get() && h.pending_command.with(Option::is_none)),
    }
}

/// The hosts' own previews, to switch to. A deploy's previews are left out: they build a
/// PR that is not merged.
#[component]
fn FleetDiffBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let model = Memo::new(move |_| {
        store.deploy.with(|deploy| {
            store.previews.with(|previews| {
                let own: Vec<&Preview> = previews
                    .iter()
                    .filter(|p| !p.of_deploy(deploy.as_ref()))
                    .collect();
                let selected: Vec<&Preview> = page.selection.with(|s| {
                    own.iter()
                        .copied()
                        .filter(|p| s.ids.contains(&p.host_id))
                        .collect()
                });
                let selected_only = !selected.is_empty();
                let shown = if selected_only { selected } else { own };
                Model::of(store, shown, Scope::Hosts { selected_only })
            })
        })
    });
    view! {
        <Show when=move || model.with(|m| !m.rows.is_empty())>
            <DiffView model deploy=false />
        </Show>
    }
}

/// The deploy's previews (`DeployProgress.previews`): from the store when this page saw
/// them end, else read from the server (the page was loaded after they ended, or another
/// preview of the host has replaced it in the store since).
#[component]
fn DeployDiffBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let fetched = RwSignal::new(Vec::<Preview>::new());
    let find = move |own: &[Preview], fetched: &[Preview], host: &str, id: &str| {
        own.iter()
            .chain(fetched)
            .find(|p| p.command_id == id && p.host_id == host)
            .cloned()
    };
    let model = Memo::new(move |_| {
        store.deploy.with(|d| {
            let Some(d) = d.as_ref() else {
                return Model::default();
            };
            store.previews.with(|own| {
                fetched.with(|fetched| {
                    let mut shown = Vec::new();
                    let mut waiting = 0;
                    for (host, id) in &d.previews {
                        match find(own, fetched, host, id) {
                            Some(p) => shown.push(p),
                            // A failed preview has no diff; its chip says so.
                            None if d.hosts.get(host) == Some(&DeployHostState::Error) => {}
                            None => waiting += 1,
                        }
                    }
                    let scope = Scope::Deploy {
                        pr_number: d.pr_number,
                        waiting,
                    };
                    Model::of(store, shown.iter().collect(), scope)
                })
            })
        })
    });
    // Each preview id is asked for once (again only after a failure).
    let asked = StoredValue::new(Vec::<String>::new());
    Effect::new(move |_| {
        let missing: Vec<(String, String)> = store.deploy.with(|d| {
            let Some(d) = d.as_ref() else {
                return Vec::new();
            };
            store.previews.with(|own| {
                fetched.with(|fetched| {
                    d.previews
                        .iter()
                        // Ended ok: its chip. Still the host's pending command: its
                        // `command_complete` is on its way, with the result.
                        .filter(|(host, _)| d.hosts.get(*host) == Some(&DeployHostState::Ok))
                        .filter(|(host, id)| find(own, fetched, host, id).is_none())
                        .filter(|(host, id)| {
                            !store.with_state(|s| {
                                s.hosts
                                    .get(*host)
                                    .and_then(|h| h.pending_command.as_ref())
                                    .is_some_and(|p| &p.command_id == *id)
                            })
                        })
                        .filter(|(_, id)| !asked.with_value(|a| a.contains(id)))
                        .map(|(host, id)| (host.clone(), id.clone()))
                        .collect()
                })
            })
        });
        for (host_id, command_id) in missing {
            asked.update_value(|a| a.push(command_id.clone()));
            leptos::task::spawn_local(async move {
                let detail = command_detail(command_id.clone()).await;
                match detail.map(|d| d.result) {
                    Ok(Some(result)) => {
                        if let Some(diff) = result.diff {
                            fetched.update(|f| {
                                f.push(Preview {
                                    host_id,
                                    command_id,
                                    diff,
                                    store_path: result.store_path,
                                    // Not known here: the row is never marked stale.
                                    base_generation: None,
                                })
                            });
                        }
                    }
                    Ok(None) => {}
                    Err(_) => asked.update_value(|a| a.retain(|x| *x != command_id)),
                }
            });
        }
    });
    view! {
        <Show when=move || model.with(|m| !m.rows.is_empty() || matches!(m.scope, Scope::Deploy { waiting, .. } if waiting > 0))>
            <DiffView model deploy=true />
        </Show>
    }
}

/// The grouped changes and a row per host. With `deploy` (a deploy's previews), nothing
/// switches to the builds and nothing forgets them: they are there to be reviewed.
#[component]
fn DiffView(model: Memo<Model>, deploy: bool) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let switch = MayRun::get() && !deploy;
    // Host ids to names for the grouped changes and the reboot line.
    let name_of = move |id: &str| {
        model.with_untracked(|m| {
            m.rows
                .iter()
                .find(|r| r.id == id)
                .map_or_else(|| id.to_owned(), |r| r.name.clone())
        })
    };
    let switch_all = move |_| {
        let commands: Vec<HostCommand> = model.with_untracked(|m| {
            m.rows
                .iter()
                .filter(|r| !r.stale)
                .map(switch_command)
                .collect()
        });
        if !commands.is_empty() {
            page.confirm.set(Some(Confirm::Commands(commands)));
        }
    };
    let fresh = move || model.with(|m| m.rows.iter().filter(|r| !r.stale).count());
    let title = move || model.with(Model::title);
    let reboot = move || {
        model.with(|m| {
            let names: Vec<String> = m.fleet.reboot_needed.iter().map(|id| name_of(id)).collect();
            reboot_text(&names)
        })
    };
    let selected_only = move || {
        model.with(|m| {
            matches!(
                m.scope,
                Scope::Hosts {
                    selected_only: true
                }
            )
            .to_string()
        })
    };
    view! {
        <section class="diff-panel" data-testid=if deploy { "deploy-diff" } else { "diff-panel" }
            data-mode=if deploy { "deploy" } else { "hosts" }
            aria-label=if deploy { "What the PR changes" } else { "Preview diff" }
            data-selected-only=selected_only>
            <header class="diff-head">
                <h2 class="diff-title">{title}</h2>
                <span class="diff-size" data-testid="diff-size" title="Closure size before → after, summed over these hosts">
                    {move || model.with(|m| size_change(m.fleet.bytes_before, m.fleet.bytes_after))}
                </span>
                <span class="spacer"></span>
                {switch.then(|| view! {
                    <button type="button" class="diff-switch-all" data-testid="diff-switch-all"
                        disabled=move || fresh() == 0
                        on:click=switch_all>
                        "Switch all previewed (" {fresh} ")"
                    </button>
                })}
                {(!deploy).then(|| view! {
                    <button type="button" class="diff-clear" data-testid="diff-clear"
                        title="Forget these previews in this page"
                        on:click=move |_| {
                            let ids: Vec<String> = model.with_untracked(|m| m.rows.iter().map(|r| r.id.clone()).collect());
                            for id in ids {
                                store.drop_preview(&id);
                            }
                        }>
                        "Clear"
                    </button>
                })}
            </header>
            {move || reboot().map(|text| view! { <p class="diff-reboot" data-testid="diff-reboot">"⏻ " {text}</p> })}
            {move || model.with(|m| (m.fleet.truncated > 0).then(|| {
                let n = m.fleet.truncated;
                view! { <p class="diff-truncated">{format!("{n} more changes were left out by the agents.")}</p> }
            }))}
            <ul class="diff-changes">
                {move || {
                    let groups = model.with(|m| m.fleet.groups.clone());
                    if groups.is_empty() {
                        return view! { <li class="diff-empty">"No package changes."</li> }.into_any();
                    }
                    groups
                        .into_iter()
                        .map(|g| {
                            let hosts = g.hosts.iter().map(|id| name_of(id)).collect::<Vec<_>>().join(", ");
                            view! {
                                <li class="diff-change" data-testid="diff-change" data-kind=g.kind.as_str()
                                    data-package=g.name.clone() data-hosts=g.hosts.len()>
                                    <details>
                                        <summary>
                                            <span class="diff-mark" aria-hidden="true">{change_mark(g.kind)}</span>
                                            " " {change_text(&g)}
                                            <span class="diff-count">{on_hosts(g.hosts.len())}</span>
                                        </summary>
                                        <span class="diff-change-hosts">{hosts}</span>
                                    </details>
                                </li>
                            }
                        })
                        .collect_view()
                        .into_any()
                }}
            </ul>
            <table class="diff-hosts">
                <tbody>
                    <For each=move || model.with(|m| m.rows.clone()) key=|r| r.clone() let:row>
                        <DiffHostRow row switch dismiss=!deploy />
                    </For>
                </tbody>
            </table>
        </section>
    }
}

fn switch_command(row: &PreviewRow) -> HostCommand {
    HostCommand {
        preview_id: Some(row.preview_id.clone()),
        ..HostCommand::new(row.id.clone(), CommandKind::Switch)
    }
}

/// One host's line; `switch` offers "Switch to previewed", `dismiss` the "×" that forgets
/// the preview in this page.
#[component]
fn DiffHostRow(row: PreviewRow, switch: bool, dismiss: bool) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let command = switch_command(&row);
    let plural = if row.changes == 1 { "" } else { "s" };
    let changes = format!("{} change{plural}", row.changes);
    let id = row.id.clone();
    view! {
        <tr class="diff-host" data-testid="diff-host" data-host=row.id.clone()
            data-stale=row.stale.to_string()>
            <td class="diff-host-name">{row.name.clone()}</td>
            <td class="diff-host-changes">{changes}</td>
            <td class="diff-host-size">{row.size.clone()}</td>
            <td class="diff-host-marks">
                {row.reboot_needed.then(|| view! { <span class="reboot-needed">"reboot needed"</span> })}
                {row.stale.then(|| view! {
                    <span class="diff-stale" title="The host switched since this preview: preview it again">"stale"</span>
                })}
            </td>
            <td class="diff-host-actions">
                {switch.then(|| view! {
                    <button type="button" class="diff-switch-host" data-testid="diff-switch-host" data-host=row.id.clone()
                        disabled=row.stale || !row.ready
                        on:click=move |_| page.confirm.set(Some(Confirm::Commands(vec![command.clone()])))>
                        "Switch to previewed"
                    </button>
                })}
                {dismiss.then(|| view! {
                    <button type="button" class="diff-dismiss-host" data-testid="diff-dismiss-host" aria-label="Forget this preview"
                        on:click=move |_| store.drop_preview(&id)>
                        "×"
                    </button>
                })}
            </td>
        </tr>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::store::tests::snapshot;
    use protocol::{ChangeKind, ClosureDiff, Generation, PackageChange, Timestamp};

    fn preview(host: &str, changes: Vec<PackageChange>, reboot: bool, base: u64) -> Preview {
        Preview {
            host_id: host.into(),
            command_id: format!("p-{host}"),
            diff: ClosureDiff {
                changes,
                closure_bytes_before: 1024,
                closure_bytes_after: 2048,
                reboot_needed: reboot,
                truncated: 0,
            },
            store_path: None,
            base_generation: Some(base),
        }
    }

    #[test]
    fn the_panel_groups_changes_and_marks_a_stale_preview() {
        let html = Owner::new().with(|| {
            provide_context(MayRun(true));
            let mut snap = snapshot(&["a", "b", "c"]);
            for h in &mut snap.hosts {
                h.online = true;
                h.generations = vec![Generation {
                    number: 7,
                    created_at: Timestamp(1),
                    store_path: "/nix/store/h-x".into(),
                    current: true,
                    booted: true,
                }];
            }
            let store = HostStore::new(snap);
            provide_context(store);
            provide_context(PageState::new(store));
            let openssl = PackageChange::new(
                "openssl",
                Some("3.0.14"),
                Some("3.0.15"),
                ChangeKind::Upgraded,
            );
            let zlib = PackageChange::new("zlib", None, Some("1.3"), ChangeKind::Added);
            store.previews.set(vec![
                preview("a", vec![openssl.clone(), zlib], true, 7),
                preview("b", vec![openssl], false, 7),
                // Made against generation 6: the host has switched since.
                preview("c", vec![], false, 6),
            ]);
            view! { <FleetDiffBody /> }.to_html()
        });
        assert!(html.contains("Preview of 3 hosts"), "{html}");
        assert!(html.contains("openssl 3.0.14 → 3.0.15"), "{html}");
        assert!(html.contains(" on 2 hosts"), "{html}");
        assert!(html.contains("zlib added (1.3)"), "{html}");
        assert!(html.contains(r#"data-kind="upgraded""#), "{html}");
        assert!(html.contains("reboot needed on 1: a"), "{html}");
        assert!(html.contains("3.0 KiB → 6.0 KiB (+3.0 KiB)"), "{html}");
        assert!(html.contains(r#"data-testid="diff-switch-all""#), "{html}");
        // Two fresh previews to switch; c's is stale.
        assert!(html.contains("Switch all previewed (<!>2"), "{html}");
        assert!(
            html.contains(r#"data-host="c" data-stale="true""#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-host="a" data-stale="false""#),
            "{html}"
        );
    }

    /// A store whose deploy previewed PR #7 on a and b (both in the store) and c (still
    /// running), plus d's own preview; rendered as `body`.
    fn render_with_deploy(body: fn() -> AnyView) -> String {
        use protocol::messages::{DeployPhase, DeployProgress};
        Owner::new().with(|| {
            provide_context(MayRun(true));
            let mut snap = snapshot(&["a", "b", "c", "d"]);
            for h in &mut snap.hosts {
                h.online = true;
            }
            snap.deploy = Some(DeployProgress {
                job_id: "j1".into(),
                pr_number: 7,
                phase: DeployPhase::Previewing,
                hosts: [
                    ("a".to_owned(), DeployHostState::Ok),
                    ("b".to_owned(), DeployHostState::Ok),
                    ("c".to_owned(), DeployHostState::Running),
                ]
                .into(),
                message: String::new(),
                started_by: "op".into(),
                active: true,
                previews: ["a", "b", "c"]
                    .map(|h| (h.to_owned(), format!("p-{h}")))
                    .into(),
            });
            let store = HostStore::new(snap);
            provide_context(store);
            provide_context(PageState::new(store));
            let openssl = PackageChange::new(
                "openssl",
                Some("3.0.14"),
                Some("3.0.15"),
                ChangeKind::Upgraded,
            );
            let curl = PackageChange::new("curl", Some("8.1"), Some("8.2"), ChangeKind::Upgraded);
            store.previews.set(vec![
                preview("a", vec![openssl.clone()], true, 7),
                preview("b", vec![openssl], false, 7),
                preview("d", vec![curl], false, 7),
            ]);
            body().to_html()
        })
    }

    #[test]
    fn a_deploys_previews_show_in_the_deploy_panel_without_switching() {
        let html = render_with_deploy(|| view! { <DeployDiffBody /> }.into_any());
        assert!(html.contains(r#"data-testid="deploy-diff""#), "{html}");
        assert!(html.contains(r#"data-mode="deploy""#), "{html}");
        assert!(
            html.contains("What PR #7 changes on 2 hosts (1 preview to come)"),
            "{html}"
        );
        assert!(html.contains("openssl 3.0.14 → 3.0.15"), "{html}");
        assert!(html.contains(" on 2 hosts"), "{html}");
        assert!(html.contains("reboot needed on 1: a"), "{html}");
        assert!(html.contains(r#"data-host="a""#) && html.contains(r#"data-host="b""#));
        // d's own preview is not the deploy's.
        assert!(!html.contains(r#"data-host="d""#), "{html}");
        assert!(!html.contains("curl"), "{html}");
        // A build of an unmerged PR: nothing to switch to, nothing to forget.
        assert!(!html.contains("diff-switch"), "{html}");
        assert!(!html.contains("Switch"), "{html}");
        assert!(!html.contains("diff-dismiss-host"), "{html}");
        assert!(!html.contains("diff-clear"), "{html}");
    }

    #[test]
    fn a_deploys_previews_are_not_offered_for_a_switch() {
        let html = render_with_deploy(|| view! { <FleetDiffBody /> }.into_any());
        assert!(html.contains(r#"data-testid="diff-panel""#), "{html}");
        assert!(html.contains("Preview of 1 host"), "{html}");
        assert!(html.contains(r#"data-host="d""#), "{html}");
        assert!(html.contains("Switch all previewed (<!>1"), "{html}");
        for host in ["a", "b", "c"] {
            assert!(
                !html.contains(&format!(r#"data-host="{host}""#)),
                "{host}: {html}"
            );
        }
        assert!(!html.contains("openssl"), "{html}");
    }
}
