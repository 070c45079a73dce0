//! The document of the audit chain's maintenance op (see [`crate::maintenance`] for the envelope and its
//! rules): proving that no audit entry was altered, removed or slipped in.
//!
//! - `audit-verify` v1 ([`AuditVerifyParams`] → [`AuditVerifyReport`]): walks the chain of the open storage
//!   and reports the entries checked, the chain's head and checkpoint, and every break found (the first
//!   [`MAX_BREAKS`] in full).
//!
//! **The chain.** Every audit entry carries a sequence number (`seq`, 1, 2, 3, … in the order the storage
//! accepted the entries, across every process writing to it), the hash of the entry before it (`prev`) and its
//! own hash:
//!
//! ```text
//! hash = SHA-256( "parallax audit chain v1" ‖ 0x00 ‖ prev (32 bytes) ‖ canonical form of the entry )
//! ```
//!
//! `prev` of the first entry is 32 zero bytes. The canonical form is the transfer checksum's (checksumVersion
//! 1; see [`crate::transfer`]): the JSON object `{"action", "actor", "details", "id", "ipAddress",
//! "resourceId", "resourceType", "timestamp", "userAgent"}` with keys sorted by their UTF-8 bytes, no
//! whitespace, `timestamp` in microseconds since the epoch, absent values as `null`, `details` parsed and
//! rewritten with sorted keys and normalised numbers (`1e2`, `100.0` and `100` are `100`; other numbers in
//! their shortest `f64` form), strings escaped as `serde_json` writes them, and `ipAddress` in its canonical
//! text form (a `/32` or `/128` suffix dropped). It is computed from the entry as the plugin reads it back, so
//! PostgreSQL's JSONB and INET forms hash the same as SQLite's and the file store's text.
//!
//! **Breaks**, each with the sequence number and id of the entry where it shows:
//! - `altered`: the entry's content no longer gives its hash, and the next entry (or the head) links to that
//!   hash: a field was changed after it was written.
//! - `missing`: sequence numbers are skipped (entries removed), or the newest entries up to the head are gone.
//! - `inserted`: an entry the chain does not hold: no sequence number, a sequence number held twice, or a hash
//!   that neither matches its content nor is linked to by the next entry.
//! - `reordered`: an intact entry whose `prev` is not the hash of the entry before it (entries swapped or
//!   moved).
//! - `head`: the chain does not end where its head says (or where [`AuditVerifyParams::expect_head`] says).
//!
//! **Retention and archive** remove the chain's oldest entries only as a prefix (never a hole): the storage
//! keeps a checkpoint, the sequence number and hash of the last entry removed and how many were removed, and
//! the walk starts after it.
//!
//! Results are tolerant (no `deny_unknown_fields`): a later plugin may add fields to version 1 results.

use serde::{Deserialize, Serialize};

/// The `audit-verify` op.
pub const AUDIT_VERIFY: &str = "audit-verify";

/// How many breaks a report lists in full; [`AuditVerifyReport::break_count`] counts all of them.
pub const MAX_BREAKS: usize = 20;

/// Parameters of `audit-verify` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditVerifyParams {
    /// Start at the first entry (in chain order) with a timestamp at or after this time (UTC microseconds),
    /// trusting its stored `prev`; the whole chain after the checkpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// A head recorded earlier: the chain must still hold that entry with that hash (detects a truncation of
    /// the newest entries, or a chain rewritten since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_head: Option<ChainHead>,
}

/// A position in the chain: a sequence number and the hash of the entry there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// The sequence number (0 for an empty chain).
    pub seq: i64,
    /// The entry's hash, 64 lower-case hex digits (all zeros for an empty chain).
    pub hash: String,
}

/// Where the kept chain starts: the oldest entries up to `seq` were removed by retention or archive runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheckpoint {
    /// The last removed entry's sequence number.
    pub seq: i64,
    /// The last removed entry's hash (the `prev` of the first kept entry).
    pub hash: String,
    /// How many entries were removed in all.
    pub removed: u64,
    /// When it was last moved (UTC microseconds).
    pub at: i64,
}

/// One break of the chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuditBreak {
    /// `altered`, `missing`, `inserted`, `reordered` or `head` (see the module documentation).
    pub kind: String,
    /// The sequence number where it shows (the first missing one for `missing`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The entry where it shows (the entry after the gap for `missing`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A sentence for the operator.
    pub message: String,
}

/// The result of `audit-verify` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerifyReport {
    /// No break found.
    pub ok: bool,
    /// Entries whose hash and link were checked.
    pub checked: u64,
    /// The first sequence number checked (0 when none).
    pub first_seq: i64,
    /// The last sequence number checked (0 when none).
    pub last_seq: i64,
    /// The head the storage records (the newest entry's position).
    pub head: ChainHead,
    /// Where the kept chain starts, when entries were removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ChainCheckpoint>,
    /// Entries at or below the checkpoint still present (a retention or archive run removing them was
    /// interrupted: running it again removes them). Not part of the walk.
    pub awaiting_removal: u64,
    /// Every break found, in chain order (the first [`MAX_BREAKS`]).
    pub breaks: Vec<AuditBreak>,
    /// How many breaks in all.
    pub break_count: u64,
    /// With `expectHead`: whether the chain still holds that entry with that hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_head_ok: Option<bool>,
    /// Wall time of the call.
    pub duration_ms: u64,
}
