//! One error type for the service layer, shared by both doors: REST maps it to a status code
//! and `{error, code}`; server functions carry it to the browser as it is.

use serde::{Deserialize, Serialize};
use server_fn::codec::JsonEncoding;
use server_fn::error::{FromServerFnError, ServerFnErrorErr};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppError {
    /// No (valid) session: 401.
    Unauthorized,
    /// The password was right, and the account also needs a TOTP or recovery code: 401.
    TotpRequired,
    /// Authenticated but not allowed, or a CSRF/Origin failure: 403.
    Forbidden(String),
    /// 403: allowed, but the user must confirm who they are first (password, and the TOTP
    /// code with 2FA): a rare, powerful action long after the login.
    ReauthRequired,
    /// 404 with the thing that was not found.
    NotFound(String),
    /// 409 with a machine code such as `busy`, `offline`, `idle`, `exists`.
    Conflict { code: String, message: String },
    /// 422: the request is well-formed but its content is not acceptable.
    Invalid(String),
    /// 429: try again after this many seconds.
    RateLimited { retry_after_s: u64 },
    /// 503: the server is at capacity for this kind of work (e.g. password checks); try
    /// again after this many seconds.
    Unavailable { retry_after_s: u64 },
    /// 500: the detail was logged on the server, never sent.
    Internal,
    /// The server function transport failed (network, decoding).
    Transport(String),
    /// 502: a service the dashboard depends on (GitHub) failed; the reason is shown.
    Upstream(String),
}

impl AppError {
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        AppError::Conflict {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AppError::Unauthorized | AppError::TotpRequired => 401,
            AppError::Forbidden(_) | AppError::ReauthRequired => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict { .. } => 409,
            AppError::Invalid(_) => 422,
            AppError::RateLimited { .. } => 429,
            AppError::Unavailable { .. } => 503,
            AppError::Internal => 500,
            AppError::Transport(_) | AppError::Upstream(_) => 502,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            AppError::Unauthorized => "unauthorized",
            AppError::TotpRequired => "totp_required",
            AppError::Forbidden(_) => "forbidden",
            AppError::ReauthRequired => "reauth_required",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict { code, .. } => code,
            AppError::Invalid(_) => "invalid",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Unavailable { .. } => "unavailable",
            AppError::Internal => "internal",
            AppError::Transport(_) => "transport",
            AppError::Upstream(_) => "upstream",
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Unauthorized => f.write_str("You are not logged in."),
            AppError::TotpRequired => {
                f.write_str("Enter the code from your authenticator app (or a recovery code).")
            }
            AppError::Forbidden(why) => write!(f, "Forbidden: {why}"),
            AppError::ReauthRequired => f.write_str("Confirm your password to continue."),
            AppError::NotFound(what) => write!(f, "Not found: {what}"),
            AppError::Conflict { message, .. } => f.write_str(message),
            AppError::Invalid(why) => f.write_str(why),
            AppError::RateLimited { retry_after_s } => {
                write!(f, "Too many attempts; try again in {retry_after_s} s.")
            }
            AppError::Unavailable { retry_after_s } => {
                write!(f, "The dashboard is busy; try again in {retry_after_s} s.")
            }
            AppError::Internal => {
                f.write_str("Internal server error; the details are in the server log.")
            }
            AppError::Transport(why) => write!(f, "Could not reach the dashboard: {why}"),
            AppError::Upstream(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for AppError {}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Transport(value.to_string())
    }
}
