//! The confirm dialog for destructive or wide actions.

use crate::components::actions;
use crate::components::lazy_view;
use crate::components::reauth::ReauthPrompt;
use crate::page_state::{AfterReauth, Confirm, DeployOptions, HostCommand, MergeDeploy, PageState};
use crate::presentation::{merge_deploy_question, preview_deploy_question};
use crate::store::HostStore;
use leptos::prelude::*;
use protocol::CommandKind;

/// With `preview` the button only starts the previews, and says so.
fn merge_wording(m: &MergeDeploy, preview: bool) -> (String, String, &'static str) {
    let title = format!("Merge & Deploy PR #{}", m.pr_number);
    if preview {
        (
            title,
            preview_deploy_question(m.pr_number, &m.pr_title, &m.targets),
            "Preview",
        )
    } else {
        (
            title,
            merge_deploy_question(m.pr_number, &m.pr_title, &m.targets),
            "Merge & Deploy",
        )
    }
}

/// "a, b, c" up to five names, else just the count's words.
fn names(ids: &[&str]) -> String {
    match ids.len() {
        1..=5 => format!(" ({})", ids.join(", ")),
        _ => String::new(),
    }
}

fn commands_wording(commands: &[HostCommand]) -> (String, String, &'static str) {
    let ids: Vec<&str> = commands.iter().map(|c| c.host_id.as_str()).collect();
    let count = ids.len();
    let only = |kind| commands.iter().all(|c| c.kind == kind);
    match commands {
        [c] if c.kind == CommandKind::Boot => (
            format!("Boot {} into its new build", c.host_id),
            format!(
                "Build {} and make it the system for the next boot? What runs now stays until the host reboots.",
                c.host_id
            ),
            "Boot",
        ),
        [c] if c.kind == CommandKind::Rollback => (
            format!("Roll back {}", c.host_id),
            match c.generation {
                Some(n) => format!("Switch {} to generation {n} now?", c.host_id),
                None => format!("Switch {} back to its previous generation now?", c.host_id),
            },
            "Roll back",
        ),
        [c] if c.kind == CommandKind::Switch => (
            format!("Switch {} to its preview", c.host_id),
            format!(
                "Activate the build the preview of {} made? The diff shown is what changes.",
                c.host_id
            ),
            "Switch",
        ),
        _ if only(CommandKind::Switch) => (
            format!("Switch {count} hosts to their previews"),
            format!(
                "Activate the previewed build on {count} hosts{}?",
                names(&ids)
            ),
            "Switch",
        ),
        _ => (
            format!("Run on {count} hosts"),
            format!("Run these commands on {count} hosts{}?", names(&ids)),
            "Run",
        ),
    }
}

fn wording(confirm: &Confirm, online: usize, preview: bool) -> (String, String, &'static str) {
    match confirm {
        Confirm::Commands(commands) => commands_wording(commands),
        Confirm::RemoveHost(id) => (
            "Remove host".into(),
            format!("Remove {id}? Its token stops working at once and its agent is disconnected. Its command history is kept."),
            "Remove",
        ),
        Confirm::MergeDeploy(m) => merge_wording(m, preview),
        // The dialog shows the password form instead (`ConfirmBody`).
        Confirm::Reauth(..) => (String::new(), String::new(), ""),
        Confirm::Bulk(kind, ids) => {
            let count = ids.as_ref().map_or(online, Vec::len);
            let whom = if ids.is_none() { "online host" } else { "selected host" };
            let plural = if count == 1 { "" } else { "s" };
            (
                format!("{} on {count} host{plural}", kind.as_str()),
                format!("Run {} on {count} {whom}{plural}?", kind.as_str()),
                "Run",
            )
        }
    }
}

/// The dialog's code is a separate wasm chunk, fetched the first time it shows (P5).
#[component]
pub fn ConfirmDialog() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
        {lazy_view(move || page.confirm.with(Option::is_some), confirm_dialog)}
    }
}

#[lazy]
pub(crate) fn confirm_dialog() -> AnyView {
    view! { <ConfirmBody /> }.into_any()
}

