//! The header's fleet target: the commit the config repository says hosts should run, and
//! the flake.lock update PR waiting to be merged. Text from GitHub (messages, titles,
//! URLs) is hostile: it is only ever rendered as text, and only http(s) URLs become links.

use crate::presentation::*;
use crate::store::HostStore;
use leptos::prelude::*;
use protocol::DesiredState;

#[component]
pub fn FleetTarget() -> impl IntoView {
    view! {
        <div class="fleet-target">
            <DesiredTarget />
            <PendingPrLink />
        </div>
    }
}

/// "Target main 0123abc 3h ago", or why there is none yet.
#[component]
pub fn DesiredTarget() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let desired = store.desired;
    // One memo per piece shown, so a re-read that only moves `checked_at` touches no text.
    let part = move |f: fn(&DesiredState) -> Option<String>| {
        Memo::new(move |_| desired.with(|d| d.as_ref().and_then(f)))
    };
    let source = part(|d| Some(d.source.clone()));
    let branch = part(|d| Some(d.branch.clone()));
    let commit = part(|d| d.commit.clone());
    let commit_title = part(|d| Some(desired_commit_title(d)));
    let href = part(|d| http_url(d.commit_url.as_deref()));
    let waiting = part(desired_waiting);
    let error = part(|d| d.error.clone());
    let rate_limited = part(|d| d.rate_limited_until.map(rate_limited_text));
    let committed_at =
        Memo::new(move |_| desired.with(|d| d.as_ref().and_then(|d| d.committed_at)));
    let age = move || committed_at.get().map(|at| age_text(at, store.now.get()));

    view! {
        <Show
            when=move || desired.with(Option::is_some)
            fallback=|| view! {
                <span class="desired desired-unset" data-testid="desired" title=DESIRED_NOT_CONFIGURED>
                    "Desired state: not configured"
                </span>
            }
        >
            <span class="desired" data-testid="desired" title=move || source.get()>
                <span class="desired-label">"Target"</span>
                <span class="desired-branch">{move || branch.get()}</span>
                <a class="desired-commit" data-testid="desired-commit" hidden=move || commit.with(Option::is_none)
                    href=move || href.get() target="_blank" rel="noopener noreferrer"
                    title=move || commit_title.get()>
                    {move || commit.with(Option::is_some).then(|| short_generation(commit.get().as_deref()))}
                </a>
                <span class="desired-age" hidden=move || commit.with(Option::is_none)>{age}</span>
                // Always there, hidden when empty: plain text nodes and attributes cost the
                // browser's wasm far less than a view built and dropped per change (P5).
                <span class="desired-waiting" hidden=move || waiting.with(Option::is_none)>{move || waiting.get()}</span>
                <span class="desired-error" data-testid="desired-error" hidden=move || error.with(Option::is_none)
                    title=move || error.get()>{move || error.get()}</span>
                <span class="desired-rate-limited" hidden=move || rate_limited.with(Option::is_none)
                    title="GitHub is rate-limiting the dashboard; the last known state stays in force until then (UTC).">
                    {move || rate_limited.get()}
                </span>
            </span>
        </Show>
    }
}

/// "PR #7: flake.lock: update" with whether it can be merged yet.
#[component]
pub fn PendingPrLink() -> impl IntoView {
    let store = expect_context::<HostStore>();
    let pr = store.pending_pr;
    let text = Memo::new(move |_| {
        pr.with(|p| p.as_ref().map(|p| format!("PR #{}: {}", p.number, p.title)))
    });
    let href = Memo::new(move |_| pr.with(|p| p.as_ref().and_then(|p| http_url(Some(&p.url)))));
    let mergeable = Memo::new(move |_| pr.with(|p| p.as_ref().is_some_and(|p| p.mergeable)));
    view! {
        <span class="pending-pr" hidden=move || pr.with(Option::is_none)>
            // Without an http(s) URL the <a> has no href: plain text, not a link.
            <a class="pending-pr-link" data-testid="pending-pr"
                href=move || href.get() target="_blank" rel="noopener noreferrer"
                title=move || text.get()>
                {move || text.get()}
            </a>
            <span class="pr-badge" class:mergeable=move || mergeable.get()
                data-testid="pending-pr-mergeable" data-mergeable=move || mergeable.get().to_string()>
                {move || if mergeable.get() { "mergeable" } else { "not mergeable yet" }}
            </span>
        </span>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use protocol::messages::Snapshot;
    use protocol::{PendingPr, Timestamp};

    fn render(desired: Option<DesiredState>, pr: Option<PendingPr>) -> String {
        Owner::new().with(|| {
            provide_context(HostStore::new(Snapshot {
                hosts: vec![],
                pending_pr: pr,
                dashboard_version: "0".into(),
                build: String::new(),
                server_time: Timestamp(10_800),
                desired,
                deploy: None,
            }));
            view! { <FleetTarget /> }.to_html()
        })
    }

    #[test]
    fn github_text_stays_text_and_only_http_urls_are_links() {
        let html = render(
            Some(DesiredState {
                source: "github:o/r".into(),
                branch: "main".into(),
                commit: Some("0123456789abcdef".into()),
                commit_url: Some("javascript:alert(1)".into()),
                message: Some("<img src=x onerror=alert(1)>".into()),
                committed_at: Some(Timestamp(0)),
                error: Some("<b>down</b>".into()),
                rate_limited_until: Some(Timestamp(3_600)),
                ..Default::default()
            }),
            Some(PendingPr {
                number: 7,
                title: "<script>alert(1)</script>".into(),
                url: "https://example.invalid/pr/7".into(),
                mergeable: false,
                head_sha: None,
            }),
        );
        assert!(!html.contains("<script>") && !html.contains("<img") && !html.contains("<b>"));
        assert!(!html.contains("javascript:"), "{html}");
        assert!(
            html.contains(r#"href="https://example.invalid/pr/7""#),
            "{html}"
        );
        assert!(html.contains(">0123456<"), "{html}");
        assert!(html.contains("3h ago"), "{html}");
        assert!(html.contains("rate limited until 01:00:00"), "{html}");
        assert!(html.contains(r#"data-testid="desired-error""#), "{html}");
        assert!(html.contains("not mergeable yet"), "{html}");
    }

    /// The opening tag around the first occurrence of `marker`.
    fn opening_tag<'a>(html: &'a str, marker: &str) -> &'a str {
        let at = html.find(marker).expect(marker);
        let start = html[..at].rfind('<').unwrap();
        let end = at + html[at..].find('>').unwrap();
        &html[start..=end]
    }

    #[test]
    fn no_source_says_so() {
        let html = render(None, None);
        assert!(html.contains("Desired state: not configured"), "{html}");
        assert!(
            opening_tag(&html, r#"class="pending-pr""#).contains(" hidden"),
            "{html}"
        );
        let html = render(
            Some(DesiredState {
                source: "github:o/r".into(),
                branch: "main".into(),
                ..Default::default()
            }),
            None,
        );
        assert!(
            html.contains("waiting for the first read of github:o/r"),
            "{html}"
        );
        assert!(
            opening_tag(&html, "desired-commit").contains(" hidden"),
            "{html}"
        );
    }
}
