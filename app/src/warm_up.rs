//! Compile the dashboard's code while the login page waits for the operator.
//!
//! V8 compiles a wasm function the first time it is called. Right after a login the
//! dashboard calls some 1 600 functions that the login page never did, and compiling them
//! took ~65 ms of main thread between the submit and the first rows, against a budget of
//! 300 ms from login to hydrated rows (P4 in docs/BENCHMARKS.md; Chrome's trace,
//! `P4_TRACE=1`, shows them as `wasm.CompileLazy`). So once the login page is idle
//! the dashboard is built once from a small snapshot, off the document, the way a login
//! builds it (an empty page, then the socket's first frame), and thrown away.

use crate::components::dashboard::FleetView;
use crate::page_state::PageState;
use crate::store::HostStore;
use leptos::prelude::*;
use protocol::messages::BrowserEvent;
use protocol::{decode, Decoded};
use std::cell::Cell;
use std::rc::Rc;

/// A snapshot frame as the hub sends it: one host with every field the row shows, and a
/// pending PR (the lock compartment's mark).
const SNAPSHOT: &str = r##"{"type":"snapshot","payload":{"hosts":[{"id":"warm-up","hostname":"warm-up","host_type":"nixos","theme_color":"#7aa2f7","location":"rack","device_type":null,"online":true,"last_seen":"2026-01-01T00:00:00Z","pending_command":null,"metrics":{"cpu":1.5,"ram":40.0,"swap":0.0,"load":0.1},"generation":"abc1234","agent_version":"0","agent_outdated":true,"os_version":null,"nixpkgs_version":null,"repo_url":null,"repo_dir":null,"update_status":{"agent":{"status":"ok","message":"","checked_at":null},"git":{"status":"outdated","message":"m","checked_at":"2026-01-01T00:00:00Z"},"lock":{"status":"ok","message":"","checked_at":null},"system":{"status":"unknown","message":"","checked_at":null},"tests":{"status":"unknown","message":"","checked_at":null}}}],"pending_pr":{"number":1,"title":"t","url":"https://github.com/o/r/pull/1","mergeable":true},"dashboard_version":"0","server_time":"2026-01-01T00:00:00Z"}}"##;

/// Build the dashboard once, detached, when the browser is next idle; for the login page.
pub fn when_idle() {
    request_idle_callback(|| leptos::task::spawn_local(run()));
}

async fn run() {
    let started = js_sys::Date::now();
    let Decoded::Message(snapshot) = decode::<BrowserEvent>(SNAPSHOT) else {
        return;
    };
    let Ok(parent) = document().create_element("div") else {
        return;
    };
    let made = Rc::new(Cell::new(None));
    let page = leptos::mount::mount_to_renderer(&parent, {
        let made = made.clone();
        move || {
            let store = HostStore::waiting();
            let page = PageState::new(store);
            made.set(Some((store, page)));
            provide_context(store);
            provide_context(page);
            view! { <FleetView /> }.into_view()
        }
    });
    if let Some((store, page)) = made.get() {
        page.apply(store, &snapshot);
    }
    // Let the rows be built (effects run as tasks) and the list measure itself after the
    // next frame, before the page is dropped with everything it owns.
    gloo_timers::future::TimeoutFuture::new(0).await;
    next_frame().await;
    gloo_timers::future::TimeoutFuture::new(0).await;
    drop(page);
    // For tests and the P4 bench: done, and how long it took from the start (ms).
    let took = (js_sys::Date::now() - started).max(1.0);
    let _ = js_sys::Reflect::set(&window(), &"__nixdeck_warmed_up".into(), &took.into());
}

async fn next_frame() {
    let (done, frame) = futures::channel::oneshot::channel();
    request_animation_frame(move || {
        let _ = done.send(());
    });
    let _ = frame.await;
}
