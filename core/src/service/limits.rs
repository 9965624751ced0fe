//! Rate limits on failures: logins per account and per address, and agent authentications
//! per address. Counting is `governor`'s (a keyed GCRA limiter); what we add is the lock-out
//! a key gets once it ran out, so that even a right guess is refused until it expires.
//! On PostgreSQL they are counted in the database instead (`SharedLogins`), so that every
//! server on it counts together.

use crate::storage::{Backend, Db};
use crate::Core;
use common::AppError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct FailureLimiter<K: Hash + Eq + Clone> {
    counter: DefaultKeyedRateLimiter<K>,
    locked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// `per_minute` failures are allowed (as a burst, refilled evenly over a minute).
    pub fn per_minute(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        FailureLimiter {
            counter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)),
            locked: Mutex::new(HashMap::new()),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuse while `key` is locked out, with how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let mut locked = self.locked();
        match locked.get(key) {
            Some(until) if *until > Instant::now() => Err(*until - Instant::now()),
            Some(_) => {
                locked.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Count a failure; once the key has run out it is locked until a failure fits again.
    pub fn fail(&self, key: &K) -> Result<(), Duration> {
        match self.counter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.locked().insert(key.clone(), Instant::now() + wait);
                Err(wait)
            }
        }
    }

    /// Forget keys that have been quiet (called from the background job).
    pub fn forget_old(&self) {
        self.counter.retain_recent();
        let now = Instant::now();
        self.locked().retain(|_, until| *until > now);
    }
}

/// Where a request comes from, as a limiter key: the address, with IPv6 cut to its /64. A
/// subscriber gets a whole /64, so keying by the full address would give an attacker a
/// fresh key per request. IPv4-mapped IPv6 counts as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let seg = v6.segments();
                    Source(IpAddr::V6(std::net::Ipv6Addr::new(
                        seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

/// Failed logins per (account, source), counted before the password is checked. The first
/// `free` failures cost nothing; each one after that makes the pair wait twice as long as
/// the one before (2 s, 4 s, … up to `MAX_DELAY`), and a success clears it. An attempt
/// counts as it starts: while `free` are in flight, or while the pair waits out a delay,
/// further attempts are refused without a password check. So parallel requests get no
/// more guesses than serial ones, and someone else's failures never lock an operator out
/// of their account from their own address.
pub struct LoginLimiter {
    free: u32,
    pairs: Arc<Pairs>,
}

type Pairs = Mutex<HashMap<(String, Option<Source>), Attempts>>;

fn lock_pairs(
    pairs: &Pairs,
) -> std::sync::MutexGuard<'_, HashMap<(String, Option<Source>), Attempts>> {
    pairs.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct Attempts {
    failures: u32,
    in_flight: u32,
    wait_until: Option<Instant>,
    last: Option<Instant>,
}

/// The longest a (account, source) pair waits between guesses.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Quiet this long, a pair starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// One login attempt in flight. `LoginLimiter::finish` records how it ended; dropped
/// unfinished (the client went away mid-check), it counts neither way but is no longer in
/// flight, so a dropped request can never leave its pair blocked.
#[must_use]
#[derive(Debug)]
pub struct Attempt {
    key: Option<(String, Option<Source>)>,
    free: u32,
    pairs: Arc<Pairs>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            settle(&self.pairs, self.free, key, Verdict::NotChecked);
        }
    }
}

fn settle(pairs: &Pairs, free: u32, key: (String, Option<Source>), verdict: Verdict) {
    let now = Instant::now();
    let mut pairs = lock_pairs(pairs);
    let Some(a) = pairs.get_mut(&key) else {
        return;
    };
    a.in_flight = a.in_flight.saturating_sub(1);
    match verdict {
        Verdict::Success => {
            a.failures = 0;
            a.wait_until = None;
        }
        Verdict::Failure => {
            a.failures += 1;
            if a.failures >= free {
                let steps = (a.failures - free + 1).min(20);
                let delay = Duration::from_secs(1u64 << steps).min(MAX_DELAY);
                a.wait_until = Some(now + delay);
            }
        }
        Verdict::NotChecked => {}
    }
    a.last = Some(now);
}

/// How a login attempt ended, for the limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Not decided (e.g. no capacity to check the password): counts neither way.
    NotChecked,
}

impl LoginLimiter {
    pub fn new(free: u32) -> Self {
        LoginLimiter {
            free: free.max(1),
            pairs: Arc::default(),
        }
    }

    fn pairs(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Option<Source>), Attempts>> {
        lock_pairs(&self.pairs)
    }

