//! Server functions: thin doors into the service layer (`nixdeck_core::service`), one call
//! each through `request::serve`. Every one is a POST under `/api`, so the server's session
//! and CSRF layer guards them exactly like the REST routes; `CsrfClient` adds the page's
//! token to each call.

// A server function's parameters are its request's fields, so one with many options has
// many parameters (`merge_and_deploy`). Allowed for the file: `#[server]` does not carry an
// attribute on the function over to the client function it generates for the browser.
#![allow(clippy::too_many_arguments)]

use common::AppError;
use futures::{Sink, Stream};
use leptos::prelude::*;
use protocol::api::{
    ApiTokenCreated, ApiTokenInfo, BulkResult, CommandDetail, CommandRecord, CpuSparkline,
    CreateApiToken, CreateHost, HostCreated, HostEdit, MetricsHistory, OnFailure, RecoveryCodes,
    RefreshResult, TotpSetup,
};
use protocol::messages::Snapshot;
use protocol::{CommandKind, Host};
use server_fn::client::{browser::BrowserClient, Client};
use server_fn::error::FromServerFnError;
use server_fn::request::browser::BrowserRequest;
use server_fn::response::browser::BrowserResponse;
use std::future::Future;

#[cfg(feature = "ssr")]
use {crate::request::serve, nixdeck_core::service};

/// The server-function client: the browser's fetch, plus the `X-CSRF-Token` header read
/// from `<meta name="csrf-token">`.
pub struct CsrfClient;

impl<E, IS, OS> Client<E, IS, OS> for CsrfClient
where
    E: FromServerFnError,
    IS: FromServerFnError,
    OS: FromServerFnError,
{
    type Request = BrowserRequest;
    type Response = BrowserResponse;

    fn send(req: Self::Request) -> impl Future<Output = Result<Self::Response, E>> + Send {
        #[cfg(feature = "hydrate")]
        if let Some(token) = crate::page_meta::csrf_token() {
            req.headers().append("X-CSRF-Token", &token);
        }
        <BrowserClient as Client<E, IS, OS>>::send(req)
    }

    fn open_websocket(
        path: &str,
    ) -> impl Future<
        Output = Result<
            (
                impl Stream<Item = Result<server_fn::Bytes, server_fn::Bytes>> + Send + 'static,
                impl Sink<server_fn::Bytes> + Send + 'static,
            ),
            E,
        >,
    > + Send {
        <BrowserClient as Client<E, IS, OS>>::open_websocket(path)
    }

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        <BrowserClient as Client<E, IS, OS>>::spawn(future)
    }
}

/// The fleet as the hub sees it now; the dashboard's first render.
#[server(client = CsrfClient)]
pub async fn fleet_snapshot() -> Result<Snapshot, AppError> {
    serve(|c, v| async move { Ok(service::hosts::snapshot(&c, &v)) }).await
}

/// Run a command on a host (the row's Pull / Switch / Test buttons and the ⋮ menu).
/// `generation`: for `rollback`, the generation to go to; `preview_id`: for `switch` and
/// `boot`, a finished preview of this host whose build is activated.
#[server(client = CsrfClient)]
pub async fn run_command(
    host_id: String,
    command: CommandKind,
    generation: Option<u64>,
    preview_id: Option<String>,
) -> Result<String, AppError> {
    let options = service::commands::RunOptions {
        generation,
        preview_id,
        rev: None,
    };
    serve(|c, v| async move { service::commands::run(&c, &v, &host_id, command, options).await })
        .await
}

/// One command with its result (a preview's closure diff, the generation reached). The
/// macro's struct gets its own name: by default it would be `CommandDetail`, the answer's.
#[server(name = CommandDetailCall, client = CsrfClient)]
pub async fn command_detail(command_id: String) -> Result<CommandDetail, AppError> {
    serve(|c, v| async move { service::commands::detail(&c, &v, &command_id).await }).await
}

/// Stop the host's running command.
#[server(client = CsrfClient)]
pub async fn stop_command(host_id: String) -> Result<String, AppError> {
    serve(|c, v| async move { service::commands::stop(&c, &v, &host_id).await }).await
}

