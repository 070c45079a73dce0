//! The audit chain's persistence on this backend (the rules are in [`crate::audit_chain`]).
//!
//! The head record is the one row of `audit_chain`. Every path that inserts audit entries locks it (`SELECT …
//! FOR UPDATE`) in the transaction that inserts them: the `COPY` of `append_audit` (`copy.rs`), `import_audit`
//! (`archive.rs`) and the chaining of legacy entries here. Appends of every process and host on one database
//! therefore queue on that row and make one gap-free chain. The reads of [`Store`] run on the primary, on a raw
//! session of the connection budget like the archive's scans.

use parallax_storage_abi::AuditEntry;
use tokio_postgres::{Client, SimpleQueryMessage};
use uuid::Uuid;

use super::{
    archive::{audit_of, uuid_of, At, AUDIT_COLUMNS},
    PostgresBackend,
};
use crate::{
    audit_chain::{extend, hash_of, hex, parse_hex, ChainState, Chained, Checkpoint, Head, Store, GENESIS},
    error::{Error, Result},
    rules::Key,
};

/// The unique index on `audit_logs.chain_seq` (named in errors when an append clashes on it).
pub(super) const SEQ_INDEX: &str = "idx_audit_chain_seq";

/// Locks the head record (inside a transaction) and reads the head and whether legacy entries wait.
const LOCK_HEAD: &str = "SELECT head_seq, head_hash, legacy_pending FROM audit_chain WHERE id = 1 FOR UPDATE";

/// Legacy entries chained per statement.
const LEGACY_PAGE: i64 = 5000;

/// Why nothing can be chained: the head record is gone or damaged.
pub(super) const NO_HEAD: &str =
    "the audit chain's head record (table audit_chain, id 1) is missing or damaged: no \
     audit entry can be chained; run `parallax storage audit verify`";

/// [`NO_HEAD`] as an error.
pub(super) fn no_head() -> Error {
    Error::internal(NO_HEAD)
}

/// `BEGIN` and the head record locked, in one round trip (the `COPY` path). `None`: no usable head record
/// (the transaction stays open; the caller rolls back).
pub(super) async fn begin_and_lock(c: &Client) -> std::result::Result<Option<Head>, tokio_postgres::Error> {
    let msgs = c
        .simple_query(
            "BEGIN; SELECT head_seq, encode(head_hash, 'hex') FROM audit_chain WHERE id = 1 FOR UPDATE",
        )
        .await?;
    let head = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => {
            let seq = r.get(0)?.parse::<i64>().ok()?;
            let hash = parse_hex(r.get(1)?)?;
            Some(Head { seq, hash })
        }
        _ => None,
    });
    Ok(head)
}

/// Moves the head to `head` and commits, in one round trip (the `COPY` path).
pub(super) async fn move_head_and_commit(
    c: &Client,
    head: &Head,
) -> std::result::Result<(), tokio_postgres::Error> {
    // Both values are this module's own (a number, hex digits): nothing to escape.
    c.batch_execute(&format!(
        "UPDATE audit_chain SET head_seq = {}, head_hash = decode('{}', 'hex') WHERE id = 1; COMMIT",
        head.seq,
        hex(&head.hash)
    ))
    .await
}

/// [`LOCK_HEAD`] inside a transaction (extended protocol): the head and `legacy_pending`, `None` without a
/// usable head record.
pub(super) async fn lock_head(
    c: &Client,
) -> std::result::Result<Option<(Head, bool)>, tokio_postgres::Error> {
    let Some(r) = c.query_opt(LOCK_HEAD, &[]).await? else { return Ok(None) };
    let hash: Vec<u8> = r.try_get(1)?;
    Ok(hash_of(&hash).map(|hash| (Head { seq: r.get(0), hash }, r.get(2))))
}

/// Moves the head (inside the transaction holding it).
pub(super) async fn set_head(c: &Client, head: &Head) -> std::result::Result<u64, tokio_postgres::Error> {
    c.execute(
        "UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1",
        &[&head.seq, &head.hash.as_slice()],
    )
    .await
}

