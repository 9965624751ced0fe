//! The REST client of `nixdeck ctl`: the token, the requests, and every way one can fail,
//! each with its exit code (the table is in `args.rs`, shown by `--help`).

use super::args::CtlArgs;
use protocol::api::ApiError;
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Why `ctl` stops, and the exit code a script sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The command or deploy ran and did not succeed.
    Failed = 1,
    /// Bad usage or input: ours, or a 422.
    Usage = 2,
    /// No token, or the dashboard refused it (401).
    Unauthenticated = 3,
    /// Unknown host, tag, command or job (404).
    NotFound = 4,
    /// No answer, or a server error.
    Unreachable = 5,
    /// The token's role may not do this (403).
    Forbidden = 6,
    /// The state does not allow it now (409).
    Conflict = 7,
}

/// A failure with the sentence the user reads.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    /// The dashboard's refusal: its sentence, its code, and our exit code for the status.
    pub fn from_status(status: StatusCode, body: &str) -> Self {
        let (sentence, code) = match serde_json::from_str::<ApiError>(body) {
            Ok(e) => (e.error, Some(e.code)),
            Err(_) => (body.trim().chars().take(300).collect(), None),
        };
        let sentence = if sentence.is_empty() {
            status.to_string()
        } else {
            sentence
        };
        let exit = match status.as_u16() {
            401 => Exit::Unauthenticated,
            403 => Exit::Forbidden,
            404 => Exit::NotFound,
            409 => Exit::Conflict,
            400 | 405 | 413 | 415 | 422 => Exit::Usage,
            _ => Exit::Unreachable,
        };
        let mut message = match code {
            Some(code) => format!("{sentence} ({code})"),
            None => format!("{sentence} (HTTP {})", status.as_u16()),
        };
        // The server's sentence is written for a browser ("You are not logged in.").
        if exit == Exit::Unauthenticated {
            message.push_str(
                "; the API token is wrong, revoked or expired (check NIXDECK_TOKEN_FILE or NIXDECK_TOKEN)",
            );
        }
        Failure::new(exit, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// The dashboard at one URL, with one token.
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: String,
}

impl Client {
    pub fn new(args: &CtlArgs) -> Result<Client> {
        let base = base_url(&args.url, args.insecure)?;
        let token = read_token(
            args.token_file.as_deref(),
            std::env::var("NIXDECK_TOKEN").ok(),
        )?;
        // No overall timeout: a log download or a deploy start (which waits for GitHub)
        // may take long. A dashboard that stops answering mid-read still ends the call.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("nixdeck-ctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::new(Exit::Unreachable, format!("HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    /// A request to `path` (which starts with `/api/`); the answer when it is a success.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Response> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| Failure::new(Exit::Usage, format!("{path}: {e}")))?;
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Failure::from_status(status, &body))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::GET, path, None::<&()>).await?;
        self.read(resp, path).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let resp = self.send(Method::POST, path, body).await?;
        self.read(resp, path).await
    }

    async fn read<T: DeserializeOwned>(&self, resp: Response, path: &str) -> Result<T> {
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        // An empty body (a 202 without one) reads as JSON null.
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| {
            Failure::new(
                Exit::Unreachable,
                format!("unexpected answer from {path}: {e}"),
            )
        })
    }

    /// A connection or transfer failure, saying where we tried.
    pub fn unreachable(&self, e: &reqwest::Error) -> Failure {
        let what = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "no answer in time"
        } else {
            "the request failed"
        };
        // reqwest's Display stops at the outermost layer ("error sending request"); the
        // cause ("Connection refused") is further down the chain.
        let mut cause = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let cause = if cause.is_empty() {
            e.to_string()
        } else {
            cause
        };
        Failure::new(
            Exit::Unreachable,
            format!("{what} to the dashboard at {}: {cause}", self.base),
        )
    }
}

