//! What the operator's buttons do: one place that calls the server functions and turns a
//! failure into a notice, for every button in rows, menus and dialogs.

use crate::api::{
    approve_host, bulk_command, cancel_deploy, check_pr_now, command_history, merge_and_deploy,
    refresh_host, remove_host, run_command, stop_command, unlock_host,
};
use crate::page_state::{AfterReauth, Confirm, HostCommand, PageState};
use crate::store::HostStore;
use common::AppError;
use leptos::prelude::*;
use protocol::api::BulkResult;
use protocol::messages::{BrowserEvent, HostBody, HostRef, PendingPrChanged};
use protocol::CommandKind;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Run(CommandKind),
    Stop,
    Unlock,
}

impl Action {
    fn verb(self) -> String {
        match self {
            Action::Run(kind) => kind.as_str().to_owned(),
            Action::Stop => "stop".to_owned(),
            Action::Unlock => "unlock".to_owned(),
        }
    }
}

/// Fire `action` on `host_id`. Progress shows up through the store (the hub broadcasts
/// `command_queued` and friends); only failures need a word here.
pub fn perform(page: PageState, host_id: String, action: Action) {
    leptos::task::spawn_local(run_host_action(page, host_id, action));
}

/// `perform`'s work. A separate wasm chunk, like `refresh_host_now`: the row's buttons
/// are on the first screen, but the server-function client behind them (query encoding,
/// fetch, error decoding) is not needed until a click, and it cost the first download
/// several kB (P5). Loaded with the other lazy parts 1 s after the page starts.
#[lazy]
pub(crate) async fn run_host_action(page: PageState, host_id: String, action: Action) {
    let result = match action {
        Action::Run(kind) => run_command(host_id.clone(), kind, None, None)
            .await
            .map(drop),
        Action::Stop => stop_command(host_id.clone()).await.map(drop),
        Action::Unlock => unlock_host(host_id.clone()).await,
    };
    match result {
        Ok(()) if action == Action::Unlock => page.notify(format!("{host_id}: unlocked"), false),
        Ok(()) => {}
        Err(e) => page.notify(format!("{host_id}: cannot {}: {e}", action.verb()), true),
    }
}

/// Run confirmed commands (boot, a rollback to a generation, switches to previewed
/// builds), each on its own host; each failure is its own notice, so one refused host
/// does not hide the others.
pub fn run_host_commands(page: PageState, commands: Vec<HostCommand>) {
    for c in commands {
        leptos::task::spawn_local(async move {
            let HostCommand {
                host_id,
                kind,
                generation,
                preview_id,
            } = c;
            if let Err(e) = run_command(host_id.clone(), kind, generation, preview_id).await {
                page.notify(format!("{host_id}: cannot {}: {e}", kind.as_str()), true);
            }
        });
    }
}

/// Refresh one host from the server. A 404 means it is gone: drop it with a notice. Any
/// other failure keeps the data on screen and says why.
pub fn refresh(store: HostStore, page: PageState, host_id: String, refreshing: RwSignal<bool>) {
    leptos::task::spawn_local(refresh_host_now(store, page, host_id, refreshing));
}

/// `refresh`'s work, a separate wasm chunk for the reason `run_host_action` is.
#[lazy]
pub(crate) async fn refresh_host_now(
    store: HostStore,
    page: PageState,
    host_id: String,
    refreshing: RwSignal<bool>,
) {
    match refresh_host(host_id.clone()).await {
        Ok(fresh) => {
            if let Some(mut host) = store.host_state(&host_id) {
                host.online = fresh.online;
                host.generation = fresh.generation;
                host.agent_version = fresh.agent_version;
                host.agent_outdated = fresh.agent_outdated;
                host.update_status = fresh.update_status;
                page.apply(store, &BrowserEvent::HostUpdated(HostBody { host }));
            }
        }
        Err(AppError::NotFound(_)) => {
            page.apply(
                store,
                &BrowserEvent::HostRemoved(HostRef {
                    host_id: host_id.clone(),
                }),
            );
            page.notify(
                format!("{host_id} no longer exists; removed from the list."),
                false,
            );
        }
        Err(e) => page.notify(format!("{host_id}: refresh failed: {e}"), true),
    }
    refreshing.set(false);
}

/// Approve a self-enrolled host (admins; the ⋮ menu). The row updates through the hub's
/// `host_updated`, like every other change.
pub fn approve(page: PageState, host_id: String) {
    leptos::task::spawn_local(async move {
        match approve_host(host_id.clone()).await {
            Ok(()) => page.notify(format!("{host_id} approved."), false),
            Err(e) => page.notify(format!("{host_id}: cannot approve: {e}"), true),
        }
    });
}