#[component]
fn ConfirmBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    // The Merge & Deploy rollout options, as typed (read when the operator confirms).
    let form = DeployForm::default();
    let text = move || {
        page.confirm
            .get()
            .map(|c| wording(&c, store.counts().0, form.preview.get()))
            .unwrap_or_else(|| (String::new(), String::new(), ""))
    };
    let close = move || page.confirm.set(None);
    let form_error = RwSignal::new(None::<String>);
    let proceed = move |_| {
        match page.confirm.get_untracked() {
            Some(Confirm::RemoveHost(id)) => actions::remove(store, page, id),
            Some(Confirm::Bulk(kind, ids)) => actions::bulk(page, kind, ids),
            Some(Confirm::MergeDeploy(mut m)) => match form.read() {
                Ok(options) => {
                    m.options = options;
                    actions::merge_deploy(page, m);
                }
                // Stay open, saying which field is wrong.
                Err(e) => return form_error.set(Some(e)),
            },
            Some(Confirm::Commands(commands)) => actions::run_host_commands(page, commands),
            Some(Confirm::Reauth(..)) | None => {}
        }
        close();
    };
    let merging = move || {
        page.confirm
            .with(|c| matches!(c, Some(Confirm::MergeDeploy(..))))
    };
    // Focus starts on Cancel, the safe choice, so Enter never confirms by accident and
    // Escape closes from anywhere in the dialog.
    let cancel_ref = NodeRef::<leptos::html::Button>::new();
    // After the frame: the dialog is built before its lazy boundary mounts it, and a
    // detached button cannot take focus.
    Effect::new(move |_| {
        if let Some(button) = cancel_ref.get() {
            request_animation_frame(move || {
                let _ = button.focus();
            });
        }
    });
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            close();
        }
    };
    // After the password was accepted: run the deploy step that asked for it.
    let reauthed = Callback::new(move |()| {
        match page.confirm.get_untracked() {
            Some(Confirm::Reauth(AfterReauth::MergeDeploy(m))) => {
                close();
                actions::merge_deploy(page, m);
            }
            Some(Confirm::Reauth(AfterReauth::ConfirmDeploy(job_id))) => {
                close();
                // The panel's button came back when the password was asked for; the
                // server refuses a second confirm of the same job, so nothing to guard.
                actions::confirm_deploy(page, job_id, RwSignal::new(None));
            }
            _ => {}
        }
    });
    let reauth = move || {
        page.confirm
            .with(|c| matches!(c, Some(Confirm::Reauth(..))))
    };
    view! {
            <div class="modal-backdrop" on:click=move |_| close()></div>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title" on:keydown=on_key>
                <Show when=reauth fallback=move || view! {
                    <h2 id="confirm-title">{move || text().0}</h2>
                    <p>{move || text().1}</p>
                    <Show when=merging>
                        <DeployOptionsForm form error=form_error />
                    </Show>
                    <div class="modal-actions">
                        <button type="button" class="cancel" node_ref=cancel_ref on:click=move |_| close()>"Cancel"</button>
                        <button type="button" class="danger confirm" on:click=proceed>{move || text().2}</button>
                    </div>
                }>
                    <ReauthPrompt on_done=reauthed on_cancel=Callback::new(move |()| close()) />
                </Show>
            </div>
    }
}

/// The rollout options' fields as typed.
#[derive(Clone, Copy, Default)]
struct DeployForm {
    canary: RwSignal<String>,
    batch_size: RwSignal<String>,
    max_failures: RwSignal<String>,
    soak_s: RwSignal<String>,
    on_failure: RwSignal<String>,
    /// Off unless ticked: previews build every target's system before anything is merged,
    /// which takes a while on each host, and a deploy that goes straight on is what the
    /// button has always done.
    preview: RwSignal<bool>,
}

impl DeployForm {
    fn read(self) -> Result<DeployOptions, String> {
        let options = DeployOptions::parse(
            &self.canary.get_untracked(),
            &self.batch_size.get_untracked(),
            &self.max_failures.get_untracked(),
            &self.soak_s.get_untracked(),
            &self.on_failure.get_untracked(),
        )?;
        Ok(DeployOptions {
            preview: self.preview.get_untracked(),
            ..options
        })
    }
}

