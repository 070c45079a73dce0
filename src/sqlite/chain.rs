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
        Ok(ChainState { head: self.head()?, checkpoint, legacy_pending: self.legacy_pending })
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
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    // A schema before the chain (`migrate to` an older version): nothing to chain.
    let table: Count =
        sql_query("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'audit_chain'")
            .get_result(conn)
            .map_err(sqlite_error)?;
    if table.n == 0 {
        return Ok(0);
    }
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

/// An entry and its chain columns as stored (`chain_seq`, `chain_prev`, `chain_hash`).
type ScanRow = (AuditRow, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);

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
            let rows: Vec<ScanRow> = audit_logs::table
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

#[cfg(test)]
mod tests {
    use abi_stable::std_types::RSome;
    use parallax_storage_abi::{audit::AuditVerifyParams, NewAuditEntry, OpenOptions};

    use super::*;
    use crate::{
        archive::Store as _,
        audit_chain::{verify, GENESIS},
        config::{SqliteConfig, StorageConfig},
        contract::Contract,
        transfer::Store as _,
    };

    const T0: i64 = 1_705_314_615_123_456;

    fn config(dir: &tempfile::TempDir) -> StorageConfig {
        StorageConfig {
            sqlite: SqliteConfig { path: dir.path().join("c.db"), ..SqliteConfig::default() },
            ..StorageConfig::default()
        }
    }

