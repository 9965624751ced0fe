//! Toasts: failed actions and other things the operator should know. Errors stay until
//! dismissed; the rest fade after a few seconds.

use crate::components::lazy_view;
use crate::page_state::PageState;
use leptos::prelude::*;
use std::time::Duration;

/// The live region is always there (screen readers announce only into an existing one);
/// the toasts' code is a separate wasm chunk (P5).
#[component]
pub fn Notices() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
        <div class="notices" role="status" aria-live="polite">
            {lazy_view(move || page.notices.with(|n| !n.is_empty()), notice_list)}
        </div>
    }
}

#[lazy]
pub(crate) fn notice_list() -> AnyView {
    view! { <NoticeList /> }.into_any()
}

#[component]
fn NoticeList() -> impl IntoView {
    let page = expect_context::<PageState>();
    view! {
            <For each=move || page.notices.get() key=|n| n.id let:notice>
                {
                    let id = notice.id;
                    if !notice.error {
                        set_timeout(move || page.dismiss(id), Duration::from_secs(5));
                    }
                    view! {
                        <div class="notice" class:error=notice.error>
                            <span>{notice.text}</span>
                            <button type="button" class="notice-close" on:click=move |_| page.dismiss(id)>
                                "×"
                            </button>
                        </div>
                    }
                }
            </For>
    }
}
