//! The audit chain's persistence on this backend (the rules are in [`crate::audit_chain`]).
//!
//! - **Appends** (`append_audit`, `import_audit`) run as jobs of the single writer, whose group transaction is
//!   a `BEGIN IMMEDIATE` one: SQLite's write lock is held from reading the head record ([`read_head`]) until
//!   the chained rows and the moved head ([`write_head`]) commit, so several processes writing to one file
//!   still make one gap-free chain.
//! - **Legacy entries** (written before the chain existed) are chained once, by the first open that may write
//!   ([`chain_legacy`]), in one `BEGIN IMMEDIATE` transaction.
//! - **Reads** of [`crate::audit_chain::Store`] go through the read pool; the checkpoint through the writer.

use diesel::{
    dsl::{count_star, max, min},
    prelude::*,
    sql_query,
    sql_types::{BigInt, Nullable, Text},
    sqlite::Sqlite,
};
use parallax_storage_abi::AuditEntry;

use super::{
    models::{AuditRow, ChainedAuditRow},
    schema::{audit_chain, audit_logs},
    SqliteBackend,
};
use crate::{
    audit_chain::{extend, hash_of, ChainState, Chained, Checkpoint, Head, Store},
    error::{sqlite_error, Error, Result, SqliteFailure},
    rules::Key,
};

/// Rows per multi-row insert: 12 bound values a row, well under SQLite's variable limit.
const INSERT_CHUNK: usize = 800;

/// Legacy entries chained per page.
const LEGACY_PAGE: i64 = 5000;

/// The one row of `audit_chain`.
#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_chain, check_for_backend(Sqlite))]
struct HeadRecord {
    head_seq: i64,
    head_hash: Vec<u8>,
    checkpoint_seq: Option<i64>,
    checkpoint_hash: Option<Vec<u8>>,
    checkpoint_removed: i64,
    checkpoint_at: Option<i64>,
    legacy_pending: bool,
}

fn damaged(what: &str) -> Error {
    Error::internal(format!(
        "the audit chain's head record (table audit_chain, id 1) {what}: it was changed around the plugin; \
         the chain can be neither extended nor verified until it is restored"
    ))
}

impl HeadRecord {
    fn head(&self) -> Result<Head> {
        let hash =
            hash_of(&self.head_hash).ok_or_else(|| damaged("holds a head hash that is not 32 bytes"))?;
        Ok(Head { seq: self.head_seq, hash })
    }

    fn state(&self) -> Result<ChainState> {
        let checkpoint = match self.checkpoint_seq {
            None => None,
            Some(seq) => {
                let hash = self
                    .checkpoint_hash
                    .as_deref()
                    .and_then(hash_of)
                    .ok_or_else(|| damaged("holds a checkpoint without a 32-byte hash"))?;
                Some(Checkpoint {
                    seq,
                    hash,
                    removed: self.checkpoint_removed.max(0) as u64,
                    at: self.checkpoint_at.unwrap_or(0),
                })
            }
        };
        Ok(ChainState { head: self.head()?, checkpoint })
    }
}

fn head_record(conn: &mut SqliteConnection) -> Result<HeadRecord> {
    audit_chain::table
        .find(1)
        .select(HeadRecord::as_select())
        .first(conn)
        .optional()
        .map_err(sqlite_error)?
        .ok_or_else(|| damaged("is missing"))
}

/// The head; the caller is inside the writer's write transaction.
pub(super) fn read_head(conn: &mut SqliteConnection) -> Result<Head> {
    head_record(conn)?.head()
}

/// Moves the head; the caller is inside the transaction that read it.
pub(super) fn write_head(conn: &mut SqliteConnection, head: &Head) -> Result<()> {
    let n = diesel::update(audit_chain::table.find(1))
        .set((audit_chain::head_seq.eq(head.seq), audit_chain::head_hash.eq(head.hash.to_vec())))
        .execute(conn)
        .map_err(sqlite_error)?;
    if n != 1 {
        return Err(damaged("is missing"));
    }
    Ok(())
}

/// Inserts `entries`, chained in order after `head` (moved to the last one), in multi-row statements. The id
/// key refusing a row fails the call (the caller's savepoint undoes the rows before it).
pub(super) fn insert(conn: &mut SqliteConnection, head: &mut Head, entries: &[AuditEntry]) -> Result<()> {
    let links = extend(head, entries);
    let rows: Vec<ChainedAuditRow> =
        entries.iter().zip(&links).map(|(e, l)| ChainedAuditRow::new(AuditRow::from(e), l)).collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        diesel::insert_into(audit_logs::table).values(chunk).execute(conn).map_err(sqlite_error)?;
    }
    Ok(())
}

