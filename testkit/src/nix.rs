//! A real, offline Nix flake for tests: hosts whose NixOS, nix-darwin and Home Manager
//! configurations build in well under a second with Debian's Nix 2.8 (`nix-bin`) and
//! any newer Nix, with no network, daemon or `nixbld` group.
//!
//! ```no_run
//! use testkit::nix::{require_nix, nix_env, FlakeHost, TestFlake};
//! require_nix();
//! let dir = tempfile::tempdir().unwrap();
//! let flake = TestFlake::new(&dir.path().join("repo"), &[FlakeHost::new("web-1", "26.05.1")]);
//! // Later: a new version of the host; the checkout's new head.
//! let sha = flake.commit(&[FlakeHost::new("web-1", "26.05.2").package("zlib", "1.3")], "bump");
//! // Every nix process the test starts (the agent included) needs `nix_env()`.
//! ```
//!
//! For each host the flake has
//! - `nixosConfigurations.<host>.config.system.build.toplevel`,
//! - `darwinConfigurations.<host>.system`,
//! - `homeConfigurations.<host>.activationPackage`;
//!
//! each builds a "system" (`nixos-system-<host>-<version>`, `darwin-system-…`,
//! `home-manager-generation-…`) that holds `bin/switch-to-configuration` and `activate`
//! (both the host's [`Activation`] behaviour), a `kernel` symlink into a
//! `linux-<kernel>` derivation (so a kernel change means reboot_needed), and references
//! to one derivation per package (`<name>-<version>`), so `nix store diff-closures`
//! lists exactly the packages changed between two versions.

use crate::git::git;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Nix settings every nix process in a test needs on a machine without network,
/// daemon, or `nixbld` group. Tests only: never the product's defaults.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =\n";

/// The environment pair to give every process that runs nix (`cmd.envs(nix_env())`).
pub fn nix_env() -> [(&'static str, &'static str); 1] {
    [("NIX_CONFIG", NIX_CONFIG)]
}

/// Panics with what to do when `nix` cannot run here: Nix tests fail rather than skip,
/// so a machine without Nix never passes them silently.
pub fn require_nix() {
    let ok = Command::new("nix")
        .arg("--version")
        .envs(nix_env())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "these tests need a real `nix` (Nix 2.8 or newer) on PATH; run scripts/setup.sh, \
         which installs Debian's nix-bin"
    );
}

/// What a host's activation entry point does when run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Prints `activating <host> <version> (<first argument>)` and succeeds.
    Plain,
    /// Prints `activation of <host> <version> failed` to stderr and exits 1.
    Fail,
    /// Prints like `Plain`, then sends SIGKILL to the pid written in `pid_file`: it
    /// stands for a switch that breaks the agent's link. The path is baked into this
    /// test flake's activation script only, so no real configuration can do this.
    KillPidIn(PathBuf),
}

/// One host of the test flake.
#[derive(Clone, Debug)]
pub struct FlakeHost {
    pub name: String,
    /// The system's version: `nixos-system-<name>-<version>`.
    pub version: String,
    /// (name, version) of each package in the system's closure.
    pub packages: Vec<(String, String)>,
    /// The kernel's version: the `kernel` link points into `linux-<kernel>`.
    pub kernel: String,
    pub activation: Activation,
}

impl FlakeHost {
    /// A host with one package (`openssl-3.0.14`), kernel 6.6.1 and a plain activation.
    pub fn new(name: &str, version: &str) -> FlakeHost {
        FlakeHost {
            name: name.to_owned(),
            version: version.to_owned(),
            packages: vec![("openssl".to_owned(), "3.0.14".to_owned())],
            kernel: "6.6.1".to_owned(),
            activation: Activation::Plain,
        }
    }

    /// Adds a package, or sets the version of one already there.
    pub fn package(mut self, name: &str, version: &str) -> FlakeHost {
        match self.packages.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = version.to_owned(),
            None => self.packages.push((name.to_owned(), version.to_owned())),
        }
        self
    }

    pub fn without_package(mut self, name: &str) -> FlakeHost {
        self.packages.retain(|(n, _)| n != name);
        self
    }

    pub fn kernel(mut self, version: &str) -> FlakeHost {
        self.kernel = version.to_owned();
        self
    }

    pub fn activation(mut self, activation: Activation) -> FlakeHost {
        self.activation = activation;
        self
    }
}