impl PostgresBackend {
    /// Chains the entries written before the chain existed (`legacy_pending`, set by the migration when
    /// `audit_logs` held entries): every entry without a sequence number, in `(timestamp, id)` order, after
    /// the head; then clears `legacy_pending`. One transaction holding the head record. Run by an open that
    /// may write (and after `migrate up`); a no-op once done. Returns how many entries it chained.
    pub(super) async fn chain_legacy(&self) -> Result<u64> {
        const WHAT: &str = "chaining the audit entries written before the audit chain existed";
        let s = self.session().await?;
        // A plain read first: the lock is taken only when there is something to do.
        let pending = s
            .rows("SELECT legacy_pending FROM audit_chain WHERE id = 1", &[], WHAT)
            .await?
            .first()
            .map(|r| r.get(0));
        if pending != Some(true) {
            return Ok(0);
        }
        let _counted = self.counts_as_write();
        let n = s
            .transaction_of("", WHAT, async || {
                let (mut head, pending) = lock_head(s.client()).await.map_err(|e| s.fail(e, WHAT))?.ok_or_else(no_head)?;
                if !pending {
                    return Ok(0); // another process did it meanwhile
                }
                let first = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE chain_seq IS NULL ORDER BY timestamp, id LIMIT $1"
                );
                let next = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE chain_seq IS NULL AND (timestamp, id) > ($2, $3) \
                     ORDER BY timestamp, id LIMIT $1"
                );
                let mut after: Option<(At, Uuid)> = None;
                let mut n = 0u64;
                loop {
                    let rows = match &after {
                        None => s.rows(&first, &[&LEGACY_PAGE], WHAT).await?,
                        Some((t, id)) => s.rows(&next, &[&LEGACY_PAGE, t, id], WHAT).await?,
                    };
                    let entries = rows.iter().map(audit_of).collect::<Result<Vec<AuditEntry>>>()?;
                    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
                    let links = extend(&mut head, &entries);
                    let seqs: Vec<i64> = links.iter().map(|l| l.seq).collect();
                    let prevs: Vec<&[u8]> = links.iter().map(|l| l.prev.as_slice()).collect();
                    let hashes: Vec<&[u8]> = links.iter().map(|l| l.hash.as_slice()).collect();
                    if !links.is_empty() {
                        s.client()
                            .execute(
                                "UPDATE audit_logs a SET chain_seq = u.seq, chain_prev = u.prev, chain_hash = u.hash \
                                 FROM unnest($1::uuid[], $2::int8[], $3::bytea[], $4::bytea[]) AS u(id, seq, prev, hash) \
                                 WHERE a.id = u.id",
                                &[&ids, &seqs, &prevs, &hashes],
                            )
                            .await
                            .map_err(|e| s.fail(e, WHAT))?;
                    }
                    n += entries.len() as u64;
                    match entries.last() {
                        Some(last) if rows.len() as i64 == LEGACY_PAGE => {
                            after = Some((At(last.timestamp), ids[ids.len() - 1]));
                        }
                        _ => break,
                    }
                }
                s.client()
                    .execute(
                        "UPDATE audit_chain SET head_seq = $1, head_hash = $2, legacy_pending = false WHERE id = 1",
                        &[&head.seq, &head.hash.as_slice()],
                    )
                    .await
                    .map_err(|e| s.fail(e, WHAT))?;
                Ok(n)
            })
            .await?;
        if n > 0 {
            tracing::info!(chained = n, "chained the audit entries written before the audit chain existed");
        }
        Ok(n)
    }
}

/// A key's id as a UUID, for comparisons with `(timestamp, id)`.
fn key_of(what: &str, k: &Key) -> Result<(At, Uuid)> {
    Ok((At(k.0), uuid_of(what, &k.1)?))
}

