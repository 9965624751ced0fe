//! A host's generations: the system profile's generations as its agent last reported
//! them, newest first, with the current and the booted one marked, and a rollback to any
//! other (after a confirm).

use crate::components::lazy_view;
use crate::components::viewer::MayRun;
use crate::page_state::{Confirm, HostCommand, PageState};
use crate::presentation::{absolute_time, age_text, store_path_name};
use crate::store::{HostSignals, HostStore};
use leptos::prelude::*;
use protocol::{CommandKind, Generation};

/// The panel's code is a separate wasm chunk, fetched the first time it opens (P5).
#[component]
pub fn GenerationsPanel() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
        {lazy_view(move || page.generations_host.with(Option::is_some), generations_panel)}
    }
}

#[lazy]
pub(crate) fn generations_panel() -> AnyView {
    view! { <GenerationsBody /> }.into_any()
}

#[component]
fn GenerationsBody() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let host = move || page.generations_host.get().and_then(|id| store.host(&id));
    view! {
        {move || host().map(|host| view! { <HostGenerations host /> })}
    }
}

#[component]
fn HostGenerations(host: HostSignals) -> impl IntoView {
    let store = expect_context::<HostStore>();
    let page = expect_context::<PageState>();
    let may_run = MayRun::get();
    let HostSignals {
        id,
        hostname,
        online,
        pending_command,
        generations_key,
        reboot_needed,
        ..
    } = host;
    // The list from the plain state, re-read when the agent reports another one.
    let generations = Memo::new(move |_| {
        generations_key.track();
        store
            .host_state(&id.get_value())
            .map(|h| h.generations)
            .unwrap_or_default()
    });
    let can_run = move || online.get() && pending_command.with(Option::is_none);
    let ask = move |generation: Option<u64>| {
        page.confirm.set(Some(Confirm::Commands(vec![HostCommand {
            generation,
            ..HostCommand::new(id.get_value(), CommandKind::Rollback)
        }])))
    };
    // Newest first; the list changes only when the agent reports new generations.
    let newest_first = move || {
        let mut list = generations.get();
        list.reverse();
        list
    };
    let row = move |g: Generation| {
        let n = g.number;
        let created = g.created_at;
        let age = move || age_text(created, store.now.get());
        view! {
            <tr class="generation" data-testid="generation" data-generation=n
                data-current=g.current.to_string() data-booted=g.booted.to_string()>
                <td class="generation-number">{n}</td>
                <td class="generation-created" title=absolute_time(created) data-timestamp=created.to_string()>{age}</td>
                <td class="generation-name" title=g.store_path.clone()>{store_path_name(&g.store_path).to_owned()}</td>
                <td class="generation-marks">
                    {g.current.then(|| view! { <span class="generation-current" title="The system profile points at it">"● current"</span> })}
                    {g.booted.then(|| view! { <span class="generation-booted" title="The machine booted it">"⏻ booted"</span> })}
                </td>
                <td class="generation-actions">
                    {(may_run && !g.current).then(|| view! {
                        <button type="button" class="generation-rollback" data-testid="generation-rollback" data-generation=n
                            disabled=move || !can_run()
                            on:click=move |_| ask(Some(n))>
                            "Roll back to this"
                        </button>
                    })}
                </td>
            </tr>
        }
    };
    // Opened from a row's menu, possibly far above: bring the panel into view.
    let panel = NodeRef::<leptos::html::Section>::new();
    Effect::new(move |_| {
        if let Some(el) = panel.get() {
            request_animation_frame(move || el.scroll_into_view());
        }
    });
    view! {
        <section class="generations-panel" data-testid="generations-panel" data-host=id.get_value()
            aria-label="Generations" node_ref=panel>
            <header class="generations-head">
                <h2>"Generations of " {move || hostname.get()}</h2>
                <span class="reboot-needed" hidden=move || !reboot_needed.get()>"reboot needed"</span>
                <span class="spacer"></span>
                <Show when=move || may_run>
                    <button type="button" data-testid="generations-rollback" data-command="rollback"
                        title="Switch back to the generation before the current one"
                        disabled=move || !can_run()
                        on:click=move |_| ask(None)>
                        "Rollback (previous)"
                    </button>
                </Show>
                <button type="button" class="generations-close" data-testid="generations-close"
                    aria-label="Close the generations" on:click=move |_| page.generations_host.set(None)>
                    "×"
                </button>
            </header>
            <Show when=move || generations.with(|g| !g.is_empty())
                fallback=|| view! { <p class="empty">"No generations reported yet: the agent sends them after each switch, boot or rollback."</p> }>
                <table class="generations">
                    <thead>
                        <tr><th>"#"</th><th>"Created"</th><th>"System"</th><th></th><th></th></tr>
                    </thead>
                    <tbody>
                        {move || newest_first().into_iter().map(row).collect_view()}
                    </tbody>
                </table>
            </Show>
        </section>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::store::tests::snapshot;
    use protocol::Timestamp;

    #[test]
    fn the_list_is_newest_first_with_marks_and_rollbacks_to_the_others() {
        let html = Owner::new().with(|| {
            provide_context(MayRun(true));
            let mut snap = snapshot(&["web-1"]);
            snap.hosts[0].online = true;
            snap.hosts[0].reboot_needed = true;
            snap.hosts[0].generations = vec![
                Generation {
                    number: 41,
                    created_at: Timestamp(40),
                    store_path: "/nix/store/abc-nixos-system-web-1-26.05.1".into(),
                    current: false,
                    booted: true,
                },
                Generation {
                    number: 42,
                    created_at: Timestamp(90),
                    store_path: "/nix/store/def-nixos-system-web-1-26.05.2".into(),
                    current: true,
                    booted: false,
                },
            ];
            let store = HostStore::new(snap);
            provide_context(store);
            provide_context(PageState::new(store));
            let host = store.host("web-1").unwrap();
            view! { <HostGenerations host /> }.to_html()
        });
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {html}"))
        };
        assert!(at(r#"data-generation="42""#) < at(r#"data-generation="41""#));
        assert!(html.contains("nixos-system-web-1-26.05.2"), "{html}");
        assert!(!html.contains(">/nix/store/def"), "{html}");
        assert!(
            html.contains("● current") && html.contains("⏻ booted"),
            "{html}"
        );
        // The clock is at 100: 10 s and 60 s ago, the absolute time in the tooltip.
        assert!(
            html.contains("10s ago") && html.contains("1m ago"),
            "{html}"
        );
        assert!(
            html.contains(r#"title="1970-01-01 00:01:30 UTC""#),
            "{html}"
        );
        // Only the generation that is not current can be rolled back to.
        assert_eq!(
            html.matches(r#"data-testid="generation-rollback""#).count(),
            1
        );
        assert!(
            html.contains(r#"data-testid="generation-rollback" data-generation="41""#),
            "{html}"
        );
    }
}