/// Release a host whose pending command is stuck.
#[server(client = CsrfClient)]
pub async fn unlock_host(host_id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::commands::unlock(&c, &v, &host_id).await }).await
}

/// A host's status fresh from the server (the row's refresh button).
#[server(client = CsrfClient)]
pub async fn refresh_host(host_id: String) -> Result<RefreshResult, AppError> {
    serve(|c, v| async move { service::hosts::refresh(&c, &v, &host_id).await }).await
}

/// Remove a host: its token stops working and its agent is disconnected.
#[server(client = CsrfClient)]
pub async fn remove_host(host_id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::hosts::remove(&c, &v, &host_id).await }).await
}

/// Approve a host that enrolled itself; from then on it takes commands (admins only).
#[server(client = CsrfClient)]
pub async fn approve_host(host_id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::hosts::approve(&c, &v, &host_id).await.map(drop) }).await
}

/// A host's latest commands, newest first.
#[server(client = CsrfClient)]
pub async fn command_history(host_id: String, limit: u32) -> Result<Vec<CommandRecord>, AppError> {
    serve(|c, v| async move { service::commands::history(&c, &v, &host_id, limit).await }).await
}

/// A host's metrics over `range` (`1h`, `24h`, `7d`, `30d` or `1y`), oldest first: the
/// host detail view's charts and the row's sparkline.
#[server(client = CsrfClient)]
pub async fn host_metrics(host_id: String, range: String) -> Result<MetricsHistory, AppError> {
    serve(|c, v| async move { service::history::read(&c, &v, &host_id, Some(&range)).await }).await
}

/// The end of a past command's stored log, a line each as the download writes them: the
/// log panel shows it when a command is opened from the host page's history. A fixed
/// endpoint, so the server tests can call it (`/api/command_log_tail`).
#[server(endpoint = "command_log_tail", client = CsrfClient)]
pub async fn command_log_tail(command_id: String) -> Result<Vec<String>, AppError> {
    serve(|c, v| async move { service::commands::log_tail(&c, &v, &command_id).await }).await
}

/// The last hour of CPU of the rows in view, one request for all of them (the rows'
/// sparklines). JSON, because a form cannot say "no hosts".
#[server(endpoint = "cpu_sparklines", client = CsrfClient, input = server_fn::codec::Json)]
pub async fn cpu_sparklines(host_ids: Vec<String>) -> Result<Vec<CpuSparkline>, AppError> {
    serve(|c, v| async move { service::history::cpu_sparklines(&c, &v, host_ids).await }).await
}

/// A new agent token for the host, shown once; the old one stops working at once (admins,
/// with a recent authentication: `AppError::ReauthRequired` asks for the password).
#[server(client = CsrfClient)]
pub async fn rotate_host_token(host_id: String) -> Result<String, AppError> {
    serve(|c, v| async move { service::hosts::rotate_token(&c, &v, &host_id).await }).await
}

/// The same command on many hosts (`None`: every online host).
#[server(client = CsrfClient)]
pub async fn bulk_command(
    command: CommandKind,
    host_ids: Option<Vec<String>>,
) -> Result<Vec<BulkResult>, AppError> {
    serve(|c, v| async move { service::commands::bulk(&c, &v, command, host_ids, None).await })
        .await
}

/// Change a host's location, device type, colour or tags; every open page sees it. JSON,
/// because a form cannot say "no tags" (an empty list encodes to nothing) or `null`.
#[server(client = CsrfClient, input = server_fn::codec::Json)]
pub async fn edit_host(host_id: String, edit: HostEdit) -> Result<Host, AppError> {
    serve(|c, v| async move { service::hosts::edit(&c, &v, &host_id, edit).await }).await
}

/// Add a host; its agent token is in the answer, shown once.
#[server(client = CsrfClient)]
pub async fn add_host(host: CreateHost) -> Result<HostCreated, AppError> {
    serve(|c, v| async move { service::hosts::create(&c, &v, host).await }).await
}

