//! The delivery worker: sends each target's queued messages in order, one at a time per
//! target (targets in parallel), retrying with backoff until `GIVE_UP_S` has passed; every
//! attempt goes to the target's delivery log. Errors never carry a URL (its path or query
//! may be the secret).

use super::plan::retry_delay_ms;
use crate::storage::{NotifyTargetRow, OutboxRow};
use crate::Core;
use protocol::api::{NotifyKind, NotifyMessage};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A message not delivered within this long is given up (and logged).
pub const GIVE_UP_S: i64 = 24 * 3600;
/// One attempt may take this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is looked at.
const POLL: Duration = Duration::from_millis(500);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Whether a host name is this machine (where plain SMTP is allowed).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What one attempt sends.
#[derive(Debug, PartialEq)]
pub enum Rendered {
    Http {
        url: String,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        json: bool,
    },
    Email {
        subject: String,
        text: String,
    },
}

/// The message's text for people: the summary, then the details' first lines.
fn text_of(message: &NotifyMessage) -> String {
    message.summary.clone()
}

fn truncated(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// The request for one target kind. `url` and `secret` are the target's, opened.
pub fn render(
    kind: NotifyKind,
    url: &str,
    secret: Option<&str>,
    settings: &Value,
    message: &NotifyMessage,
) -> Rendered {
    let text = text_of(message);
    let title = format!("nixdeck: {}", message.event);
    let priority = settings.get("priority").and_then(Value::as_u64);
    let as_json = |body: Value, headers| Rendered::Http {
        url: url.to_owned(),
        headers,
        body: body.to_string().into_bytes(),
        json: true,
    };
    match kind {
        NotifyKind::Webhook => as_json(
            serde_json::to_value(message).unwrap_or_default(),
            vec![("Idempotency-Key", message.idempotency_key.clone())],
        ),
        NotifyKind::Slack => as_json(json!({ "text": truncated(&text, 3_000) }), vec![]),
        NotifyKind::Discord => as_json(json!({ "content": truncated(&text, 2_000) }), vec![]),
        NotifyKind::Gotify => as_json(
            json!({ "title": title, "message": text, "priority": priority.unwrap_or(5) }),
            secret
                .map(|t| vec![("X-Gotify-Key", t.to_owned())])
                .unwrap_or_default(),
        )
        .with_url(format!("{}/message", url.trim_end_matches('/'))),
        NotifyKind::Ntfy => {
            let mut headers = vec![("Title", title), ("Tags", message.event.to_string())];
            if let Some(p) = priority {
                headers.push(("Priority", p.clamp(1, 5).to_string()));
            }
            if let Some(token) = secret {
                headers.push(("Authorization", format!("Bearer {token}")));
            }
            Rendered::Http {
                url: url.to_owned(),
                headers,
                body: text.into_bytes(),
                json: false,
            }
        }
        NotifyKind::Email => Rendered::Email {
            subject: truncated(&format!("[nixdeck] {}", message.summary), 150),
            text: format!(
                "{}\n\nHosts: {}\nEvent: {}\nAt: {}\nIdempotency key: {}\n",
                message.summary,
                message.hosts.join(", "),
                message.event,
                message.at,
                message.idempotency_key
            ),
        },
    }
}

impl Rendered {
    fn with_url(self, new: String) -> Rendered {
        match self {
            Rendered::Http {
                headers,
                body,
                json,
                ..
            } => Rendered::Http {
                url: new,
                headers,
                body,
                json,
            },
            other => other,
        }
    }
}

/// Start the worker.
pub fn spawn(core: Core) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nixdeck/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("notifications: no HTTP client: {e}");
                return;
            }
        };
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            tokio::time::sleep(POLL).await;
            // One sender per database: the leader (`service::lease`). A message being
            // sent when leadership moves may go out twice (at-least-once, as after a
            // crash); it is never lost.
            if !core.leader.is_leader() {
                continue;
            }
            let due = match core.db.notify_due(now_ms()).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!("notifications: reading the outbox: {e}");
                    continue;
                }
            };
            for row in due {
                if !busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(row.target_id.clone())
                {
                    continue;
                }
                let (core, client) = (core.clone(), client.clone());
                let seat = Busy(busy.clone(), row.target_id.clone());
                tokio::spawn(async move {
                    attempt(&core, &client, row).await;
                    drop(seat);
                });
            }
        }
    });
}

