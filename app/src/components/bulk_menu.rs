//! The bulk actions menu: a command on the selected hosts, or on every online host, and
//! the fleet-wide flake.lock PR actions for those who may run commands.

use crate::components::actions;
use crate::components::lazy_view;
use crate::components::menu::{close, escape_closes, want};
use crate::components::viewer::MayRun;
use crate::page_state::{Confirm, MergeDeploy, PageState};
use crate::presentation::is_github_source;
use crate::store::HostStore;
use leptos::html::Details;
use leptos::prelude::*;
use protocol::CommandKind;

const BULK: [(CommandKind, &str); 4] = [
    (CommandKind::Pull, "Pull"),
    (CommandKind::Switch, "Switch"),
    (CommandKind::PullSwitch, "Pull + switch"),
    (CommandKind::Test, "Test"),
];

#[component]
pub fn BulkMenu() -> impl IntoView {
    let page = expect_context::<PageState>();
    let selected = move || page.selection.with(|s| s.ids.len());
    let menu = NodeRef::<Details>::new();
    // The items' code is a separate wasm chunk, fetched on the first sign of use (P5).
    let wanted = RwSignal::new(false);
    view! {
        <details class="bulk-menu" id="bulk-actions-menu" node_ref=menu on:keydown=escape_closes(menu)
            on:toggle=want(wanted) on:pointerenter=want(wanted) on:focusin=want(wanted)>
            <summary>"Bulk actions" {move || (selected() > 0).then(|| format!(" · {}", selected()))}</summary>
            <div class="menu" role="menu">
                {lazy_view(move || wanted.get(), move || bulk_menu_items(menu))}
            </div>
        </details>
    }
}

#[lazy]
pub(crate) fn bulk_menu_items(menu: NodeRef<Details>) -> AnyView {
    view! { <BulkMenuItems menu /> }.into_any()
}

#[component]
fn BulkMenuItems(menu: NodeRef<Details>) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let selected = move || page.selection.with(|s| s.ids.len());
    let ask = move |confirm: Confirm| {
        page.confirm.set(Some(confirm));
        close(menu);
    };
    let chosen = move || {
        Some(
            page.selection
                .with_untracked(|s| s.ids.iter().cloned().collect()),
        )
    };
    let items = BULK.map(|(kind, label)| {
        view! {
            <button type="button" role="menuitem" data-command=kind.as_str() data-scope="selected"
                disabled=move || selected() == 0
                on:click=move |_| ask(Confirm::Bulk(kind, chosen()))>
                {label} " selected (" {selected} ")"
            </button>
            <button type="button" role="menuitem" data-command=kind.as_str() data-scope="online"
                disabled=move || store.counts().0 == 0
                on:click=move |_| ask(Confirm::Bulk(kind, None))>
                {label} " all online"
            </button>
        }
    });
    // A preview activates nothing, so it runs without a confirm, on the selection (or
    // every online host when nothing is selected).
    let preview = move |_| {
        actions::bulk(
            page,
            CommandKind::Preview,
            chosen().filter(|ids| !ids.is_empty()),
        );
        close(menu);
    };
    view! {
        {items.into_iter().collect_view()}
        <button type="button" role="menuitem" data-command="preview" data-scope=move || if selected() == 0 { "online" } else { "selected" }
            disabled=move || selected() == 0 && store.counts().0 == 0
            on:click=preview>
            {move || match selected() {
                0 => "Preview all online".to_owned(),
                n => format!("Preview selected ({n})"),
            }}
        </button>
        <button type="button" role="menuitem" data-command="clear-selection"
            disabled=move || selected() == 0
            on:click=move |_| page.selection.update(|s| s.clear())>
            "Clear selection"
        </button>
        <PrMenuItems menu />
    }
}

/// "Merge & Deploy PR #N" and "Check for update PR now": plain menu buttons like the
/// others, so Tab and Enter reach them the same way.
#[component]
fn PrMenuItems(menu: NodeRef<Details>) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let may_run = MayRun::get();
    let mergeable_pr = move || store.pending_pr.get().filter(|pr| pr.mergeable);
    let deploying = move || store.deploy.with(|d| d.as_ref().is_some_and(|d| d.active));
    // The selected hosts, else every online host: the same scope as the bulk commands.
    let targets = move || {
        let selected: Vec<String> = page.selection.with(|s| s.ids.iter().cloned().collect());
        if selected.is_empty() {
            let online = store.ids.with(|ids| {
                ids.iter()
                    .filter(|id| store.is_online(id))
                    .cloned()
                    .collect()
            });
            (None, online)
        } else {
            (Some(selected.clone()), selected)
        }
    };
    let ask_merge = move |_| {
        let Some(pr) = untrack(mergeable_pr) else {
            return;
        };
        let (host_ids, targets) = untrack(targets);
        page.confirm.set(Some(Confirm::MergeDeploy(MergeDeploy {
            pr_number: pr.number,
            pr_title: pr.title,
            host_ids,
            targets,
            head_sha: pr.head_sha,
            options: Default::default(),
        })));
        close(menu);
    };
    let checking = RwSignal::new(false);
    let check = move |_| {
        if checking.get_untracked() {
            return;
        }
        checking.set(true);
        actions::check_pr(store, page, checking);
        close(menu);
    };
    let scope = move || {
        let (ids, targets) = targets();
        let whom = if ids.is_some() { "selected" } else { "online" };
        let plural = if targets.len() == 1 { "" } else { "s" };
        format!(
            "Pull and switch on the {} {whom} host{plural}",
            targets.len()
        )
    };
    view! {
        <Show when=move || may_run && mergeable_pr().is_some()>
            <button type="button" role="menuitem" class="menu-merge-deploy" data-testid="menu-merge-deploy"
                title=scope
                disabled=move || deploying() || targets().1.is_empty()
                on:click=ask_merge>
                {move || mergeable_pr().map(|pr| format!("Merge & Deploy PR #{}", pr.number))}
            </button>
        </Show>
        <Show when=move || may_run && store.desired.with(|d| is_github_source(d.as_ref()))>
            <button type="button" role="menuitem" data-testid="menu-check-pr"
                disabled=move || checking.get()
                on:click=check>
                "Check for update PR now"
            </button>
        </Show>
    }
}