/// Canary hosts, batch size, max failures, soak time and what a failure does, for Merge &
/// Deploy. Empty fields keep the server's defaults: one wave, halt on the first failure.
#[component]
fn DeployOptionsForm(form: DeployForm, error: RwSignal<Option<String>>) -> impl IntoView {
    let field = move |label: &'static str,
                      testid: &'static str,
                      value: RwSignal<String>,
                      placeholder: &'static str,
                      numeric: bool| {
        view! {
            <label class="deploy-option">
                <span>{label}</span>
                <input
                    type=if numeric { "number" } else { "text" }
                    min=numeric.then_some("0")
                    inputmode=numeric.then_some("numeric")
                    data-testid=testid
                    placeholder=placeholder
                    prop:value=move || value.get()
                    on:input=move |ev| {
                        value.set(event_target_value(&ev));
                        error.set(None);
                    }
                />
            </label>
        }
    };
    let on_failure = form.on_failure;
    let preview = form.preview;
    view! {
        <details class="deploy-options" data-testid="deploy-options">
            <summary>"Rollout options"</summary>
            <label class="deploy-option deploy-option-preview">
                <input type="checkbox" data-testid="deploy-preview"
                    prop:checked=move || preview.get()
                    on:change=move |ev| preview.set(event_target_checked(&ev))
                />
                <span>"Preview first (build the PR on every target and show what changes before merging)"</span>
            </label>
            <div class="deploy-options-grid">
                {field("Canary hosts", "deploy-canary", form.canary, "first, alone: web-1, tag:canary", false)}
                {field("Batch size", "deploy-batch-size", form.batch_size, "all at once", true)}
                {field("Max failures", "deploy-max-failures", form.max_failures, "0", true)}
                {field("Soak (seconds)", "deploy-soak", form.soak_s, "0", true)}
                <label class="deploy-option">
                    <span>"On failure"</span>
                    <select data-testid="deploy-on-failure"
                        prop:value=move || on_failure.get()
                        on:change=move |ev| on_failure.set(event_target_value(&ev))>
                        <option value="">"halt"</option>
                        <option value="rollback-and-halt">"roll back the failed wave, then halt"</option>
                    </select>
                </label>
            </div>
        </details>
        {move || error.get().map(|e| view! { <p class="error deploy-options-error" data-testid="deploy-options-error">{e}</p> })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_wording_counts_hosts() {
        let (title, body, _) = wording(&Confirm::Bulk(CommandKind::Pull, None), 3, false);
        assert_eq!(title, "pull on 3 hosts");
        assert_eq!(body, "Run pull on 3 online hosts?");
        let (_, body, _) = wording(
            &Confirm::Bulk(CommandKind::Test, Some(vec!["a".into()])),
            3,
            false,
        );
        assert_eq!(body, "Run test on 1 selected host?");
    }

    #[test]
    fn merge_wording_names_the_pr_and_hosts() {
        let m = MergeDeploy {
            pr_number: 7,
            pr_title: "<b>bump</b>".into(),
            host_ids: None,
            targets: vec!["a".into()],
            head_sha: None,
            options: DeployOptions::default(),
        };
        let (title, body, button) = merge_wording(&m, false);
        assert_eq!(title, "Merge & Deploy PR #7");
        assert_eq!(
            body,
            "Merge PR #7 “<b>bump</b>” on GitHub, then pull and switch on 1 host (a)?"
        );
        assert_eq!(button, "Merge & Deploy");
        // Previewing first merges nothing yet, and the button says so.
        let (_, body, button) = merge_wording(&m, true);
        assert!(body.starts_with("Build PR #7"), "{body}");
        assert!(
            body.ends_with("Nothing is merged until you confirm."),
            "{body}"
        );
        assert_eq!(button, "Preview");
    }

    #[test]
    fn commands_wording_says_what_changes() {
        let mut boot = HostCommand::new("web-1", CommandKind::Boot);
        let (title, body, button) = commands_wording(std::slice::from_ref(&boot));
        assert_eq!(title, "Boot web-1 into its new build");
        assert!(body.contains("next boot"), "{body}");
        assert_eq!(button, "Boot");
        boot.kind = CommandKind::Rollback;
        boot.generation = Some(41);
        let (_, body, button) = commands_wording(std::slice::from_ref(&boot));
        assert_eq!(body, "Switch web-1 to generation 41 now?");
        assert_eq!(button, "Roll back");
        let switch = |id: &str| HostCommand {
            preview_id: Some(format!("p-{id}")),
            ..HostCommand::new(id, CommandKind::Switch)
        };
        let (title, _, button) = commands_wording(&[switch("a")]);
        assert_eq!(
            (title.as_str(), button),
            ("Switch a to its preview", "Switch")
        );
        let (title, body, _) = commands_wording(&[switch("a"), switch("b")]);
        assert_eq!(title, "Switch 2 hosts to their previews");
        assert_eq!(body, "Activate the previewed build on 2 hosts (a, b)?");
    }
}