/// Nix's name for this machine's platform, as derivations need it.
pub fn system() -> String {
    let os = if cfg!(target_os = "macos") {
        "darwin"
    } else {
        "linux"
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// Names and versions go into Nix strings and store paths unquoted.
fn check_plain(what: &str) {
    assert!(
        !what.is_empty()
            && what
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b)),
        "`{what}`: only letters, digits and ._-+ in the test flake's names and versions"
    );
}

/// The activation script's text (a Nix `''` string: no `${` may appear unescaped).
fn script(host: &FlakeHost) -> String {
    let (name, version) = (&host.name, &host.version);
    match &host.activation {
        Activation::Plain => format!("#!/bin/sh\necho \"activating {name} {version} ($1)\"\n"),
        Activation::Fail => {
            format!("#!/bin/sh\necho \"activation of {name} {version} failed\" >&2\nexit 1\n")
        }
        Activation::KillPidIn(pid_file) => {
            let pid_file = pid_file.display().to_string();
            assert!(
                !pid_file.contains(['\'', '$', '"', '\\']),
                "a plain pid file path"
            );
            format!(
                "#!/bin/sh\necho \"activating {name} {version} ($1); killing the agent\"\n\
                 kill -9 \"$(/bin/cat '{pid_file}')\"\n"
            )
        }
    }
}

/// The flake.nix for these hosts.
pub fn flake_nix(hosts: &[FlakeHost]) -> String {
    let mut configs = String::new();
    for host in hosts {
        check_plain(&host.name);
        check_plain(&host.version);
        check_plain(&host.kernel);
        let packages: Vec<String> = host
            .packages
            .iter()
            .map(|(n, v)| {
                check_plain(n);
                check_plain(v);
                format!("(pkg \"{n}\" \"{v}\")")
            })
            .collect();
        let args = format!(
            "\"{}\" \"{}\" \"{}\" [ {} ] ''\n{}''",
            host.name,
            host.version,
            host.kernel,
            packages.join(" "),
            script(host)
        );
        configs.push_str(&format!(
            "    nixosConfigurations.\"{n}\".config.system.build.toplevel = system \"nixos-system-{n}\" {args};\n\
             \x20   darwinConfigurations.\"{n}\".system = system \"darwin-system-{n}\" {args};\n\
             \x20   homeConfigurations.\"{n}\".activationPackage = system \"home-manager-generation-{n}\" {args};\n",
            n = host.name,
        ));
    }
    format!(
        r#"# Written by testkit::nix: an offline test flake (no inputs, /bin/sh builders).
{{
  outputs = {{ self }}: let
    sh = name: script: derivation {{
      inherit name; system = "{system}";
      builder = "/bin/sh"; args = [ "-c" script ];
    }};
    pkg = name: version: sh "${{name}}-${{version}}"
      "/bin/mkdir -p $out; echo ${{name}} ${{version}} > $out/version";
    linux = version: sh "linux-${{version}}"
      "/bin/mkdir -p $out; echo ${{version}} > $out/bzImage";
    # A flake.lock update changes every system, as a new nixpkgs would: the lock's hash
    # goes into each system's derivation (Nix ignores lock fields it does not know).
    lock = if builtins.pathExists ./flake.lock
      then builtins.hashFile "sha256" ./flake.lock else "none";
    system = prefix: host: version: kernel: packages: activate: let
      entry = builtins.toFile "activate" activate;
    in sh "${{prefix}}-${{version}}" ''
      # lock ${{lock}}
      /bin/mkdir -p $out/bin
      echo ${{toString packages}} > $out/packages
      /bin/ln -s ${{linux kernel}}/bzImage $out/kernel
      /bin/cp ${{entry}} $out/bin/switch-to-configuration
      /bin/cp ${{entry}} $out/activate
      /bin/chmod +x $out/bin/switch-to-configuration $out/activate
    '';
  in {{
{configs}  }};
}}
"#,
        system = system(),
    )
}

/// The test flake in a git repository (Nix reads a flake in git from its index and
/// commits only).
pub struct TestFlake {
    pub dir: PathBuf,
}

impl TestFlake {
    /// A new repository in `dir` (created) with one commit of the flake for `hosts`.
    pub fn new(dir: &Path, hosts: &[FlakeHost]) -> TestFlake {
        std::fs::create_dir_all(dir).unwrap();
        git(dir, &["init", "-q", "-b", "main"]);
        let flake = TestFlake {
            dir: dir.to_owned(),
        };
        flake.commit(hosts, "test flake");
        flake
    }

