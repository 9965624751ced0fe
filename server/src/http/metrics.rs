//! `GET /metrics`: fleet-wide counts in the Prometheus text format. Open like /healthz, so
//! it carries aggregates only (no host names).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use nixdeck_core::Core;
use protocol::{CheckStatus, UpdateStatus};
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub async fn metrics(State(app): State<Core>) -> impl IntoResponse {
    let snapshot = app.hub.snapshot();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let online = snapshot.hosts.iter().filter(|h| h.online).count();
    gauge(
        "nixdeck_hosts",
        "Hosts by link state.",
        vec![
            ("{state=\"online\"}".into(), online as f64),
            (
                "{state=\"offline\"}".into(),
                (snapshot.hosts.len() - online) as f64,
            ),
        ],
    );
    gauge(
        "nixdeck_hosts_busy",
        "Hosts running a command.",
        vec![(
            String::new(),
            snapshot
                .hosts
                .iter()
                .filter(|h| h.pending_command.is_some())
                .count() as f64,
        )],
    );
    let mut rows = Vec::new();
    for (i, name) in UpdateStatus::NAMES.into_iter().enumerate() {
        for status in [
            CheckStatus::Ok,
            CheckStatus::Outdated,
            CheckStatus::Error,
            CheckStatus::Unknown,
            CheckStatus::Working,
        ] {
            let n = snapshot
                .hosts
                .iter()
                .filter(|h| h.update_status.checks()[i].status == status)
                .count();
            rows.push((
                format!("{{compartment=\"{name}\",status=\"{}\"}}", status.as_str()),
                n as f64,
            ));
        }
    }
    gauge(
        "nixdeck_compartments",
        "Hosts by compartment and status.",
        rows,
    );
    let desired_error = snapshot.desired.as_ref().is_some_and(|d| d.error.is_some());
    gauge(
        "nixdeck_desired_state_error",
        "1 while the desired-state source cannot be read.",
        vec![(String::new(), f64::from(u8::from(desired_error)))],
    );
    gauge(
        "nixdeck_pending_pr",
        "1 while a flake.lock update PR is open.",
        vec![(
            String::new(),
            f64::from(u8::from(snapshot.pending_pr.is_some())),
        )],
    );
    gauge(
        "nixdeck_deploy_active",
        "1 while a Merge & Deploy job runs.",
        vec![(
            String::new(),
            f64::from(u8::from(snapshot.deploy.as_ref().is_some_and(|d| d.active))),
        )],
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
}