    /// Before a password is checked: an `Attempt`, or how long to wait.
    pub fn begin(&self, account: &str, source: Option<Source>) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let mut pairs = self.pairs();
        let a = pairs.entry((account.to_owned(), source)).or_default();
        if a.last.is_some_and(|last| now - last > FORGET_AFTER) && a.in_flight == 0 {
            *a = Attempts::default();
        }
        if let Some(until) = a.wait_until.filter(|u| *u > now) {
            return Err(until - now);
        }
        // Past the free failures, one guess at a time, each after its delay.
        let allowed = if a.failures >= self.free {
            1
        } else {
            self.free - a.failures
        };
        if a.in_flight >= allowed {
            return Err(Duration::from_secs(1));
        }
        a.in_flight += 1;
        a.last = Some(now);
        Ok(Attempt {
            key: Some((account.to_owned(), source)),
            free: self.free,
            pairs: self.pairs.clone(),
        })
    }

    pub fn finish(&self, mut attempt: Attempt, verdict: Verdict) {
        if let Some(key) = attempt.key.take() {
            settle(&self.pairs, self.free, key, verdict);
        }
    }

    /// Forget pairs that have been quiet (called from the background job).
    pub fn forget_old(&self) {
        let now = Instant::now();
        self.pairs().retain(|_, a| {
            a.in_flight > 0 || a.last.is_some_and(|last| now - last <= FORGET_AFTER)
        });
    }
}

/// Failed logins counted in the database, so that every server on it counts together:
/// with N servers on one PostgreSQL database, an attacker spreading guesses over them
/// gets the same `free` failures, then the same growing delays, as against one. The rules
/// are `LoginLimiter`'s, kept as one row per (account, source) in `login_failures`
/// (`Db::begin_login_attempt`): an attempt counts as it starts, in one statement, so
/// parallel requests on several servers get no more guesses than serial ones; past the
/// free failures the attempt holds the pair (`HOLD`) until it ends, so they come one at a
/// time. An attempt that ends undecided is taken out of the count again; one whose server
/// died mid-check stays counted (and its hold runs out after `HOLD`). A source's failures
/// over all accounts, and its failed agent authentications, are rows of their own
/// (`Db::fail_source`), so agents too get the same attempts from N servers as from one.
///
/// SQLite keeps the in-memory `LoginLimiter`: one server per database file, and the
/// login flood figure (docs/BENCHMARKS.md, hardening) was measured with it.
pub struct SharedLogins {
    db: Db,
    free: u32,
    per_source: u32,
}

/// Longest a shared attempt past the free failures holds its pair (a password check
/// takes well under a second; this only matters when a server dies mid-check).
const HOLD: Duration = Duration::from_secs(60);

/// The `login_failures` account of a source's failed logins over all accounts, and of its
/// failed agent authentications: no username can be either (`users::check_username`).
const LOGINS_OF_SOURCE: &str = "*";
const AGENTS_OF_SOURCE: &str = "*agent";

/// Failed agent authentications (a wrong or unknown agent or enrollment token) allowed per
/// address and minute, over every server on the database on PostgreSQL.
pub const AGENT_FAILURES_PER_MIN: u32 = 30;

/// The `login_failures` row of a source: its address, or `-` without one.
fn source_key(source: Option<Source>) -> String {
    source.map_or_else(|| "-".to_owned(), |s| s.0.to_string())
}

/// A login attempt counted in the database (`SharedLogins`). Dropped unfinished, it is
/// taken out of the count again (on a task of its own: a drop cannot wait).
#[must_use]
pub struct SharedAttempt {
    db: Db,
    account: String,
    source: String,
    /// This attempt holds the pair (it is past the free failures).
    held: bool,
    /// The count with this attempt in it.
    count: i64,
    free: u32,
    settled: bool,
}

impl SharedAttempt {
    /// How the row changes when the attempt ends: (success, uncount, new wait).
    fn ending(&self, verdict: Verdict) -> (bool, bool, Option<Duration>) {
        match verdict {
            Verdict::Success => (true, false, None),
            Verdict::Failure if self.held => {
                let steps = (self.count - i64::from(self.free) + 1).clamp(1, 20) as u32;
                let delay = Duration::from_secs(1u64 << steps).min(MAX_DELAY);
                (false, false, Some(delay))
            }
            Verdict::Failure => (false, false, None),
            Verdict::NotChecked => (false, true, self.held.then_some(Duration::ZERO)),
        }
    }