/// A target with an attempt under way; it is free again when the attempt ends, also by a
/// panic (its task unwinds): without that, a panic in one attempt left the target out of
/// every later round, and its messages waited forever.
struct Busy(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// One attempt at the first message of a target, and its outcome written down.
async fn attempt(core: &Core, client: &reqwest::Client, row: OutboxRow) {
    let attempt = row.attempts + 1;
    let message: Option<NotifyMessage> = serde_json::from_str(&row.body).ok();
    let event = message
        .as_ref()
        .map(|m| m.event.as_str())
        .unwrap_or("unknown");
    let outcome = match (&message, core.db.notify_target(&row.target_id).await) {
        (None, _) => Err("the queued message does not decode".to_owned()),
        (_, Err(e)) => {
            tracing::warn!("notifications: loading a target: {e}");
            return;
        }
        // Deleted meanwhile: its outbox rows went with it.
        (_, Ok(None)) => return,
        (Some(m), Ok(Some(target))) => send(core, client, &target, m).await,
    };
    let now = now_ms();
    let (target_id, message_id) = (row.target_id.as_str(), row.message_id.as_str());
    let log = |status: &'static str, error: Option<String>| async move {
        if let Err(e) = core
            .db
            .log_notify_delivery(
                &super::new_id(),
                target_id,
                message_id,
                event,
                attempt,
                status,
                error.as_deref(),
                now,
            )
            .await
        {
            tracing::warn!("notifications: logging a delivery: {e}");
        }
    };
    let result = match outcome {
        Ok(()) => {
            log("sent", None).await;
            core.db.notify_done(&row.message_id, &row.target_id).await
        }
        Err(error) if now / 1000 - row.created_at >= GIVE_UP_S => {
            tracing::warn!(target = row.target_id, "notification given up: {error}");
            log("given_up", Some(error)).await;
            core.db.notify_done(&row.message_id, &row.target_id).await
        }
        Err(error) => {
            let unit: f64 = rand::random();
            let cap_ms = core.config.notify_retry_max_s.saturating_mul(1000);
            let next = now + retry_delay_ms(attempt as u32, unit, cap_ms) as i64;
            tracing::info!(
                target = row.target_id,
                attempt,
                "notification failed, will retry: {error}"
            );
            log("retrying", Some(error)).await;
            core.db
                .notify_retry_at(&row.message_id, &row.target_id, attempt, next)
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!("notifications: updating the outbox: {e}");
    }
}

/// Send one message to one target; the error is for people (no URL, no secret).
pub async fn send(
    core: &Core,
    client: &reqwest::Client,
    target: &NotifyTargetRow,
    message: &NotifyMessage,
) -> Result<(), String> {
    let kind = NotifyKind::parse(&target.kind).ok_or("unknown target kind")?;
    let open = |sealed: &Option<String>| -> Result<Option<String>, String> {
        sealed
            .as_deref()
            .map(|s| {
                core.secret_key
                    .open(&target.id, s)
                    .map_err(|e| e.to_string())
            })
            .transpose()
    };
    let url = open(&target.url_sealed)?.unwrap_or_default();
    let secret = open(&target.secret_sealed)?;
    let settings: Value = serde_json::from_str(&target.settings).unwrap_or_default();
    match render(kind, &url, secret.as_deref(), &settings, message) {
        Rendered::Http {
            url,
            headers,
            body,
            json,
        } => {
            let mut req = client.post(&url).body(body).header(
                reqwest::header::CONTENT_TYPE,
                if json {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                },
            );
            for (name, value) in headers {
                req = req.header(name, value);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("cannot reach the target: {}", e.without_url()))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let text = resp.text().await.unwrap_or_default();
                Err(format!(
                    "the target answered {status}{}",
                    if text.trim().is_empty() {
                        String::new()
                    } else {
                        let text = crate::service::hosts::foreign_line(text.trim(), usize::MAX);
                        format!(": {}", truncated(&text, 200))
                    }
                ))
            }
        }
        Rendered::Email { subject, text } => {
            send_mail(&settings, secret.as_deref(), &subject, text).await
        }
    }
}

