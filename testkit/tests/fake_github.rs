//! Drives the real fake-github binary over HTTP against a throwaway git repository, and checks
//! the git side with the git CLI, as hosts would see it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::fake_github::FakeGithub;
use testkit::git::git;

const OLD_LOCK: &str = "{\n  \"nodes\": {\n    \"nixpkgs\": {\n      \"locked\": {\n        \"rev\": \"1111111111111111111111111111111111111111\",\n        \"narHash\": \"sha256-old\"\n      }\n    }\n  },\n  \"version\": 7\n}\n";
const NEW_LOCK: &str = "{\n  \"nodes\": {\n    \"nixpkgs\": {\n      \"locked\": {\n        \"rev\": \"2222222222222222222222222222222222222222\",\n        \"narHash\": \"sha256-new\"\n      }\n    }\n  },\n  \"version\": 7\n}\n";

/// main has flake.lock; `update-flake-lock` changes it; `conflicting` changes it differently.
fn make_repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q", "-b", "main"]);
    std::fs::write(d.join("flake.lock"), OLD_LOCK).unwrap();
    std::fs::write(d.join("flake.nix"), "{ }\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "initial"]);
    git(d, &["checkout", "-q", "-b", "update-flake-lock"]);
    std::fs::write(d.join("flake.lock"), NEW_LOCK).unwrap();
    git(d, &["commit", "-q", "-am", "flake.lock: update nixpkgs"]);
    git(d, &["checkout", "-q", "-b", "conflicting", "main"]);
    std::fs::write(d.join("flake.lock"), OLD_LOCK.replace("old", "other")).unwrap();
    git(d, &["commit", "-q", "-am", "flake.lock: something else"]);
    git(d, &["checkout", "-q", "main"]);
    tmp
}

struct Server {
    gh: FakeGithub,
    http: reqwest::Client,
}

