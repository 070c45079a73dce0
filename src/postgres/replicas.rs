//! Read routing across the primary and its read replicas (`storage.postgresql.replicas`, `readPreference`,
//! `maxReplicaLag`), and the health of each replica.
//!
//! - Only the ten plain-read contract calls are routed ([`super::PostgresBackend::with_read`]); everything else
//!   stays on the primary.
//! - Read-your-writes ([`Freshness`]): each finished write counts itself, and a coalescing marker then reads the
//!   primary's WAL insert position (`pg_current_wal_insert_lsn()`, read after the writes finished, so at or past
//!   their commit records) off the write's path; a replica serves a read only while every counted write is
//!   covered and its last probed replay position is at or past that mark. A write that failed after it was sent
//!   (connection lost) may have committed and counts too.
//! - Health ([`spawn`]): one task per storage object probes the primary (its insert position, kept as time-stamped
//!   samples) and each replica (`pg_is_in_recovery()`, replay position) every [`CHECK_EVERY`], concurrently and
//!   each bounded. A replica's lag is how long ago the primary had WAL the replica has still not replayed
//!   ([`lag`]); more than `maxReplicaLag` makes it `lagging` (no reads) until it catches up.
//!
//! Costs nothing without replicas or with `readPreference: primary`: no replica pool, no task, no mark query.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use diesel::{
    sql_query,
    sql_types::{BigInt, Bool, Double, Nullable},
    QueryableByName,
};
use diesel_async::AsyncPgConnection;

use super::connect::{ConnectSpec, Pool};
use crate::{
    config::ReadPreference,
    error::{Error, Result},
};

/// How often the health task probes every host.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The longest a health probe may take (also bounded by `acquireTimeout`).
const PROBE_WITHIN: Duration = Duration::from_secs(2);

/// The most primary WAL samples kept (one per probe that saw the position move).
const MAX_SAMPLES: usize = 512;

/// The primary's WAL insert position in bytes: at or past the end of every commit record written before it is
/// read (unlike `pg_current_wal_lsn()`, which with `synchronous_commit = off` may still be behind one).
pub const INSERT_LSN_SQL: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8";

/// What a replica probe asks.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery() AS standby, \
     pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8 AS replay, \
     extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 AS replay_age";

/// A replica's state as the router sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not probed yet: no reads.
    Unknown = 0,
    /// Reachable, a standby, within `maxReplicaLag`: receives reads.
    Up = 1,
    /// Reachable, but its replay lags more than `maxReplicaLag`: no reads until it catches up.
    Lagging = 2,
    /// Unreachable (probe or read failed to connect, or lost its connection): no reads.
    Down = 3,
    /// Reachable but not in recovery (promoted, or not a standby at all): never read as a replica.
    NotStandby = 4,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Up,
            2 => State::Lagging,
            3 => State::Down,
            4 => State::NotStandby,
            _ => State::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Lagging => "lagging",
            State::Down => "down",
            State::NotStandby => "not-standby",
        }
    }
}

/// Why a read meant for a replica went to the primary (indexes of [`crate::metrics::FALLBACK_REASONS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No replica is up (and within `maxReplicaLag`).
    Unavailable = 0,
    /// Replicas are up, but none has replayed this storage object's last write yet.
    OwnWrite = 1,
    /// The read failed on a replica and was retried on the primary.
    Error = 2,
}

const NO_VALUE: u64 = u64::MAX;

/// One replica's health, written by the health task (and the read path, which marks a replica down when its
/// connection is lost), read lock-free by every routed read.
#[derive(Debug)]
pub struct HostHealth {
    state: AtomicU8,
    /// The replay position of the last probe, in bytes.
    replay_lsn: AtomicU64,
    /// [`NO_VALUE`] while unknown.
    lag_ms: AtomicU64,
    /// Reads this host served.
    pub reads: AtomicU64,
    /// Why it is down or refused (redacted).
    error: Mutex<Option<String>>,
}

impl Default for HostHealth {
    fn default() -> Self {
        HostHealth {
            state: AtomicU8::new(State::Unknown as u8),
            replay_lsn: AtomicU64::new(0),
            lag_ms: AtomicU64::new(NO_VALUE),
            reads: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }
}

fn opt(v: u64) -> Option<u64> {
    (v != NO_VALUE).then_some(v)
}

impl HostHealth {
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Sets the state and returns the previous one.
    fn swap_state(&self, s: State) -> State {
        State::from_u8(self.state.swap(s as u8, Ordering::AcqRel))
    }

    pub fn replay_lsn(&self) -> u64 {
        self.replay_lsn.load(Ordering::Acquire)
    }