/// Whether entries hold sequence numbers above `head` (rows written around the plugin): the largest one.
pub(super) fn past_head(conn: &mut SqliteConnection, head: i64) -> Result<Option<i64>> {
    let m: Option<i64> =
        audit_logs::table.select(max(audit_logs::chain_seq)).first(conn).map_err(sqlite_error)?;
    Ok(m.filter(|m| *m > head))
}

/// The error for a batch refused because a sequence number it was given is taken.
pub(super) fn seq_taken(head: i64, max: i64) -> Error {
    Error::conflict(format!(
        "the audit chain's head record ends at sequence number {head}, but entries up to {max} are stored: they \
         were written around the plugin, and the chain cannot be extended; run `parallax storage audit verify`"
    ))
}

/// Chains the entries written before the chain existed (no sequence number), in `(timestamp, id)` order after
/// the head, once: when the head record says so (`legacy_pending`), in one `BEGIN IMMEDIATE` transaction
/// (another process opening meanwhile waits, then finds nothing to do). Returns how many were chained.
pub(super) fn chain_legacy(conn: &mut SqliteConnection) -> Result<u64> {
    let pending: Option<bool> = audit_chain::table
        .find(1)
        .select(audit_chain::legacy_pending)
        .first(conn)
        .optional()
        .map_err(sqlite_error)?;
    if pending != Some(true) {
        return Ok(0);
    }
    let n = conn
        .immediate_transaction(|conn| chain_legacy_locked(conn).map_err(SqliteFailure))
        .map_err(Error::from)?;
    tracing::info!(entries = n, "chained the audit entries written before the audit chain");
    Ok(n)
}

fn chain_legacy_locked(conn: &mut SqliteConnection) -> Result<u64> {
    let record = head_record(conn)?;
    if !record.legacy_pending {
        return Ok(0);
    }
    let mut head = record.head()?;
    let mut after: Key = (i64::MIN, String::new());
    let mut chained = 0u64;
    loop {
        // The time index, walked in key order (not the sequence index, where every legacy row is NULL).
        let rows: Vec<AuditRow> = sql_query(
            "SELECT id, timestamp, action, actor, resource_type, resource_id, details, ip_address, user_agent \
             FROM audit_logs INDEXED BY idx_audit_timestamp \
             WHERE timestamp >= ?1 AND (timestamp, id) > (?1, ?2) AND chain_seq IS NULL \
             ORDER BY timestamp, id LIMIT ?3",
        )
        .bind::<BigInt, _>(after.0)
        .bind::<Text, _>(&after.1)
        .bind::<BigInt, _>(LEGACY_PAGE)
        .load(conn)
        .map_err(sqlite_error)?;
        let Some(last) = rows.last() else { break };
        after = (last.timestamp, last.id.clone());
        let entries: Vec<AuditEntry> = rows.into_iter().map(AuditEntry::from).collect();
        for (e, l) in entries.iter().zip(extend(&mut head, &entries)) {
            diesel::update(audit_logs::table.find(e.id.as_str()))
                .set((
                    audit_logs::chain_seq.eq(l.seq),
                    audit_logs::chain_prev.eq(l.prev.to_vec()),
                    audit_logs::chain_hash.eq(l.hash.to_vec()),
                ))
                .execute(conn)
                .map_err(sqlite_error)?;
        }
        chained += entries.len() as u64;
    }
    diesel::update(audit_chain::table.find(1))
        .set((
            audit_chain::head_seq.eq(head.seq),
            audit_chain::head_hash.eq(head.hash.to_vec()),
            audit_chain::legacy_pending.eq(false),
        ))
        .execute(conn)
        .map_err(sqlite_error)?;
    Ok(chained)
}

#[derive(QueryableByName)]
struct Below {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    m: Option<i64>,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = BigInt)]
    at: i64,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
}

impl Store for SqliteBackend {
    async fn chain_state(&self) -> Result<Option<ChainState>> {
        self.read(|conn| head_record(conn)?.state().map(Some)).await
    }

    async fn chain_scan(&self, after: i64, limit: usize) -> Result<Vec<Chained>> {
        self.read(move |conn| {
            let rows: Vec<(AuditRow, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>)> = audit_logs::table
                .filter(audit_logs::chain_seq.gt(after))
                .order((audit_logs::chain_seq, audit_logs::id))
                .limit(limit as i64)
                .select((
                    AuditRow::as_select(),
                    audit_logs::chain_seq,
                    audit_logs::chain_prev,
                    audit_logs::chain_hash,
                ))
                .load(conn)
                .map_err(sqlite_error)?;
            Ok(rows
                .into_iter()
                .map(|(row, seq, prev, hash)| Chained {
                    seq: seq.unwrap_or_default(),
                    prev: prev.unwrap_or_default(),
                    hash: hash.unwrap_or_default(),
                    entry: AuditEntry::from(row),
                })
                .collect())
        })
        .await
    }