/// Download the log of the host's latest command.
pub fn download_latest_log(page: PageState, host_id: String) {
    leptos::task::spawn_local(async move {
        match command_history(host_id.clone(), 1).await {
            Ok(list) => match list.first() {
                Some(latest) => {
                    let _ = window()
                        .location()
                        .set_href(&format!("/api/commands/{}/log", latest.command_id));
                }
                None => page.notify(format!("{host_id} has not run any command yet."), false),
            },
            Err(e) => page.notify(format!("{host_id}: cannot load its commands: {e}"), true),
        }
    });
}

/// Remove a host (after the operator confirmed).
pub fn remove(store: HostStore, page: PageState, host_id: String) {
    leptos::task::spawn_local(async move {
        match remove_host(host_id.clone()).await {
            Ok(()) => {
                page.apply(
                    store,
                    &BrowserEvent::HostRemoved(HostRef {
                        host_id: host_id.clone(),
                    }),
                );
                page.notify(format!("{host_id} removed."), false);
            }
            Err(e) => page.notify(format!("{host_id}: cannot remove: {e}"), true),
        }
    });
}

/// Run a command on many hosts; report how many started and why the others did not.
pub fn bulk(page: PageState, kind: CommandKind, host_ids: Option<Vec<String>>) {
    leptos::task::spawn_local(async move {
        match bulk_command(kind, host_ids).await {
            Ok(results) => {
                let started = results
                    .iter()
                    .filter(|r| matches!(r, BulkResult::Queued(_)))
                    .count();
                page.notify(
                    format!(
                        "{}: started on {started} of {} hosts",
                        kind.as_str(),
                        results.len()
                    ),
                    false,
                );
                for r in results {
                    if let BulkResult::Failed(f) = r {
                        page.notify(format!("{}: {}", f.host_id, f.error), true);
                    }
                }
            }
            Err(e) => page.notify(format!("{}: bulk run failed: {e}", kind.as_str()), true),
        }
    });
}

/// Merge the PR and roll it out (after the operator confirmed). Progress arrives as
/// `deploy_progress` events for the deploy panel; only a refusal needs a word here.
pub fn merge_deploy(page: PageState, m: crate::page_state::MergeDeploy) {
    leptos::task::spawn_local(async move {
        let pr_number = m.pr_number;
        let o = m.options.clone();
        match merge_and_deploy(
            pr_number,
            m.host_ids.clone(),
            m.head_sha.clone(),
            o.canary,
            o.batch_size,
            o.max_failures,
            o.soak_s,
            o.on_failure,
            o.preview,
        )
        .await
        {
            Ok(_) => {}
            // The confirm dialog asks for the password, then runs this again.
            Err(AppError::ReauthRequired) => page
                .confirm
                .set(Some(Confirm::Reauth(AfterReauth::MergeDeploy(m)))),
            Err(e) => page.notify(format!("Merge & Deploy PR #{pr_number}: {e}"), true),
        }
    });
}

/// Merge and roll out a deploy whose previews the operator reviewed; `sent` is cleared
/// when it was refused, so the button comes back. The merge is a powerful step that can
/// come long after the login: the server may ask for the password first.
pub fn confirm_deploy(page: PageState, job_id: String, sent: RwSignal<Option<String>>) {
    leptos::task::spawn_local(async move {
        match crate::api::confirm_deploy(job_id.clone()).await {
            Ok(()) => {}
            Err(AppError::ReauthRequired) => {
                sent.set(None);
                page.confirm
                    .set(Some(Confirm::Reauth(AfterReauth::ConfirmDeploy(job_id))));
            }
            Err(e) => {
                sent.set(None);
                page.notify(format!("Cannot confirm the deploy: {e}"), true);
            }
        }
    });
}

/// Ask a running deploy to stop; `sent` is cleared on failure so the button comes back.
pub fn cancel(page: PageState, job_id: String, sent: RwSignal<Option<String>>) {
    leptos::task::spawn_local(async move {
        if let Err(e) = cancel_deploy(job_id).await {
            sent.set(None);
            page.notify(format!("Cannot cancel the deploy: {e}"), true);
        }
    });
}

/// Look for the flake.lock PR now and say what was found; the answer also goes into the
/// store, so the page does not wait for the hub's event.
pub fn check_pr(store: HostStore, page: PageState, checking: RwSignal<bool>) {
    leptos::task::spawn_local(async move {
        match check_pr_now().await {
            Ok(pr) => {
                page.notify(crate::presentation::check_pr_text(pr.as_ref()), false);
                page.apply(store, &BrowserEvent::PendingPr(PendingPrChanged { pr }));
            }
            Err(e) => page.notify(format!("Cannot check for the update PR: {e}"), true),
        }
        checking.set(false);
    });
}
