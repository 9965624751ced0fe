//! The dashboard page's own state, beside the fleet's (`HostStore`): the operator's filter
//! and the hosts it shows, the selection for bulk actions, the log panel's tabs, the
//! notices and the confirm dialog. None of it is host state; it lives as long as the page
//! and is provided as context next to the store.

use crate::selection::Selection;
use crate::store::HostStore;
use leptos::prelude::*;
use protocol::api::OnFailure;
use protocol::messages::BrowserEvent;
use protocol::{Changed, CommandKind, CommandStatus, Host};

/// Whether a host matches a filter query (already trimmed and lower-cased): every word of
/// the query found in its name, type, location, device type or tags; a `tag:web` word
/// needs that exact tag.
pub fn host_matches(host: &Host, query: &str) -> bool {
    let fields = [
        Some(host.hostname.as_str()),
        Some(host.host_type.as_str()),
        host.location.as_deref(),
        host.device_type.as_deref(),
    ];
    query
        .split_whitespace()
        .all(|word| match word.strip_prefix("tag:") {
            Some(tag) => host.tags.iter().any(|t| t == tag),
            None => {
                fields
                    .iter()
                    .flatten()
                    .any(|f| f.to_lowercase().contains(word))
                    || host.tags.iter().any(|t| t.contains(word))
            }
        })
}

/// A message for the operator: an action failed, or something they should know.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub id: u64,
    pub text: String,
    pub error: bool,
}

/// An action waiting for the operator's confirmation.
#[derive(Clone, Debug, PartialEq)]
pub enum Confirm {
    RemoveHost(String),
    /// A command on many hosts at once (`None`: every online host).
    Bulk(CommandKind, Option<Vec<String>>),
    /// Merge the update PR and roll it out.
    MergeDeploy(MergeDeploy),
    /// The server asked for the password again before this step of a deploy; the dialog
    /// asks, then runs it.
    Reauth(AfterReauth),
    /// Commands that change what hosts run or boot: boot, a rollback to a generation, a
    /// switch to a previewed build (one per host).
    Commands(Vec<HostCommand>),
}

/// A deploy step that needs a recent login, waiting for the password.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterReauth {
    /// Start Merge & Deploy.
    MergeDeploy(MergeDeploy),
    /// Confirm the deploy with this job id after its previews: this merges the PR.
    ConfirmDeploy(String),
}

/// One command for one host, with what it carries besides its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct HostCommand {
    pub host_id: String,
    pub kind: CommandKind,
    /// A rollback's target generation (None: the previous one).
    pub generation: Option<u64>,
    /// The finished preview whose build a switch activates.
    pub preview_id: Option<String>,
}

impl HostCommand {
    pub fn new(host_id: impl Into<String>, kind: CommandKind) -> Self {
        HostCommand {
            host_id: host_id.into(),
            kind,
            generation: None,
            preview_id: None,
        }
    }
}

/// How Merge & Deploy rolls out (`DeployRequest`): None everywhere is the server's
/// default, one wave for every target and halt on the first failure.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeployOptions {
    /// Hosts that go first, alone.
    pub canary: Option<Vec<String>>,
    pub batch_size: Option<u32>,
    pub max_failures: Option<u32>,
    pub soak_s: Option<u64>,
    pub on_failure: Option<OnFailure>,
    /// Build the PR on every target and show the diff first; merge only once an operator
    /// confirms.
    pub preview: bool,
}

impl DeployOptions {
    /// Read the Merge & Deploy form: canary hosts separated by commas or spaces; whole
    /// numbers (batch size at least 1); an empty field is None. Says which field is wrong.
    pub fn parse(
        canary: &str,
        batch_size: &str,
        max_failures: &str,
        soak_s: &str,
        on_failure: &str,
    ) -> Result<Self, String> {
        fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, String> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse()
                .map(Some)
                .map_err(|_| format!("{field}: “{text}” is not a whole number"))
        }
        let canary: Vec<String> = canary
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        let batch_size = number::<u32>("Batch size", batch_size)?;
        if batch_size == Some(0) {
            return Err("Batch size: at least 1".into());
        }
        Ok(DeployOptions {
            canary: (!canary.is_empty()).then_some(canary),
            batch_size,
            max_failures: number("Max failures", max_failures)?,
            soak_s: number("Soak", soak_s)?,
            on_failure: match on_failure {
                "" => None,
                name => {
                    Some(OnFailure::parse(name).ok_or_else(|| format!("On failure: “{name}”?"))?)
                }
            },
            preview: false,
        })
    }
}

