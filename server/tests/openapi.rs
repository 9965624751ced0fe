//! The OpenAPI document against the real server: every REST route is called on the real
//! binary, with a real agent, a real git repository and fake GitHub behind it, so that
//! hosts, commands, a log, a deploy and audit rows exist; each answer (successes and the
//! usual refusals) is recorded and validated against the document the server serves, by
//! openapi-core (`scripts/openapi_check.py`, installed in `.venv/` by `scripts/setup.sh`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use testkit::fake_github::FakeGithub;
use testkit::git::Origin;
use tokio::time::{sleep, Instant};

const GH_TOKEN: &str = "gh-test-token";
const ENROLL: &str = "enroll-secret-token-0123456789";
const LOCK_V1: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v1\"}},\"version\":7}\n";
const LOCK_V2: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v2\"}},\"version\":7}\n";

/// How a request authenticates.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    None,
    /// The session cookie and, for a state-changing request, the CSRF token.
    Session,
    /// The session cookie only (a state-changing request is then refused).
    NoCsrf,
}

/// A request body.
enum Body {
    None,
    Json(Value),
    /// Content type and text, sent as they are (broken JSON, a form).
    Raw(Option<&'static str>, &'static str),
}

/// Calls the server and keeps every exchange for the validator.
struct Recorder {
    base: String,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
    exchanges: Vec<Value>,
}

impl Recorder {
    fn new(server: &Server) -> Recorder {
        Recorder {
            base: server.url(""),
            // No cookie store and no redirects: what is sent and answered is what is recorded.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: String::new(),
            csrf: String::new(),
            exchanges: Vec::new(),
        }
    }

