//! Processes: running a command to the end, reading a child's first line, and what
//! `/proc` (Linux) says of a pid.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};

/// Runs `cmd` to the end; its trimmed stdout. Panics, with its stderr, when it cannot be
/// started or fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?} {:?}: {}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The first line `child` prints (its stdout must be piped), without the line break;
/// empty when it closes its stdout first. Blocks until then.
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("a piped stdout"))
        .read_line(&mut line)
        .expect("reading the child's stdout");
    line.trim_end().to_owned()
}

/// Whether process `pid` has exited: gone from `/proc`, or a zombie waiting to be reaped.
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has exited; it only waits to be reaped.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The pids a test script wrote to `path`, one a line (none when it does not exist yet).
pub fn pids_in(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("a pid per line"))
        .collect()
}