/// The dashboard's base URL, ending in `/` so paths join under it. Plaintext is refused
/// off this machine unless `insecure`: the token would travel in clear (the agent's rule).
pub fn base_url(url: &str, insecure: bool) -> Result<reqwest::Url> {
    let bad = |why: &str| Failure::new(Exit::Usage, format!("invalid --url `{url}`: {why}"));
    let mut base = reqwest::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
    match base.scheme() {
        "https" => {}
        "http" => {
            let local = base.host_str().is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if !local && !insecure {
                return Err(Failure::new(
                    Exit::Usage,
                    format!(
                        "refusing plaintext `{url}`: the API token would travel in clear; \
                         use https://, or pass --insecure"
                    ),
                ));
            }
        }
        _ => return Err(bad("use http:// or https://")),
    }
    if base.cannot_be_a_base() || base.host().is_none() {
        return Err(bad("no host"));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.set_query(None);
    base.set_fragment(None);
    Ok(base)
}

/// The token: from the file when one is named, else from `NIXDECK_TOKEN`.
pub fn read_token(file: Option<&Path>, env: Option<String>) -> Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                Exit::Unauthenticated,
                format!("cannot read the token file {}: {e}", path.display()),
            )
        })?,
        None => env.unwrap_or_default(),
    };
    let token = token.trim();
    if token.is_empty() {
        let from = match file {
            Some(path) => format!("the token file {} is empty", path.display()),
            None => "no API token: set NIXDECK_TOKEN_FILE (or --token-file) to a file holding \
                     one, or NIXDECK_TOKEN; `nixdeck token create` makes one"
                .to_owned(),
        };
        return Err(Failure::new(Exit::Unauthenticated, from));
    }
    // A header value cannot hold control characters; say so rather than fail obscurely.
    if token.chars().any(char::is_control) {
        return Err(Failure::new(
            Exit::Unauthenticated,
            "the API token contains control characters",
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_their_exit_codes_and_keep_the_servers_sentence() {
        let body = r#"{"error":"web-1 is busy running switch.","code":"busy"}"#;
        let f = Failure::from_status(StatusCode::CONFLICT, body);
        assert_eq!(f.exit, Exit::Conflict);
        assert_eq!(f.message, "web-1 is busy running switch. (busy)");
        for (status, exit) in [
            (401, Exit::Unauthenticated),
            (403, Exit::Forbidden),
            (404, Exit::NotFound),
            (422, Exit::Usage),
            (500, Exit::Unreachable),
            (503, Exit::Unreachable),
        ] {
            let f = Failure::from_status(StatusCode::from_u16(status).unwrap(), "");
            assert_eq!(f.exit, exit, "{status}");
            assert!(f.message.contains(&status.to_string()), "{}", f.message);
        }
        let f = Failure::from_status(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"You are not logged in.","code":"unauthorized"}"#,
        );
        assert!(f.message.contains("token is wrong, revoked or expired"));
    }

    #[test]
    fn plaintext_is_refused_off_this_machine() {
        for ok in [
            "http://127.0.0.1:3000",
            "http://localhost:3000/",
            "http://[::1]:3000",
            "https://deck.example.org",
        ] {
            assert!(base_url(ok, false).is_ok(), "{ok}");
        }
        let f = base_url("http://deck.example.org", false).unwrap_err();
        assert_eq!(f.exit, Exit::Usage);
        assert!(f.message.contains("--insecure"), "{}", f.message);
        assert!(base_url("http://deck.example.org", true).is_ok());
        assert!(base_url("ftp://deck.example.org", true).is_err());
        assert!(base_url("deck.example.org", true).is_err());
    }

    #[test]
    fn paths_join_under_a_base_with_a_prefix() {
        let base = base_url("https://example.org/deck", false).unwrap();
        assert_eq!(
            base.join("api/hosts").unwrap().as_str(),
            "https://example.org/deck/api/hosts"
        );
    }

    #[test]
    fn the_token_file_wins_and_whitespace_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  from-file\n").unwrap();
        assert_eq!(
            read_token(Some(&path), Some("from-env".into())).unwrap(),
            "from-file"
        );
        assert_eq!(
            read_token(None, Some("from-env\n".into())).unwrap(),
            "from-env"
        );
        let none = read_token(None, None).unwrap_err();
        assert_eq!(none.exit, Exit::Unauthenticated);
        assert!(none.message.contains("NIXDECK_TOKEN"), "{}", none.message);
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(Some(&path), None)
            .unwrap_err()
            .message
            .contains("empty"));
        let missing = read_token(Some(&dir.path().join("nope")), None).unwrap_err();
        assert!(
            missing.message.contains("cannot read"),
            "{}",
            missing.message
        );
    }
}