    async fn settle(mut self, verdict: Verdict) {
        self.settled = true;
        let (success, uncount, wait) = self.ending(verdict);
        if let Err(e) = (self.db)
            .end_login_attempt(&self.account, &self.source, success, uncount, wait)
            .await
        {
            tracing::warn!("recording a login attempt: {e}");
        }
    }
}

impl Drop for SharedAttempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (_, uncount, wait) = self.ending(Verdict::NotChecked);
        let (db, account, source) = (self.db.clone(), self.account.clone(), self.source.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = db
                    .end_login_attempt(&account, &source, false, uncount, wait)
                    .await;
            });
        }
    }
}

/// A login attempt in flight, counted in memory or in the database.
#[must_use]
pub enum LoginAttempt {
    Memory(Attempt),
    Shared(SharedAttempt),
}

pub fn too_many(wait: Duration) -> AppError {
    AppError::RateLimited {
        retry_after_s: wait.as_secs().max(1),
    }
}

/// The server's limits.
pub struct Limits {
    /// Failed logins per (account, source), with growing delays.
    pub login: LoginLimiter,
    /// Failed logins per source over all accounts (password spraying).
    login_address: FailureLimiter<Source>,
    /// Failed agent authentications per source (`fail_agent`).
    agent_address: FailureLimiter<Source>,
    /// On PostgreSQL: the limits counted in the database instead of `login`,
    /// `login_address` and `agent_address`, shared by every server on it.
    shared: Option<SharedLogins>,
}

impl Limits {
    /// In memory (one server, or tests).
    pub fn new(login_failures_per_min: u32) -> Self {
        Limits {
            login: LoginLimiter::new(login_failures_per_min),
            // An address may hold many accounts (a proxy, an office): more room.
            login_address: FailureLimiter::per_minute(login_failures_per_min * 4),
            agent_address: FailureLimiter::per_minute(AGENT_FAILURES_PER_MIN),
            shared: None,
        }
    }

    /// The server's: login limits in the database on PostgreSQL (several servers may
    /// share it), in memory on SQLite (see `SharedLogins`).
    pub fn for_database(db: &Db, login_failures_per_min: u32) -> Self {
        let mut limits = Limits::new(login_failures_per_min);
        if db.backend() == Backend::Postgres {
            limits.shared = Some(SharedLogins {
                db: db.clone(),
                free: login_failures_per_min.max(1),
                per_source: login_failures_per_min.max(1) * 4,
            });
        }
        limits
    }

    /// Login limits counted in `db` whatever the database (the tests of `SharedLogins`).
    pub fn shared(db: &Db, login_failures_per_min: u32) -> Self {
        let mut limits = Limits::new(login_failures_per_min);
        limits.shared = Some(SharedLogins {
            db: db.clone(),
            free: login_failures_per_min.max(1),
            per_source: login_failures_per_min.max(1) * 4,
        });
        limits
    }

    /// Before a password is checked: an attempt, or how long (`account`, `source`) waits.
    pub async fn begin_login(
        &self,
        account: &str,
        source: Option<Source>,
    ) -> Result<LoginAttempt, Duration> {
        let Some(shared) = &self.shared else {
            return self.login.begin(account, source).map(LoginAttempt::Memory);
        };
        let key = source_key(source);
        let begun = shared
            .db
            .begin_login_attempt(account, &key, shared.free, HOLD, FORGET_AFTER)
            .await;
        match begun {
            Ok(Some(count)) => Ok(LoginAttempt::Shared(SharedAttempt {
                db: shared.db.clone(),
                account: account.to_owned(),
                source: key,
                held: count >= i64::from(shared.free),
                count,
                free: shared.free,
                settled: false,
            })),
            Ok(None) => {
                let ms = shared.db.login_wait_ms(account, &key).await.unwrap_or(1000);
                Err(Duration::from_millis(ms.max(1) as u64))
            }
            Err(e) => {
                tracing::warn!("counting a login attempt: {e}");
                Err(Duration::from_secs(1))
            }
        }
    }

    /// How a login attempt ended.
    pub async fn finish_login(&self, attempt: LoginAttempt, verdict: Verdict) {
        match attempt {
            LoginAttempt::Memory(a) => self.login.finish(a, verdict),
            LoginAttempt::Shared(a) => a.settle(verdict).await,
        }
    }

    /// Refuse while `source` is locked out for failing over many accounts.
    pub async fn check_address(&self, source: &Source) -> Result<(), Duration> {
        let Some(shared) = &self.shared else {
            return self.login_address.check(source);
        };
        match shared
            .db
            .login_wait_ms(LOGINS_OF_SOURCE, &source_key(Some(*source)))
            .await
        {
            Ok(0) => Ok(()),
            Ok(ms) => Err(Duration::from_millis(ms as u64)),
            Err(e) => {
                tracing::warn!("reading a source's login failures: {e}");
                Ok(())
            }
        }
    }

