//! The browser side of `/ws` (hydrate only): connect, feed frames into the store (through
//! `PageState::apply`, so the page follows) in one batch per animation frame, keep the
//! clock ticking, and reconnect with backoff. Every (re)connect starts with a `snapshot`,
//! which resyncs whatever was missed.

use crate::page_meta;
use crate::page_state::PageState;
use crate::store::{HostStore, LinkState};
use futures::StreamExt;
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::prelude::*;
use leptos::task::spawn_local;
use protocol::backoff::Backoff;
use protocol::messages::BrowserEvent;
use protocol::{decode, Decoded, Timestamp};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whether the dashboard that started the link is still mounted. Leaving it for another
/// page (the account page, say) disposes its store: the link, the clock and any frame
/// already scheduled must stop touching it then.
type Alive = Arc<AtomicBool>;

fn alive(flag: &Alive) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Frames waiting for the next animation frame. A hidden tab gets no animation frames, so
/// past this many we apply at once instead of letting the queue grow.
const MAX_QUEUED: usize = 2_000;

/// Compare the snapshot's build with the page's own (`<meta name="nixdeck-build">`). On a
/// difference the store's `stale_build` is set for good: the new build's wasm chunks (lazy
/// views and pages) must not be loaded into this page, and `lazy_view` reloads instead.
fn check_build(store: HostStore, snapshot: &protocol::messages::Snapshot) {
    let page = page_meta::build().unwrap_or_default();
    if page.is_empty()
        || snapshot.build.is_empty()
        || page == snapshot.build
        || store.stale_build.get_untracked()
    {
        return;
    }
    store.stale_build.set(true);
    // Links inside the app would load the new build's page chunks into this page: make
    // them full page loads (capture, so this runs before the router's own handler).
    use wasm_bindgen::JsCast;
    let follow = wasm_bindgen::closure::Closure::<dyn Fn(web_sys::MouseEvent)>::new(
        |ev: web_sys::MouseEvent| {
            let href = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|e| e.closest("a[href^='/']").ok().flatten())
                .and_then(|a| a.get_attribute("href"));
            if let Some(href) = href {
                ev.prevent_default();
                ev.stop_immediate_propagation();
                let _ = window().location().assign(&href);
            }
        },
    );
    let _ = document().add_event_listener_with_callback_and_bool(
        "click",
        follow.as_ref().unchecked_ref(),
        true,
    );
    follow.forget();
}

fn browser_now_s() -> f64 {
    js_sys::Date::now() / 1000.0
}

fn ws_url() -> String {
    let loc = window().location();
    let scheme = if loc.protocol().as_deref() == Ok("https:") {
        "wss"
    } else {
        "ws"
    };
    format!("{scheme}://{}/ws", loc.host().unwrap_or_default())
}

thread_local! {
    /// A link opened before the dashboard exists (see `preconnect`), for `run` to take.
    static EARLY: RefCell<Option<WebSocket>> = const { RefCell::new(None) };
}

/// Open the dashboard's link now, ahead of its page: right after a login, the snapshot is
/// then on its way while the page is being built (P4), and waits in the socket until the
/// dashboard's `run` takes the link over. Frames are never lost meanwhile: the socket
/// queues them until they are read.
pub fn preconnect() {
    match WebSocket::open(&ws_url()) {
        Ok(ws) => EARLY.with(|early| *early.borrow_mut() = Some(ws)),
        Err(err) => crate::console_debug(&format!("nixdeck: cannot open link early: {err}")),
    }
}

/// Start the link and the clock. Call once, from an effect, after hydration; both stop
/// when the effect's owner (the dashboard) is cleaned up.
pub fn start(store: HostStore, page: PageState) {
    let live: Alive = Arc::new(AtomicBool::new(true));
    // Offset between the server's clock and ours, fixed from each snapshot.
    let offset = Rc::new(RefCell::new(
        store.now.get_untracked().secs() as f64 - browser_now_s(),
    ));
    let clock = {
        let offset = offset.clone();
        set_interval_with_handle(
            move || store.tick(Timestamp((browser_now_s() + *offset.borrow()) as i64)),
            Duration::from_secs(1),
        )
        .ok()
    };
    {
        let live = live.clone();
        on_cleanup(move || {
            live.store(false, Ordering::Relaxed);
            if let Some(clock) = clock {
                clock.clear();
            }
        });
    }
    spawn_local(run(store, page, offset, live.clone()));
    // Once the page is up, fetch the dashboard's lazily loaded parts in the background.
    set_timeout(
        move || {
            if alive(&live) && !store.stale_build.get_untracked() {
                crate::components::preload_lazy_parts();
            }
        },
        Duration::from_secs(1),
    );
}

