//! `nixdeck ctl`: the REST API (PROTOCOL.md, docs/API.md) from a shell, for scripts. Every
//! request carries a personal API token as `Authorization: Bearer`; every way to fail has
//! its own exit code (`client::Exit`, listed in `--help`).
//!
//! Following a command or a deploy polls the REST routes (`GET /api/commands/{id}` and its
//! log, `GET /api/deploy/{id}`) rather than holding the browser socket: simpler, and a
//! script loses nothing by seeing a line half a second later.

mod args;
mod client;
mod fleet;

pub use args::CtlArgs;

use args::{CtlCommand, DeployArgs, JobCommand};
use client::{Client, Exit, Failure, Result};
use fleet::FleetHost;
use protocol::api::{CommandAccepted, CommandDetail, CommandRequest, DeployRequest, JobAccepted};
use protocol::messages::{DeployHostState, DeployPhase, DeployProgress};
use reqwest::Method;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How often a followed command or deploy is asked for news.
const COMMAND_POLL: Duration = Duration::from_millis(500);
const DEPLOY_POLL: Duration = Duration::from_secs(1);

pub async fn run(args: CtlArgs) -> ExitCode {
    match execute(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("nixdeck ctl: {failure}");
            ExitCode::from(failure.exit as u8)
        }
    }
}

async fn execute(args: &CtlArgs) -> Result<()> {
    let c = Client::new(args)?;
    let out = Out { json: args.json };
    match &args.command {
        CtlCommand::Hosts => hosts(&c, out).await,
        CtlCommand::Run {
            host,
            command,
            generation,
            follow,
        } => run_command(&c, out, host, command, *generation, *follow).await,
        CtlCommand::Status { command_id } => status(&c, out, command_id).await,
        CtlCommand::Log { command_id } => {
            copy_log(&c, command_id, 0, &mut std::io::stdout().lock()).await?;
            Ok(())
        }
        CtlCommand::Deploy(d) => deploy(&c, out, d).await,
    }
}

/// Where things are printed: results on stdout; with `--json`, stdout carries only the
/// JSON and the running commentary goes to stderr.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// A line for people: stdout, or stderr under `--json`.
    fn say(self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            print_line(line);
        }
    }

    /// The result: JSON under `--json`, else the text.
    fn result(self, json: &impl serde::Serialize, text: &str) {
        if self.json {
            print_json(json);
        } else if !text.is_empty() {
            print_line(text);
        }
    }
}

/// stdout without `println!`'s panic when the reader went away (`ctl log … | head`).
fn print_line(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_json(value: &impl serde::Serialize) {
    if let Ok(text) = serde_json::to_string_pretty(value) {
        print_line(&text);
    }
}

/// A path segment from user input, percent-encoded (an id with `/` or `?` in it must not
/// reach another route).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn fleet(c: &Client) -> Result<(Vec<Value>, Vec<FleetHost>)> {
    let raw: Vec<Value> = c.get("/api/hosts").await?;
    let hosts = raw
        .iter()
        .map(FleetHost::from_json)
        .collect::<Result<_>>()?;
    Ok((raw, hosts))
}

// ------------------------------------------------------------------------------ hosts

async fn hosts(c: &Client, out: Out) -> Result<()> {
    let (raw, hosts) = fleet(c).await?;
    // The JSON as the dashboard sent it, so fields this build does not know still show.
    out.result(&raw, host_table(&hosts).trim_end());
    Ok(())
}