/// A Merge & Deploy waiting for the operator's word. It carries the PR as it was when the
/// operator chose it, so the dialog names exactly what will be merged.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeDeploy {
    pub pr_number: u64,
    pub pr_title: String,
    /// The selected hosts, or None for every online host (the server decides which).
    pub host_ids: Option<Vec<String>>,
    /// The hosts it reaches as the page sees them, for the question.
    pub targets: Vec<String>,
    /// The PR's head as the page showed it: the server refuses the deploy if it moved.
    pub head_sha: Option<String>,
    /// Canary, batches, soak and what a failure does, as the operator set them.
    pub options: DeployOptions,
}

#[derive(Clone, Copy)]
pub struct PageState {
    /// The operator's filter text; the list shows the hosts it matches (`shown`).
    pub filter: RwSignal<String>,
    /// The ids the host list shows, in display order: the store's `ids` narrowed by
    /// `filter`.
    pub shown: Memo<Vec<String>>,
    /// The host whose output the log panel shows: the latest to start a command, or the
    /// one the operator picked.
    pub log_host: RwSignal<Option<String>>,
    /// Hosts with a tab in the log panel, in the order they were opened.
    pub log_tabs: RwSignal<Vec<String>>,
    pub notices: RwSignal<Vec<Notice>>,
    pub confirm: RwSignal<Option<Confirm>>,
    /// Hosts checked for bulk actions.
    pub selection: RwSignal<Selection>,
    /// The host whose generations panel is open.
    pub generations_host: RwSignal<Option<String>>,
    /// The host being edited (location, device type, colour, tags).
    pub edit_host: RwSignal<Option<String>>,
    /// A past command whose stored log the log panel shows instead of the live output
    /// (opened from the host page's history); any `show_log` returns to the live one.
    pub past_log: RwSignal<Option<String>>,
    /// The rows' CPU sparklines as SVG paths (host id, `d`), for the rows in view
    /// (`host_list::follow_sparks`).
    pub sparks: RwSignal<Vec<(String, String)>>,
}

impl PageState {
    /// The page's state over `store`'s fleet: no filter, nothing selected, no tabs.
    pub fn new(store: HostStore) -> Self {
        let filter = RwSignal::new(String::new());
        let ids = store.ids;
        // Tracks the ids and the filter; while a filter is set, also the fields an edit can
        // change (location, device type, tags), so an edited host joins or leaves the list
        // at once. Name and type come only with `host_added` and snapshots (`ids`).
        let shown = Memo::new(move |_| {
            let query = filter.with(|f| f.trim().to_lowercase());
            let ids = ids.get();
            if query.is_empty() {
                return ids;
            }
            for id in &ids {
                if let Some(h) = store.host(id) {
                    h.location.track();
                    h.device_type.track();
                    h.tags.track();
                }
            }
            store.with_state(|s| {
                ids.into_iter()
                    .filter(|id| s.hosts.get(id).is_some_and(|h| host_matches(h, &query)))
                    .collect()
            })
        });
        PageState {
            filter,
            shown,
            log_host: RwSignal::new(None),
            log_tabs: RwSignal::new(Vec::new()),
            notices: RwSignal::new(Vec::new()),
            confirm: RwSignal::new(None),
            selection: RwSignal::new(Default::default()),
            generations_host: RwSignal::new(None),
            edit_host: RwSignal::new(None),
            past_log: RwSignal::new(None),
            sparks: RwSignal::new(Vec::new()),
        }
    }

    /// Apply one event from the hub to `store`, then keep the page in step: the log panel
    /// follows a command that starts, and hosts that are gone leave the selection.
    pub fn apply(&self, store: HostStore, event: &BrowserEvent) -> Changed {
        let changed = store.apply(event);
        match (&changed, event) {
            (Changed::Nothing, _) => {}
            (Changed::HostAdded(_) | Changed::HostRemoved(_) | Changed::All, _) => {
                let ids = store.ids.get_untracked();
                if self
                    .selection
                    .with_untracked(|s| s.ids.iter().any(|id| !ids.contains(id)))
                {
                    self.selection.update(|s| s.retain(&ids));
                }
            }
            (_, BrowserEvent::CommandQueued(q)) => self.show_log(&q.host_id),
            // Easy to miss in a log: the new generation did not stay.
            (_, BrowserEvent::CommandComplete(c)) if c.status == CommandStatus::RolledBack => self
                .notify(
                    format!(
                        "{}: rolled back: the new generation failed, the previous one runs again",
                        c.host_id
                    ),
                    true,
                ),
            _ => {}
        }
        changed
    }

    /// Open (or switch to) a host's tab in the log panel.
    pub fn show_log(&self, host_id: &str) {
        if !self
            .log_tabs
            .with_untracked(|t| t.iter().any(|x| x == host_id))
        {
            self.log_tabs.update(|t| t.push(host_id.to_owned()));
        }
        if self.past_log.with_untracked(Option::is_some) {
            self.past_log.set(None);
        }
        self.log_host.set(Some(host_id.to_owned()));
    }