/// Prove who you are again (password, and the code with 2FA), for the actions that need a
/// recent authentication.
#[server(client = CsrfClient)]
pub async fn reauthenticate(password: String, totp: Option<String>) -> Result<(), AppError> {
    serve(|c, v| async move {
        service::auth::reauthenticate(&c, &v, &password, totp.as_deref()).await
    })
    .await
}

/// Start two-factor enrollment for the logged-in user: their password, and while TOTP is
/// on a current code or a recovery code (`AppError::TotpRequired` asks for it).
#[server(client = CsrfClient)]
pub async fn start_totp_setup(
    password: String,
    code: Option<String>,
) -> Result<TotpSetup, AppError> {
    serve(|c, v| async move { service::totp::setup(&c, &v, &password, code.as_deref()).await })
        .await
}

/// Confirm two-factor enrollment with a first code; answers the recovery codes.
#[server(client = CsrfClient)]
pub async fn confirm_totp(code: String) -> Result<RecoveryCodes, AppError> {
    serve(|c, v| async move { service::totp::confirm(&c, &v, &code).await }).await
}

/// Every user (admins only).
/// The caller's personal API tokens (`all`: everyone's, admins only).
#[server(client = CsrfClient)]
pub async fn list_api_tokens(all: bool) -> Result<Vec<ApiTokenInfo>, AppError> {
    serve(|c, v| async move { service::tokens::list(&c, &v, all).await }).await
}

/// A personal API token for the caller, shown once.
#[server(client = CsrfClient)]
pub async fn make_api_token(req: CreateApiToken) -> Result<ApiTokenCreated, AppError> {
    serve(|c, v| async move { service::tokens::create(&c, &v, req).await }).await
}

#[server(client = CsrfClient)]
pub async fn revoke_api_token(id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::tokens::revoke(&c, &v, &id).await }).await
}

/// Notification targets (admin), without secrets.
#[server(client = CsrfClient)]
pub async fn list_notify_targets() -> Result<Vec<protocol::api::NotifyTarget>, AppError> {
    serve(|c, v| async move { service::notify::list_targets(&c, &v).await }).await
}

/// JSON, because `settings` is free-form.
#[server(client = CsrfClient, input = server_fn::codec::Json)]
pub async fn add_notify_target(
    req: protocol::api::CreateNotifyTarget,
) -> Result<protocol::api::NotifyTarget, AppError> {
    serve(|c, v| async move { service::notify::create_target(&c, &v, req).await }).await
}

#[server(client = CsrfClient)]
pub async fn remove_notify_target(id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::notify::delete_target(&c, &v, &id).await }).await
}

/// Queue a test message; the answer is its idempotency key.
#[server(client = CsrfClient)]
pub async fn test_notify_target(id: String) -> Result<String, AppError> {
    serve(|c, v| async move { service::notify::test_target(&c, &v, &id).await }).await
}

#[server(client = CsrfClient)]
pub async fn notify_delivery_log(
    id: String,
) -> Result<Vec<protocol::api::NotifyDelivery>, AppError> {
    serve(|c, v| async move { service::notify::deliveries(&c, &v, &id).await }).await
}

#[server(client = CsrfClient)]
pub async fn list_notify_rules() -> Result<Vec<protocol::api::NotifyRule>, AppError> {
    serve(|c, v| async move { service::notify::list_rules(&c, &v).await }).await
}

/// JSON, because empty lists (no tags) do not survive a form.
#[server(client = CsrfClient, input = server_fn::codec::Json)]
pub async fn add_notify_rule(
    req: protocol::api::CreateNotifyRule,
) -> Result<protocol::api::NotifyRule, AppError> {
    serve(|c, v| async move { service::notify::create_rule(&c, &v, req).await }).await
}

#[server(client = CsrfClient)]
pub async fn remove_notify_rule(id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::notify::delete_rule(&c, &v, &id).await }).await
}