/// One line per host, columns padded to their widest cell.
fn host_table(hosts: &[FleetHost]) -> String {
    let mut rows = vec![[
        "NAME", "ONLINE", "AGENT", "GIT", "LOCK", "SYSTEM", "TESTS", "RUNNING", "TAGS",
    ]
    .map(str::to_owned)];
    for h in hosts {
        let checks = h.host.update_status.checks().map(|c| c.status.to_string());
        let running = h.host.pending_command.as_ref().map_or("-".to_owned(), |p| {
            format!("{} {}", p.command, p.command_id)
        });
        let tags = if h.tags.is_empty() {
            "-".to_owned()
        } else {
            h.tags.join(",")
        };
        let [agent, git, lock, system, tests] = checks;
        let online = if h.host.online { "yes" } else { "no" };
        rows.push([
            h.host.id.clone(),
            online.to_owned(),
            agent,
            git,
            lock,
            system,
            tests,
            running,
            tags,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

// --------------------------------------------------------------------------- commands

async fn run_command(
    c: &Client,
    out: Out,
    host: &str,
    command: &str,
    generation: Option<u64>,
    follow: bool,
) -> Result<()> {
    let (_, hosts) = fleet(c).await?;
    let host = fleet::resolve(&hosts, host)?.host.id.clone();
    let request = CommandRequest {
        command: command.to_owned(),
        generation,
        preview_id: None,
    };
    let accepted: CommandAccepted = c
        .post(
            &format!("/api/hosts/{}/commands", seg(&host)),
            Some(&request),
        )
        .await?;
    let id = accepted.command_id;
    if !follow {
        out.result(&accepted_json(&id), &id);
        return Ok(());
    }
    eprintln!("{command} on {host}: command {id}");
    // The log on stdout as it comes; under --json, the detail at the end is stdout's only
    // content and the log goes to stderr.
    let detail = if out.json {
        follow_command(c, &id, &mut std::io::stderr()).await?
    } else {
        follow_command(c, &id, &mut std::io::stdout()).await?
    };
    if out.json {
        print_json(&detail);
    }
    let summary = command_summary(&detail);
    if detail.status.is_success() {
        eprintln!("{summary}");
        Ok(())
    } else {
        Err(Failure::new(Exit::Failed, summary))
    }
}

fn accepted_json(id: &str) -> Value {
    serde_json::json!({ "command_id": id })
}

/// "switch on web-1 ended error (exit code 3)".
fn command_summary(d: &CommandDetail) -> String {
    let exit = d
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    let state = if d.status.is_final() { "ended" } else { "is" };
    format!("{} on {} {state} {}{exit}", d.command, d.host_id, d.status)
}

/// Print a command's output until it ends, each line once and in order; its final state.
async fn follow_command(c: &Client, id: &str, to: &mut impl Write) -> Result<CommandDetail> {
    let path = format!("/api/commands/{}", seg(id));
    let mut printed = 0;
    let mut seen = None;
    loop {
        let detail: CommandDetail = c.get(&path).await?;
        let ended = detail.status.is_final();
        // The log is read again only when it grew, and once more at the end (lines stored
        // between this read and the last).
        if seen != Some(detail.line_count) || ended {
            printed = copy_log(c, id, printed, to).await?;
            seen = Some(detail.line_count);
        }
        if ended {
            return Ok(detail);
        }
        tokio::time::sleep(COMMAND_POLL).await;
    }
}

/// Copy a command's log to `to` from line `skip` on, as it downloads; the number of lines
/// it has. The log is the stored lines in order, so lines once printed keep their place.
async fn copy_log(c: &Client, id: &str, skip: usize, to: &mut impl Write) -> Result<usize> {
    let path = format!("/api/commands/{}/log", seg(id));
    let mut resp = c.send(Method::GET, &path, None::<&()>).await?;
    let mut lines = LineCounter::new(skip);
    while let Some(chunk) = resp.chunk().await.map_err(|e| c.unreachable(&e))? {
        lines.feed(&chunk, to);
    }
    lines.finish(to);
    let _ = to.flush();
    Ok(lines.count)
}

/// Splits a byte stream into lines, writing those from `skip` on.
struct LineCounter {
    skip: usize,
    count: usize,
    partial: Vec<u8>,
}

impl LineCounter {
    fn new(skip: usize) -> Self {
        LineCounter {
            skip,
            count: 0,
            partial: Vec::new(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8], to: &mut impl Write) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(end + 1);
            if self.count >= self.skip {
                let _ = to.write_all(&self.partial);
                let _ = to.write_all(line);
            }
            self.partial.clear();
            self.count += 1;
            bytes = rest;
        }
        self.partial.extend_from_slice(bytes);
    }

    /// A last line without its newline still counts.
    fn finish(&mut self, to: &mut impl Write) {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            let last = std::mem::take(&mut self.partial);
            self.feed(&last, to);
        }
    }
}

async fn status(c: &Client, out: Out, id: &str) -> Result<()> {
    let detail: Value = c.get(&format!("/api/commands/{}", seg(id))).await?;
    let typed: CommandDetail = serde_json::from_value(detail.clone()).map_err(|e| {
        Failure::new(
            Exit::Unreachable,
            format!("unexpected answer from GET /api/commands/{id}: {e}"),
        )
    })?;
    out.result(&detail, &command_text(&typed));
    Ok(())
}

fn command_text(d: &CommandDetail) -> String {
    let time = |t: Option<protocol::Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
    let mut lines = vec![
        format!("command   {}", d.command_id),
        format!("host      {}", d.host_id),
        format!("kind      {}", d.command),
        format!(
            "status    {}{}",
            d.status,
            d.exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        ),
        format!("queued    {}", d.queued_at),
        format!("started   {}", time(d.started_at)),
        format!("finished  {}", time(d.finished_at)),
        format!("lines     {}", d.line_count),
    ];
    if let Some(r) = &d.result {
        if let Some(g) = r.generation {
            lines.push(format!("generation {g}"));
        }
        if let Some(p) = &r.store_path {
            lines.push(format!("store path {p}"));
        }
        if let Some(diff) = &r.diff {
            lines.push(format!("changes   {}", diff_summary(diff)));
        }
    }
    lines.join("\n")
}

/// "3 packages changed, closure +1.5 MiB, reboot needed".
fn diff_summary(diff: &protocol::ClosureDiff) -> String {
    let n = diff.changes.len() as u64 + diff.truncated;
    let delta = diff.closure_bytes_after as f64 - diff.closure_bytes_before as f64;
    let mut text = format!(
        "{n} package{} changed, closure {}{:.1} MiB",
        if n == 1 { "" } else { "s" },
        if delta < 0.0 { "-" } else { "+" },
        delta.abs() / (1024.0 * 1024.0)
    );
    if diff.reboot_needed {
        text.push_str(", reboot needed");
    }
    text
}

// ---------------------------------------------------------------------------- deploys

async fn deploy(c: &Client, out: Out, d: &DeployArgs) -> Result<()> {
    match &d.job {
        None => start_deploy(c, out, d).await,
        Some(JobCommand::Status { job, follow }) => {
            let progress = if *follow {
                follow_deploy(c, out, job, |p| !p.active).await?
            } else {
                deploy_progress(c, job).await?
            };
            if !*follow {
                out.result(&progress, &progress_text(&progress));
                return Ok(());
            }
            deploy_outcome(out, &progress)
        }
        Some(JobCommand::Confirm { job, follow }) => confirm(c, out, job, *follow).await,
        Some(JobCommand::Cancel { job }) => {
            let _: Value = c
                .post(&format!("/api/deploy/{}/cancel", seg(job)), None::<&()>)
                .await?;
            out.result(
                &serde_json::json!({ "job_id": job, "cancelled": true }),
                &format!("Cancel requested for deploy {job}."),
            );
            Ok(())
        }
    }
}

async fn start_deploy(c: &Client, out: Out, d: &DeployArgs) -> Result<()> {
    let request = deploy_request(c, d).await?;
    let accepted: JobAccepted = c.post("/api/deploy", Some(&request)).await?;
    let job = accepted.job_id.clone();
    if !d.preview && !d.follow {
        out.result(&accepted, &job);
        return Ok(());
    }
    out.say(&format!("deploy {job} of PR #{}", request.pr_number));
    if d.preview {
        let previewed = follow_deploy(c, out, &job, |p| {
            p.phase != DeployPhase::Previewing || !p.active
        })
        .await?;
        if previewed.phase != DeployPhase::AwaitingConfirmation || !previewed.active {
            return deploy_outcome(out, &previewed);
        }
        for line in preview_lines(c, &previewed).await? {
            out.say(&line);
        }
        if !d.yes {
            out.say(&format!(
                "Confirm with `nixdeck ctl deploy confirm {job}` (or cancel with \
                 `nixdeck ctl deploy cancel {job}`)."
            ));
            out.result(&previewed, &job);
            return Ok(());
        }
        return confirm(c, out, &job, d.follow).await;
    }
    let end = follow_deploy(c, out, &job, |p| !p.active).await?;
    deploy_outcome(out, &end)
}

/// The request, with host names turned into ids. Tags go as they are (`tags`,
/// `canary_tags`): the dashboard picks the hosts, so a canary tag picks only hosts that
/// are targets anyway, and a tag no host carries is refused there.
async fn deploy_request(c: &Client, d: &DeployArgs) -> Result<DeployRequest> {
    let pr_number =
        d.pr.ok_or_else(|| Failure::new(Exit::Usage, "deploy needs --pr N"))?;
    let (canary, canary_tags) = protocol::api::split_canary(&d.canary);
    let named = !(d.hosts.is_empty() && canary.is_empty());
    let hosts = if named { fleet(c).await?.1 } else { Vec::new() };
    let host_ids = if d.hosts.is_empty() {
        None
    } else {
        Some(fleet::select(&hosts, &d.hosts)?)
    };
    let tags = (!d.tags.is_empty()).then(|| d.tags.clone());
    let canary = if canary.is_empty() {
        None
    } else {
        Some(fleet::select(&hosts, &canary)?)
    };
    Ok(DeployRequest {
        pr_number,
        host_ids,
        tags,
        canary,
        canary_tags: (!canary_tags.is_empty()).then_some(canary_tags),
        batch_size: d.batch_size,
        max_failures: d.max_failures,
        head_sha: None,
        soak_s: d.soak_s,
        on_failure: d.on_failure.map(Into::into),
        preview: d.preview,
    })
}

async fn confirm(c: &Client, out: Out, job: &str, follow: bool) -> Result<()> {
    let accepted: JobAccepted = c
        .post(&format!("/api/deploy/{}/confirm", seg(job)), None::<&()>)
        .await?;
    if !follow {
        out.result(
            &accepted,
            &format!("Confirmed; deploy {job} is merged and rolling out."),
        );
        return Ok(());
    }
    out.say(&format!("Confirmed deploy {job}; merged."));
    let end = follow_deploy(c, out, job, |p| !p.active).await?;
    deploy_outcome(out, &end)
}

async fn deploy_progress(c: &Client, job: &str) -> Result<DeployProgress> {
    c.get(&format!("/api/deploy/{}", seg(job))).await
}

/// Print each change of phase, message and host state until `done` holds; the last
/// progress read.
async fn follow_deploy(
    c: &Client,
    out: Out,
    job: &str,
    done: impl Fn(&DeployProgress) -> bool,
) -> Result<DeployProgress> {
    let mut last: Option<DeployProgress> = None;
    loop {
        let p = deploy_progress(c, job).await?;
        for line in progress_changes(last.as_ref(), &p) {
            out.say(&line);
        }
        if done(&p) {
            return Ok(p);
        }
        last = Some(p);
        tokio::time::sleep(DEPLOY_POLL).await;
    }
}

/// What changed from `before` to `now`, as lines for people.
fn progress_changes(before: Option<&DeployProgress>, now: &DeployProgress) -> Vec<String> {
    let mut lines = Vec::new();
    if before.is_none_or(|b| b.phase != now.phase) {
        lines.push(format!("phase {}", now.phase));
    }
    for (host, state) in &now.hosts {
        if before.is_none_or(|b| b.hosts.get(host) != Some(state)) {
            lines.push(format!("  {host}: {state}"));
        }
    }
    if !now.message.is_empty() && before.is_none_or(|b| b.message != now.message) {
        lines.push(format!("  {}", now.message));
    }
    lines
}

fn progress_text(p: &DeployProgress) -> String {
    let mut lines = vec![format!(
        "deploy {} of PR #{}: {}{}",
        p.job_id,
        p.pr_number,
        p.phase,
        if p.active { " (running)" } else { "" }
    )];
    lines.extend(p.hosts.iter().map(|(h, s)| format!("  {h}: {s}")));
    if !p.message.is_empty() {
        lines.push(format!("  {}", p.message));
    }
    lines.join("\n")
}

/// Each host's preview: its state, and what a switch to the PR would change.
async fn preview_lines(c: &Client, p: &DeployProgress) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (host, state) in &p.hosts {
        let mut line = format!("  {host}: preview {state}");
        if let Some(id) = p.previews.get(host) {
            let d: CommandDetail = c.get(&format!("/api/commands/{}", seg(id))).await?;
            if let Some(diff) = d.result.as_ref().and_then(|r| r.diff.as_ref()) {
                line.push_str(&format!(", {}", diff_summary(diff)));
            }
            line.push_str(&format!(" (command {id})"));
        }
        lines.push(line);
    }
    Ok(lines)
}

/// The exit of a followed deploy: a success only when it ended `done` with no host failed.
fn deploy_outcome(out: Out, p: &DeployProgress) -> Result<()> {
    if out.json {
        print_json(p);
    }
    match deploy_failure(p) {
        None => {
            eprintln!("deploy {} of PR #{} done", p.job_id, p.pr_number);
            Ok(())
        }
        Some(why) => Err(Failure::new(Exit::Failed, why)),
    }
}

fn deploy_failure(p: &DeployProgress) -> Option<String> {
    let failed: Vec<String> = p
        .hosts
        .iter()
        .filter(|(_, s)| matches!(s, DeployHostState::Error | DeployHostState::RolledBack))
        .map(|(h, s)| format!("{h} ({s})"))
        .collect();
    let what = format!("deploy {} of PR #{}", p.job_id, p.pr_number);
    if p.phase != DeployPhase::Done {
        let message = if p.message.is_empty() {
            String::new()
        } else {
            format!(": {}", p.message)
        };
        return Some(format!("{what} ended {}{message}", p.phase));
    }
    (!failed.is_empty()).then(|| format!("{what} done, but failed on {}", failed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{CheckStatus, CommandKind, CommandStatus, Host, HostType, PendingCommand};
    use std::collections::BTreeMap;

    fn progress(phase: DeployPhase, hosts: &[(&str, DeployHostState)]) -> DeployProgress {
        DeployProgress {
            job_id: "j1".into(),
            pr_number: 42,
            phase,
            hosts: hosts
                .iter()
                .map(|(h, s)| (h.to_string(), *s))
                .collect::<BTreeMap<_, _>>(),
            message: String::new(),
            started_by: "ops".into(),
            active: phase != DeployPhase::Done && phase != DeployPhase::Failed,
            previews: BTreeMap::new(),
        }
    }

    #[test]
    fn a_deploy_succeeds_only_when_done_with_no_host_failed() {
        use DeployHostState::*;
        assert_eq!(
            deploy_failure(&progress(DeployPhase::Done, &[("a", Ok), ("b", Ok)])),
            None
        );
        let rolled = deploy_failure(&progress(
            DeployPhase::Done,
            &[("a", Ok), ("b", RolledBack)],
        ));
        assert_eq!(
            rolled.as_deref(),
            Some("deploy j1 of PR #42 done, but failed on b (rolled_back)")
        );
        let mut halted = progress(DeployPhase::Failed, &[("a", Error), ("b", Skipped)]);
        halted.message = "Stopped after the canary failed".into();
        assert_eq!(
            deploy_failure(&halted).as_deref(),
            Some("deploy j1 of PR #42 ended failed: Stopped after the canary failed")
        );
        // Cancelled with every host fine so far is still not a success.
        assert!(deploy_failure(&progress(DeployPhase::Failed, &[("a", Ok)])).is_some());
    }

    #[test]
    fn progress_prints_only_what_changed() {
        use DeployHostState::*;
        let first = progress(DeployPhase::Pulling, &[("a", Running), ("b", Pending)]);
        assert_eq!(
            progress_changes(None, &first),
            ["phase pulling", "  a: running", "  b: pending"]
        );
        assert!(progress_changes(Some(&first), &first).is_empty());
        let mut next = progress(DeployPhase::Pulling, &[("a", Ok), ("b", Pending)]);
        next.message = "Pulling on a".into();
        assert_eq!(
            progress_changes(Some(&first), &next),
            ["  a: ok", "  Pulling on a"]
        );
    }

    #[test]
    fn the_log_is_printed_from_the_first_unseen_line_across_chunks() {
        let mut to = Vec::new();
        let mut lines = LineCounter::new(2);
        lines.feed(b"[1] one\n[2] tw", &mut to);
        lines.feed(b"o\n[3] thr", &mut to);
        lines.feed(b"ee\n[4] f", &mut to);
        lines.feed(b"our", &mut to);
        lines.finish(&mut to);
        assert_eq!(String::from_utf8(to).unwrap(), "[3] three\n[4] four\n");
        assert_eq!(lines.count, 4);
        let mut to = Vec::new();
        let mut lines = LineCounter::new(0);
        lines.finish(&mut to);
        assert_eq!(lines.count, 0);
        assert!(to.is_empty());
    }

    #[test]
    fn segments_from_user_input_stay_segments() {
        assert_eq!(seg("0123abcd"), "0123abcd");
        assert_eq!(seg("../hosts?x=1"), "..%2Fhosts%3Fx%3D1");
    }

    #[test]
    fn the_host_table_shows_compartments_the_running_command_and_tags() {
        let mut web = Host::new("web-1", HostType::Nixos);
        web.online = true;
        web.update_status.git.status = CheckStatus::Outdated;
        web.pending_command = Some(PendingCommand {
            command_id: "c1".into(),
            command: CommandKind::Switch,
            started_at: protocol::Timestamp(0),
        });
        let hosts = [
            FleetHost {
                host: web,
                tags: vec!["web".into(), "canary".into()],
            },
            FleetHost {
                host: Host::new("db", HostType::Nixos),
                tags: vec![],
            },
        ];
        let table = host_table(&hosts);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            words(lines[0]),
            ["NAME", "ONLINE", "AGENT", "GIT", "LOCK", "SYSTEM", "TESTS", "RUNNING", "TAGS"]
        );
        assert_eq!(
            words(lines[1]),
            [
                "web-1",
                "yes",
                "unknown",
                "outdated",
                "unknown",
                "unknown",
                "unknown",
                "switch",
                "c1",
                "web,canary"
            ]
        );
        assert_eq!(
            words(lines[2]),
            ["db", "no", "unknown", "unknown", "unknown", "unknown", "unknown", "-", "-"]
        );
        // Columns line up: every row's TAGS column starts at the header's.
        let at = lines[0].find("TAGS").unwrap();
        assert_eq!(&lines[1][at..], "web,canary");
    }

    #[test]
    fn a_command_summary_says_how_it_ended() {
        let d = CommandDetail {
            command_id: "c1".into(),
            host_id: "web-1".into(),
            command: CommandKind::Switch,
            status: CommandStatus::RolledBack,
            exit_code: Some(1),
            result: None,
            queued_at: protocol::Timestamp(0),
            started_at: None,
            finished_at: None,
            line_count: 0,
            requested_by: None,
        };
        assert_eq!(
            command_summary(&d),
            "switch on web-1 ended rolled_back (exit code 1)"
        );
    }
}
