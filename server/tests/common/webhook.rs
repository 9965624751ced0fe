//! A local webhook receiver standing in for a notification target (a third party this
//! machine cannot reach).

use super::Server;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::client::Session;
use tokio::time::{sleep, Instant};

pub const SECRET: &str = "SECRET-hook-path-7f3a9c";

/// A webhook target at `port` on loopback (its path holds `SECRET`); its id. The answer
/// shows the URL shortened, without the secret.
pub async fn add_webhook(server: &Server, admin: &Session, port: u16) -> String {
    let resp = admin
        .post(server, "/api/notifications/targets")
        .json(&json!({"name": "hook", "kind": "webhook",
                      "url": format!("http://127.0.0.1:{port}/hook/{SECRET}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert!(!body.to_string().contains(SECRET), "{body}");
    assert_eq!(body["url"], format!("http://127.0.0.1:{port}/…"));
    body["id"].as_str().unwrap().to_owned()
}

/// A webhook receiver: answers 500 to the first `fail` requests (with `REFUSAL`, hostile
/// text), then 200, and keeps every body it accepted.
/// What the receiver answers with its 500s: a NUL (which PostgreSQL's text cannot hold), a
/// terminal escape and a line break, around the words an operator should read.
pub const REFUSAL: &str = "down\0 for \x1b[31mmaintenance\x1b[0m\nretry later";

#[derive(Clone, Default)]
pub struct Receiver {
    pub fail: Arc<AtomicUsize>,
    pub got: Arc<Mutex<Vec<Value>>>,
    pub refused: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(port: u16, fail: usize) -> Receiver {
        use axum::routing::post;
        let rx = Receiver::default();
        rx.fail.store(fail, Ordering::SeqCst);
        let state = rx.clone();
        let app = axum::Router::new().route(
            "/hook/{secret}",
            post(move |body: axum::Json<Value>| {
                let state = state.clone();
                async move {
                    if state
                        .fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        state.refused.fetch_add(1, Ordering::SeqCst);
                        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, REFUSAL);
                    }
                    state.got.lock().unwrap().push(body.0);
                    (axum::http::StatusCode::OK, "")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        rx
    }

    pub fn got(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while self.got().len() < n {
            assert!(
                Instant::now() < deadline,
                "{n} messages expected, got {:?}",
                self.got()
            );
            sleep(Duration::from_millis(100)).await;
        }
        self.got()
    }

    /// Wait for a message of this event; the first one.
    pub async fn wait_event(&self, event: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.got().into_iter().find(|m| m["event"] == event) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no {event} message; got {:?}",
                self.got()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }
}