    async fn chain_seq_since(&self, t: i64) -> Result<Option<i64>> {
        self.read(move |conn| {
            audit_logs::table
                .filter(audit_logs::timestamp.ge(t))
                .select(min(audit_logs::chain_seq))
                .first(conn)
                .map_err(sqlite_error)
        })
        .await
    }

    async fn unchained(&self, limit: usize) -> Result<(u64, Vec<String>)> {
        self.read(move |conn| {
            let n: i64 = audit_logs::table
                .filter(audit_logs::chain_seq.is_null())
                .select(count_star())
                .first(conn)
                .map_err(sqlite_error)?;
            if n == 0 {
                return Ok((0, Vec::new()));
            }
            let ids: Vec<String> = audit_logs::table
                .filter(audit_logs::chain_seq.is_null())
                .order((audit_logs::timestamp, audit_logs::id))
                .limit(limit as i64)
                .select(audit_logs::id)
                .load(conn)
                .map_err(sqlite_error)?;
            Ok((n as u64, ids))
        })
        .await
    }

    async fn chained_upto(&self, seq: i64) -> Result<u64> {
        self.read(move |conn| {
            let n: i64 = audit_logs::table
                .filter(audit_logs::chain_seq.le(seq))
                .select(count_star())
                .first(conn)
                .map_err(sqlite_error)?;
            Ok(n as u64)
        })
        .await
    }

    async fn chain_below(&self, before: Key, after_seq: i64) -> Result<(u64, Option<i64>)> {
        self.read(move |conn| {
            // The selection rule of a cleanup ([`super::retention::selected`]), on the time index.
            let b: Below = sql_query(
                "SELECT count(*) AS n, max(chain_seq) AS m FROM audit_logs INDEXED BY idx_audit_timestamp \
                 WHERE timestamp <= ?1 AND (timestamp, id) < (?1, ?2) AND chain_seq > ?3",
            )
            .bind::<BigInt, _>(before.0)
            .bind::<Text, _>(&before.1)
            .bind::<BigInt, _>(after_seq)
            .get_result(conn)
            .map_err(sqlite_error)?;
            Ok((b.n.max(0) as u64, b.m))
        })
        .await
    }

    async fn chain_keys(
        &self,
        before: Key,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Option<i64>)>> {
        self.read(move |conn| {
            let (from, from_id) = after.unwrap_or((i64::MIN, String::new()));
            let rows: Vec<KeyRow> = sql_query(
                "SELECT timestamp AS at, id, chain_seq AS seq FROM audit_logs INDEXED BY idx_audit_timestamp \
                 WHERE timestamp <= ?1 AND (timestamp, id) < (?1, ?2) \
                 AND timestamp >= ?3 AND (timestamp, id) > (?3, ?4) \
                 ORDER BY timestamp, id LIMIT ?5",
            )
            .bind::<BigInt, _>(before.0)
            .bind::<Text, _>(&before.1)
            .bind::<BigInt, _>(from)
            .bind::<Text, _>(&from_id)
            .bind::<BigInt, _>(limit as i64)
            .load(conn)
            .map_err(sqlite_error)?;
            Ok(rows.into_iter().map(|r| ((r.at, r.id), r.seq)).collect())
        })
        .await
    }

    async fn chain_hash_at(&self, seq: i64) -> Result<Option<Vec<u8>>> {
        self.read(move |conn| {
            let h: Option<Option<Vec<u8>>> = audit_logs::table
                .filter(audit_logs::chain_seq.eq(seq))
                .select(audit_logs::chain_hash)
                .first(conn)
                .optional()
                .map_err(sqlite_error)?;
            Ok(h.flatten())
        })
        .await
    }

    async fn set_chain_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.writer
            .write("recording the audit chain's checkpoint", move |conn| {
                let n = diesel::update(audit_chain::table.find(1))
                    .set((
                        audit_chain::checkpoint_seq.eq(Some(cp.seq)),
                        audit_chain::checkpoint_hash.eq(Some(cp.hash.to_vec())),
                        audit_chain::checkpoint_removed.eq(cp.removed as i64),
                        audit_chain::checkpoint_at.eq(Some(cp.at)),
                    ))
                    .execute(conn)
                    .map_err(sqlite_error)?;
                if n != 1 {
                    return Err(damaged("is missing"));
                }
                Ok(())
            })
            .await
    }
}
