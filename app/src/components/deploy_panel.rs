//! The Merge & Deploy panel: the job's phase, its message, a progress bar and a chip per
//! host, all derived from `store.deploy`. Cancel while it runs; Dismiss once it ended hides
//! it in this page only, until the job or its phase changes. A deploy that previews first
//! shows what its PR changes on the targets (the fleet diff of its previews) and waits
//! for "Confirm and deploy" before anything is merged.

use crate::components::actions;
use crate::components::fleet_diff_panel;
use crate::components::lazy_view;
use crate::components::viewer::MayRun;
use crate::page_state::PageState;
use crate::presentation::*;
use crate::store::HostStore;
use leptos::prelude::*;
use protocol::messages::{DeployHostState, DeployPhase};

/// The panel's code is a separate wasm chunk, fetched when a deploy first shows (P5): most
/// page loads see none.
#[component]
pub fn DeployPanel() -> impl IntoView {
    let store = expect_context::<HostStore>();
    view! {
        {lazy_view(move || store.deploy.with(Option::is_some), deploy_panel)}
    }
}

#[lazy]
pub(crate) fn deploy_panel() -> AnyView {
    view! { <DeployPanelBody /> }.into_any()
}

#[component]
fn DeployPanelBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let may_run = MayRun::get();
    let deploy = store.deploy;
    let key = Memo::new(move |_| deploy.with(|d| d.as_ref().map(|d| (d.job_id.clone(), d.phase))));
    // The (job, phase) the operator dismissed: local to this page, not fleet state.
    let dismissed = RwSignal::new(None::<(String, DeployPhase)>);
    let visible = move || key.with(|k| k.is_some() && *k != dismissed.get());

    let job_id = Memo::new(move |_| key.with(|k| k.as_ref().map(|k| k.0.clone())));
    let phase = Memo::new(move |_| key.with(|k| k.as_ref().map(|k| deploy_phase_name(k.1))));
    let pr_number = Memo::new(move |_| deploy.with(|d| d.as_ref().map(|d| d.pr_number)));
    let phase_text = move || {
        key.with(|k| {
            k.as_ref()
                .map(|k| deploy_phase_text(k.1, pr_number.get().unwrap_or_default()))
        })
    };
    let before_merge =
        Memo::new(move |_| key.with(|k| k.as_ref().is_some_and(|k| deploy_before_merge(k.1))));
    let awaiting = Memo::new(move |_| {
        key.with(|k| {
            k.as_ref()
                .is_some_and(|k| k.1 == DeployPhase::AwaitingConfirmation)
        })
    });
    let has_previews =
        Memo::new(move |_| deploy.with(|d| d.as_ref().is_some_and(|d| !d.previews.is_empty())));
    let message = Memo::new(move |_| deploy.with(|d| d.as_ref().map(|d| d.message.clone())));
    let started_by = Memo::new(move |_| {
        deploy.with(|d| {
            d.as_ref()
                .map(|d| d.started_by.clone())
                .filter(|s| !s.is_empty())
        })
    });
    let active = Memo::new(move |_| deploy.with(|d| d.as_ref().is_some_and(|d| d.active)));
    let counts = Memo::new(move |_| {
        deploy.with(|d| {
            d.as_ref()
                .map(|d| DeployCounts::of(&d.hosts))
                .unwrap_or_default()
        })
    });
    // Host ids change only when a deploy starts; each chip follows its own state.
    let host_ids = Memo::new(move |_| {
        deploy.with(|d| {
            d.as_ref()
                .map(|d| d.hosts.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
    });

    // The job a cancel was sent for: the button stays disabled until that job is gone.
    let cancel_sent = RwSignal::new(None::<String>);
    let cancel = move |_| {
        let Some(id) = job_id.get_untracked() else {
            return;
        };
        cancel_sent.set(Some(id.clone()));
        actions::cancel(page, id, cancel_sent);
    };
    let dismiss = move |_| dismissed.set(key.get_untracked());
    // The job a confirm was sent for: like Cancel, disabled until the phase moves on (or
    // the server refused, which brings it back).
    let confirm_sent = RwSignal::new(None::<String>);
    let confirm = move |_| {
        let Some(id) = job_id.get_untracked() else {
            return;
        };
        confirm_sent.set(Some(id.clone()));
        actions::confirm_deploy(page, id, confirm_sent);
    };
    let sent_for_this_job = move |sent: RwSignal<Option<String>>| {
        sent.get().is_some_and(|sent| Some(sent) == job_id.get())
    };
    // While previewing, the chips and the bar follow the previews.
    let count_text = move || {
        let counts = counts.get();
        if before_merge.get() {
            counts.text_as("previewed")
        } else {
            counts.text()
        }
    };

    view! {
        <Show when=visible>
            <section class="deploy-panel" data-testid="deploy-panel" aria-label="Merge & Deploy" aria-live="polite"
                data-phase=move || phase.get() data-active=move || active.get().to_string()>
                <header class="deploy-head">
                    <h2 class="deploy-title">"Merge & Deploy PR #" {move || pr_number.get()}</h2>
                    <span class="deploy-phase" data-phase=move || phase.get()>{phase_text}</span>
                    {move || started_by.get().map(|by| view! { <span class="deploy-by">"by " {by}</span> })}
                    <span class="spacer"></span>
                    // No second dialog: the operator confirmed the deploy when starting it,
                    // and this button is the answer to the diff shown below it.
                    <Show when=move || may_run && active.get() && awaiting.get()>
                        <button type="button" class="deploy-confirm" data-testid="deploy-confirm"
                            title="Merge the PR, then pull and switch on the targets"
                            disabled=move || sent_for_this_job(confirm_sent) || sent_for_this_job(cancel_sent)
                            on:click=confirm>
                            "Confirm and deploy"
                        </button>
                    </Show>
                    <Show when=move || may_run && active.get()>
                        <button type="button" class="deploy-cancel danger" data-testid="deploy-cancel"
                            disabled=move || sent_for_this_job(cancel_sent)
                            on:click=cancel>
                            "Cancel"
                        </button>
                    </Show>
                    <Show when=move || !active.get()>
                        <button type="button" class="deploy-dismiss" data-testid="deploy-dismiss" on:click=dismiss>
                            "Dismiss"
                        </button>
                    </Show>
                </header>
                <p class="deploy-message" data-testid="deploy-message">{move || message.get()}</p>
                <div class="deploy-progress-row">
                    <div class="deploy-progress" data-testid="deploy-progress" role="progressbar"
                        aria-label="Hosts finished" aria-valuemin="0"
                        aria-valuenow=move || counts.get().finished.to_string()
                        aria-valuemax=move || counts.get().total.to_string()
                        aria-valuetext=count_text>
                        <div class="deploy-progress-fill" style:width=move || counts.get().percent()></div>
                    </div>
                    <span class="deploy-count">{count_text}</span>
                </div>
                <div class="deploy-hosts">
                    <For each=move || host_ids.get() key=|id| id.clone() let:id>
                        <DeployChip id />
                    </For>
                </div>
                // Once merging starts, the switches are the news; the diff was for deciding.
                {lazy_view(move || before_merge.get() && has_previews.get(), fleet_diff_panel::deploy_diff_panel)}
            </section>
        </Show>
    }
}

/// One host's chip, coloured like the compartments, with a mark so colour is not alone.
#[component]
fn DeployChip(id: String) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let state = {
        let id = id.clone();
        Memo::new(move |_| {
            store.deploy.with(|d| {
                d.as_ref()
                    .and_then(|d| d.hosts.get(&id).copied())
                    .unwrap_or(DeployHostState::Pending)
            })
        })
    };
    let name = move || deploy_host_state_name(state.get());
    // The hostname when the host is known here, else its id.
    let hostname = store.host(&id).map(|h| h.hostname);
    let label = {
        let id = id.clone();
        move || hostname.map(|h| h.get()).unwrap_or_else(|| id.clone())
    };
    let title = {
        let label = label.clone();
        move || format!("{}: {}", label(), deploy_host_state_text(state.get()))
    };
    view! {
        <span class=move || format!("deploy-host deploy-host--{}", name())
            data-testid="deploy-host" data-host=id data-state=name title=title>
            <span class="deploy-host-mark" aria-hidden="true">{move || deploy_host_mark(state.get())}</span>
            <span class="deploy-host-name">{label}</span>
        </span>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use protocol::messages::{DeployProgress, Snapshot};
    use protocol::Timestamp;

    fn render(may_run: bool, active: bool) -> String {
        render_in(may_run, active, DeployPhase::Pulling)
    }

    fn render_in(may_run: bool, active: bool, phase: DeployPhase) -> String {
        Owner::new().with(|| {
            provide_context(MayRun(may_run));
            let store = HostStore::new(Snapshot {
                hosts: vec![],
                pending_pr: None,
                dashboard_version: "0".into(),
                build: String::new(),
                server_time: Timestamp(0),
                desired: None,
                deploy: Some(DeployProgress {
                    job_id: "j1".into(),
                    pr_number: 7,
                    phase,
                    hosts: [
                        ("a".to_owned(), DeployHostState::Ok),
                        ("b".to_owned(), DeployHostState::Running),
                        ("c".to_owned(), DeployHostState::Pending),
                    ]
                    .into(),
                    message: "<i>pulling</i>".into(),
                    started_by: "op".into(),
                    active,
                    previews: Default::default(),
                }),
            });
            provide_context(store);
            provide_context(PageState::new(store));
            view! { <DeployPanelBody /> }.to_html()
        })
    }

    #[test]
    fn the_panel_shows_phase_progress_and_chips() {
        let html = render(true, true);
        assert!(html.contains(r#"data-phase="pulling""#), "{html}");
        assert!(html.contains(r#"data-active="true""#), "{html}");
        assert!(html.contains(r#"aria-valuenow="1""#), "{html}");
        assert!(html.contains(r#"aria-valuemax="3""#), "{html}");
        assert!(html.contains(r#"data-host="b""#), "{html}");
        assert!(html.contains(r#"data-state="running""#), "{html}");
        assert!(html.contains("deploy-cancel"), "{html}");
        assert!(!html.contains("deploy-dismiss"), "{html}");
        assert!(!html.contains("<i>"), "{html}");
        // Viewers see the progress, not the Cancel button; an ended job can be dismissed.
        assert!(!render(false, true).contains("deploy-cancel"));
        let ended = render(true, false);
        assert!(ended.contains("deploy-dismiss") && !ended.contains("deploy-cancel"));
        // Nothing to confirm once the deploy is past its previews.
        assert!(!render(true, true).contains("deploy-confirm"));
    }

    #[test]
    fn a_deploy_that_previewed_waits_for_the_operators_confirm() {
        let html = render_in(true, true, DeployPhase::AwaitingConfirmation);
        assert!(
            html.contains(r#"data-phase="awaiting_confirmation""#),
            "{html}"
        );
        assert!(html.contains("Review the changes, then confirm"), "{html}");
        assert!(html.contains(r#"data-testid="deploy-confirm""#), "{html}");
        assert!(html.contains("Confirm and deploy"), "{html}");
        assert!(html.contains(r#"data-testid="deploy-cancel""#), "{html}");
        assert!(html.contains("1 of 3 hosts previewed"), "{html}");
        // Viewers see the wait, not the buttons.
        let viewer = render_in(false, true, DeployPhase::AwaitingConfirmation);
        assert!(
            viewer.contains("Review the changes, then confirm"),
            "{viewer}"
        );
        assert!(!viewer.contains("deploy-confirm") && !viewer.contains("deploy-cancel"));
        // While previewing there is nothing to confirm yet.
        let previewing = render_in(true, true, DeployPhase::Previewing);
        assert!(previewing.contains("Previewing PR #7…"), "{previewing}");
        assert!(!previewing.contains("deploy-confirm"), "{previewing}");
        assert!(previewing.contains("deploy-cancel"), "{previewing}");
    }
}