    /// Count a failed login of `source` over all accounts; once it ran out, how long it
    /// waits.
    pub async fn fail_address(&self, source: &Source) -> Result<(), Duration> {
        let per_source = self.shared.as_ref().map_or(0, |s| s.per_source);
        self.fail_source(LOGINS_OF_SOURCE, source, &self.login_address, per_source)
            .await
    }

    /// Count a failed agent authentication (a wrong or unknown agent or enrollment token)
    /// of `source`; once `AGENT_FAILURES_PER_MIN` ran out, how long it waits.
    pub async fn fail_agent(&self, source: &Source) -> Result<(), Duration> {
        self.fail_source(
            AGENTS_OF_SOURCE,
            source,
            &self.agent_address,
            AGENT_FAILURES_PER_MIN,
        )
        .await
    }

    /// One failure of `source` of kind `kind`: in `memory`, or in the database
    /// (`Db::fail_source`, `per_minute` a minute) when it is shared.
    async fn fail_source(
        &self,
        kind: &str,
        source: &Source,
        memory: &FailureLimiter<Source>,
        per_minute: u32,
    ) -> Result<(), Duration> {
        let Some(shared) = &self.shared else {
            return memory.fail(source);
        };
        match (shared.db)
            .fail_source(kind, &source_key(Some(*source)), per_minute)
            .await
        {
            Ok(0) => Ok(()),
            Ok(ms) => Err(Duration::from_millis(ms as u64)),
            Err(e) => {
                tracing::warn!("counting a source's failure ({kind}): {e}");
                Ok(())
            }
        }
    }

    pub fn forget_old(&self) {
        self.login.forget_old();
        self.login_address.forget_old();
        self.agent_address.forget_old();
    }
}

