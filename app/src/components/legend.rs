//! The legend, opened from the header: what each update compartment checks and what each
//! state word means. Its texts live in `presentation` beside the row's own (one home); its
//! code is a separate wasm chunk, fetched the first time it opens (P5).

use crate::components::lazy_view;
use crate::presentation::{compartment_code, compartment_meaning, status_meaning};
use leptos::prelude::*;
use protocol::{CheckStatus, UpdateStatus};

#[component]
pub fn LegendButton() -> impl IntoView {
    let open = RwSignal::new(false);
    view! {
        <button type="button" class="legend-button" title="Legend" on:click=move |_| open.update(|o| *o = !*o)>
            "?"
        </button>
        {lazy_view(move || open.get(), move || legend_panel(open))}
    }
}

#[lazy]
pub(crate) fn legend_panel(open: RwSignal<bool>) -> AnyView {
    view! { <LegendPanel open /> }.into_any()
}

#[component]
fn LegendPanel(open: RwSignal<bool>) -> impl IntoView {
    let compartments = UpdateStatus::NAMES
        .iter()
        .map(|name| {
            view! {
                <dt data-compartment=*name>{*name}</dt>
                <dd>{compartment_meaning(name)}</dd>
            }
        })
        .collect_view();
    let states = CheckStatus::ALL
        .iter()
        .map(|&status| {
            let word = compartment_code(status);
            view! {
                <dt data-state=word>
                    <span class=format!("compartment-indicator compartment-indicator--{}", status.as_str())></span>
                    " "
                    {word}
                </dt>
                <dd>{status_meaning(status)}</dd>
            }
        })
        .collect_view();
    view! {
        <section class="legend" data-testid="legend" aria-label="Legend">
            <h2>"Compartments"</h2>
            <dl>{compartments}</dl>
            <h2>"States"</h2>
            <dl>{states}</dl>
            <button type="button" class="cancel" on:click=move |_| open.set(false)>"Close"</button>
        </section>
    }
}
