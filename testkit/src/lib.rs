//! Test helpers shared by nixdeck's test crates (the server's and the agent's integration
//! tests, the server's benches, fake-github's own tests). The `fake-github` binary lives
//! in this package too and uses [`git`].
//!
//! It depends on neither the server nor the core crate: what it knows of the dashboard is
//! its HTTP API and its wire frames.

pub mod client;
pub mod fake_github;
pub mod fixtures;
pub mod git;
pub mod nix;
pub mod proc;
pub mod smtp;