/// An entry with its chain columns: [`AUDIT_COLUMNS`] then `chain_seq, chain_prev, chain_hash`.
fn chained_of(r: &tokio_postgres::Row) -> Result<Chained> {
    let entry = audit_of(r)?;
    let read = || -> std::result::Result<Chained, tokio_postgres::Error> {
        Ok(Chained {
            seq: r.try_get(9)?,
            prev: r.try_get::<_, Option<Vec<u8>>>(10)?.unwrap_or_default(),
            hash: r.try_get::<_, Option<Vec<u8>>>(11)?.unwrap_or_default(),
            entry: entry.clone(),
        })
    };
    read().map_err(|e| super::archive::decoded(e, "an audit entry's chain columns"))
}

fn limit_of(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

impl Store for PostgresBackend {
    async fn chain_state(&self) -> Result<Option<ChainState>> {
        let s = self.session().await?;
        let rows = s
            .rows(
                "SELECT head_seq, head_hash, checkpoint_seq, checkpoint_hash, checkpoint_removed, checkpoint_at, \
                 legacy_pending FROM audit_chain WHERE id = 1",
                &[],
                "reading the audit chain's head record",
            )
            .await?;
        let r = rows.first().ok_or_else(no_head)?;
        let read = || -> std::result::Result<ChainState, tokio_postgres::Error> {
            let head =
                Head { seq: r.try_get(0)?, hash: hash_of(&r.try_get::<_, Vec<u8>>(1)?).unwrap_or(GENESIS) };
            let checkpoint = match r.try_get::<_, Option<i64>>(2)? {
                None => None,
                Some(seq) => Some(Checkpoint {
                    seq,
                    hash: r.try_get::<_, Option<Vec<u8>>>(3)?.and_then(|h| hash_of(&h)).unwrap_or(GENESIS),
                    removed: r.try_get::<_, i64>(4)?.max(0) as u64,
                    at: r.try_get::<_, Option<At>>(5)?.map_or(0, |a| a.0),
                }),
            };
            Ok(ChainState { head, checkpoint, legacy_pending: r.try_get(6)? })
        };
        read().map(Some).map_err(|e| super::archive::decoded(e, "the audit chain's head record"))
    }

    async fn chain_scan(&self, after: i64, limit: usize) -> Result<Vec<Chained>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let s = self.session().await?;
        let rows = s
            .rows(
                &format!(
                    "SELECT {AUDIT_COLUMNS}, chain_seq, chain_prev, chain_hash FROM audit_logs WHERE chain_seq > $1 \
                     ORDER BY chain_seq, id LIMIT $2"
                ),
                &[&after, &limit_of(limit)],
                "reading the audit chain",
            )
            .await?;
        rows.iter().map(chained_of).collect()
    }

    async fn chain_seq_since(&self, t: i64) -> Result<Option<i64>> {
        let s = self.session().await?;
        let r = s
            .row(
                "SELECT min(chain_seq) FROM audit_logs WHERE timestamp >= $1",
                &[&At(t)],
                "finding where the audit chain reaches a time",
            )
            .await?;
        Ok(r.get(0))
    }

    async fn unchained(&self, limit: usize) -> Result<(u64, Vec<String>)> {
        let s = self.session().await?;
        let what = "finding audit entries without a chain position";
        let n: i64 =
            s.row("SELECT count(*) FROM audit_logs WHERE chain_seq IS NULL", &[], what).await?.get(0);
        if n == 0 || limit == 0 {
            return Ok((n as u64, Vec::new()));
        }
        let ids = s
            .rows(
                "SELECT id::text FROM audit_logs WHERE chain_seq IS NULL ORDER BY timestamp, id LIMIT $1",
                &[&limit_of(limit)],
                what,
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok((n as u64, ids))
    }

    async fn chained_upto(&self, seq: i64) -> Result<u64> {
        let s = self.session().await?;
        let r = s
            .row(
                "SELECT count(*) FROM audit_logs WHERE chain_seq <= $1",
                &[&seq],
                "counting audit entries at or below the checkpoint",
            )
            .await?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    async fn chain_below(&self, before: Key, after_seq: i64) -> Result<(u64, Option<i64>)> {
        let (at, id) = key_of("audit limit", &before)?;
        let s = self.session().await?;
        let r = s
            .row(
                "SELECT count(*), max(chain_seq) FROM audit_logs WHERE chain_seq > $1 AND (timestamp, id) < ($2, $3)",
                &[&after_seq, &at, &id],
                "counting the chained audit entries a selection covers",
            )
            .await?;
        Ok((r.get::<_, i64>(0) as u64, r.get(1)))
    }

    async fn chain_keys(
        &self,
        before: Key,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Option<i64>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (at, id) = key_of("audit limit", &before)?;
        let after = after.as_ref().map(|k| key_of("audit cursor", k)).transpose()?;
        let limit = limit_of(limit);
        let s = self.session().await?;
        let what = "reading the keys of the audit entries a selection covers";
        let rows = match &after {
            None => {
                s.rows(
                    "SELECT timestamp, id::text, chain_seq FROM audit_logs WHERE (timestamp, id) < ($1, $2) \
                     ORDER BY timestamp, id LIMIT $3",
                    &[&at, &id, &limit],
                    what,
                )
                .await?
            }
            Some((t, a)) => {
                s.rows(
                    "SELECT timestamp, id::text, chain_seq FROM audit_logs WHERE (timestamp, id) < ($1, $2) \
                     AND (timestamp, id) > ($4, $5) ORDER BY timestamp, id LIMIT $3",
                    &[&at, &id, &limit, t, a],
                    what,
                )
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                let read = || -> std::result::Result<(Key, Option<i64>), tokio_postgres::Error> {
                    Ok(((r.try_get::<_, At>(0)?.0, r.try_get(1)?), r.try_get(2)?))
                };
                read().map_err(|e| super::archive::decoded(e, "an audit entry's key"))
            })
            .collect()
    }

    async fn chain_hash_at(&self, seq: i64) -> Result<Option<Vec<u8>>> {
        let s = self.session().await?;
        let rows = s
            .rows(
                "SELECT chain_hash FROM audit_logs WHERE chain_seq = $1",
                &[&seq],
                "reading an audit entry's chain hash",
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
    }

    async fn set_chain_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        let _counted = self.counts_as_write();
        let s = self.session().await?;
        let n = s
            .client()
            .execute(
                "UPDATE audit_chain SET checkpoint_seq = $1, checkpoint_hash = $2, checkpoint_removed = $3, \
                 checkpoint_at = $4 WHERE id = 1",
                &[&cp.seq, &cp.hash.as_slice(), &(cp.removed.min(i64::MAX as u64) as i64), &At(cp.at)],
            )
            .await
            .map_err(|e| s.fail(e, "recording the audit chain's checkpoint"))?;
        if n == 0 {
            return Err(no_head());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use abi_stable::std_types::{ROption, RString};
    use parallax_storage_abi::{audit::AuditVerifyParams, NewAuditEntry, OpenOptions};

    use super::*;
    use crate::{
        archive::Store as _,
        audit_chain::{self, GENESIS},
        contract::Contract,
        postgres::{archive::tests::backend, test_pg},
    };

    fn new_entry(i: u64, ip: Option<&str>) -> NewAuditEntry {
        NewAuditEntry {
            id: ROption::RSome(Uuid::now_v7().hyphenated().to_string().into()),
            timestamp: ROption::RSome(1_700_000_000_000_000 + i as i64),
            action: "pattern.create".into(),
            actor: ROption::RSome(format!("user{i}").into()),
            resource_type: ROption::RNone,
            resource_id: ROption::RNone,
            details: ROption::RSome(format!(r#"{{"i": {i}, "x": 1.50, "a": [1e2]}}"#).into()),
            ip_address: ip.map(RString::from).into(),
            user_agent: ROption::RNone,
        }
    }

    async fn verified(b: &PostgresBackend) -> parallax_storage_abi::audit::AuditVerifyReport {
        audit_chain::verify(b, AuditVerifyParams::default()).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_and_imports_make_one_chain() {
        let (b, c) = backend().await;
        let st = b.chain_state().await.unwrap().unwrap();
        assert_eq!((st.head.seq, st.head.hash, st.checkpoint, st.legacy_pending), (0, GENESIS, None, false));
        b.append_audit(vec![new_entry(1, Some("10.0.0.1")), new_entry(2, Some("2001:DB8::1"))])
            .await
            .unwrap();
        b.append_audit(vec![new_entry(3, Some("10.1.0.0/16")), new_entry(4, None)]).await.unwrap();
        // An import: the present id is skipped, the absent ones are chained contiguously after the head.
        let present = b.chain_scan(0, 1).await.unwrap().remove(0).entry;
        let mut absent = audit_chain::entry_of(&new_entry(5, Some("10.0.0.9/32")));
        absent.timestamp = 1_600_000_000_000_000; // older than everything: chained in the order accepted
        let imported = b.import_audit(vec![present, absent.clone()]).await.unwrap();
        assert_eq!((imported.inserted, imported.skipped), (1, 1));
        let r = verified(&b).await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.checked, r.first_seq, r.last_seq, r.head.seq), (5, 1, 5, 5));
        let rows = b.chain_scan(0, 100).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(rows[4].entry.id, absent.id);
        assert_eq!(b.chain_hash_at(5).await.unwrap(), Some(rows[4].hash.clone()));
        assert_eq!(b.chain_hash_at(6).await.unwrap(), None);
        assert_eq!(b.chain_seq_since(1_700_000_000_000_003).await.unwrap(), Some(3));
        assert_eq!(b.chained_upto(2).await.unwrap(), 2);
        // Keys below a limit, in key order, with their positions (the imported entry is the oldest).
        let keys = b.chain_keys((1_700_000_000_000_003, MIN.to_string()), None, 10).await.unwrap();
        assert_eq!(keys.iter().map(|k| k.1).collect::<Vec<_>>(), [Some(5), Some(1), Some(2)]);
        let after = Some(keys[0].0.clone());
        assert_eq!(
            b.chain_keys((1_700_000_000_000_003, MIN.to_string()), after, 1).await.unwrap(),
            keys[1..2]
        );
        assert_eq!(b.chain_below((1_700_000_000_000_003, MIN.to_string()), 0).await.unwrap(), (3, Some(5)));
        assert_eq!(b.chain_below((1_700_000_000_000_003, MIN.to_string()), 4).await.unwrap(), (1, Some(5)));
        // The checkpoint.
        let cp =
            Checkpoint { seq: 2, hash: audit_chain::hash_of(&rows[1].hash).unwrap(), removed: 2, at: 42 };
        b.set_chain_checkpoint(cp).await.unwrap();
        assert_eq!(b.chain_state().await.unwrap().unwrap().checkpoint, Some(cp));
        // An entry written around the plugin has no position.
        c.batch_execute(
            "INSERT INTO audit_logs (id, timestamp, action) VALUES ('0190b3f2-7c1e-7a00-8000-000000000001', now(), 'x')",
        )
        .await
        .unwrap();
        assert_eq!(
            b.unchained(5).await.unwrap(),
            (1, vec!["0190b3f2-7c1e-7a00-8000-000000000001".to_string()])
        );
        assert!(!verified(&b).await.ok);
    }

    const MIN: &str = "00000000-0000-0000-0000-000000000000";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_on_one_database_make_one_gap_free_chain() {
        let server = test_pg::server();
        let db = server.fresh_database().await;
        let cfg = || crate::config::parse(&server.storage_config(&db).to_string()).unwrap();
        // Independent storage objects (as separate processes would be): their own pools and COPY clients.
        let mut writers = Vec::new();
        for _ in 0..4 {
            writers.push(Arc::new(PostgresBackend::open(cfg(), OpenOptions::default()).await.unwrap()));
        }
        let tasks: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(w, b)| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..25u64 {
                        let n = (w as u64) * 1000 + i;
                        if i % 5 == 4 {
                            let e = audit_chain::entry_of(&new_entry(n, None));
                            b.import_audit(vec![e]).await.unwrap();
                        } else {
                            b.append_audit(vec![new_entry(n, Some("10.0.0.1")), new_entry(n + 500, None)])
                                .await
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let r = verified(&writers[0]).await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.checked, r.last_seq, r.head.seq), (4 * 45, 4 * 45, 4 * 45));
        drop(writers);
        server.drop_database(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn legacy_entries_are_chained_by_the_first_writing_open_only() {
        let server = test_pg::server();
        let db = server.fresh_database().await;
        let cfg = || crate::config::parse(&server.storage_config(&db).to_string()).unwrap();
        let c = server.client(&db).await;
        // The schema just before the chain, with entries; then the chain's migration (legacy_pending).
        let b = PostgresBackend::open(cfg(), OpenOptions { maintenance: true }).await.unwrap();
        b.migrate_to("20261204000000".into()).await.unwrap();
        c.batch_execute(
            "INSERT INTO audit_logs (id, timestamp, action, actor, details, ip_address) VALUES \
             ('0190b3f2-7c1e-7a00-8000-000000000003', '2024-01-01T00:00:00Z', 'a', 'x', '{\"b\": 1.0, \"a\": 2}', '10.0.0.1'), \
             ('0190b3f2-7c1e-7a00-8000-000000000002', '2024-01-01T00:00:00Z', 'b', NULL, NULL, '10.1.0.0/16'), \
             ('0190b3f2-7c1e-7a00-8000-000000000001', '2024-01-02T00:00:00Z', 'c', NULL, NULL, NULL)",
        )
        .await
        .unwrap();
        let st = b.chain_legacy().await.unwrap_err();
        assert_eq!(st.kind(), parallax_storage_abi::ErrorKind::Schema, "no chain table yet: {st}");
        // `migrate up` (a maintenance open) chains them after migrating.
        b.migrate_up().await.unwrap();
        assert_eq!(b.unchained(10).await.unwrap().0, 0);
        assert!(verified(&b).await.ok);
        drop(b);
        // As the migration leaves them when no plugin chained them yet: a maintenance open chains nothing.
        c.batch_execute(
            "UPDATE audit_logs SET chain_seq = NULL, chain_prev = NULL, chain_hash = NULL; \
             UPDATE audit_chain SET head_seq = 0, head_hash = decode(repeat('00', 32), 'hex'), legacy_pending = true",
        )
        .await
        .unwrap();
        let ro = PostgresBackend::open(cfg(), OpenOptions { maintenance: true }).await.unwrap();
        assert_eq!(ro.unchained(10).await.unwrap().0, 3, "a maintenance open chains nothing");
        assert!(ro.chain_state().await.unwrap().unwrap().legacy_pending);
        let e = audit_chain::verify(&ro, AuditVerifyParams::default()).await.unwrap_err();
        assert_eq!(e.kind(), parallax_storage_abi::ErrorKind::Schema, "{e}");
        drop(ro);
        let b = PostgresBackend::open(cfg(), OpenOptions::default()).await.unwrap();
        assert_eq!(b.unchained(10).await.unwrap().0, 0);
        let rows = b.chain_scan(0, 10).await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.entry.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "0190b3f2-7c1e-7a00-8000-000000000002",
                "0190b3f2-7c1e-7a00-8000-000000000003",
                "0190b3f2-7c1e-7a00-8000-000000000001"
            ],
            "(timestamp, id) order"
        );
        let pending: bool = c.query_one("SELECT legacy_pending FROM audit_chain", &[]).await.unwrap().get(0);
        assert!(!pending);
        // Appends go on after them; a second open changes nothing.
        b.append_audit(vec![new_entry(9, None)]).await.unwrap();
        drop(b);
        let b = PostgresBackend::open(cfg(), OpenOptions::default()).await.unwrap();
        let r = verified(&b).await;
        assert!(r.ok && r.checked == 4, "{r:?}");
        drop(b);
        server.drop_database(&db).await;
    }
}
