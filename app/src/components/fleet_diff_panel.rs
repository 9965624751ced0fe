//! The fleet diff: what switching to the previewed builds would change, for the selected
//! hosts that have a preview (or every previewed host), identical changes grouped. From
//! here the operator switches one host, or all of them, to exactly what was previewed.

use crate::components::lazy_view;
use crate::components::viewer::MayRun;
use crate::fleet_diff::{
    aggregate, change_mark, change_text, on_hosts, reboot_text, size_change, FleetDiff,
};
use crate::page_state::{Confirm, HostCommand, PageState};
use crate::store::{current_generation, HostStore, Preview};
use leptos::prelude::*;
use protocol::CommandKind;

/// The panel's code is a separate wasm chunk, fetched when a first preview ends (P5).
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

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    rows: Vec<PreviewRow>,
    fleet: FleetDiff,
    /// Narrowed to the selection (else every previewed host).
    selected_only: bool,
}

#[component]
fn FleetDiffBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let may_run = MayRun::get();
    let model = Memo::new(move |_| {
        store.previews.with(|previews| {
            let selected: Vec<&Preview> = page.selection.with(|s| {
                previews
                    .iter()
                    .filter(|p| s.ids.contains(&p.host_id))
                    .collect()
            });
            let selected_only = !selected.is_empty();
            let mut shown: Vec<&Preview> = if selected_only {
                selected
            } else {
                previews.iter().collect()
            };
            shown.sort_by(|a, b| a.host_id.cmp(&b.host_id));
            let rows = shown
                .iter()
                .map(|p| {
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
                        ready: host.is_some_and(|h| {
                            h.online.get() && h.pending_command.with(Option::is_none)
                        }),
                    }
                })
                .collect();
            let fleet = aggregate(shown.iter().map(|p| (p.host_id.as_str(), &p.diff)));
            Model {
                rows,
                fleet,
                selected_only,
            }
        })
    });
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
    let title = move || {
        model.with(|m| {
            let whom = if m.selected_only { " selected" } else { "" };
            let plural = if m.fleet.hosts == 1 { "" } else { "s" };
            format!("Preview of {}{whom} host{plural}", m.fleet.hosts)
        })
    };
    let reboot = move || {
        model.with(|m| {
            let names: Vec<String> = m.fleet.reboot_needed.iter().map(|id| name_of(id)).collect();
            reboot_text(&names)
        })
    };
    view! {
        <section class="diff-panel" data-testid="diff-panel" aria-label="Preview diff"
            data-selected-only=move || model.with(|m| m.selected_only.to_string())>
            <header class="diff-head">
                <h2 class="diff-title">{title}</h2>
                <span class="diff-size" data-testid="diff-size" title="Closure size before → after, summed over these hosts">
                    {move || model.with(|m| size_change(m.fleet.bytes_before, m.fleet.bytes_after))}
                </span>
                <span class="spacer"></span>
                <Show when=move || may_run>
                    <button type="button" class="diff-switch-all" data-testid="diff-switch-all"
                        disabled=move || fresh() == 0
                        on:click=switch_all>
                        "Switch all previewed (" {fresh} ")"
                    </button>
                </Show>
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
                        <DiffHostRow row may_run />
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

#[component]
fn DiffHostRow(row: PreviewRow, may_run: bool) -> impl IntoView {
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
                {may_run.then(|| view! {
                    <button type="button" class="diff-switch-host" data-testid="diff-switch-host" data-host=row.id.clone()
                        disabled=row.stale || !row.ready
                        on:click=move |_| page.confirm.set(Some(Confirm::Commands(vec![command.clone()])))>
                        "Switch to previewed"
                    </button>
                })}
                <button type="button" class="diff-dismiss-host" data-testid="diff-dismiss-host" aria-label="Forget this preview"
                    on:click=move |_| store.drop_preview(&id)>
                    "×"
                </button>
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
            let openssl = PackageChange {
                name: "openssl".into(),
                old: Some("3.0.14".into()),
                new: Some("3.0.15".into()),
                kind: ChangeKind::Upgraded,
            };
            let zlib = PackageChange {
                name: "zlib".into(),
                old: None,
                new: Some("1.3".into()),
                kind: ChangeKind::Added,
            };
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
}