    /// Show a past command's stored log in the log panel, in its host's tab.
    pub fn show_past_log(&self, host_id: &str, command_id: &str) {
        self.show_log(host_id);
        self.past_log.set(Some(command_id.to_owned()));
    }

    /// Close a host's tab; the panel moves to the last remaining one.
    pub fn close_log(&self, host_id: &str) {
        self.log_tabs.update(|t| t.retain(|x| x != host_id));
        if self.log_host.get_untracked().as_deref() == Some(host_id) {
            self.log_host
                .set(self.log_tabs.get_untracked().last().cloned());
        }
    }

    /// Show a message to the operator (errors stay until dismissed, others fade).
    pub fn notify(&self, text: impl Into<String>, error: bool) {
        let text = text.into();
        self.notices.update(|n| {
            let id = n.last().map_or(1, |last| last.id + 1);
            n.push(Notice { id, text, error });
            if n.len() > 5 {
                n.remove(0);
            }
        });
    }

    pub fn dismiss(&self, id: u64) {
        self.notices.update(|n| n.retain(|x| x.id != id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::snapshot;
    use protocol::messages::{CommandQueued, HostBody, HostRef};
    use protocol::{HostType, Timestamp};

    #[test]
    fn the_filter_narrows_the_list_by_name_type_and_location() {
        let owner = Owner::new();
        owner.with(|| {
            let mut snap = snapshot(&["web-1", "web-2", "db-1", "mac-mini"]);
            snap.hosts[2].location = Some("Rack 7".into());
            snap.hosts[3].host_type = HostType::Macos;
            let store = HostStore::new(snap);
            let page = PageState::new(store);
            assert_eq!(page.shown.get_untracked().len(), 4);
            page.filter.set("WEB".into());
            assert_eq!(page.shown.get_untracked(), vec!["web-1", "web-2"]);
            page.filter.set(" rack  7 ".into());
            assert_eq!(page.shown.get_untracked(), vec!["db-1"]);
            page.filter.set("macos".into());
            assert_eq!(page.shown.get_untracked(), vec!["mac-mini"]);
            page.filter.set("web 2".into());
            assert_eq!(page.shown.get_untracked(), vec!["web-2"]);
            page.filter.set("nothing".into());
            assert!(page.shown.get_untracked().is_empty());
            // A host arriving that matches shows up.
            page.filter.set("web".into());
            let mut h = Host::new("web-3", HostType::Nixos);
            h.online = true;
            page.apply(store, &BrowserEvent::HostAdded(HostBody { host: h }));
            assert_eq!(page.shown.get_untracked(), vec!["web-1", "web-2", "web-3"]);
            page.filter.set(String::new());
            assert_eq!(page.shown.get_untracked().len(), 5);
        });
    }

    #[test]
    fn the_filter_takes_tags_and_follows_an_edit() {
        let owner = Owner::new();
        owner.with(|| {
            let mut snap = snapshot(&["web-1", "web-2", "db-1"]);
            snap.hosts[0].tags = vec!["canary".into(), "web".into()];
            snap.hosts[1].tags = vec!["web".into()];
            snap.hosts[2].tags = vec!["webhooks".into()];
            let store = HostStore::new(snap);
            let page = PageState::new(store);
            page.filter.set("tag:web".into());
            assert_eq!(page.shown.get_untracked(), vec!["web-1", "web-2"]);
            // A plain word matches part of a tag too; `tag:` only the whole tag.
            page.filter.set("hooks".into());
            assert_eq!(page.shown.get_untracked(), vec!["db-1"]);
            page.filter.set("tag:canary".into());
            assert_eq!(page.shown.get_untracked(), vec!["web-1"]);
            // An edit that tags another host brings it into the list at once.
            let mut edited = store.host_state("web-2").unwrap();
            edited.tags = vec!["canary".into(), "web".into()];
            page.apply(store, &BrowserEvent::HostUpdated(HostBody { host: edited }));
            assert_eq!(page.shown.get_untracked(), vec!["web-1", "web-2"]);
        });
    }

    #[test]
    fn the_log_panel_follows_a_started_command_and_tabs_close() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a", "b"]));
            let page = PageState::new(store);
            let queue = |host: &str| {
                BrowserEvent::CommandQueued(CommandQueued {
                    host_id: host.into(),
                    command_id: format!("{host}-1"),
                    command: protocol::CommandKind::Pull,
                    queued_at: Timestamp(101),
                })
            };
            // A command for a host the page does not know opens nothing.
            page.apply(store, &queue("ghost"));
            assert_eq!(page.log_host.get_untracked(), None);
            page.apply(store, &queue("a"));
            assert_eq!(page.log_host.get_untracked().as_deref(), Some("a"));
            page.apply(store, &queue("b"));
            assert_eq!(page.log_host.get_untracked().as_deref(), Some("b"));
            assert_eq!(page.log_tabs.get_untracked(), vec!["a", "b"]);
            page.show_log("a");
            assert_eq!(page.log_tabs.get_untracked(), vec!["a", "b"]);
            page.close_log("a");
            assert_eq!(page.log_host.get_untracked().as_deref(), Some("b"));
            page.close_log("b");
            assert_eq!(page.log_host.get_untracked(), None);
        });
    }

