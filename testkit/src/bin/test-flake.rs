//! test-flake: writes the offline Nix test flake of `testkit::nix` into a directory, for
//! tests that are not written in Rust (the Playwright suite, the benches). One binary, so
//! the flake is defined once.

use clap::Parser;
use std::path::PathBuf;
use testkit::nix::{health_script, FlakeHost, TestFlake};

#[derive(Parser)]
#[command(
    name = "test-flake",
    about = "Write (and optionally commit) nixdeck's offline Nix test flake"
)]
struct Cli {
    /// The flake's directory: created, and made a git repository with --commit.
    dir: PathBuf,
    /// A host of the flake (repeat for more); all hosts share the settings below.
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    /// The systems' version (`nixos-system-<host>-<version>`).
    #[arg(long)]
    version: String,
    /// A package in every system's closure, as NAME=VERSION (repeat for more).
    #[arg(long = "package", value_parser = parse_package)]
    packages: Vec<(String, String)>,
    /// The kernel version (a change means reboot needed).
    #[arg(long, default_value = "6.6.1")]
    kernel: String,
    /// Write a host test per host (`hosts/<host>/tests/10-healthy.sh`) that passes while
    /// `<DIR>/<host>` exists.
    #[arg(long)]
    health_dir: Option<PathBuf>,
    /// Commit everything with this message (a new repository when DIR has none).
    #[arg(long)]
    commit: Option<String>,
}

fn parse_package(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: expected NAME=VERSION"))
}

fn main() {
    let cli = Cli::parse();
    let hosts: Vec<FlakeHost> = cli
        .hosts
        .iter()
        .map(|name| {
            let mut host = FlakeHost::new(name, &cli.version).kernel(&cli.kernel);
            if !cli.packages.is_empty() {
                host.packages = cli.packages.clone();
            }
            host
        })
        .collect();
    std::fs::create_dir_all(&cli.dir).expect("creating the flake's directory");
    let fresh = cli.commit.is_some() && !cli.dir.join(".git").exists();
    if fresh {
        testkit::git::git(&cli.dir, &["init", "-q", "-b", "main"]);
    }
    let flake = TestFlake::open(&cli.dir);
    flake.write(&hosts);
    if let Some(health) = &cli.health_dir {
        for host in &cli.hosts {
            let path = format!("hosts/{host}/tests/10-healthy.sh");
            flake.write_file(&path, &health_script(health, host), true);
        }
    }
    if let Some(message) = &cli.commit {
        println!("{}", flake.commit_all(message));
    }
}
