//! How far a transfer (`copy` or `import`) got, kept in the **target** ([`super::Store::save_transfer_state`])
//! after every committed page, so that a run killed half-way and started again resumes from its cursor with
//! its running checksums, and so that a target half filled by this source is told apart from a target that
//! held rows before (refused without `merge`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::checksum::Tally;

/// `copy` or `import`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    #[default]
    Copy,
    Import,
}

/// The steps of a transfer, in order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    #[default]
    Patterns,
    Executions,
    Audit,
    /// Re-reading the unfinished executions copied, to report those that changed after the snapshot.
    Refresh,
    Verify,
    Done,
}

/// Where a table's scan got: the key of the last row landed (`(time, id)`; patterns by name).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

/// Where a run started reading a table (see [`TransferState::recount_base`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecountBase {
    /// Rows read before.
    pub rows: u64,
    /// The cursor then (none: from the first row).
    #[serde(default)]
    pub after: Option<Cursor>,
}

/// One table's running figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableState {
    /// Rows of the snapshot read from the source, and their checksum.
    pub source: Tally,
    /// The same rows read back from the target.
    pub target: Tally,
    /// Inserted by this run (and the runs it resumed).
    pub copied: u64,
    /// Present with equal content.
    pub present: u64,
    /// Present with different content.
    pub conflicts: u64,
}

/// A transfer's saved state (JSON text in the target). `Default` is for tests (`..Default::default()`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TransferState {
    /// The run id (a UUIDv7).
    pub id: String,
    pub kind: Kind,
    /// Where rows come from, never a secret: `sqlite /path`, `postgresql user@host:5432/db`, `file /dir`,
    /// `export <run-id> at <url>`. A later run of the same source resumes or catches up.
    pub source: String,
    /// The snapshot cut (µs, UTC).
    pub snapshot: i64,
    /// A catch-up run: the snapshot of the finished run it continues (rows up to it were landed then).
    #[serde(default)]
    pub previous_snapshot: Option<i64>,
    pub started_at: i64,
    pub updated_at: i64,
    pub merge: bool,
    /// The target held no row of any table when the first run of this source started.
    pub target_was_empty: bool,
    /// This run owns the target's executions (the target was empty when it began, no merge, and the target
    /// lands owned pages: [`super::Store::land_owned`]): each executions page lands without an id search in
    /// one transaction with this state, nothing is read back per page, and the target's executions and events
    /// checksums are computed by scanning the target at the end. Kept by a resumed run; never set on a
    /// catch-up or rescan (the target holds rows then).
    #[serde(default)]
    pub owned: bool,
    pub phase: Phase,
    /// Per table ([`parallax_storage_abi::transfer::TABLES`]): the last key landed.
    #[serde(default)]
    pub cursors: BTreeMap<String, Cursor>,
    /// Per table: the running figures.
    #[serde(default)]
    pub tables: BTreeMap<String, TableState>,
    /// Ids of executions copied while pending or running (checked again at the end; refreshed by a
    /// catch-up run).
    #[serde(default)]
    pub unfinished: Vec<String>,
    /// The first conflicts found (the report lists at most 100).
    #[serde(default)]
    pub conflicts: Vec<parallax_storage_abi::transfer::Conflict>,
    /// Ids of unfinished executions that changed in the source after they were copied (excluded from both
    /// checksums; refreshed by a catch-up run).
    #[serde(default)]
    pub changed: Vec<String>,
    /// Per table (`executions`, `execution_events`): what the executions in `unfinished` added to both
    /// checksums, so that a catch-up can take it out again and count their refreshed rows instead.
    #[serde(default)]
    pub unfinished_counted: BTreeMap<String, Tally>,
    /// A catch-up run refreshed the unfinished executions of the run it continues (set once it is done).
    #[serde(default)]
    pub unfinished_refreshed: bool,
    /// Per table: the source rows left out of both checksums (conflicts), so that a total known in advance
    /// (an export's `export.json`) can still be checked.
    #[serde(default)]
    pub excluded: BTreeMap<String, Tally>,
    /// Per table: rows newer than the snapshot (counted by the copy driver, not copied).
    #[serde(default)]
    pub after_snapshot: BTreeMap<String, u64>,
    /// Per table (`executions`, `audit_logs`): the rows read and the cursor when this run started copying
    /// (after a catch-up refreshed the unfinished rows), so that the source's recount covers the keys this
    /// run read.
    #[serde(default)]
    pub recount_base: Option<BTreeMap<String, RecountBase>>,
    /// Why verification failed besides the per-table checksums (a source recount that differs).
    #[serde(default)]
    pub problems: Vec<String>,
}

impl TransferState {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a transfer state serializes")
    }

    /// Reads back [`TransferState::to_json`]; a damaged value reads as `None`.
    pub fn from_json(text: &str) -> Option<TransferState> {
        serde_json::from_str(text).ok()
    }
}
