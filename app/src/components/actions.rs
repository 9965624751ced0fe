//! What the operator's buttons do: one place that calls the server functions and turns a
//! failure into a notice, for every button in rows, cards and menus.

use crate::api::{run_command, stop_command, unlock_host};
use crate::store::HostStore;
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
pub fn perform(store: HostStore, host_id: String, action: Action) {
    leptos::task::spawn_local(async move {
        let result = match action {
            Action::Run(kind) => run_command(host_id.clone(), kind).await.map(drop),
            Action::Stop => stop_command(host_id.clone()).await.map(drop),
            Action::Unlock => unlock_host(host_id.clone()).await,
        };
        match result {
            Ok(()) if action == Action::Unlock => {
                store.notify(format!("{host_id}: unlocked"), false)
            }
            Ok(()) => {}
            Err(e) => store.notify(format!("{host_id}: cannot {}: {e}", action.verb()), true),
        }
    });
}