    async fn backend(dir: &tempfile::TempDir) -> SqliteBackend {
        SqliteBackend::open(config(dir), OpenOptions::default()).await.unwrap()
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    fn entry(n: u32, at: i64) -> NewAuditEntry {
        NewAuditEntry {
            id: RSome(id(n).into()),
            timestamp: RSome(at),
            action: "login".into(),
            actor: RSome(format!("user{n}").into()),
            details: RSome(r#"{"ok": true, "n": 1.0}"#.into()),
            ip_address: RSome("10.0.0.1".into()),
            ..NewAuditEntry::default()
        }
    }

    async fn check(b: &SqliteBackend) -> parallax_storage_abi::audit::AuditVerifyReport {
        let r = verify(b, AuditVerifyParams::default()).await.unwrap();
        assert!(r.ok, "{r:?}");
        r
    }

    fn raw(dir: &tempfile::TempDir) -> rusqlite::Connection {
        rusqlite::Connection::open(dir.path().join("c.db")).unwrap()
    }

    /// `(seq, id)` of every entry in chain order.
    async fn order(b: &SqliteBackend) -> Vec<(i64, String)> {
        b.chain_scan(0, 1000).await.unwrap().into_iter().map(|c| (c.seq, c.entry.id.to_string())).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_and_imports_make_one_chain_and_a_refused_batch_leaves_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        assert_eq!(b.chain_state().await.unwrap(), Some(ChainState::default()));
        b.append_audit((1..=3).map(|n| entry(n, T0 + i64::from(n))).collect()).await.unwrap();
        b.append_audit(vec![entry(4, T0)]).await.unwrap();
        let r = check(&b).await;
        assert_eq!((r.checked, r.first_seq, r.last_seq, r.head.seq), (4, 1, 4, 4));
        let scanned = b.chain_scan(0, 10).await.unwrap();
        assert_eq!(scanned[0].prev, GENESIS.to_vec());
        assert_eq!(scanned[1].prev, scanned[0].hash);
        assert_eq!(b.chain_hash_at(4).await.unwrap(), Some(scanned[3].hash.clone()));
        assert_eq!(b.chain_hash_at(5).await.unwrap(), None);

        // A batch the id key refuses stores nothing and leaves the head where it was.
        let err = b.append_audit(vec![entry(5, T0), entry(2, T0)]).await.unwrap_err();
        assert_eq!(err, crate::rules::audit_entry_exists(&id(2)));
        assert_eq!(b.chain_state().await.unwrap().unwrap().head.seq, 4);

        // An import chains only the entries it inserts, contiguously.
        let present = b.fetch_audit(vec![id(2)]).await.unwrap();
        let mut fresh = entry(6, T0 + 10);
        fresh.actor = RSome("restored".into());
        let fresh = crate::audit_chain::entry_of(&fresh);
        let mut again = crate::audit_chain::entry_of(&entry(7, T0 + 11));
        again.action = "logout".into();
        let imported = b.import_audit(vec![present[0].clone(), fresh, again]).await.unwrap();
        assert_eq!((imported.inserted, imported.skipped), (2, 1));
        b.append_audit(vec![entry(8, T0 + 12)]).await.unwrap();
        let r = check(&b).await;
        assert_eq!((r.checked, r.head.seq), (7, 7));
        let ids: Vec<String> = order(&b).await.into_iter().map(|(_, i)| i).collect();
        assert_eq!(ids, [id(1), id(2), id(3), id(4), id(6), id(7), id(8)]);
        b.shutdown().await.unwrap();
    }

    /// Two opens of one file (as two processes would) appending at once still make one gap-free chain: each
    /// reads the head inside its `BEGIN IMMEDIATE` transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_file_make_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let a = std::sync::Arc::new(backend(&dir).await);
        let b = std::sync::Arc::new(backend(&dir).await);
        let mut tasks = Vec::new();
        for n in 0..40u32 {
            let s = if n % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                s.append_audit(vec![entry(n * 3, T0), entry(n * 3 + 1, T0 + 1), entry(n * 3 + 2, T0 + 2)])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let r = check(&a).await;
        assert_eq!((r.checked, r.head.seq), (120, 120));
        let seqs: Vec<i64> = order(&b).await.into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, (1..=120).collect::<Vec<i64>>());
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    /// Entries written before the chain existed are chained by the first open that may write, in (timestamp,
    /// id) order after the head; a maintenance open leaves them alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn legacy_entries_are_chained_once_by_the_first_writing_open() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        // Out of time order on purpose: the legacy chain follows (timestamp, id).
        b.append_audit(vec![entry(3, T0 + 5), entry(1, T0 + 5), entry(2, T0 + 1)]).await.unwrap();
        b.shutdown().await.unwrap();
        drop(b);
        raw(&dir)
            .execute_batch(
                "UPDATE audit_logs SET chain_seq = NULL, chain_prev = NULL, chain_hash = NULL;
                 UPDATE audit_chain SET head_seq = 0, head_hash = zeroblob(32), legacy_pending = 1;",
            )
            .unwrap();

        let m = SqliteBackend::open(config(&dir), OpenOptions { maintenance: true }).await.unwrap();
        assert_eq!(m.unchained(10).await.unwrap(), (3, vec![id(2), id(1), id(3)]));
        assert!(m.chain_state().await.unwrap().unwrap().legacy_pending);
        let err = verify(&m, AuditVerifyParams::default()).await.unwrap_err();
        assert_eq!(err.kind(), parallax_storage_abi::ErrorKind::Schema, "{err}");
        m.shutdown().await.unwrap();
        drop(m);

        let b = backend(&dir).await;
        assert_eq!(b.unchained(10).await.unwrap(), (0, vec![]));
        assert_eq!(order(&b).await, [(1, id(2)), (2, id(1)), (3, id(3))]);
        b.append_audit(vec![entry(4, T0)]).await.unwrap();
        let r = check(&b).await;
        assert_eq!((r.checked, r.head.seq), (4, 4));
        b.shutdown().await.unwrap();
        drop(b);
        let pending: bool =
            raw(&dir).query_row("SELECT legacy_pending FROM audit_chain", [], |r| r.get(0)).unwrap();
        assert!(!pending);

        // `migrate up` (a maintenance open) chains them too.
        raw(&dir)
            .execute_batch(
                "UPDATE audit_logs SET chain_seq = NULL, chain_prev = NULL, chain_hash = NULL;
                 UPDATE audit_chain SET head_seq = 0, head_hash = zeroblob(32), legacy_pending = 1;",
            )
            .unwrap();
        let m = SqliteBackend::open(config(&dir), OpenOptions { maintenance: true }).await.unwrap();
        m.migrate_up().await.unwrap();
        assert_eq!(order(&m).await, [(1, id(4)), (2, id(2)), (3, id(1)), (4, id(3))]);
        assert_eq!(check(&m).await.checked, 4);
        m.shutdown().await.unwrap();
        drop(m);

        // After that, an entry without a sequence number is a forgery.
        raw(&dir)
            .execute("INSERT INTO audit_logs (id, timestamp, action) VALUES (?1, 0, 'forged')", [id(9)])
            .unwrap();
        let b = backend(&dir).await;
        let r = verify(&b, AuditVerifyParams::default()).await.unwrap();
        assert_eq!((r.ok, r.break_count, r.breaks[0].kind.as_str()), (false, 1, "inserted"), "{r:?}");
        assert_eq!(b.unchained(10).await.unwrap(), (1, vec![id(9)]));
        b.shutdown().await.unwrap();
    }

    /// The primitives retention and archive narrow with, and the checkpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn selection_primitives_and_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        // Chain order 1..=5; entry 4 is older than 2 and 3.
        let at = [T0 + 1, T0 + 2, T0 + 3, T0, T0 + 4];
        for (n, t) in (1..=5).zip(at) {
            b.append_audit(vec![entry(n, t)]).await.unwrap();
        }
        assert_eq!(b.chain_seq_since(T0 + 2).await.unwrap(), Some(2));
        assert_eq!(b.chain_seq_since(T0 + 9).await.unwrap(), None);
        assert_eq!(b.chained_upto(3).await.unwrap(), 3);
        let before = (T0 + 2, id(2));
        assert_eq!(b.chain_below(before.clone(), 0).await.unwrap(), (2, Some(4)));
        assert_eq!(b.chain_below(before.clone(), 1).await.unwrap(), (1, Some(4)));
        assert_eq!(b.chain_below((T0, id(0)), 0).await.unwrap(), (0, None));
        let keys = b.chain_keys((i64::MAX, String::new()), None, 3).await.unwrap();
        assert_eq!(keys, [((T0, id(4)), Some(4)), ((T0 + 1, id(1)), Some(1)), ((T0 + 2, id(2)), Some(2))]);
        let rest = b.chain_keys((T0 + 4, id(5)), Some(keys[2].0.clone()), 10).await.unwrap();
        assert_eq!(rest, [((T0 + 3, id(3)), Some(3))]);

        let hash = hash_of(&b.chain_hash_at(2).await.unwrap().unwrap()).unwrap();
        let cp = Checkpoint { seq: 2, hash, removed: 2, at: T0 };
        b.set_chain_checkpoint(cp).await.unwrap();
        let state = b.chain_state().await.unwrap().unwrap();
        assert_eq!((state.checkpoint, state.head.seq), (Some(cp), 5));
        b.delete_audit(vec![id(1), id(2)]).await.unwrap();
        let r = check(&b).await;
        assert_eq!((r.checked, r.first_seq, r.awaiting_removal), (3, 3, 0));
        b.shutdown().await.unwrap();
    }

    /// Rows written around the plugin past the head: an append names the cause instead of a bare conflict.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sequence_number_taken_around_the_plugin_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir).await;
        b.append_audit(vec![entry(1, T0)]).await.unwrap();
        raw(&dir)
            .execute(
                "INSERT INTO audit_logs (id, timestamp, action, chain_seq) VALUES (?1, 0, 'forged', 2)",
                [id(9)],
            )
            .unwrap();
        let err = b.append_audit(vec![entry(2, T0)]).await.unwrap_err();
        assert!(err.to_string().contains("entries up to 2 are stored"), "{err}");
        assert_eq!(b.chain_state().await.unwrap().unwrap().head.seq, 1);
        b.shutdown().await.unwrap();
    }
}