async fn run(store: HostStore, page: PageState, offset: Rc<RefCell<f64>>, live: Alive) {
    let mut backoff = Backoff::default();
    let queue: Rc<RefCell<Vec<String>>> = Rc::default();
    while alive(&live) {
        store.link.set(LinkState::Connecting);
        let early = EARLY.with(|early| early.borrow_mut().take());
        match early.map_or_else(|| WebSocket::open(&ws_url()), Ok) {
            Ok(ws) => {
                let (_write, mut read) = ws.split();
                while let Some(frame) = read.next().await {
                    // The dashboard is gone: dropping the socket closes the link.
                    if !alive(&live) {
                        return;
                    }
                    match frame {
                        Ok(Message::Text(text)) => {
                            if store.link.get_untracked() != LinkState::Connected {
                                store.link.set(LinkState::Connected);
                                backoff.reset();
                            }
                            enqueue(store, page, &queue, &offset, &live, text);
                        }
                        Ok(Message::Bytes(_)) => {
                            crate::console_debug("nixdeck: ignored a binary frame")
                        }
                        Err(err) => {
                            crate::console_debug(&format!("nixdeck: link closed: {err}"));
                            break;
                        }
                    }
                }
            }
            Err(err) => crate::console_debug(&format!("nixdeck: cannot open link: {err}")),
        }
        if !alive(&live) {
            return;
        }
        flush(store, page, &queue, &offset);
        let delay = backoff.next_delay_ms(js_sys::Math::random()).max(250);
        let now = browser_now_s() + *offset.borrow();
        store.link.set(LinkState::Retrying {
            at: Timestamp((now + delay as f64 / 1000.0).ceil() as i64),
        });
        gloo_timers::future::sleep(Duration::from_millis(delay)).await;
    }
}

fn enqueue(
    store: HostStore,
    page: PageState,
    queue: &Rc<RefCell<Vec<String>>>,
    offset: &Rc<RefCell<f64>>,
    live: &Alive,
    text: String,
) {
    let first = {
        let mut q = queue.borrow_mut();
        q.push(text);
        q.len()
    };
    // The first frame of a page that has no hosts yet (the snapshot, after a login) is
    // applied at once rather than at the next animation frame: nothing is on screen to
    // batch against, and the rows come up a frame sooner (P4).
    if first >= MAX_QUEUED || !store.synced.get_untracked() {
        flush(store, page, queue, offset);
    } else if first == 1 {
        let (queue, offset, live) = (queue.clone(), offset.clone(), live.clone());
        request_animation_frame(move || {
            if alive(&live) {
                flush(store, page, &queue, &offset)
            }
        });
    }
}

/// Apply every queued frame, in order.
fn flush(
    store: HostStore,
    page: PageState,
    queue: &Rc<RefCell<Vec<String>>>,
    offset: &Rc<RefCell<f64>>,
) {
    let frames = std::mem::take(&mut *queue.borrow_mut());
    for text in frames {
        match decode::<BrowserEvent>(&text) {
            Decoded::Message(event) => {
                if let BrowserEvent::Snapshot(s) = &event {
                    *offset.borrow_mut() = s.server_time.secs() as f64 - browser_now_s();
                    check_build(store, s);
                }
                page.apply(store, &event);
            }
            Decoded::Unknown(kind) => {
                crate::console_debug(&format!("nixdeck: ignored unknown message type {kind:?}"))
            }
            Decoded::Malformed(err) => {
                crate::console_debug(&format!("nixdeck: ignored malformed message: {err}"))
            }
        }
    }
}
