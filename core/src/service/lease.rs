//! Leases in the database: how servers sharing one database (replicas) agree on who runs
//! what must run once per database, and which of them are alive.
//!
//! - `replica:<name>` (`replica_lease`): held by each server under its own name
//!   (`Core::replica`) while it lives. A server that stops renewing it is dead: its deploy
//!   job is taken over (`service::deploy::take_over`).
//! - `leader` (`LEADER`): held by one server, which runs the once-per-database jobs: the
//!   desired-state and PR pollers (GitHub is polled once, not once per server), the
//!   notification watch and delivery worker, retention, and taking over dead servers'
//!   deploys. The others read `Leader::is_leader` as false and leave them alone.
//!
//! Each is taken or renewed by one statement that only writes an expired or own row
//! (`Db::try_lease`), every quarter of `NIXDECK_LEASE_TTL_S`; both are let go at shutdown,
//! so another server takes over at once; after a crash, within the TTL plus one renewal.
//! A leader that cannot reach the database steps down before its lease could have expired,
//! so two servers never both believe they lead for longer than a renewal.
//!
//! On SQLite it is the same code: one server per database file wins every lease. At start
//! a SQLite server takes both leases outright (`Db::take_lease`): a lease still held in the
//! file was left by its own previous process, killed before it could let go, and waiting
//! for it to expire would only delay the jobs.

use crate::storage::{Backend, Db};
use crate::Core;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The lease of the server that runs the once-per-database jobs.
pub const LEADER: &str = "leader";

/// The lease a server holds while it lives.
pub fn replica_lease(replica: &str) -> String {
    format!("replica:{replica}")
}

/// Whether this server holds the leader lease now. Cheap to clone and to read.
#[derive(Clone)]
pub struct Leader {
    state: Arc<watch::Sender<bool>>,
    /// Set at shutdown (`release`): the lease thread renews no more.
    released: Arc<tokio::sync::Mutex<bool>>,
}

impl Leader {
    /// `leading` at first (tests build a `Core` that leads; the server starts not leading
    /// and asks the database, `start`).
    pub fn new(leading: bool) -> Leader {
        Leader {
            state: Arc::new(watch::Sender::new(leading)),
            released: Arc::default(),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// Returns once this server leads (at once if it does).
    pub async fn wait(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|leading| *leading).await;
    }

    fn set(&self, leading: bool) {
        self.state.send_if_modified(|now| {
            let changed = *now != leading;
            *now = leading;
            changed
        });
    }
}

fn ttl(core: &Core) -> Duration {
    Duration::from_secs(core.config.lease_ttl_s)
}

/// Take this server's leases (the leader lease if it is free) before anything is served,
/// then keep renewing them on a thread of their own (`keep`), and look for dead servers'
/// deploys at the same pace on the server's runtime.
pub async fn start(core: &Core) -> anyhow::Result<()> {
    let ttl = ttl(core);
    let me = replica_lease(&core.replica);
    if core.db.backend() == Backend::Sqlite {
        core.db.take_lease(&me, &core.replica, ttl).await?;
        core.db.take_lease(LEADER, &core.replica, ttl).await?;
    }
    renew(&core.db, &core.leader, &core.replica, &me, ttl).await?;
    tracing::info!(
        replica = &*core.replica,
        leader = core.leader.is_leader(),
        "leases taken"
    );
    let keeper = Keeper {
        leader: core.leader.clone(),
        replica: core.replica.clone(),
        url: core.config.database_url.clone(),
        db: core.db.clone(),
        alive: Arc::downgrade(&core.config),
        me,
        ttl,
    };
    std::thread::Builder::new()
        .name("nixdeck-leases".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(keeper.keep()),
                Err(e) => tracing::error!("the lease thread has no runtime: {e}"),
            }
        })?;
    let core = core.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 4).await;
            if core.leader.is_leader() {
                super::deploy::take_over(&core).await;
            }
        }
    });
    Ok(())
}

/// What the lease thread needs of the server; `alive` ends it once the server's `Core` is
/// gone (a test's runtime that ended).
struct Keeper {
    leader: Leader,
    replica: Arc<str>,
    url: String,
    db: Db,
    alive: std::sync::Weak<crate::config::Config>,
    me: String,
    ttl: Duration,
}

