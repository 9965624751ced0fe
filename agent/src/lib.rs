//! nixdeck-agent: runs on every host of the fleet and keeps one WebSocket to the dashboard.
//!
//! Layout: `config` (flags, environment, config file), `token` (bearer token and
//! enrollment), `probes` (what is reported about the host), `link` (the socket session:
//! connect, register, heartbeats, reconnect), `dispatch` (what the dashboard's command,
//! stop and ack frames do; which output, completions and checks are due), `plan` (what
//! each command runs), `runner` (the agent's side of commands), `supervisor` (the
//! detached process that runs one command), `spool` (a command's on-disk state, kept
//! until acked), `repo` (git), `checks` (system/tests verdicts) and `nix` (profiles,
//! generations, version order and the parsers of Nix's output for the Nix-native
//! switch, boot, preview and rollback).
//! A library as well as a binary so that tests/ can drive it against the real binary.

pub mod checks;
pub mod config;
pub mod dispatch;
pub mod link;
pub mod nix;
pub mod plan;
pub mod probes;
pub mod repo;
pub mod runner;
pub mod spool;
pub mod supervisor;
pub mod token;