#[server(client = CsrfClient)]
pub async fn list_users() -> Result<Vec<protocol::api::UserInfo>, AppError> {
    serve(|c, v| async move { service::users::list_for(&c, &v).await }).await
}

#[server(client = CsrfClient)]
pub async fn add_user(username: String, role: String, password: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::users::add_by(&c, &v, &username, &role, &password).await })
        .await
}

#[server(client = CsrfClient)]
pub async fn set_user_disabled(username: String, disabled: bool) -> Result<(), AppError> {
    serve(|c, v| async move { service::users::set_disabled_by(&c, &v, &username, disabled).await })
        .await
}

#[server(client = CsrfClient)]
pub async fn reset_user_password(username: String) -> Result<String, AppError> {
    serve(|c, v| async move { service::users::reset_password(&c, &v, &username).await }).await
}

/// The audit log, newest first (admins only).
#[server(client = CsrfClient)]
pub async fn audit_log(
    actor: Option<String>,
    action: Option<String>,
    limit: u32,
) -> Result<Vec<protocol::api::AuditEntry>, AppError> {
    let filter = nixdeck_core::storage::AuditFilter {
        actor: actor.filter(|a| !a.is_empty()),
        action: action.filter(|a| !a.is_empty()),
        target: None,
        limit,
    };
    serve(|c, v| async move { service::audit::read(&c, &v, filter).await }).await
}

/// Merge the flake.lock PR and roll it out: to `host_ids`, or every online host; in waves
/// (`canary` first, then batches of `batch_size`), waiting `soak_s` after each wave that
/// succeeded, and on a failed wave doing `on_failure` (default: halt). The job's progress
/// arrives as `deploy_progress` events. With `preview`, the PR's head is previewed on the
/// targets first and nothing is merged until `confirm_deploy`.
#[server(client = CsrfClient)]
pub async fn merge_and_deploy(
    pr_number: u64,
    host_ids: Option<Vec<String>>,
    head_sha: Option<String>,
    canary: Option<Vec<String>>,
    batch_size: Option<u32>,
    max_failures: Option<u32>,
    soak_s: Option<u64>,
    on_failure: Option<OnFailure>,
    preview: bool,
) -> Result<String, AppError> {
    // The form's canary field takes host ids and `tag:NAME`s alike.
    let (canary, canary_tags) = protocol::api::split_canary(&canary.unwrap_or_default());
    let req = protocol::api::DeployRequest {
        pr_number,
        host_ids,
        tags: None,
        canary: (!canary.is_empty()).then_some(canary),
        canary_tags: (!canary_tags.is_empty()).then_some(canary_tags),
        batch_size,
        max_failures,
        head_sha,
        soak_s,
        on_failure,
        preview,
    };
    serve(|c, v| async move { service::deploy::start(&c, &v, req).await }).await
}

/// A deploy that previewed first (phase `awaiting_confirmation`) merges the head it
/// previewed and rolls out. Returns once GitHub merged; a head that moved since the preview
/// is refused (`head_moved`), a job in another phase is `not_awaiting`.
#[server(client = CsrfClient)]
pub async fn confirm_deploy(job_id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::deploy::confirm(&c, &v, &job_id).await }).await
}

/// Past and running Merge & Deploy jobs, newest first, with each host's commands (the
/// Deploys page).
#[server(client = CsrfClient)]
pub async fn deploy_history(limit: u32) -> Result<Vec<protocol::api::DeployRecord>, AppError> {
    serve(|c, v| async move { service::deploy::history(&c, &v, limit).await }).await
}

/// Stop launching new steps of a deploy; running commands finish.
#[server(client = CsrfClient)]
pub async fn cancel_deploy(job_id: String) -> Result<(), AppError> {
    serve(|c, v| async move { service::deploy::cancel(&c, &v, &job_id).await }).await
}

/// Look for the flake.lock update PR now instead of at the next poll.
#[server(client = CsrfClient)]
pub async fn check_pr_now() -> Result<Option<protocol::PendingPr>, AppError> {
    serve(|c, v| async move { service::deploy::check_pr(&c, &v).await }).await
}