impl Keeper {
    /// Renew every quarter of the TTL, on this thread's runtime and, on PostgreSQL, on a
    /// connection of its own. On the server's runtime and pool a renewal queued behind
    /// everything else: with 40 000 agents over three replicas on two cores (docs/BENCHMARKS.md,
    /// "Replicas on PostgreSQL") leases lapsed while their servers lived, and peers showed
    /// those servers' hosts offline 6–12 times. A thread that sleeps between renewals is
    /// run as soon as it wakes, however busy the runtime's workers are.
    async fn keep(self) {
        let every = self.ttl / 4;
        let mut last_renewed = Instant::now();
        let mut own: Option<Db> = None;
        loop {
            tokio::time::sleep(every).await;
            if self.alive.strong_count() == 0 {
                return;
            }
            if own.is_none() {
                match self.db.aside(&self.url).await {
                    Ok(db) => own = Some(db),
                    Err(e) => tracing::warn!("connecting for lease renewal: {e}"),
                }
            }
            // The server's own pool while the connection of its own cannot be made.
            let db = own.as_ref().unwrap_or(&self.db);
            let released = self.leader.released.lock().await;
            if *released {
                return;
            }
            // A renewal that hangs (a connection that waits) counts as failed, so the
            // step-down below is not held up by it.
            let renewed = tokio::time::timeout(
                every,
                renew(db, &self.leader, &self.replica, &self.me, self.ttl),
            )
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
            drop(released);
            match renewed {
                Ok(()) => last_renewed = Instant::now(),
                Err(e) => {
                    tracing::warn!("renewing leases: {e}");
                    // A fresh connection next time: this one may be broken.
                    own = None;
                    // Step down before the lease can have run out, so another server that
                    // takes it over never runs the jobs alongside this one. A SQLite file
                    // has one server, which took its leases outright at start (`start`): it
                    // keeps leading through a slow spell.
                    if self.db.backend() == Backend::Postgres
                        && last_renewed.elapsed() + every >= self.ttl / 2
                    {
                        step(&self.leader, &self.replica, false);
                    }
                }
            }
        }
    }
}

/// Renew this server's lease and try for the leader lease.
async fn renew(
    db: &Db,
    leader: &Leader,
    replica: &str,
    me: &str,
    ttl: Duration,
) -> Result<(), sqlx::Error> {
    db.try_lease(me, replica, ttl).await?;
    let leading = db.try_lease(LEADER, replica, ttl).await?;
    step(leader, replica, leading);
    Ok(())
}

fn step(leader: &Leader, replica: &str, leading: bool) {
    if leading != leader.is_leader() {
        if leading {
            tracing::info!(
                replica,
                "leading: this server runs the once-per-database jobs"
            );
        } else {
            tracing::info!(replica, "no longer leading");
        }
    }
    leader.set(leading);
}

/// At shutdown: let go of both leases, so another server takes over at once.
pub async fn release(core: &Core) {
    // Held while the leases are let go, so a renewal already under way ends first and no
    // later one takes them back.
    let mut released = core.leader.released.lock().await;
    *released = true;
    core.leader.set(false);
    for name in [LEADER.to_owned(), replica_lease(&core.replica)] {
        if let Err(e) = core.db.release_lease(&name, &core.replica).await {
            tracing::warn!("letting go of lease {name}: {e}");
        }
    }
}

/// Whether server `replica` is alive: it holds its lease.
pub async fn alive(core: &Core, replica: &str) -> Result<bool, sqlx::Error> {
    if replica == &*core.replica {
        return Ok(true);
    }
    Ok(core
        .db
        .lease_holder(&replica_lease(replica))
        .await?
        .is_some())
}