async fn send_mail(
    settings: &Value,
    password: Option<&str>,
    subject: &str,
    text: String,
) -> Result<(), String> {
    use lettre::message::Mailbox;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let get = |key: &str| {
        settings
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let host = get("host");
    let from: Mailbox = get("from").parse().map_err(|e| format!("from: {e}"))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for to in settings
        .get("to")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        builder = builder.to(to.parse().map_err(|e| format!("to: {e}"))?);
    }
    let email = builder
        .body(text)
        .map_err(|e| format!("cannot build the mail: {e}"))?;
    let mut transport = match get("tls") {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
    }
    .map_err(|e| format!("SMTP: {e}"))?
    .timeout(Some(SEND_TIMEOUT));
    if let Some(port) = settings.get("port").and_then(Value::as_u64) {
        transport = transport.port(port as u16);
    }
    let user = get("user");
    if !user.is_empty() {
        let password = match (password, get("password_file")) {
            (Some(p), _) => p.to_owned(),
            (None, "") => String::new(),
            (None, file) => tokio::fs::read_to_string(file)
                .await
                .map_err(|e| format!("cannot read the password file: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        transport = transport.credentials(Credentials::new(user.to_owned(), password));
    }
    transport
        .build()
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP to {host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::NotifyEvent;
    use protocol::Timestamp;

    /// An attempt that panics frees its target for the next round.
    #[tokio::test]
    async fn a_panicking_attempt_frees_its_target() {
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        busy.lock().unwrap().insert("t1".into());
        let seat = Busy(busy.clone(), "t1".into());
        let task = tokio::spawn(async move {
            let _seat = seat;
            panic!("an attempt went wrong");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(busy.lock().unwrap().is_empty());
    }

    fn message() -> NotifyMessage {
        NotifyMessage {
            event: NotifyEvent::HostOffline,
            idempotency_key: "k1".into(),
            at: Timestamp(1_800_000_000),
            hosts: vec!["web-1".into()],
            summary: "web-1 is offline".into(),
            details: json!({}),
        }
    }

    fn body(r: &Rendered) -> Value {
        match r {
            Rendered::Http { body, .. } => serde_json::from_slice(body).unwrap(),
            _ => panic!("not http"),
        }
    }

    #[test]
    fn each_kind_renders_its_format() {
        let s = json!({});
        let m = message();
        let hook = render(NotifyKind::Webhook, "https://h/x", None, &s, &m);
        assert_eq!(body(&hook)["idempotency_key"], "k1");
        assert_eq!(body(&hook)["hosts"], json!(["web-1"]));
        assert_eq!(body(&hook)["event"], "host_offline");
        let slack = render(NotifyKind::Slack, "https://h/x", None, &s, &m);
        assert_eq!(body(&slack), json!({"text": "web-1 is offline"}));
        let discord = render(NotifyKind::Discord, "https://h/x", None, &s, &m);
        assert_eq!(body(&discord), json!({"content": "web-1 is offline"}));
        let gotify = render(NotifyKind::Gotify, "https://g/", Some("tok"), &s, &m);
        let Rendered::Http { url, headers, .. } = &gotify else {
            panic!()
        };
        assert_eq!(url, "https://g/message");
        assert!(headers.contains(&("X-Gotify-Key", "tok".into())));
        assert_eq!(body(&gotify)["message"], "web-1 is offline");
        let ntfy = render(
            NotifyKind::Ntfy,
            "https://n/topic",
            Some("t"),
            &json!({"priority": 4}),
            &m,
        );
        let Rendered::Http {
            body,
            headers,
            json,
            ..
        } = ntfy
        else {
            panic!()
        };
        assert!(!json);
        assert_eq!(body, b"web-1 is offline");
        assert!(headers.contains(&("Priority", "4".into())));
        assert!(headers.contains(&("Authorization", "Bearer t".into())));
        let Rendered::Email { subject, text } = render(NotifyKind::Email, "", None, &s, &m) else {
            panic!()
        };
        assert_eq!(subject, "[nixdeck] web-1 is offline");
        assert!(text.contains("Idempotency key: k1"));
    }
}