/// Forget the shared login failures quiet for an hour (the leader's retention job).
pub async fn purge_shared(core: &Core) {
    if let Err(e) = core.db.purge_login_failures(FORGET_AFTER).await {
        tracing::warn!("forgetting old login failures: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_allowed_failures_and_only_that_key() {
        let l = FailureLimiter::per_minute(3);
        for _ in 0..3 {
            assert!(l.check(&"a").is_ok());
            assert!(l.fail(&"a").is_ok());
        }
        let wait = l.fail(&"a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(l.check(&"a").is_err(), "locked, even for a right guess");
        assert!(l.check(&"b").is_ok());
        assert!(l.fail(&"b").is_ok());
    }

    #[test]
    fn parallel_attempts_get_no_more_guesses_than_serial_ones() {
        let l = LoginLimiter::new(5);
        let src = Some(Source::of("192.0.2.1".parse().unwrap()));
        // 500 at once: only the free five start.
        let started: Vec<_> = (0..500)
            .filter_map(|_| l.begin("admin", src).ok())
            .collect();
        assert_eq!(started.len(), 5);
        for a in started {
            l.finish(a, Verdict::Failure);
        }
        // Now the pair waits, growing: 2 s after the fifth failure.
        let wait = l.begin("admin", src).expect_err("waits");
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // The same account from another source is not locked out, nor another account.
        let other = Some(Source::of("198.51.100.7".parse().unwrap()));
        let a = l.begin("admin", other).expect("another source");
        l.finish(a, Verdict::Success);
        let b = l.begin("alice", src).expect("another account");
        l.finish(b, Verdict::NotChecked);
    }

    #[test]
    fn delays_grow_and_a_success_clears_them() {
        let l = LoginLimiter::new(1);
        let key = |l: &LoginLimiter| l.begin("op", None);
        let a = key(&l).unwrap();
        l.finish(a, Verdict::Failure);
        let first = key(&l).unwrap_err();
        // Pretend the wait passed, then fail again: the next wait is longer.
        l.pairs().get_mut(&("op".into(), None)).unwrap().wait_until = None;
        let a = key(&l).unwrap();
        l.finish(a, Verdict::Failure);
        let second = key(&l).unwrap_err();
        assert!(second > first, "{first:?} then {second:?}");
        l.pairs().get_mut(&("op".into(), None)).unwrap().wait_until = None;
        let a = key(&l).unwrap();
        l.finish(a, Verdict::Success);
        assert!(key(&l).is_ok(), "a success clears the pair");
        // The delay never passes the cap.
        let mut a = Attempts {
            failures: 1000,
            ..Attempts::default()
        };
        a.in_flight = 1;
        l.pairs().insert(("x".into(), None), a);
        settle(&l.pairs, l.free, ("x".into(), None), Verdict::Failure);
        let capped = l.begin("x", None).unwrap_err();
        assert!(capped <= MAX_DELAY);
    }

    #[test]
    fn an_ipv6_subscriber_is_one_source() {
        let a = Source::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Source::of("::ffff:192.0.2.1".parse().unwrap()),
            Source::of("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn an_attempt_dropped_midway_frees_its_place() {
        let l = LoginLimiter::new(1);
        let a = l.begin("op", None).unwrap();
        assert!(l.begin("op", None).is_err(), "one in flight");
        drop(a);
        let b = l
            .begin("op", None)
            .expect("the dropped attempt no longer counts");
        l.finish(b, Verdict::Failure);
        assert!(l.begin("op", None).is_err(), "a finished failure does");
    }

    use crate::storage::testing::db_test;

    db_test! {
        /// Two servers on one database count login failures together (`SharedLogins`):
        /// failures spread over both run out at the configured count, as on one server;
        /// parallel attempts over both get no more guesses; an undecided attempt is taken
        /// out of the count; a success clears the pair.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn servers_sharing_a_database_share_the_login_failures(backend) {
            let dir = tempfile::tempdir().unwrap();
            let url = backend.fresh_url(dir.path()).await;
            let servers = [
                Arc::new(Limits::shared(&Db::connect(&url).await.unwrap(), 3)),
                Arc::new(Limits::shared(&Db::connect(&url).await.unwrap(), 3)),
            ];
            let src = Some(Source::of("192.0.2.1".parse().unwrap()));
            for i in 0..3 {
                let l = &servers[i % 2];
                let Ok(a) = l.begin_login("admin", src).await else {
                    panic!("failure {i} is free");
                };
                l.finish_login(a, Verdict::Failure).await;
            }
            for l in &servers {
                match l.begin_login("admin", src).await {
                    Ok(_) => panic!("the fourth attempt must wait, on either server"),
                    Err(wait) => assert!(
                        wait > Duration::from_millis(500) && wait <= Duration::from_secs(2),
                        "{wait:?}"
                    ),
                }
            }
            // Another account: 20 attempts at once over both servers, only 3 start.
            let mut tasks = Vec::new();
            for i in 0..20 {
                let l = servers[i % 2].clone();
                tasks.push(tokio::spawn(async move { l.begin_login("ops", src).await.ok() }));
            }
            let mut started = Vec::new();
            for t in tasks {
                started.extend(t.await.unwrap());
            }
            assert_eq!(started.len(), 3, "parallel attempts get the free ones only");
            // The last of them ends undecided (dropped): its place is free again, for one
            // attempt. (While the last free one is in flight, the pair is held.)
            let last = started
                .iter()
                .position(|a| matches!(a, LoginAttempt::Shared(a) if a.held))
                .expect("the third attempt holds the pair");
            drop(started.remove(last));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again = servers[1].begin_login("ops", src).await;
            assert!(again.is_ok(), "the dropped attempt no longer counts");
            assert!(servers[0].begin_login("ops", src).await.is_err());
            // A success clears the pair.
            if let Ok(a) = again {
                servers[1].finish_login(a, Verdict::Success).await;
            }
            for a in started {
                servers[0].finish_login(a, Verdict::NotChecked).await;
            }
            let Ok(a) = servers[0].begin_login("ops", src).await else {
                panic!("cleared by the success");
            };
            servers[0].finish_login(a, Verdict::NotChecked).await;
            // Spraying from one source over many accounts: 12 failures (4 × 3) are allowed
            // over both servers, the 13th makes the source wait.
            let source = Source::of("198.51.100.9".parse().unwrap());
            for i in 0..12 {
                assert!(servers[i % 2].fail_address(&source).await.is_ok(), "failure {i}");
            }
            assert!(servers[0].fail_address(&source).await.is_err());
            assert!(servers[1].check_address(&source).await.is_err(), "seen by the other");
            // Agent authentications from one source: counted apart from its logins (this
            // source is locked out of logins, not of agent tokens), and together over both
            // servers: `AGENT_FAILURES_PER_MIN` are allowed, the next one waits.
            for i in 0..AGENT_FAILURES_PER_MIN as usize {
                assert!(servers[i % 2].fail_agent(&source).await.is_ok(), "agent failure {i}");
            }
            for l in &servers {
                let wait = l.fail_agent(&source).await.expect_err("over the limit");
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "{wait:?}");
            }
        }
    }
}