    #[test]
    fn hosts_that_go_leave_the_selection() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a", "b", "c"]));
            let page = PageState::new(store);
            let order = page.shown.get_untracked();
            page.selection.update(|s| {
                s.click(&order, "a", false);
                s.click(&order, "c", true);
            });
            page.apply(
                store,
                &BrowserEvent::HostRemoved(HostRef {
                    host_id: "b".into(),
                }),
            );
            let selected = || page.selection.with_untracked(|s| s.ids.len());
            assert_eq!(selected(), 2);
            page.apply(store, &BrowserEvent::Snapshot(snapshot(&["c"])));
            assert_eq!(
                page.selection
                    .with_untracked(|s| s.ids.iter().cloned().collect::<Vec<_>>()),
                vec!["c"]
            );
            assert_eq!(selected(), 1);
        });
    }

    #[test]
    fn a_rolled_back_command_is_an_error_notice() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a"]));
            let page = PageState::new(store);
            let done = |id: &str, status| {
                BrowserEvent::CommandComplete(protocol::messages::CommandComplete {
                    host_id: "a".into(),
                    command_id: id.into(),
                    status,
                    exit_code: None,
                    duration_ms: 1,
                    result: None,
                })
            };
            let queue = |id: &str| {
                BrowserEvent::CommandQueued(CommandQueued {
                    host_id: "a".into(),
                    command_id: id.into(),
                    command: protocol::CommandKind::Switch,
                    queued_at: Timestamp(101),
                })
            };
            page.apply(store, &queue("s1"));
            page.apply(store, &done("s1", CommandStatus::Ok));
            assert!(page.notices.with_untracked(Vec::is_empty));
            page.apply(store, &queue("s2"));
            page.apply(store, &done("s2", CommandStatus::RolledBack));
            let notices = page.notices.get_untracked();
            assert_eq!(notices.len(), 1);
            assert!(notices[0].error);
            assert!(
                notices[0].text.starts_with("a: rolled back"),
                "{}",
                notices[0].text
            );
        });
    }

    #[test]
    fn deploy_options_from_the_form() {
        assert_eq!(
            DeployOptions::parse("", "", "", "", ""),
            Ok(DeployOptions::default())
        );
        assert_eq!(
            DeployOptions::parse(" web-1, web-2  db-1,", "5", "1", "60", "rollback-and-halt"),
            Ok(DeployOptions {
                canary: Some(vec!["web-1".into(), "web-2".into(), "db-1".into()]),
                batch_size: Some(5),
                max_failures: Some(1),
                soak_s: Some(60),
                on_failure: Some(OnFailure::RollbackAndHalt),
                preview: false,
            })
        );
        assert_eq!(
            DeployOptions::parse("", "", " 0 ", "", "halt").map(|o| (o.max_failures, o.on_failure)),
            Ok((Some(0), Some(OnFailure::Halt)))
        );
        assert!(DeployOptions::parse("", "0", "", "", "")
            .unwrap_err()
            .starts_with("Batch size"));
        assert!(DeployOptions::parse("", "", "-1", "", "")
            .unwrap_err()
            .starts_with("Max failures"));
        assert!(DeployOptions::parse("", "", "", "1.5", "")
            .unwrap_err()
            .starts_with("Soak"));
        assert!(DeployOptions::parse("", "", "", "", "retry").is_err());
    }

    #[test]
    fn notices_keep_the_latest_five() {
        let owner = Owner::new();
        owner.with(|| {
            let page = PageState::new(HostStore::new(snapshot(&[])));
            for i in 0..7 {
                page.notify(format!("n{i}"), i == 6);
            }
            let ids = || {
                page.notices
                    .with_untracked(|n| n.iter().map(|n| n.id).collect::<Vec<_>>())
            };
            assert_eq!(ids(), vec![3, 4, 5, 6, 7]);
            assert!(page.notices.with_untracked(|n| n[4].error));
            page.dismiss(5);
            assert_eq!(ids(), vec![3, 4, 6, 7]);
        });
    }
}
