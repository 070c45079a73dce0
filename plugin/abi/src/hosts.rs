//! The document of the `hosts` maintenance op (see [`crate::maintenance`] for the envelope and its rules).
//!
//! - `hosts` v1 ([`HostsParams`] → [`HostsReport`]): every database host the storage object talks to, probed
//!   now: the PostgreSQL primary and each configured read replica with its role, reachability, latency and
//!   replay lag, and how reads are routed. SQLite and the file store answer one row (their file or directory).
//!   `parallax storage test-connection` prints it after the health summary.
//!
//! Results are tolerant (no `deny_unknown_fields`): a later plugin may add fields to version 1 results.

use serde::{Deserialize, Serialize};

/// The `hosts` op.
pub const HOSTS: &str = "hosts";

/// Parameters of `hosts` v1: none so far (a newer host's option is refused by name, never ignored).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostsParams {}

/// The result of `hosts` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostsReport {
    /// `primary`, `replica` or `any` (`storage.postgresql.readPreference`); `primary` on SQLite and files.
    pub read_preference: String,
    /// `storage.postgresql.maxReplicaLag` in milliseconds; `None` where there are no replicas to lag.
    pub max_replica_lag_ms: Option<u64>,
    /// The primary (or the only host) first, then the replicas in configuration order.
    pub hosts: Vec<HostReport>,
}

/// One host of [`HostsReport`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// The configured role: `primary` or `replica` (`local` for SQLite and the file store).
    pub role: String,
    /// Where it is, secrets redacted: `user@host:port/database`, a file path or a directory.
    pub address: String,
    /// Whether the probe just now connected and answered.
    pub reachable: bool,
    /// What the server says it is: `primary` or `standby` (`pg_is_in_recovery()`); `None` when unreachable or
    /// not a server.
    pub server_role: Option<String>,
    /// Round trip of the probe, in microseconds.
    pub latency_us: Option<i64>,
    /// How far the replica's replay is behind the primary, in milliseconds (see the README's routing section
    /// for how it is measured); `None` for the primary or while unknown.
    pub replay_lag_ms: Option<u64>,
    /// The same in bytes of WAL (primary's insert position minus the replica's replay position).
    pub replay_lag_bytes: Option<u64>,
    /// The router's state of this host: `up`, `lagging`, `down`, `not-standby` or `unknown` (not probed yet).
    /// While the router has no state of its own for it (its first health check has not run, or it routes no
    /// reads: `readPreference: primary`), what the probe just now found.
    pub state: String,
    /// Whether plain reads may go to this host now (by `readPreference` and the router's state: `false` for a
    /// replica until the router's first health check found it up).
    pub receives_reads: bool,
    /// Reads this storage object has sent to this host since it was opened.
    pub reads: u64,
    /// Why it is down or refused, secrets redacted.
    pub error: Option<String>,
}