fn start(repo: &Path, extra: &[&str]) -> Server {
    // Quiet by default; FAKE_GITHUB_LOG=1 shows the request log when debugging.
    let log = if std::env::var_os("FAKE_GITHUB_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    Server {
        gh: FakeGithub::start(
            Path::new(env!("CARGO_BIN_EXE_fake-github")),
            repo,
            "o",
            "r",
            extra,
            log,
        ),
        http: reqwest::Client::new(),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        self.gh.url(path)
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }
    async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
    async fn control(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, body).await
    }
    async fn merge(&self, n: u64, body: Value) -> reqwest::Response {
        self.send(
            reqwest::Method::PUT,
            &format!("/repos/o/r/pulls/{n}/merge"),
            body,
        )
        .await
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn api_matches_the_git_repository() {
    let repo = make_repo();
    let d = repo.path();
    let main0 = git(d, &["rev-parse", "main"]);
    let branch = git(d, &["rev-parse", "update-flake-lock"]);
    let s = start(d, &[]);

    // Commits: the branch head, then a conditional hit.
    let r = s.get("/repos/o/r/commits/update-flake-lock").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "4999");
    assert!(header(&r, "content-type").starts_with("application/json"));
    let etag = header(&r, "etag").to_owned();
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["sha"], branch.as_str());
    assert_eq!(
        c["html_url"],
        format!("{}/o/r/commit/{branch}", s.gh.base).as_str()
    );
    assert_eq!(c["commit"]["message"], "flake.lock: update nixpkgs");
    assert!(c["commit"]["committer"]["date"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let r = s
        .http
        .get(s.url("/repos/o/r/commits/update-flake-lock"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = s.get("/repos/o/r/commits/no-such-branch").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "No commit found for SHA: no-such-branch");

    // Contents: base64 wrapped like GitHub, decoding to the exact blob at each ref.
    for (r, want) in [("main", OLD_LOCK), ("update-flake-lock", NEW_LOCK)] {
        let f = s
            .get_json(&format!("/repos/o/r/contents/flake.lock?ref={r}"))
            .await;
        assert_eq!(f["type"], "file");
        assert_eq!(f["encoding"], "base64");
        assert_eq!(
            f["sha"],
            git(d, &["rev-parse", &format!("{r}:flake.lock")]).as_str()
        );
        assert_eq!(f["size"], want.len());
        let content = f["content"].as_str().unwrap();
        assert!(content.lines().all(|l| l.len() <= 60) && content.lines().count() > 1);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(content.replace('\n', ""))
            .unwrap();
        assert_eq!(decoded, want.as_bytes());
    }
    let r = s.get("/repos/o/r/contents/flake.lock").await; // ref defaults to main
    let etag = header(&r, "etag").to_owned();
    let r = s
        .http
        .get(s.url("/repos/o/r/contents/flake.lock"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        s.get("/repos/o/r/contents/nope.txt").await.status(),
        StatusCode::NOT_FOUND
    );

    // A PR created through control shows up in the list (without mergeable) and in detail.
    let r = s
        .control(
            "/_control/pr",
            json!({"title": "flake.lock: update", "labels": ["dependencies"], "head": "update-flake-lock"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["number"], 1);
    let list = s.get_json("/repos/o/r/pulls?state=open&per_page=10").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["head"]["sha"], branch.as_str());
    assert_eq!(list[0]["labels"][0]["name"], "dependencies");
    assert!(list[0].get("mergeable").is_none());
    let pr = s.get_json("/repos/o/r/pulls/1").await;
    assert_eq!(pr["mergeable"], true);
    assert_eq!(pr["mergeable_state"], "clean");
    assert_eq!(pr["merged"], false);

    // Merging really moves main to a merge commit of both heads carrying the new lock.
    let r = s
        .merge(1, json!({"merge_method": "merge", "sha": branch}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["merged"], true);
    let merge = git(d, &["rev-parse", "main"]);
    assert_eq!(m["sha"], merge.as_str());
    assert_eq!(git(d, &["rev-parse", "main^1"]), main0);
    assert_eq!(git(d, &["rev-parse", "main^2"]), branch);
    assert_eq!(git(d, &["show", "main:flake.lock"]), NEW_LOCK.trim_end());
    let pr = s.get_json("/repos/o/r/pulls/1").await;
    assert_eq!(
        (pr["state"].as_str(), pr["merged"].as_bool()),
        (Some("closed"), Some(true))
    );
    assert_eq!(s.get_json("/repos/o/r/pulls").await, json!([]));
    assert_eq!(
        s.merge(1, json!({})).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );

    // A PR configured not mergeable is refused and leaves main alone.
    let r = s
        .control(
            "/_control/pr",
            json!({"title": "nope", "head": "conflicting", "mergeable": false}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.merge(2, json!({"merge_method": "squash"})).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Pull Request is not mergeable"
    );
    assert_eq!(git(d, &["rev-parse", "main"]), merge);

    // Rate limit: exactly one 403 with GitHub's headers, then back to normal.
    let r = s
        .control("/_control/fail", json!({"mode": "rate_limit"}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.get("/repos/o/r/commits/main").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(header(&r, "x-ratelimit-reset").parse::<u64>().is_ok());
    let r = s.get("/repos/o/r/commits/main").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(header(&r, "x-ratelimit-remaining"), "0");

    let st = s.get_json("/_control/state").await;
    assert_eq!(st["head"], merge.as_str());
    assert_eq!(st["conditional_hits"], 2);
    assert_eq!(st["requests"]["GET /repos/o/r/commits/{ref}"], 5);
    assert_eq!(st["requests"]["PUT /repos/o/r/pulls/{number}/merge"], 3);
    assert_eq!(st["prs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn auth_outages_conflicts_and_delayed_merge() {
    let repo = make_repo();
    let d = repo.path();
    let s = start(d, &["--token", "s3cret"]);
    let path = "/repos/o/r/commits/main";
    let with = |auth: &str| s.http.get(s.url(path)).header("Authorization", auth).send();

    let r = s.get(path).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Bad credentials"
    );
    assert_eq!(
        with("Bearer wrong").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        with("Bearer s3cret").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(with("token s3cret").await.unwrap().status(), StatusCode::OK);
    // Control and unknown routes need no token; unknown ones are GitHub-style 404s.
    let r = s.get("/nowhere").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().contains_key("x-ratelimit-reset"));
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Not Found");

    s.control(
        "/_control/fail",
        json!({"mode": "server_error", "count": 2}),
    )
    .await;
    for want in [
        StatusCode::BAD_GATEWAY,
        StatusCode::BAD_GATEWAY,
        StatusCode::OK,
    ] {
        assert_eq!(with("Bearer s3cret").await.unwrap().status(), want);
    }
    s.control("/_control/fail", json!({"mode": "down"})).await;
    for _ in 0..2 {
        assert_eq!(
            with("Bearer s3cret").await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    s.control("/_control/fail", json!({"mode": "none"})).await;
    assert_eq!(
        with("Bearer s3cret").await.unwrap().status(),
        StatusCode::OK
    );

    // Merge control: forbidden, then delayed (the response precedes the ref move).
    let auth_merge = |n: u64| {
        s.http
            .put(s.url(&format!("/repos/o/r/pulls/{n}/merge")))
            .header("Authorization", "Bearer s3cret")
            .json(&json!({"merge_method": "squash"}))
            .send()
    };
    s.control(
        "/_control/pr",
        json!({"title": "lock", "head": "update-flake-lock"}),
    )
    .await;
    s.control(
        "/_control/pr",
        json!({"title": "other", "head": "conflicting"}),
    )
    .await;
    s.control("/_control/settings", json!({"merge_forbidden": true}))
        .await;
    assert_eq!(auth_merge(1).await.unwrap().status(), StatusCode::FORBIDDEN);
    s.control(
        "/_control/settings",
        json!({"merge_forbidden": false, "merge_delay_ms": 1000}),
    )
    .await;
    let main0 = git(d, &["rev-parse", "main"]);
    let r = auth_merge(1).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sha = r.json::<Value>().await.unwrap()["sha"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        git(d, &["rev-parse", "main"]),
        main0,
        "moved before the delay"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while git(d, &["rev-parse", "main"]) != sha {
        assert!(
            Instant::now() < deadline,
            "main never reached the merge commit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Squash: one parent, the old main.
    assert_eq!(git(d, &["rev-parse", "main^1"]), main0);
    assert_eq!(git(d, &["show", "main:flake.lock"]), NEW_LOCK.trim_end());

    // "conflicting" is configured mergeable but really conflicts now: refused, main unmoved.
    assert_eq!(
        auth_merge(2).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(git(d, &["rev-parse", "main"]), sha);
}

#[tokio::test]
async fn pull_files_authors_forks_bases_and_a_head_that_moved() {
    let repo = make_repo();
    let d = repo.path();
    // `lock-and-more` changes flake.lock, adds hosts.nix and renames flake.nix.
    git(
        d,
        &["checkout", "-q", "-b", "lock-and-more", "update-flake-lock"],
    );
    std::fs::write(d.join("hosts.nix"), "{ a = 1; }\n").unwrap();
    git(d, &["mv", "flake.nix", "default.nix"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "more"]);
    git(d, &["branch", "staging", "main"]);
    git(d, &["checkout", "-q", "main"]);
    let s = start(d, &[]);
    let lock_head = git(d, &["rev-parse", "update-flake-lock"]);

    // Defaults: a bot's PR from a branch of the repository into main.
    s.control(
        "/_control/pr",
        json!({"number": 1, "head": "update-flake-lock"}),
    )
    .await;
    let pr = s.get_json("/repos/o/r/pulls/1").await;
    assert_eq!(
        pr["user"],
        json!({"login": "github-actions[bot]", "type": "Bot"})
    );
    assert_eq!(pr["head"]["repo"]["full_name"], "o/r");
    assert_eq!(pr["base"]["repo"]["full_name"], "o/r");
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["changed_files"], 1);
    let files = s.get_json("/repos/o/r/pulls/1/files").await;
    assert_eq!(files.as_array().unwrap().len(), 1, "{files:#}");
    assert_eq!(files[0]["filename"], "flake.lock");
    assert_eq!(files[0]["status"], "modified");
    assert!(files[0]["additions"].as_u64().unwrap() > 0);
    assert!(files[0].get("previous_filename").is_none());

    // A person's PR from a fork, changing more than the lock.
    let r = s
        .control(
            "/_control/pr",
            json!({"number": 2, "head": "lock-and-more", "author": "mallory", "head_repo": "mallory/r"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let pr = s.get_json("/repos/o/r/pulls/2").await;
    assert_eq!(pr["user"], json!({"login": "mallory", "type": "User"}));
    assert_eq!(pr["head"]["repo"]["full_name"], "mallory/r");
    assert_eq!(pr["head"]["label"], "mallory:lock-and-more");
    assert_eq!(pr["changed_files"], 3);
    let files = s.get_json("/repos/o/r/pulls/2/files?per_page=100").await;
    let mut names: Vec<(String, String)> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("default.nix".to_owned(), "renamed".to_owned()),
            ("flake.lock".to_owned(), "modified".to_owned()),
            ("hosts.nix".to_owned(), "added".to_owned()),
        ]
    );
    let renamed = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["status"] == "renamed")
        .unwrap();
    assert_eq!(renamed["previous_filename"], "flake.nix");
    let page2 = s
        .get_json("/repos/o/r/pulls/2/files?per_page=2&page=2")
        .await;
    assert_eq!(page2.as_array().unwrap().len(), 1);
    assert_eq!(
        s.get("/repos/o/r/pulls/9/files").await.status(),
        StatusCode::NOT_FOUND
    );

    // The merge names the head it expects: GitHub's 409 when the branch moved, and main
    // stays where it was.
    let main0 = git(d, &["rev-parse", "main"]);
    git(d, &["checkout", "-q", "update-flake-lock"]);
    std::fs::write(d.join("flake.lock"), NEW_LOCK.replace("new", "newer")).unwrap();
    git(d, &["commit", "-q", "-am", "flake.lock: again"]);
    git(d, &["checkout", "-q", "main"]);
    let moved = git(d, &["rev-parse", "update-flake-lock"]);
    let r = s.merge(1, json!({"sha": lock_head})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Head branch was modified. Review and try the merge again."
    );
    assert_eq!(git(d, &["rev-parse", "main"]), main0);
    let r = s.merge(1, json!({"sha": moved})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(git(d, &["rev-parse", "main^2"]), moved);
    // A merged PR still lists what it changed.
    let files = s.get_json("/repos/o/r/pulls/1/files").await;
    assert_eq!(files.as_array().unwrap().len(), 1, "{files:#}");

    // Bases: unknown ones are refused; a retargeted PR merges into its new base only.
    let r = s
        .control(
            "/_control/pr",
            json!({"number": 3, "head": "lock-and-more", "base": "nope"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    s.control(
        "/_control/pr",
        json!({"number": 3, "head": "lock-and-more"}),
    )
    .await;
    let r = s
        .send(
            reqwest::Method::PATCH,
            "/_control/pr/3",
            json!({"base": "staging"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let pr: Value = r.json().await.unwrap();
    assert_eq!(pr["base"]["ref"], "staging");
    let main1 = git(d, &["rev-parse", "main"]);
    let staging0 = git(d, &["rev-parse", "staging"]);
    assert_eq!(s.merge(3, json!({})).await.status(), StatusCode::OK);
    assert_eq!(git(d, &["rev-parse", "main"]), main1);
    assert_eq!(git(d, &["rev-parse", "staging^1"]), staging0);
}