/// Run `work` while holding lease `name`, waiting for it (checking every 50 ms) while
/// another server holds it: a lock across servers for short critical sections (counting
/// enrollment uses). The lease lasts `ttl`, so a server that dies inside lets go by itself.
pub async fn exclusive<T>(
    core: &Core,
    name: &str,
    ttl: Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, sqlx::Error> {
    // Unique per call: two tasks of one server must not share the lock either.
    let holder = format!("{}:{:08x}", core.replica, rand::random::<u32>());
    let deadline = Instant::now() + ttl;
    while !core.db.try_lease(name, &holder, ttl).await? {
        if Instant::now() >= deadline {
            return Err(sqlx::Error::PoolTimedOut);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = work.await;
    core.db.release_lease(name, &holder).await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::storage::testing::db_test;
    use crate::storage::Db;
    use std::time::Duration;

    db_test! {
        /// Two holders on one database: only one holds a lease; a renewal by the holder
        /// keeps it; the other takes it once it expired, or at once once it was let go.
        #[tokio::test]
        async fn one_holder_at_a_time_and_a_takeover_after_expiry(backend) {
            let dir = tempfile::tempdir().unwrap();
            let url = backend.fresh_url(dir.path()).await;
            let (a, b) = (Db::connect(&url).await.unwrap(), Db::connect(&url).await.unwrap());
            let ttl = Duration::from_millis(1500);
            assert!(a.try_lease("leader", "A", ttl).await.unwrap());
            assert!(!b.try_lease("leader", "B", ttl).await.unwrap(), "A holds it");
            assert_eq!(b.lease_holder("leader").await.unwrap().as_deref(), Some("A"));
            // A renews twice within the TTL: B never gets it.
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                assert!(a.try_lease("leader", "A", ttl).await.unwrap(), "a renewal keeps it");
                assert!(!b.try_lease("leader", "B", ttl).await.unwrap());
            }
            // A stops renewing (it died): B takes it after the TTL, and A no longer has it.
            tokio::time::sleep(Duration::from_millis(1600)).await;
            assert_eq!(a.lease_holder("leader").await.unwrap(), None, "expired");
            assert!(b.try_lease("leader", "B", ttl).await.unwrap(), "taken over");
            assert!(!a.try_lease("leader", "A", ttl).await.unwrap(), "B holds it now");
            // Let go: the other takes it at once. Only the holder can let go.
            a.release_lease("leader", "B-not").await.unwrap();
            a.release_lease("leader", "A").await.unwrap();
            assert!(!a.try_lease("leader", "A", ttl).await.unwrap(), "A let go of nothing");
            b.release_lease("leader", "B").await.unwrap();
            assert!(a.try_lease("leader", "A", ttl).await.unwrap());
            // Leases are independent of each other.
            assert!(b.try_lease("replica:B", "B", ttl).await.unwrap());
        }
    }

    db_test! {
        /// The runtime that runs everything else of the server is stuck (as when every
        /// worker is busy) for over two TTLs: its lease thread renews its leases all along, as
        /// another server sees it.
        #[tokio::test]
        async fn leases_are_renewed_while_the_servers_runtime_is_stuck(backend) {
            let dir = tempfile::tempdir().unwrap();
            let url = backend.fresh_url(dir.path()).await;
            let core =
                crate::service::test_core_on(&url, &[], &["nixdeck", "--lease-ttl-s", "4"]).await;
            crate::service::lease::start(&core).await.unwrap();
            let me = crate::service::lease::replica_lease(&core.replica);
            // Another server's view, from a thread of its own.
            let watcher = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let db = Db::connect(&url).await.unwrap();
                    let (mut looks, mut lapsed) = (0, 0);
                    while looks < 40 {
                        looks += 1;
                        if db.lease_holder(&me).await.unwrap().is_none() {
                            lapsed += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    (looks, lapsed)
                })
            });
            // The test's runtime has this one thread: no task of the server runs meanwhile.
            // A TTL of 4 s (renewals every second, each allowed a second) leaves room for a
            // test database that is slow under a full test run.
            std::thread::sleep(Duration::from_secs(9));
            assert_eq!(watcher.join().unwrap(), (40, 0), "the lease lapsed while the server lived");
            assert!(core.leader.is_leader());
        }
    }

    db_test! {
        /// Many servers asking at once: exactly one gets the lease.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn racing_servers_get_the_lease_once(backend) {
            let dir = tempfile::tempdir().unwrap();
            let url = backend.fresh_url(dir.path()).await;
            let servers = [Db::connect(&url).await.unwrap(), Db::connect(&url).await.unwrap()];
            for round in 0..5 {
                let name = format!("job{round}");
                let mut tasks = Vec::new();
                for (s, db) in servers.iter().enumerate() {
                    for t in 0..4 {
                        let (db, name) = (db.clone(), name.clone());
                        tasks.push(tokio::spawn(async move {
                            db.try_lease(&name, &format!("{s}-{t}"), Duration::from_secs(30))
                                .await
                                .unwrap()
                        }));
                    }
                }
                let mut won = 0;
                for t in tasks {
                    won += usize::from(t.await.unwrap());
                }
                assert_eq!(won, 1, "round {round}");
            }
        }
    }
}
