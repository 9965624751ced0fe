//! The Deploys page (`/deploys`, a lazy chunk): past and running Merge & Deploy jobs, newest
//! first, with who started each, when, and per host its outcome and the commands it ran,
//! each linked to its log download (`GET /api/commands/{id}/log`).

use crate::api::deploy_history;
use leptos::either::Either;
use leptos::prelude::*;
use protocol::api::{DeployCommand, DeployRecord};
use protocol::time::format_age;

/// How many jobs the page lists.
const SHOWN: u32 = 50;

#[component]
pub fn DeploysPage() -> impl IntoView {
    let deploys = Resource::new(|| (), |_| deploy_history(SHOWN));
    view! {
        <header class="topbar">
            <a class="brand" href="/">"nixdeck"</a>
            <span class="fleet-count">"Deploys"</span>
            <span class="spacer"></span>
            <a class="account-link" href="/account">"Account"</a>
        </header>
        <main class="admin deploys">
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match deploys.await {
                        Ok(list) if list.is_empty() => {
                            Either::Left(view! { <p class="empty">"No deploy yet."</p> }.into_any())
                        }
                        Ok(list) => Either::Left(
                            list.into_iter().map(deploy_view).collect_view().into_any(),
                        ),
                        Err(e) => Either::Right(view! { <p class="error">{e.to_string()}</p> }),
                    }
                })}
            </Suspense>
        </main>
    }
}

/// One job: its PR, starter, times and phase, then a row per host.
fn deploy_view(d: DeployRecord) -> impl IntoView {
    let job = d.job;
    let ended = (!job.active).then(|| d.updated_at.to_string());
    let hosts = job
        .hosts
        .into_iter()
        .map(|(host, state)| {
            let steps: Vec<DeployCommand> = d
                .commands
                .iter()
                .filter(|c| c.host_id == host)
                .cloned()
                .collect();
            let key = host.clone();
            view! {
                <tr data-testid="deploys-host" data-host=key data-state=state.as_str()>
                    <td>{host}</td>
                    <td>{state.as_str()}</td>
                    <td>{steps.into_iter().map(command_view).collect_view()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="deploy-record" data-testid="deploy-record" data-job=job.job_id.clone()
            data-phase=job.phase.as_str()>
            <h3>
                {format!("PR #{}", job.pr_number)}
                <span class="deploy-phase">{job.phase.as_str()}</span>
            </h3>
            <p class="deploy-meta">
                "Started by " <span data-testid="deploy-starter">{job.started_by}</span>
                " at " {d.started_at.to_string()}
                {ended.map(|t| format!(", last change {t}"))}
            </p>
            <p class="deploy-message">{job.message}</p>
            <table class="deploy-hosts">
                <thead><tr><th>"Host"</th><th>"Outcome"</th><th>"Commands"</th></tr></thead>
                <tbody>{hosts}</tbody>
            </table>
        </section>
    }
}

/// A command as `switch ok 12 s`, linked to its log.
fn command_view(c: DeployCommand) -> impl IntoView {
    let r = c.record;
    let took = match (r.started_at, r.finished_at) {
        (Some(a), Some(b)) => format_age(b.secs() - a.secs()),
        _ => String::new(),
    };
    view! {
        <a class="deploy-command" data-testid="deploy-command" data-status=r.status.as_str()
            href=format!("/api/commands/{}/log", r.command_id) target="_blank" rel="noopener">
            {format!("{} {} {}", r.command.as_str(), r.status.as_str(), took)}
        </a>
        " "
    }
}
