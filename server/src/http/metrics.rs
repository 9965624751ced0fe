//! `GET /metrics`: fleet-wide counts in the Prometheus text format, aggregates only (no host
//! names). Who may read it is `NIXDECK_METRICS` (default: loopback only) and, when set, a
//! bearer token (`NIXDECK_METRICS_TOKEN_FILE`). A scrape reads counts the hub keeps as the
//! fleet changes (`Hub::fleet_counts`), so its cost does not grow with the fleet.

use super::session::ClientIp;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use nixdeck_core::config::{Config, MetricsAccess};
use nixdeck_core::secret::constant_time_eq;
use nixdeck_core::Core;
use protocol::{CheckStatus, CommandStatus, UpdateStatus};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Who may scrape: the mode, and the token every scrape must send (if one is set). Read
/// once at start (`AppState::metrics`).
#[derive(Clone, Debug)]
pub struct Guard {
    pub mode: MetricsAccess,
    pub token: Option<Arc<str>>,
}

impl Guard {
    pub fn from_config(config: &Config) -> anyhow::Result<Guard> {
        Ok(Guard {
            mode: config.metrics,
            token: config.metrics_token()?.map(Arc::from),
        })
    }

    /// None: the request may scrape; else the answer that refuses it.
    fn refuse(&self, client: Option<std::net::IpAddr>, headers: &HeaderMap) -> Option<Response> {
        match self.mode {
            MetricsAccess::Off => return Some(StatusCode::NOT_FOUND.into_response()),
            MetricsAccess::Loopback if !is_local(client, headers) => {
                return Some(
                    (StatusCode::FORBIDDEN, "/metrics is for this machine only\n").into_response(),
                )
            }
            MetricsAccess::Loopback | MetricsAccess::Open => {}
        }
        let token = self.token.as_deref()?;
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(sent, token) {
            None
        } else {
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a bearer token is needed\n",
                )
                    .into_response(),
            )
        }
    }
}

/// A scrape from this machine itself. The client's address is `ClientIp` (behind a trusted
/// proxy, the address the proxy forwarded). A request that carries forwarding headers came
/// through a proxy, which may be on this machine but relays other machines' requests: it is
/// not local whatever address it comes from, so a same-host proxy that is not listed in
/// NIXDECK_TRUSTED_PROXIES does not open /metrics to everyone it serves.
fn is_local(client: Option<std::net::IpAddr>, headers: &HeaderMap) -> bool {
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    !forwarded && client.is_some_and(|ip| ip.to_canonical().is_loopback())
}

#[utoipa::path(
    get, path = "/metrics", tag = "server",
    description = "Fleet-wide counts. Who may read it is NIXDECK_METRICS (default: loopback peers only) and, with NIXDECK_METRICS_TOKEN_FILE, a bearer token.",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "The bearer token is missing or wrong", content_type = "text/plain", body = String),
        (status = 403, description = "Not a loopback peer", content_type = "text/plain", body = String),
        (status = 404, description = "NIXDECK_METRICS=off"),
    )
)]
pub async fn metrics(
    State(app): State<Core>,
    State(guard): State<Guard>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = guard.refuse(client, &headers) {
        return refused;
    }
    let counts = app.hub.fleet_counts();
    let hosts = &counts.hosts;
    let mut out = String::with_capacity(4096);
    let mut gauge = |name: &str, help: &str, rows: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "nixdeck_hosts",
        "Hosts by link state.",
        &[
            ("{state=\"online\"}", hosts.online),
            (
                "{state=\"offline\"}",
                hosts.hosts.saturating_sub(hosts.online),
            ),
        ],
    );
    gauge(
        "nixdeck_hosts_busy",
        "Hosts running a command.",
        &[("", hosts.busy)],
    );
    let _ = writeln!(
        out,
        "# HELP nixdeck_compartments Hosts by compartment and status.\n# TYPE nixdeck_compartments gauge"
    );
    for (c, name) in UpdateStatus::NAMES.into_iter().enumerate() {
        for status in [
            CheckStatus::Ok,
            CheckStatus::Outdated,
            CheckStatus::Error,
            CheckStatus::Unknown,
            CheckStatus::Working,
        ] {
            let _ = writeln!(
                out,
                "nixdeck_compartments{{compartment=\"{name}\",status=\"{}\"}} {}",
                status.as_str(),
                hosts.compartments[c][status as usize]
            );
        }
    }
    let mut gauge = |name: &str, help: &str, value: bool| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            u8::from(value)
        );
    };
    gauge(
        "nixdeck_desired_state_error",
        "1 while the desired-state source cannot be read.",
        counts.desired_error,
    );
    gauge(
        "nixdeck_pending_pr",
        "1 while a flake.lock update PR is open.",
        counts.pending_pr,
    );
    gauge(
        "nixdeck_deploy_active",
        "1 while a Merge & Deploy job runs.",
        counts.deploy_active,
    );
    let c = app.hub.counters();
    for (name, help, value) in [
        (
            "nixdeck_unknown_frames_total",
            "Frames of unknown type, ignored.",
            &c.unknown_frames,
        ),
        (
            "nixdeck_malformed_frames_total",
            "Malformed frames, skipped.",
            &c.malformed_frames,
        ),
        (
            "nixdeck_lagged_browsers_total",
            "Browsers cut off for falling behind.",
            &c.lagged_browsers,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    // Every final status, and whether it counts as a success: only `ok` does, so a
    // rolled-back switch is a failure here as everywhere.
    let _ = writeln!(
        out,
        "# HELP nixdeck_commands_ended_total Commands ended, by final status.\n# TYPE nixdeck_commands_ended_total counter"
    );
    let mut failures = 0;
    for (i, status) in CommandStatus::ALL.into_iter().enumerate() {
        if !status.is_final() {
            continue;
        }
        let n = c.commands_ended[i].load(Ordering::Relaxed);
        if !status.is_success() {
            failures += n;
        }
        let _ = writeln!(
            out,
            "nixdeck_commands_ended_total{{status=\"{}\"}} {n}",
            status.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP nixdeck_command_failures_total Commands that ended other than ok.\n# TYPE nixdeck_command_failures_total counter\nnixdeck_command_failures_total {failures}"
    );
    let _ = writeln!(
        out,
        "# HELP nixdeck_build_info The running version.\n# TYPE nixdeck_build_info gauge\nnixdeck_build_info{{version=\"{}\"}} 1",
        protocol::VERSION
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