    /// Rewrites flake.nix for `hosts` and commits it; the new commit's sha.
    pub fn commit(&self, hosts: &[FlakeHost], message: &str) -> String {
        self.write(hosts);
        self.commit_all(message)
    }

    /// Writes a file (executable or not) and commits it with everything else; the sha.
    /// For `hosts/<host>/tests/<name>` scripts, or a broken flake.nix.
    pub fn commit_file(
        &self,
        path: &str,
        content: &str,
        executable: bool,
        message: &str,
    ) -> String {
        self.write_file(path, content, executable);
        self.commit_all(message)
    }

    /// An existing repository (one `TestFlake::new` made, or any git work tree).
    pub fn open(dir: &Path) -> TestFlake {
        TestFlake {
            dir: dir.to_owned(),
        }
    }

    /// Writes flake.nix for `hosts` without committing.
    pub fn write(&self, hosts: &[FlakeHost]) {
        std::fs::write(self.dir.join("flake.nix"), flake_nix(hosts)).unwrap();
    }

    /// Writes a file (executable or not) without committing.
    pub fn write_file(&self, path: &str, content: &str, executable: bool) {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Commits everything in the work tree; the new commit's sha.
    pub fn commit_all(&self, message: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// `<dir>#<attr>`, what `nix build` takes.
    pub fn installable(&self, attr: &str) -> String {
        format!("{}#{attr}", self.dir.display())
    }

    /// Builds `attr` of the flake as it is committed now; its store path.
    pub fn build(&self, attr: &str) -> String {
        let json = crate::proc::run(
            Command::new("nix")
                .args(["build", "--no-link", "--json", &self.installable(attr)])
                .envs(nix_env()),
        );
        let value: serde_json::Value = serde_json::from_str(&json).expect("nix build --json");
        value[0]["outputs"]["out"]
            .as_str()
            .expect("an output path")
            .to_owned()
    }
}

/// A host test for `hosts/<host>/tests/`: it passes while the file `<dir>/<host>` exists,
/// so a test can make one host of a fleet unhealthy without a new commit.
pub fn health_script(dir: &Path, host: &str) -> String {
    let flag = dir.join(host).display().to_string();
    assert!(!flag.contains(['\'', '\\']), "a plain health file path");
    format!(
        "#!/bin/sh\n[ -e '{flag}' ] && exit 0\necho '{host} is unhealthy: {flag} is missing' >&2\nexit 1\n"
    )
}

/// `nixosConfigurations.<host>.config.system.build.toplevel`.
pub fn nixos_attr(host: &str) -> String {
    format!("nixosConfigurations.{host}.config.system.build.toplevel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flake_builds_and_diffs_offline() {
        require_nix();
        let tmp = tempfile::tempdir().unwrap();
        let v1 = FlakeHost::new("web-1", "26.05.1").package("curl", "8.1");
        let flake = TestFlake::new(&tmp.path().join("repo"), &[v1]);
        let old = flake.build(&nixos_attr("web-1"));
        let v2 = FlakeHost::new("web-1", "26.05.2")
            .package("openssl", "3.0.15")
            .package("zlib", "1.3")
            .kernel("6.6.2");
        flake.commit(&[v2], "v2");
        let new = flake.build(&nixos_attr("web-1"));
        assert!(new.ends_with("-nixos-system-web-1-26.05.2"), "{new}");
        assert!(Path::new(&new).join("bin/switch-to-configuration").exists());
        assert!(Path::new(&new).join("activate").exists());
        assert!(std::fs::read_link(Path::new(&new).join("kernel"))
            .unwrap()
            .display()
            .to_string()
            .contains("linux-6.6.2"));
        let diff = crate::proc::run(
            Command::new("nix")
                .args(["store", "diff-closures", &old, &new])
                .envs(nix_env()),
        );
        for want in [
            "openssl: 3.0.14 → 3.0.15",
            "zlib: ∅ → 1.3",
            "curl: 8.1 → ∅",
            "linux: 6.6.1 → 6.6.2",
        ] {
            assert!(diff.contains(want), "{want} missing in:\n{diff}");
        }
        let out = crate::proc::run(Command::new(format!("{new}/activate")).arg("switch"));
        assert_eq!(out, "activating web-1 26.05.2 (switch)");
        let darwin = flake.build("darwinConfigurations.web-1.system");
        assert!(darwin.ends_with("-darwin-system-web-1-26.05.2"), "{darwin}");
        let hm = flake.build("homeConfigurations.web-1.activationPackage");
        assert!(hm.contains("home-manager-generation-web-1"), "{hm}");
    }
}