    /// `method path` (with `template`, its documented path), answered with `expect`;
    /// returns the body as JSON (Null when it is not JSON).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        template: &str,
        auth: Auth,
        body: Body,
        expect: u16,
    ) -> Value {
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let mut headers = serde_json::Map::new();
        if auth != Auth::None {
            headers.insert("Cookie".into(), self.cookie.clone().into());
            if auth == Auth::Session && method != "GET" {
                headers.insert("X-CSRF-Token".into(), self.csrf.clone().into());
            }
        }
        let text = match body {
            Body::None => String::new(),
            Body::Json(v) => {
                headers.insert("Content-Type".into(), "application/json".into());
                v.to_string()
            }
            Body::Raw(content_type, text) => {
                if let Some(ct) = content_type {
                    headers.insert("Content-Type".into(), ct.into());
                }
                text.to_owned()
            }
        };
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        for (k, v) in &headers {
            req = req.header(k, v.as_str().unwrap());
        }
        let resp = req.body(text.clone()).send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let answer = resp.text().await.unwrap();
        assert_eq!(status, expect, "{method} {path}: {answer}");
        if let Some(c) = set_cookie.filter(|c| !c.contains("Max-Age=0")) {
            self.cookie = c.split(';').next().unwrap().to_owned();
        }
        self.exchanges.push(json!({
            "method": method,
            "path": path_only,
            "query": query,
            "template": template,
            "headers": headers,
            "body": text,
            // What the server accepted must also be a request the document allows.
            "validate_request": (200..300).contains(&status),
            "status": status,
            "content_type": content_type,
            "response": answer,
        }));
        serde_json::from_str(&answer).unwrap_or(Value::Null)
    }

    /// A GET that is not recorded: waiting for something to happen.
    async fn peek(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.peek(path).await;
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {v:#}");
            sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_command(&self, id: &str) -> Value {
        let path = format!("/api/commands/{id}");
        self.wait(&path, "the command ends", |c| {
            !["queued", "running"].contains(&c["status"].as_str().unwrap_or("queued"))
        })
        .await
    }
}

/// The repository root (for `.venv/` and `scripts/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_as_the_openapi_document_says() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let origin = Origin::new(dir, &[("flake.lock", LOCK_V1)]);
    origin.push_branch(
        "update-flake-lock",
        &[("flake.lock", LOCK_V2)],
        "flake.lock: update nixpkgs",
    );
    let gh = FakeGithub::start(
        &fake_github_bin(),
        &origin.bare,
        "acme",
        "nixcfg",
        &["--token", GH_TOKEN],
        Stdio::from(std::fs::File::create(dir.join("fake-github.log")).unwrap()),
    );
    let server = Server::start_with(
        dir,
        free_port(),
        &[
            ("NIXDECK_GITHUB_REPO", "acme/nixcfg"),
            ("NIXDECK_GITHUB_API_URL", gh.base.as_str()),
            ("NIXDECK_GITHUB_TOKEN", GH_TOKEN),
            ("NIXDECK_DESIRED_POLL_S", "1"),
            ("NIXDECK_PR_POLL_S", "1"),
            ("NIXDECK_MERGE_WAIT_S", "20"),
        ],
    )
    .await;
    let mut r = Recorder::new(&server);
    use Auth::{NoCsrf, Session};
    let none = Auth::None;

    // Open routes, and logging in.
    r.call("GET", "/healthz", "/healthz", none, Body::None, 200)
        .await;
    r.call("GET", "/metrics", "/metrics", none, Body::None, 200)
        .await;
    let document = r
        .call(
            "GET",
            "/api/openapi.json",
            "/api/openapi.json",
            none,
            Body::None,
            200,
        )
        .await;
    let login = |password: &str| json!({"username": "admin", "password": password});
    r.call(
        "POST",
        "/api/login",
        "/api/login",
        none,
        Body::Json(login("wrong-password")),
        401,
    )
    .await;
    r.call(
        "POST",
        "/api/login",
        "/api/login",
        none,
        Body::Raw(
            Some("application/x-www-form-urlencoded"),
            "username=admin&password=integration-password-1&next=%2F",
        ),
        303,
    )
    .await;
    let session = r
        .call(
            "POST",
            "/api/login",
            "/api/login",
            none,
            Body::Json(login(PASSWORD)),
            200,
        )
        .await;
    r.csrf = session["csrf_token"].as_str().unwrap().to_owned();
    r.call(
        "GET",
        "/api/session",
        "/api/session",
        Session,
        Body::None,
        200,
    )
    .await;

    // Hosts, and the refusals every route shares.
    let hosts = "/api/hosts";
    r.call("GET", hosts, hosts, none, Body::None, 401).await;
    let a1 = json!({"hostname": "a1", "host_type": "nixos"});
    r.call("POST", hosts, hosts, NoCsrf, Body::Json(a1.clone()), 403)
        .await;
    r.call(
        "POST",
        hosts,
        hosts,
        Session,
        Body::Raw(Some("application/json"), "{\"hostname\":"),
        400,
    )
    .await;
    r.call(
        "POST",
        hosts,
        hosts,
        Session,
        Body::Raw(None, "{\"hostname\":\"a1\"}"),
        415,
    )
    .await;
    r.call(
        "POST",
        hosts,
        hosts,
        Session,
        Body::Json(json!({"hostname": "Not A Host", "host_type": "nixos"})),
        422,
    )
    .await;
    let created = r
        .call("POST", hosts, hosts, Session, Body::Json(a1.clone()), 201)
        .await;
    r.call("POST", hosts, hosts, Session, Body::Json(a1), 409)
        .await;

    // An agent for a1, on a checkout of the config repository.
    let checkout = dir.join("a1-checkout");
    origin.clone_to(&checkout);
    let config = dir.join("a1.toml");
    std::fs::write(
        &config,
        "[commands]\nswitch = [\"sh\", \"-c\", \"echo switching; echo oops >&2\"]\n\
         test = [\"sh\", \"-c\", \"sleep 30\"]\n",
    )
    .unwrap();
    let mut agent = spawn_agent_with(
        &server,
        "a1",
        created["agent_token"].as_str().unwrap(),
        &dir.join("a1-state"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--repo-dir",
            checkout.to_str().unwrap(),
            "--branch",
            "main",
        ],
    );
    r.wait("/api/hosts", "a1 online", |h| h[0]["online"] == true)
        .await;
    r.call("GET", hosts, hosts, Session, Body::None, 200).await;

    // Commands: run, history, detail, log, stop, unlock, refresh, bulk.
    let commands = "/api/hosts/{id}/commands";
    let run = |command: &str| Body::Json(json!({"command": command}));
    let switch = r
        .call(
            "POST",
            "/api/hosts/a1/commands",
            commands,
            Session,
            run("switch"),
            202,
        )
        .await;
    let switch = switch["command_id"].as_str().unwrap().to_owned();
    r.wait_command(&switch).await;
    r.call(
        "POST",
        "/api/hosts/a1/commands",
        commands,
        Session,
        run("reboot"),
        422,
    )
    .await;
    r.call(
        "POST",
        "/api/hosts/nohost/commands",
        commands,
        Session,
        run("pull"),
        404,
    )
    .await;
    r.call(
        "GET",
        "/api/hosts/a1/commands?limit=5",
        commands,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "GET",
        "/api/hosts/nohost/commands",
        commands,
        Session,
        Body::None,
        404,
    )
    .await;
    let detail = "/api/commands/{id}";
    r.call(
        "GET",
        &format!("/api/commands/{switch}"),
        detail,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "GET",
        "/api/commands/nocommand",
        detail,
        Session,
        Body::None,
        404,
    )
    .await;
    let log = "/api/commands/{id}/log";
    r.call(
        "GET",
        &format!("/api/commands/{switch}/log"),
        log,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "GET",
        "/api/commands/nocommand/log",
        log,
        Session,
        Body::None,
        404,
    )
    .await;
    let test = r
        .call(
            "POST",
            "/api/hosts/a1/commands",
            commands,
            Session,
            run("test"),
            202,
        )
        .await;
    r.call(
        "POST",
        "/api/hosts/a1/commands",
        commands,
        Session,
        run("pull"),
        409,
    )
    .await;
    let stop = "/api/hosts/{id}/stop";
    r.wait("/api/hosts", "test running", |h| {
        h[0]["pending_command"]["command"] == "test"
    })
    .await;
    r.call("POST", "/api/hosts/a1/stop", stop, Session, Body::None, 202)
        .await;
    r.wait_command(test["command_id"].as_str().unwrap()).await;
    r.wait("/api/hosts", "a1 idle", |h| {
        h[0]["pending_command"].is_null()
    })
    .await;
    r.call("POST", "/api/hosts/a1/stop", stop, Session, Body::None, 409)
        .await;
    let unlock = "/api/hosts/{id}/unlock";
    r.call(
        "POST",
        "/api/hosts/a1/unlock",
        unlock,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "POST",
        "/api/hosts/nohost/unlock",
        unlock,
        Session,
        Body::None,
        404,
    )
    .await;
    let refresh = "/api/hosts/{id}/refresh";
    r.call(
        "POST",
        "/api/hosts/a1/refresh",
        refresh,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "POST",
        "/api/hosts/nohost/refresh",
        refresh,
        Session,
        Body::None,
        404,
    )
    .await;
    let metrics = "/api/hosts/{id}/metrics";
    let history = r
        .call(
            "GET",
            "/api/hosts/a1/metrics?range=1h",
            metrics,
            Session,
            Body::None,
            200,
        )
        .await;
    assert_eq!(history["step_s"], 60, "{history}");
    for (path, status) in [
        ("/api/hosts/a1/metrics?range=5y", 422),
        ("/api/hosts/a1/metrics", 422),
        ("/api/hosts/nohost/metrics?range=24h", 404),
    ] {
        r.call("GET", path, metrics, Session, Body::None, status)
            .await;
    }
    // Both kinds of result in one answer: a1 queued, nohost refused.
    let bulk = r
        .call(
            "POST",
            "/api/bulk",
            "/api/bulk",
            Session,
            Body::Json(json!({"command": "pull", "host_ids": ["a1", "nohost"]})),
            200,
        )
        .await;
    assert!(bulk["results"][0]["command_id"].is_string(), "{bulk}");
    assert!(bulk["results"][1]["code"].is_string(), "{bulk}");
    r.wait_command(bulk["results"][0]["command_id"].as_str().unwrap())
        .await;
    r.wait("/api/hosts", "a1 idle", |h| {
        h[0]["pending_command"].is_null()
    })
    .await;

    // The desired state, the flake.lock PR and a deploy of it.
    r.wait("/api/desired", "the desired state read", |d| {
        d["commit"].is_string()
    })
    .await;
    r.call(
        "GET",
        "/api/desired",
        "/api/desired",
        Session,
        Body::None,
        200,
    )
    .await;
    let pr = json!({"number": 7, "title": "flake.lock: update nixpkgs", "labels": ["automated"],
                    "head": "update-flake-lock", "mergeable": true});
    let control = reqwest::Client::new()
        .post(gh.url("/_control/pr"))
        .json(&pr)
        .send()
        .await
        .unwrap();
    assert!(control.status().is_success());
    r.call(
        "POST",
        "/api/pending-pr/check",
        "/api/pending-pr/check",
        Session,
        Body::None,
        200,
    )
    .await;
    r.wait("/api/pending-pr", "PR 7 detected", |p| p["number"] == 7)
        .await;
    r.call(
        "GET",
        "/api/pending-pr",
        "/api/pending-pr",
        Session,
        Body::None,
        200,
    )
    .await;
    let deploy = json!({"pr_number": 7, "host_ids": ["a1"]});
    let job = r
        .call(
            "POST",
            "/api/deploy",
            "/api/deploy",
            Session,
            Body::Json(deploy.clone()),
            202,
        )
        .await;
    let job = job["job_id"].as_str().unwrap().to_owned();
    r.call(
        "POST",
        "/api/deploy",
        "/api/deploy",
        Session,
        Body::Json(deploy),
        409,
    )
    .await;
    let status = "/api/deploy/{id}";
    r.call(
        "GET",
        &format!("/api/deploy/{job}"),
        status,
        Session,
        Body::None,
        200,
    )
    .await;
    let done = r
        .wait(&format!("/api/deploy/{job}"), "the deploy ends", |d| {
            d["active"].is_null() || d["active"] == false
        })
        .await;
    assert_eq!(done["phase"], "done", "{done:#}");
    r.call(
        "GET",
        &format!("/api/deploy/{job}"),
        status,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call("GET", "/api/deploy/nojob", status, Session, Body::None, 404)
        .await;
    // The history names the job with the commands it ran on its host (pull, then switch).
    let list = r
        .call(
            "GET",
            "/api/deploys?limit=5",
            "/api/deploys",
            Session,
            Body::None,
            200,
        )
        .await;
    assert_eq!(list[0]["job"]["job_id"], job, "{list:#}");
    let kinds: Vec<_> = list[0]["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| (c["host_id"].clone(), c["record"]["command"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [(json!("a1"), json!("pull")), (json!("a1"), json!("switch"))],
        "{list:#}"
    );
    r.call(
        "POST",
        &format!("/api/deploy/{job}/cancel"),
        "/api/deploy/{id}/cancel",
        Session,
        Body::None,
        409,
    )
    .await;
    // A deploy without preview never waits for a confirmation: only refusals here (a
    // preview needs a real Nix build; tests/nix_fleet.rs confirms one).
    r.call(
        "POST",
        &format!("/api/deploy/{job}/confirm"),
        "/api/deploy/{id}/confirm",
        Session,
        Body::None,
        409,
    )
    .await;
    r.call(
        "POST",
        "/api/deploy/nojob/confirm",
        "/api/deploy/{id}/confirm",
        Session,
        Body::None,
        404,
    )
    .await;

    // A host that enrolled itself, approved; a host without agent, its token and removal.
    let _e1 = registered_agent(&server, ENROLL, "e1").await;
    let approve = "/api/hosts/{id}/approve";
    r.call(
        "POST",
        "/api/hosts/e1/approve",
        approve,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "POST",
        "/api/hosts/nohost/approve",
        approve,
        Session,
        Body::None,
        404,
    )
    .await;
    r.call(
        "POST",
        hosts,
        hosts,
        Session,
        Body::Json(json!({"hostname": "b1", "host_type": "macos", "location": "attic"})),
        201,
    )
    .await;
    let token = "/api/hosts/{id}/token";
    r.call(
        "POST",
        "/api/hosts/b1/token",
        token,
        Session,
        Body::None,
        200,
    )
    .await;
    r.call(
        "POST",
        "/api/hosts/nohost/token",
        token,
        Session,
        Body::None,
        404,
    )
    .await;
    // An edit: tags, a location cleared; a bad tag refused.
    let edited = r
        .call(
            "PATCH",
            "/api/hosts/b1",
            "/api/hosts/{id}",
            Session,
            Body::Json(json!({"tags": ["web", "canary"], "location": null, "device_type": "vm"})),
            200,
        )
        .await;
    assert_eq!(edited["tags"], json!(["canary", "web"]));
    r.call(
        "PATCH",
        "/api/hosts/b1",
        "/api/hosts/{id}",
        Session,
        Body::Json(json!({"tags": ["Not A Tag"]})),
        422,
    )
    .await;
    r.call(
        "PATCH",
        "/api/hosts/nohost",
        "/api/hosts/{id}",
        Session,
        Body::Json(json!({"tags": []})),
        404,
    )
    .await;
    r.call(
        "DELETE",
        "/api/hosts/b1",
        "/api/hosts/{id}",
        Session,
        Body::None,
        204,
    )
    .await;
    r.call(
        "DELETE",
        "/api/hosts/b1",
        "/api/hosts/{id}",
        Session,
        Body::None,
        404,
    )
    .await;

    // The audit log, the account.
    let audit = r
        .call(
            "GET",
            "/api/audit?limit=50&action=host.add",
            "/api/audit",
            Session,
            Body::None,
            200,
        )
        .await;
    assert!(!audit.as_array().unwrap().is_empty(), "{audit}");
    r.call("GET", "/api/audit", "/api/audit", Session, Body::None, 200)
        .await;
    // API tokens: made, listed (own and everyone's), refused when malformed, revoked.
    let tokens = "/api/tokens";
    let made = r
        .call(
            "POST",
            tokens,
            tokens,
            Session,
            Body::Json(json!({"name": "ci", "role": "operator", "expires_in_days": 30})),
            201,
        )
        .await;
    let token_id = made["id"].as_str().unwrap().to_owned();
    r.call(
        "POST",
        tokens,
        tokens,
        Session,
        Body::Json(json!({"name": "ci", "role": "operator"})),
        409,
    )
    .await;
    r.call(
        "POST",
        tokens,
        tokens,
        Session,
        Body::Json(json!({"name": "bad", "role": "operator", "expires_in_days": 0})),
        422,
    )
    .await;
    let listed = r
        .call("GET", tokens, tokens, Session, Body::None, 200)
        .await;
    assert_eq!(listed[0]["name"], "ci", "{listed}");
    r.call(
        "GET",
        "/api/tokens?all=true",
        tokens,
        Session,
        Body::None,
        200,
    )
    .await;
    let one = "/api/tokens/{id}";
    r.call(
        "DELETE",
        &format!("/api/tokens/{token_id}"),
        one,
        Session,
        Body::None,
        204,
    )
    .await;
    r.call(
        "DELETE",
        &format!("/api/tokens/{token_id}"),
        one,
        Session,
        Body::None,
        404,
    )
    .await;
    // Notifications: a target, its test and log, a rule; both deleted.
    let targets = "/api/notifications/targets";
    let target = r
        .call(
            "POST",
            targets,
            targets,
            Session,
            Body::Json(
                json!({"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}),
            ),
            201,
        )
        .await;
    let target_id = target["id"].as_str().unwrap().to_owned();
    r.call(
        "POST",
        targets,
        targets,
        Session,
        Body::Json(json!({"name": "bad", "kind": "webhook", "url": "ftp://x"})),
        422,
    )
    .await;
    r.call("GET", targets, targets, Session, Body::None, 200)
        .await;
    r.call(
        "POST",
        &format!("{targets}/{target_id}/test"),
        "/api/notifications/targets/{id}/test",
        Session,
        Body::None,
        202,
    )
    .await;
    r.call(
        "GET",
        &format!("{targets}/{target_id}/deliveries"),
        "/api/notifications/targets/{id}/deliveries",
        Session,
        Body::None,
        200,
    )
    .await;
    let rules = "/api/notifications/rules";
    let rule = r
        .call(
            "POST",
            rules,
            rules,
            Session,
            Body::Json(json!({"event": "host_offline", "after_s": 60, "scope": {"tags": ["web"]}, "target_ids": [target_id]})),
            201,
        )
        .await;
    r.call("GET", rules, rules, Session, Body::None, 200).await;
    r.call(
        "DELETE",
        &format!("{rules}/{}", rule["id"].as_str().unwrap()),
        "/api/notifications/rules/{id}",
        Session,
        Body::None,
        204,
    )
    .await;
    r.call(
        "DELETE",
        &format!("{targets}/{target_id}"),
        "/api/notifications/targets/{id}",
        Session,
        Body::None,
        204,
    )
    .await;
    // The viewer's own colour theme: kept, and anything but system, light or dark refused.
    let theme = "/api/account/theme";
    let kept = r
        .call(
            "PUT",
            theme,
            theme,
            Session,
            Body::Json(json!({"theme": "dark"})),
            200,
        )
        .await;
    assert_eq!(kept["theme"], "dark", "{kept}");
    r.call(
        "PUT",
        theme,
        theme,
        Session,
        Body::Json(json!({"theme": "purple"})),
        422,
    )
    .await;
    let reauth = "/api/account/reauth";
    r.call(
        "POST",
        reauth,
        reauth,
        Session,
        Body::Json(json!({"password": PASSWORD})),
        204,
    )
    .await;
    r.call(
        "POST",
        reauth,
        reauth,
        Session,
        Body::Json(json!({"password": "wrong-password"})),
        422,
    )
    .await;
    let setup = "/api/account/totp/setup";
    r.call(
        "POST",
        setup,
        setup,
        Session,
        Body::Json(json!({"password": PASSWORD})),
        200,
    )
    .await;
    let confirm = "/api/account/totp/confirm";
    r.call(
        "POST",
        confirm,
        confirm,
        Session,
        Body::Json(json!({"code": "000000"})),
        422,
    )
    .await;
    r.call(
        "POST",
        "/api/nothing-here",
        "/api/nothing-here",
        Session,
        Body::None,
        404,
    )
    .await;
    r.call(
        "POST",
        "/api/logout",
        "/api/logout",
        Session,
        Body::None,
        204,
    )
    .await;
    kill_child(&mut agent, "-TERM");

    // The not-found fallback is no documented route; everything else goes to openapi-core.
    r.exchanges.retain(|e| e["template"] != "/api/nothing-here");
    validate(&document, &r.exchanges);
}

/// Runs openapi-core over the exchanges; fails the test with its report.
fn validate(document: &Value, exchanges: &[Value]) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (doc_path, ex_path) = (
        out.join("openapi-served.json"),
        out.join("openapi-exchanges.json"),
    );
    std::fs::write(&doc_path, serde_json::to_string_pretty(document).unwrap()).unwrap();
    std::fs::write(&ex_path, serde_json::to_string_pretty(exchanges).unwrap()).unwrap();
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs openapi-core there)",
        python.display()
    );
    let run = std::process::Command::new(&python)
        .arg(root().join("scripts/openapi_check.py"))
        .args([&doc_path, &ex_path])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "responses that do not match the OpenAPI document (the exchanges are in {}):\n{report}{}",
        ex_path.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains(", 0 failures"), "{report}");
}