    /// Reads this host served.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn lag_ms(&self) -> Option<u64> {
        opt(self.lag_ms.load(Ordering::Relaxed))
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn forget_lag(&self) {
        self.lag_ms.store(NO_VALUE, Ordering::Relaxed);
    }
}

/// One configured replica.
pub struct Replica {
    pub spec: Arc<ConnectSpec>,
    /// `None` with `readPreference: primary` (no reads, so no connections).
    pub pool: Option<Pool>,
    /// `host:port`, for labels and logs.
    pub host: String,
    pub health: HostHealth,
}

impl Replica {
    pub fn new(spec: Arc<ConnectSpec>, pool: Option<Pool>) -> Replica {
        let host = host_port(&spec.pg);
        Replica { spec, pool, host, health: HostHealth::default() }
    }

    /// Moves to `s`, logging a change (warn into a state without reads, info back to up).
    pub fn set_state(&self, s: State, why: Option<&str>) {
        let before = self.health.swap_state(s);
        if before == s {
            return;
        }
        let host = &self.host;
        let why = why.unwrap_or("");
        match s {
            State::Up => {
                tracing::info!(replica = %host, from = before.as_str(), "read replica is up; it receives reads")
            }
            State::Lagging => tracing::warn!(
                replica = %host, lag_ms = self.health.lag_ms().unwrap_or(0),
                "read replica lags more than storage.postgresql.maxReplicaLag; its reads go elsewhere until it \
                 catches up"
            ),
            State::Down => tracing::warn!(
                replica = %host, error = %why,
                "read replica unreachable; its reads go elsewhere until it answers again"
            ),
            State::NotStandby => tracing::warn!(
                replica = %host,
                "configured read replica is not a standby (pg_is_in_recovery() is false: promoted?); it receives \
                 no reads"
            ),
            State::Unknown => {}
        }
    }
}

/// `host:port` of a one-host config (an IPv6 address in brackets, `[::1]:5432`, as in a URL).
pub fn host_port(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    format!("{host}:{}", pg.get_ports().first().copied().unwrap_or(5432))
}

/// The read-your-writes mark of one storage object, kept by a coalescing marker.
///
/// A write that finished (committed, or failed after it was sent, so it may have committed) counts itself
/// ([`Freshness::wrote`]); that is all a write pays. A read that finds writes not covered yet goes to the primary
/// and starts the marker unless one is running ([`Freshness::cover`]): a task that reads the primary's insert
/// position on a pooled connection and records it as the mark, covering every write counted *before* the
/// position was read (a position read after a commit is at or past its commit record). While writes keep
/// finishing, the marker reads again; under load one read covers many writes. The health task's primary sample
/// (every second) covers uncovered writes too ([`Freshness::settle`]). A replica serves this object's reads only
/// while every counted write is covered ([`Freshness::is_current`]) and its replay position is at or past the
/// mark; until then reads go to the primary. A marker that cannot reach the primary stops; the next read or
/// health round tries again.
#[derive(Default)]
pub struct Freshness {
    /// The primary's insert position read after the covered writes finished, in bytes.
    mark: AtomicU64,
    /// Writes finished through this object.
    written: AtomicU64,
    /// How many of them [`Freshness::mark`] covers.
    covered: AtomicU64,
    /// A marker task is running.
    marking: AtomicBool,
    /// Where the marker reads the position: the primary's spec and pool (and how long a read may take). `None`
    /// in unit tests, which advance the mark by hand.
    primary: Option<(Arc<ConnectSpec>, Pool, Duration)>,
}

impl std::fmt::Debug for Freshness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freshness")
            .field("mark", &self.mark())
            .field("written", &self.written.load(Ordering::Relaxed))
            .field("covered", &self.covered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Freshness {
    /// The marker reads positions through `pool` (the primary's), each read bounded by `within`.
    pub fn new(spec: Arc<ConnectSpec>, pool: Pool, within: Duration) -> Freshness {
        Freshness { primary: Some((spec, pool, within)), ..Freshness::default() }
    }

    pub fn mark(&self) -> u64 {
        self.mark.load(Ordering::Acquire)
    }

    /// Whether every finished write of this object is covered by the mark.
    pub fn is_current(&self) -> bool {
        self.covered.load(Ordering::Acquire) >= self.written.load(Ordering::Acquire)
    }

    /// The mark, if every finished write is covered by it. The coverage is read first: the marker raises the
    /// mark before the coverage, so a mark read after a coverage is at least the one that coverage came with.
    pub fn mark_if_current(&self) -> Option<u64> {
        self.is_current().then(|| self.mark())
    }

    /// Taken right before a primary position is read; given back to [`Freshness::advance`] with it.
    pub fn seen(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Records `lsn`, read from the primary after the first `seen` writes had finished.
    pub fn advance(&self, seen: u64, lsn: u64) {
        self.mark.fetch_max(lsn, Ordering::AcqRel);
        self.covered.fetch_max(seen, Ordering::AcqRel);
    }

    /// A primary position read by a health probe that started at `seen`: covers writes not covered yet (the
    /// marker could not reach the primary); changes nothing when everything is covered (a probe is not a write
    /// of this object, so it must not raise the mark).
    pub fn settle(&self, seen: u64, lsn: u64) {
        if seen > self.covered.load(Ordering::Acquire) {
            self.advance(seen, lsn);
        }
    }

    /// Counts a finished write: two atomic operations, nothing else on the write's path.
    pub fn wrote(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Called by a read that wants a replica: starts the marker unless every write is covered or a marker is
    /// running (the read itself goes to the primary meanwhile). So a storage object that only writes reads no
    /// position at all (the health task's once-a-second primary sample covers its writes), and one that reads
    /// and writes reads at most one position at a time.
    pub fn cover(self: &Arc<Self>) {
        if self.primary.is_some() && !self.is_current() && !self.marking.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(self.clone().marker())),
                // Outside the plugin runtime (a guard dropped elsewhere): the health task's next primary sample
                // covers the write instead.
                Err(_) => self.marking.store(false, Ordering::SeqCst),
            }
        }
    }

    /// Reads positions until every counted write is covered, or until the primary does not answer.
    async fn marker(self: Arc<Self>) {
        let Some((spec, pool, within)) = &self.primary else { return };
        loop {
            let seen = self.seen();
            match on_pool(spec, pool, *within, async |c| insert_lsn(c).await).await {
                Outcome::Answered(lsn, _) => self.advance(seen, lsn),
                Outcome::Busy | Outcome::Failed(_) => {
                    self.marking.store(false, Ordering::SeqCst);
                    return;
                }
            }
            self.marking.store(false, Ordering::SeqCst);
            // A write that finished after `seen` and saw the marker still running did not start one.
            let current = self.covered.load(Ordering::SeqCst) >= self.written.load(Ordering::SeqCst);
            if current || self.marking.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }
}

/// Where a read goes.
pub enum Target<'a> {
    Primary,
    Replica(&'a Replica),
}

/// The router of one storage object.
pub struct Replicas {
    pub list: Vec<Replica>,
    pub pref: ReadPreference,
    pub max_lag: Duration,
    /// The primary's `host:port`.
    pub primary_host: String,
    primary_up: AtomicBool,
    /// Reads the primary served.
    pub primary_reads: AtomicU64,
    next: AtomicUsize,
    fallbacks: [AtomicU64; 3],
    /// The primary's insert positions over time: `(when seen, bytes)`, increasing.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Whether the "no replica available" warning was given and no replica served since.
    warned: AtomicBool,
}

impl Replicas {
    pub fn new(list: Vec<Replica>, pref: ReadPreference, max_lag_ms: u64, primary_host: String) -> Replicas {
        Replicas {
            list,
            pref,
            max_lag: Duration::from_millis(max_lag_ms),
            primary_host,
            primary_up: AtomicBool::new(true),
            primary_reads: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            fallbacks: Default::default(),
            samples: Mutex::new(VecDeque::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// Whether reads may go to replicas: then writes record marks and the health task runs.
    pub fn tracking(&self) -> bool {
        !self.list.is_empty() && self.pref != ReadPreference::Primary
    }

    pub fn fallbacks(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.fallbacks[i].load(Ordering::Relaxed))
    }

    pub fn count_fallback(&self, why: Fallback) {
        self.fallbacks[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the primary served.
    pub fn primary_read_count(&self) -> u64 {
        self.primary_reads.load(Ordering::Relaxed)
    }

    pub fn primary_up(&self) -> bool {
        self.primary_up.load(Ordering::Relaxed)
    }

    /// Whether `r` may serve a read of a storage object whose freshness is `fresh` now.
    /// `mark` is `None` while a write of this object is not covered yet ([`Freshness::mark_if_current`]).
    fn eligible(r: &Replica, mark: Option<u64>) -> bool {
        mark.is_some_and(|mark| r.health.state() == State::Up && r.health.replay_lsn() >= mark)
    }

    /// Where the next plain read goes, and why it was not a replica when one was wanted (the fallback is counted
    /// here). `replica`: round robin over the eligible replicas, else the primary. `any`: round robin over the
    /// eligible replicas and the primary (while it answers probes).
    pub fn pick(&self, fresh: &Freshness) -> (Target<'_>, Option<Fallback>) {
        if !self.tracking() {
            return (Target::Primary, None);
        }
        let mark = fresh.mark_if_current();
        let n = self.list.iter().filter(|r| Self::eligible(r, mark)).count();
        if n == 0 {
            let why = if self.list.iter().any(|r| r.health.state() == State::Up) {
                Fallback::OwnWrite
            } else {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        replicas = self.list.len(),
                        "no read replica is available (down, lagging, not a standby or not probed yet); reads \
                         go to the primary meanwhile"
                    );
                }
                Fallback::Unavailable
            };
            self.count_fallback(why);
            return (Target::Primary, Some(why));
        }
        if self.warned.load(Ordering::Relaxed) {
            self.warned.store(false, Ordering::Relaxed);
        }
        let slots = n + usize::from(self.pref == ReadPreference::Any && self.primary_up());
        let i = self.next.fetch_add(1, Ordering::Relaxed) % slots;
        match self.list.iter().filter(|r| Self::eligible(r, mark)).nth(i) {
            Some(r) => (Target::Replica(r), None),
            // The primary's turn, or a replica left the eligible set meanwhile.
            None => (Target::Primary, None),
        }
    }

    /// Records a primary insert position seen at `at` (kept only when it moved).
    fn add_sample(&self, at: Instant, lsn: u64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.back().is_none_or(|&(_, last)| lsn > last) {
            s.push_back((at, lsn));
        }
        let keep = at.checked_sub(self.max_lag * 2);
        while s.len() > MAX_SAMPLES || (s.len() > 1 && keep.is_some_and(|k| s[0].0 < k)) {
            s.pop_front();
        }
    }

    fn lag_now(&self, replay: u64, now: Instant, replay_age: Option<Duration>) -> Option<(Duration, u64)> {
        lag(&self.samples.lock().unwrap_or_else(|p| p.into_inner()), replay, now, replay_age)
    }
}

/// A replica's lag from the primary's insert positions over time (`samples`, oldest first, increasing): zero if
/// it replayed the newest; else how long ago the primary first had WAL beyond `replay` (the oldest sample past
/// it; at least the history's span when even the oldest is). Also the bytes behind the newest sample. `None`
/// without samples.
///
/// Unlike `now() - pg_last_xact_replay_timestamp()`, this does not grow while the primary is idle, and it sees
/// a standby cut off from its primary (received = replayed, but behind).
pub fn lag(
    samples: &VecDeque<(Instant, u64)>,
    replay: u64,
    now: Instant,
    replay_age: Option<Duration>,
) -> Option<(Duration, u64)> {
    let &(_, newest) = samples.back()?;
    if replay >= newest {
        return Some((Duration::ZERO, 0));
    }
    let &(oldest_at, oldest) = samples.front()?;
    if replay < oldest {
        // Behind every sample (for example at the first health round after open): the primary passed the replay
        // position before the history starts, so the lag is at least the history's span; the age of the last
        // replayed transaction is the better estimate then (a replica hours behind must not look caught up).
        let span = now.saturating_duration_since(oldest_at);
        return Some((span.max(replay_age.unwrap_or_default()), newest - replay));
    }
    let first = samples.iter().find(|(_, l)| *l > replay).map_or(now, |(t, _)| *t);
    Some((now.saturating_duration_since(first), newest - replay))
}

/// The primary's insert position (see [`INSERT_LSN_SQL`]) on `conn`.
pub async fn insert_lsn(conn: &mut AsyncPgConnection) -> Result<u64> {
    use diesel_async::RunQueryDsl;
    let lsn: i64 = super::statements::InsertLsn.get_result(conn).await?;
    Ok(lsn.max(0) as u64)
}

/// What a replica said about itself.
#[derive(QueryableByName, Debug, Clone, Copy)]
pub struct Probe {
    #[diesel(sql_type = Bool)]
    pub standby: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub replay: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub replay_age: Option<f64>,
}

pub async fn probe(conn: &mut AsyncPgConnection) -> Result<Probe> {
    use diesel_async::RunQueryDsl;
    Ok(sql_query(PROBE_SQL).get_result(conn).await?)
}

/// The same probe on a raw client (a one-off connection).
pub async fn probe_raw(client: &tokio_postgres::Client) -> std::result::Result<Probe, tokio_postgres::Error> {
    let row = client.query_one(PROBE_SQL, &[]).await?;
    Ok(Probe { standby: row.try_get(0)?, replay: row.try_get(1)?, replay_age: row.try_get(2)? })
}

/// How long a probe may take: `acquireTimeout`, at most [`PROBE_WITHIN`].
pub fn probe_timeout(acquire_timeout_ms: u64) -> Duration {
    Duration::from_millis(acquire_timeout_ms.max(1)).min(PROBE_WITHIN)
}

/// The outcome of one probe of one host.
pub enum Outcome<T> {
    Answered(T, Duration),
    /// The pool had every connection busy: says nothing about the host.
    Busy,
    Failed(String),
}

/// Runs `f` on a pooled connection of `pool`, within `within`.
pub async fn on_pool<T>(
    spec: &ConnectSpec,
    pool: &Pool,
    within: Duration,
    f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>,
) -> Outcome<T> {
    let started = Instant::now();
    let work = async {
        // Straight from the pool: a probe is background work, not a caller waiting for a connection (the
        // pool's waiting gauge and acquire-timeout counter are about callers).
        let mut conn = match pool.get().await {
            Ok(c) => c,
            Err(bb8::RunError::User(e)) => return Err(Some(spec.redact(&e.to_string()))),
            Err(bb8::RunError::TimedOut) => return Err(None),
        };
        let got = conn.run(f).await;
        got.map_err(|e| Some(spec.redact(&e.0.message)))
    };
    match tokio::time::timeout(within, work).await {
        Ok(Ok(v)) => Outcome::Answered(v, started.elapsed()),
        Ok(Err(Some(e))) => Outcome::Failed(e),
        Ok(Err(None)) | Err(_) => {
            let st = pool.state();
            if st.connections > 0 && st.idle_connections == 0 && st.connections >= spec.budget.max() {
                Outcome::Busy
            } else {
                Outcome::Failed(format!("no answer within {} ms", within.as_millis()))
            }
        }
    }
}

/// One round of the health task: the primary's position, then each replica's state.
pub async fn check(replicas: &Replicas, fresh: &Freshness, primary: (&ConnectSpec, &Pool), within: Duration) {
    let seen = fresh.seen();
    let primary_probe = on_pool(primary.0, primary.1, within, async |c| insert_lsn(c).await);
    let replica_probes = futures_util::future::join_all(replicas.list.iter().map(|r| async move {
        match &r.pool {
            Some(pool) => on_pool(&r.spec, pool, within, async |c| probe(c).await).await,
            None => Outcome::Busy,
        }
    }));
    let (p, rs) = tokio::join!(primary_probe, replica_probes);
    let now = Instant::now();
    let primary = match p {
        Outcome::Answered(lsn, _) => {
            replicas.add_sample(now, lsn);
            fresh.settle(seen, lsn);
            if !replicas.primary_up.swap(true, Ordering::Relaxed) {
                tracing::info!(primary = %replicas.primary_host, "primary answers health probes again");
            }
            Primary::Answered
        }
        Outcome::Busy => Primary::Busy,
        Outcome::Failed(e) => {
            if replicas.primary_up.swap(false, Ordering::Relaxed) {
                tracing::warn!(primary = %replicas.primary_host, error = %e, "primary does not answer health probes");
            }
            Primary::Down
        }
    };
    for (r, outcome) in replicas.list.iter().zip(rs) {
        apply(replicas, r, outcome, primary, now);
    }
}

/// What the primary's probe of a health round gave.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Primary {
    Answered,
    /// Its pool had every connection busy: nothing new is known about the lag.
    Busy,
    Down,
}

fn apply(replicas: &Replicas, r: &Replica, outcome: Outcome<Probe>, primary: Primary, now: Instant) {
    let h = &r.health;
    match outcome {
        Outcome::Busy => {}
        Outcome::Failed(e) => {
            h.forget_lag();
            r.set_state(State::Down, Some(&e));
            h.set_error(Some(e));
        }
        Outcome::Answered(p, _) => {
            let replay = match (p.standby, p.replay) {
                (true, Some(replay)) => replay.max(0) as u64,
                (true, None) => {
                    // A standby that has not replayed anything yet (still starting up): no reads until it has.
                    h.forget_lag();
                    h.set_error(Some("a standby with no replay position yet (still starting?)".into()));
                    r.set_state(State::Down, None);
                    return;
                }
                (false, _) => {
                    h.forget_lag();
                    h.set_error(Some("not in recovery (pg_is_in_recovery() is false)".into()));
                    r.set_state(State::NotStandby, None);
                    return;
                }
            };
            h.replay_lsn.store(replay, Ordering::Release);
            h.set_error(None);
            let age = p.replay_age.filter(|a| a.is_finite() && *a >= 0.0).map(Duration::from_secs_f64);
            match (primary, replicas.lag_now(replay, now, age)) {
                (Primary::Answered, Some((lag, _))) => {
                    h.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
                    r.set_state(if lag > replicas.max_lag { State::Lagging } else { State::Up }, None);
                }
                // The primary's pool is busy: nothing new about the lag; the state stays as it was.
                (Primary::Busy, _) => {}
                _ => {
                    // The primary does not answer: the standby keeps serving what it has (reads must not fail
                    // with the primary); its lag is unknown (absent from the metrics) until the primary answers.
                    h.forget_lag();
                    r.set_state(State::Up, None);
                }
            }
        }
    }
}

/// Marks `r` down after a read lost its connection (reads stop at once; the next probe brings it back).
pub fn read_failed(r: &Replica, e: &Error, lost: bool) {
    if lost {
        r.set_state(State::Down, Some(&e.0.message));
        r.health.set_error(Some(e.0.message.to_string()));
    }
}

/// Starts the health task: a round right away, then every [`CHECK_EVERY`].
pub fn spawn(
    replicas: Arc<Replicas>,
    fresh: Arc<Freshness>,
    primary: Arc<ConnectSpec>,
    pool: Pool,
    acquire_timeout_ms: u64,
) -> tokio::task::JoinHandle<()> {
    let within = probe_timeout(acquire_timeout_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            check(&replicas, &fresh, (&primary, &pool), within).await;
        }
    })
}

/// What the primary says of itself for the hosts report: in recovery?, and its insert position (as `replay`).
const PRIMARY_PROBE_SQL: &str = "SELECT pg_is_in_recovery() AS standby, \
     CASE WHEN pg_is_in_recovery() THEN NULL \
          ELSE pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8 END AS replay, \
     NULL::float8 AS replay_age";

impl super::PostgresBackend {
    /// The `hosts` op: every host probed now (each bounded by `acquireTimeout`, at most 2 s, concurrently), with
    /// the router's state and counters.
    pub(super) async fn hosts_now(&self) -> Result<parallax_storage_abi::hosts::HostsReport> {
        use parallax_storage_abi::hosts::{HostReport, HostsReport};
        let r = &self.replicas;
        let within = probe_timeout(self.pg.pool.acquire_timeout_ms);
        let primary = on_pool(&self.spec, &self.pool, within, async |c| {
            use diesel_async::RunQueryDsl;
            Ok(sql_query(PRIMARY_PROBE_SQL).get_result::<Probe>(c).await?)
        });
        let others = futures_util::future::join_all(r.list.iter().map(|x| async move {
            match &x.pool {
                Some(pool) => on_pool(&x.spec, pool, within, async |c| probe(c).await).await,
                None => one_off(&x.spec, within).await,
            }
        }));
        let (primary, others) = tokio::join!(primary, others);
        let tracking = r.tracking();
        let any_up = r.list.iter().any(|x| x.health.state() == State::Up);
        let server_role = |p: &Probe| Some(if p.standby { "standby" } else { "primary" }.to_string());
        let micros = |d: Duration| Some(d.as_micros() as i64);
        let mut primary_lsn = None;
        let mut hosts = vec![match primary {
            Outcome::Answered(p, took) => {
                primary_lsn = p.replay.map(|l| l.max(0) as u64);
                HostReport {
                    role: "primary".into(),
                    address: self.spec.location.clone(),
                    reachable: true,
                    server_role: server_role(&p),
                    latency_us: micros(took),
                    state: "up".into(),
                    ..Default::default()
                }
            }
            Outcome::Busy => HostReport {
                role: "primary".into(),
                address: self.spec.location.clone(),
                reachable: true,
                state: "up".into(),
                error: Some("every pooled connection is busy; not probed".into()),
                ..Default::default()
            },
            Outcome::Failed(e) => HostReport {
                role: "primary".into(),
                address: self.spec.location.clone(),
                state: "down".into(),
                error: Some(e),
                ..Default::default()
            },
        }];
        hosts[0].reads = r.primary_read_count();
        hosts[0].receives_reads = match r.pref {
            ReadPreference::Primary => true,
            ReadPreference::Replica => !any_up || r.list.is_empty(),
            ReadPreference::Any => true,
        };
        for (x, outcome) in r.list.iter().zip(others) {
            let routed = x.health.state();
            let mut row = HostReport {
                role: "replica".into(),
                address: x.spec.location.clone(),
                reads: x.health.read_count(),
                receives_reads: tracking && routed == State::Up,
                ..Default::default()
            };
            let probed = match outcome {
                Outcome::Answered(p, took) => {
                    row.reachable = true;
                    row.server_role = server_role(&p);
                    row.latency_us = micros(took);
                    match (p.standby, p.replay) {
                        (true, Some(replay)) => {
                            let replay = replay.max(0) as u64;
                            let bytes = primary_lsn.map(|l| l.saturating_sub(replay));
                            row.replay_lag_bytes = bytes;
                            // The router's measure while it tracks lag; else 0 when caught up, or the age of
                            // the last transaction replayed.
                            let age = p
                                .replay_age
                                .filter(|a| a.is_finite() && *a >= 0.0)
                                .map(|a| (a * 1000.0) as u64);
                            row.replay_lag_ms = match (tracking, x.health.lag_ms(), bytes) {
                                (true, Some(ms), _) => Some(ms),
                                (_, _, Some(0)) => Some(0),
                                _ => age,
                            };
                            let lagging =
                                row.replay_lag_ms.is_some_and(|ms| ms > r.max_lag.as_millis() as u64);
                            if lagging {
                                State::Lagging
                            } else {
                                State::Up
                            }
                        }
                        _ => {
                            row.error =
                                Some("not in recovery (pg_is_in_recovery() is false): not a standby".into());
                            State::NotStandby
                        }
                    }
                }
                Outcome::Busy if x.pool.is_some() => routed,
                Outcome::Busy => State::Unknown,
                Outcome::Failed(e) => {
                    row.error = Some(e);
                    State::Down
                }
            };
            // The router's state while it routes (it decides the reads); what the probe found otherwise.
            let state = if tracking && routed != State::Unknown { routed } else { probed };
            row.state = state.as_str().into();
            if row.error.is_none() && state == State::Down {
                row.error = x.health.error();
            }
            hosts.push(row);
        }
        Ok(HostsReport {
            read_preference: r.pref.as_str().into(),
            max_replica_lag_ms: (!r.list.is_empty()).then_some(r.max_lag.as_millis() as u64),
            hosts,
        })
    }
}

/// A probe on a one-off connection (a replica without a pool: `readPreference: primary`).
async fn one_off(spec: &ConnectSpec, within: Duration) -> Outcome<Probe> {
    let started = Instant::now();
    let work = async {
        let slot = spec.budget.for_new(None).await?;
        let client = super::connect::connect_raw(spec, slot).await?;
        probe_raw(&client).await.map_err(|e| Error::unavailable(spec.redact(&e.to_string())))
    };
    match tokio::time::timeout(within, work).await {
        Ok(Ok(p)) => Outcome::Answered(p, started.elapsed()),
        Ok(Err(e)) => Outcome::Failed(e.0.message.to_string()),
        Err(_) => Outcome::Failed(format!("no answer within {} ms", within.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(states: &[(State, u64)], pref: ReadPreference) -> Replicas {
        let cfg = crate::config::parse(
            &serde_json::json!({"type": "postgresql", "postgresql": {"url": "postgresql://u@db/x"}})
                .to_string(),
        )
        .unwrap()
        .postgresql
        .unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new(&Default::default(), "postgresql"));
        let list = states
            .iter()
            .enumerate()
            .map(|(i, &(state, replay))| {
                let mut c = cfg.clone();
                c.url = None;
                c.host = Some(format!("r{i}"));
                let spec = Arc::new(super::super::connect::spec(&c, metrics.clone()).unwrap());
                let r = Replica::new(spec, None);
                r.health.state.store(state as u8, Ordering::Relaxed);
                r.health.replay_lsn.store(replay, Ordering::Relaxed);
                r
            })
            .collect();
        Replicas::new(list, pref, 10_000, "db:5432".into())
    }

    fn fresh(mark: u64) -> Arc<Freshness> {
        let f = Arc::new(Freshness::default());
        f.advance(0, mark);
        f
    }

    fn name(t: &Target<'_>) -> String {
        match t {
            Target::Primary => "primary".into(),
            Target::Replica(r) => r.host.clone(),
        }
    }

    #[test]
    fn pick_follows_state_mark_and_preference() {
        use Fallback::*;
        use ReadPreference::*;
        use State::*;
        // (replicas as (state, replay), mark, preference, an uncovered write) → hosts over 4 picks, fallback of the first.
        #[allow(clippy::type_complexity)]
        let cases: &[(&[(State, u64)], u64, ReadPreference, bool, &[&str], Option<Fallback>)] = &[
            (&[(Up, 100)], 50, Primary, false, &["primary"; 4], None),
            (&[(Up, 100)], 50, Replica, false, &["r0:5432"; 4], None),
            (&[(Up, 100)], 100, Replica, false, &["r0:5432"; 4], None),
            (&[(Up, 100)], 101, Replica, false, &["primary"; 4], Some(OwnWrite)),
            (&[(Up, 100)], 50, Replica, true, &["primary"; 4], Some(OwnWrite)),
            (&[(Unknown, 100)], 0, Replica, false, &["primary"; 4], Some(Unavailable)),
            (&[(Down, 100)], 0, Replica, false, &["primary"; 4], Some(Unavailable)),
            (&[(Lagging, 100)], 0, Replica, false, &["primary"; 4], Some(Unavailable)),
            (&[(NotStandby, 100)], 0, Replica, false, &["primary"; 4], Some(Unavailable)),
            (&[(Up, 100), (Up, 100)], 0, Replica, false, &["r0:5432", "r1:5432", "r0:5432", "r1:5432"], None),
            (&[(Up, 10), (Up, 100)], 50, Replica, false, &["r1:5432"; 4], None),
            (&[(Down, 100), (Up, 100)], 50, Replica, false, &["r1:5432"; 4], None),
            (&[(Up, 100)], 0, Any, false, &["r0:5432", "primary", "r0:5432", "primary"], None),
            (&[(Up, 10)], 50, Any, false, &["primary"; 4], Some(OwnWrite)),
            (&[(Down, 10)], 0, Any, false, &["primary"; 4], Some(Unavailable)),
        ];
        for (i, (states, mark, pref, unknown, want, fallback)) in cases.iter().enumerate() {
            let r = replicas(states, *pref);
            let f = fresh(*mark);
            if *unknown {
                f.wrote(); // a write the marker has not covered yet
            }
            let mut got = Vec::new();
            let mut first = None;
            for k in 0..4 {
                let (t, why) = r.pick(&f);
                if k == 0 {
                    first = Some(why);
                }
                got.push(name(&t));
            }
            assert_eq!(got, *want, "case {i}");
            assert_eq!(first.unwrap(), *fallback, "case {i}");
            let counted: u64 = r.fallbacks().iter().sum();
            assert_eq!(counted, if fallback.is_some() { 4 } else { 0 }, "case {i}");
            if let Some(why) = fallback {
                assert_eq!(r.fallbacks()[*why as usize], 4, "case {i}");
            }
        }
    }

    #[test]
    fn any_skips_a_primary_that_does_not_answer() {
        let r = replicas(&[(State::Up, 100)], ReadPreference::Any);
        r.primary_up.store(false, Ordering::Relaxed);
        let f = fresh(0);
        for _ in 0..4 {
            assert_eq!(name(&r.pick(&f).0), "r0:5432");
        }
    }

    #[test]
    fn host_port_brackets_ipv6() {
        let mut pg = tokio_postgres::Config::new();
        pg.host("::1").port(5434);
        assert_eq!(host_port(&pg), "[::1]:5434");
        let mut pg = tokio_postgres::Config::new();
        pg.host("db.internal");
        assert_eq!(host_port(&pg), "db.internal:5432");
    }

    #[test]
    fn a_write_is_covered_only_by_a_position_read_after_it() {
        let f = fresh(10);
        assert!(f.is_current());
        let before = f.seen();
        f.wrote();
        assert!(!f.is_current(), "a finished write without a mark sends reads to the primary");
        f.advance(before, 20); // a position read before the write finished
        assert!(!f.is_current());
        assert_eq!(f.mark(), 20);
        let after = f.seen();
        f.wrote(); // a second write while that read runs
        f.advance(after, 30);
        assert!(!f.is_current(), "the second write is not covered by a read that started before it finished");
        f.advance(f.seen(), 25);
        assert!(f.is_current());
        assert_eq!(f.mark(), 30, "the mark never goes back");
        // A probe while everything is covered is not a write: the mark stays.
        f.settle(f.seen(), 99);
        assert_eq!(f.mark(), 30);
        // A probe covers a write the marker could not (the primary was unreachable).
        f.wrote();
        f.settle(f.seen(), 40);
        assert!(f.is_current());
        assert_eq!(f.mark(), 40);
    }

    #[test]
    fn lag_is_how_long_ago_the_primary_had_wal_not_replayed() {
        let now = Instant::now();
        let s = |ago_ms: u64| now - Duration::from_millis(ago_ms);
        let samples: VecDeque<(Instant, u64)> = [(s(5000), 100), (s(3000), 200), (s(1000), 300)].into();
        assert_eq!(lag(&VecDeque::new(), 0, now, None), None);
        assert_eq!(lag(&samples, 300, now, None), Some((Duration::ZERO, 0)));
        assert_eq!(lag(&samples, 400, now, None), Some((Duration::ZERO, 0)));
        assert_eq!(lag(&samples, 250, now, None), Some((Duration::from_millis(1000), 50)));
        assert_eq!(lag(&samples, 200, now, None), Some((Duration::from_millis(1000), 100)));
        assert_eq!(lag(&samples, 150, now, None), Some((Duration::from_millis(3000), 150)));
        // Behind even the oldest sample: at least the history's span.
        assert_eq!(lag(&samples, 50, now, None), Some((Duration::from_millis(5000), 250)));
        // ... or the age of its last replayed transaction when that is more: a replica hours behind at the first
        // health round after open (one sample, taken just now) does not look caught up.
        let first: VecDeque<(Instant, u64)> = [(now, 300)].into();
        let hours = Duration::from_secs(7200);
        assert_eq!(lag(&first, 50, now, Some(hours)), Some((hours, 250)));
        assert_eq!(
            lag(&first, 300, now, Some(hours)),
            Some((Duration::ZERO, 0)),
            "caught up on an idle primary"
        );
    }

    #[test]
    fn samples_keep_moves_only_and_twice_the_max_lag() {
        let r = replicas(&[(State::Up, 0)], ReadPreference::Replica);
        let t0 = Instant::now();
        r.add_sample(t0, 100);
        r.add_sample(t0 + Duration::from_secs(1), 100); // idle primary: the first time it had 100 counts
        assert_eq!(r.lag_now(50, t0 + Duration::from_secs(5), None).unwrap().0, Duration::from_secs(5));
        r.add_sample(t0 + Duration::from_secs(25), 200);
        r.add_sample(t0 + Duration::from_secs(30), 300);
        // 10 s max lag: samples older than 20 s go, the newest always stays.
        let s = r.samples.lock().unwrap();
        assert_eq!(s.iter().map(|x| x.1).collect::<Vec<_>>(), vec![200, 300]);
    }
}
