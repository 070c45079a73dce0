//! The audit chain's persistence on this backend (the rules are in [`crate::audit_chain`]).
//!
//! Every answer comes from the in-memory index: each entry's chain fields as stored (`Index::audit_links`),
//! the chained entries in chain order (`Index::audit_seqs`) and the head record (`Index::chain`, read from
//! `audit-chain.json` on open and rolled forward over entries an interrupted append left beyond it). Appends
//! chain their entries on the single writer ([`super::plan::Plan::chain_entries`]); the checkpoint is written
//! through the writer too.

use std::ops::Bound;

use crate::{
    audit_chain::{ChainState, Chained, Checkpoint},
    error::{Error, Result},
    rules::Key,
};

use super::{index::Index, FileBackend};

/// The first `(seq, id)` key of sequence number `seq`.
fn at(seq: i64) -> (i64, String) {
    (seq, String::new())
}

impl Index {
    /// The chained entry at `(seq, id)` (its timestamp is `t`), as [`Chained`].
    fn chained(&self, seq: i64, id: &str, t: i64) -> Option<Chained> {
        let link = self.audit_links.get(id)?;
        let entry = self.audit.get(&(t, id.to_string()))?.clone();
        Some(Chained { seq, prev: link.prev.clone(), hash: link.hash.clone(), entry })
    }
}

impl crate::audit_chain::Store for FileBackend {
    async fn chain_state(&self) -> Result<Option<ChainState>> {
        Ok(self.read()?.chain)
    }

    async fn chain_scan(&self, after: i64, limit: usize) -> Result<Vec<Chained>> {
        let idx = self.read()?;
        let Some(from) = after.checked_add(1) else { return Ok(Vec::new()) };
        Ok(idx
            .audit_seqs
            .range(at(from)..)
            .filter_map(|((seq, id), &t)| idx.chained(*seq, id, t))
            .take(limit)
            .collect())
    }

    async fn chain_seq_since(&self, t: i64) -> Result<Option<i64>> {
        let idx = self.read()?;
        Ok(idx
            .audit
            .range((t, String::new())..)
            .filter_map(|((_, id), _)| idx.audit_links.get(id))
            .map(|l| l.seq)
            .min())
    }

    async fn unchained(&self, limit: usize) -> Result<(u64, Vec<String>)> {
        let idx = self.read()?;
        let mut ids = idx.audit.keys().map(|(_, id)| id).filter(|id| !idx.audit_links.contains_key(*id));
        let shown: Vec<String> = ids.by_ref().take(limit).cloned().collect();
        Ok((shown.len() as u64 + ids.count() as u64, shown))
    }

    async fn chained_upto(&self, seq: i64) -> Result<u64> {
        let idx = self.read()?;
        let end = match seq.checked_add(1) {
            Some(next) => Bound::Excluded(at(next)),
            None => Bound::Unbounded,
        };
        Ok(idx.audit_seqs.range((Bound::Unbounded, end)).count() as u64)
    }

    async fn chain_below(&self, before: Key, after_seq: i64) -> Result<(u64, Option<i64>)> {
        let idx = self.read()?;
        let (mut n, mut max) = (0u64, None);
        for ((_, id), _) in idx.audit.range(..before) {
            if let Some(l) = idx.audit_links.get(id).filter(|l| l.seq > after_seq) {
                n += 1;
                max = max.max(Some(l.seq));
            }
        }
        Ok((n, max))
    }

    async fn chain_keys(
        &self,
        before: Key,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Option<i64>)>> {
        let idx = self.read()?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(idx
            .audit
            .range((start, Bound::Excluded(before)))
            .take(limit)
            .map(|(key, _)| (key.clone(), idx.audit_links.get(&key.1).map(|l| l.seq)))
            .collect())
    }

    async fn chain_hash_at(&self, seq: i64) -> Result<Option<Vec<u8>>> {
        let idx = self.read()?;
        let Some(next) = seq.checked_add(1) else { return Ok(None) };
        Ok(idx
            .audit_seqs
            .range(at(seq)..at(next))
            .find_map(|((_, id), _)| idx.audit_links.get(id))
            .map(|l| l.hash.clone()))
    }

    async fn set_chain_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.writer
            .write("set_chain_checkpoint", move |pl| {
                pl.idx.ready(&pl.layout.base)?;
                let mut state = pl.chain_state().ok_or_else(|| {
                    Error::schema(
                        "this file store is in format 1 and keeps no audit chain; run `parallax storage migrate \
                         up`",
                    )
                })?;
                state.checkpoint = Some(cp);
                pl.set_chain_state(state);
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use abi_stable::std_types::{RNone, RSome};
    use parallax_storage_abi::{
        audit::AuditVerifyParams, AuditEntry, AuditQuery, NewAuditEntry, OpenOptions,
    };

    use super::*;
    use crate::{
        audit_chain::{verify, Store},
        contract::Contract,
        validate::Page,
    };

    const T0: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z

    async fn open(base: &Path, format: &str, compress: bool) -> FileBackend {
        let json = serde_json::json!({
            "type": "file",
            "file": { "basePath": base, "format": format, "compress": compress },
        });
        let cfg = crate::config::parse(&json.to_string()).unwrap();
        FileBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    fn entry(n: u32, at: i64) -> NewAuditEntry {
        NewAuditEntry {
            id: RSome(id(n).into()),
            timestamp: RSome(at),
            action: "pattern.create".into(),
            actor: RSome("alice".into()),
            details: RSome(format!(r#"{{"n": {n}, "b": 1.0, "a": [1e2, "yes", null, "0x10"]}}"#).into()),
            ip_address: RSome("10.0.0.1".into()),
            user_agent: RNone,
            ..NewAuditEntry::default()
        }
    }

    async fn check(b: &FileBackend, checked: u64) {
        let r = verify(b, AuditVerifyParams::default()).await.unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.checked, r.head.seq), (checked, checked as i64), "{r:?}");
    }

    async fn all(b: &FileBackend) -> Vec<AuditEntry> {
        b.query_audit(AuditQuery::default(), Page { limit: 1000, after: None }).await.unwrap()
    }

    /// Appends and imports (restore, transfer) chain the entries they insert, in every encoding, and the chain
    /// verifies after the store is opened again (hashes of the entries as they are read back from the files).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_and_imports_are_chained_and_verify_after_reopening() {
        for (format, compress) in [("yaml", false), ("json", false), ("yaml", true), ("json", true)] {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().join("store");
            let b = open(&base, format, compress).await;
            assert_eq!(
                b.chain_state().await.unwrap(),
                Some(ChainState::default()),
                "a new store, an empty chain"
            );
            b.append_audit(vec![entry(1, T0), entry(2, T0 - 5)]).await.unwrap();
            b.append_audit(vec![entry(3, T0 + 1)]).await.unwrap();
            let restored: Vec<AuditEntry> =
                [entry(2, T0 - 5), entry(4, T0 - 86_400_000_000), entry(5, T0 + 2)]
                    .iter()
                    .map(crate::audit_chain::entry_of)
                    .collect();
            let imported = crate::archive::Store::import_audit(&b, restored).await.unwrap();
            assert_eq!((imported.inserted, imported.skipped), (2, 1));
            check(&b, 5).await;
            let order: Vec<String> =
                b.chain_scan(0, 100).await.unwrap().into_iter().map(|c| c.entry.id.to_string()).collect();
            assert_eq!(order, [id(1), id(2), id(3), id(4), id(5)], "the order written, not by time");
            let state = b.chain_state().await.unwrap().unwrap();
            assert_eq!(b.chain_hash_at(5).await.unwrap(), Some(state.head.hash.to_vec()));
            assert_eq!(b.chain_scan(3, 1).await.unwrap()[0].seq, 4);
            assert_eq!(b.chain_seq_since(T0).await.unwrap(), Some(1));
            assert_eq!(b.chain_seq_since(T0 + 2).await.unwrap(), Some(5));
            assert_eq!(b.chain_seq_since(T0 + 3).await.unwrap(), None);
            assert_eq!(b.chained_upto(3).await.unwrap(), 3);
            assert_eq!(b.unchained(10).await.unwrap(), (0, vec![]));
            assert_eq!(b.chain_below((T0 + 1, String::new()), 1).await.unwrap(), (2, Some(4)));
            let keys = b.chain_keys((T0 + 2, String::new()), Some((T0 - 5, id(2))), 10).await.unwrap();
            assert_eq!(keys, [((T0, id(1)), Some(1)), ((T0 + 1, id(3)), Some(3))]);
            b.shutdown().await.unwrap();

            let b = open(&base, format, compress).await;
            assert_eq!(b.chain_state().await.unwrap(), Some(state), "{format} {compress}");
            check(&b, 5).await;
            b.append_audit(vec![entry(6, T0)]).await.unwrap();
            check(&b, 6).await;
            b.shutdown().await.unwrap();
        }
    }

    /// The checkpoint is part of the head record, on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpoint_is_kept_in_the_head_record() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = open(&base, "json", false).await;
        b.append_audit(vec![entry(1, T0), entry(2, T0 + 1)]).await.unwrap();
        let hash = crate::audit_chain::hash_of(&b.chain_hash_at(1).await.unwrap().unwrap()).unwrap();
        let cp = Checkpoint { seq: 1, hash, removed: 1, at: T0 + 7 };
        b.set_chain_checkpoint(cp).await.unwrap();
        b.shutdown().await.unwrap();
        let b = open(&base, "json", false).await;
        assert_eq!(b.chain_state().await.unwrap().unwrap().checkpoint, Some(cp));
        let text = std::fs::read_to_string(base.join("audit-chain.json")).unwrap();
        assert!(text.contains("\"removed\": 1") && text.contains("\"head_seq\": 2"), "{text}");
        b.shutdown().await.unwrap();
    }

    /// An append writes its batch file, then the head record: a crash between the two leaves entries beyond the
    /// head, which the next open takes (they link from it); an entry that does not link stops it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_written_after_the_head_record_roll_it_forward() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let head_file = base.join("audit-chain.json");
        let b = open(&base, "yaml", false).await;
        b.append_audit(vec![entry(1, T0)]).await.unwrap();
        let behind = std::fs::read(&head_file).unwrap();
        b.append_audit(vec![entry(2, T0 + 1), entry(3, T0 + 2)]).await.unwrap();
        let state = b.chain_state().await.unwrap().unwrap();
        b.shutdown().await.unwrap();

        std::fs::write(&head_file, &behind).unwrap();
        let b = open(&base, "yaml", false).await;
        assert_eq!(b.chain_state().await.unwrap().unwrap().head, state.head, "rolled forward to 3");
        check(&b, 3).await;
        b.shutdown().await.unwrap();

        // Without a head record at all, the chain is taken from its start (and the loss is logged).
        std::fs::remove_file(&head_file).unwrap();
        let b = open(&base, "yaml", false).await;
        assert_eq!(b.chain_state().await.unwrap().unwrap().head, state.head);
        b.append_audit(vec![entry(4, T0 + 3)]).await.unwrap();
        assert!(head_file.is_file(), "the next append writes the record again");
        check(&b, 4).await;
        b.shutdown().await.unwrap();
    }

    fn edit_entries(base: &Path, f: impl Fn(&mut Vec<serde_json::Value>)) {
        for file in walk(&base.join("audit")) {
            let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            f(doc["entries"].as_array_mut().unwrap());
            std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        }
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out.sort();
        out
    }

    /// Damaged or missing chain fields never fail the open or hide an entry: they load as stored (a sequence
    /// number that is not an integer: as unchained), and `audit verify` judges them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_chain_fields_load_and_verify_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = open(&base, "json", false).await;
        b.append_audit((1..=4).map(|n| entry(n, T0 + i64::from(n))).collect()).await.unwrap();
        b.shutdown().await.unwrap();
        edit_entries(&base, |entries| {
            entries[0]["chain_seq"] = serde_json::json!("not a number");
            entries[1]["chain_hash"] = serde_json::json!(12);
            entries[2].as_object_mut().unwrap().remove("chain_prev");
            entries[3]["chain_prev"] = serde_json::json!("zz");
        });
        let b = open(&base, "json", false).await;
        assert_eq!(all(&b).await.len(), 4, "every entry loads");
        assert_eq!(b.unchained(10).await.unwrap(), (1, vec![id(1)]));
        let r = verify(&b, AuditVerifyParams::default()).await.unwrap();
        assert!(!r.ok && r.break_count >= 4, "{r:?}");
        b.shutdown().await.unwrap();
    }

    /// `migrate down` to format 1 takes the chain away (fields and head record); entries written in format 1
    /// (a maintenance open) carry none; the step back to 2 chains every entry once, by `(timestamp, id)`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_step_to_format_2_chains_legacy_entries_by_time_and_down_removes_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = open(&base, "yaml", true).await;
        b.append_audit(vec![entry(3, T0 + 3), entry(1, T0 + 1)]).await.unwrap();
        let down = b.migrate_down().await.unwrap();
        assert_eq!(down.reverted.iter().map(|v| v.to_string()).collect::<Vec<_>>(), ["2"]);
        assert_eq!(b.chain_state().await.unwrap(), None, "format 1 keeps no chain");
        assert!(!base.join("audit-chain.json").exists());
        b.append_audit(vec![entry(2, T0 + 2), entry(0, T0)]).await.unwrap();
        assert_eq!(b.unchained(10).await.unwrap().0, 4);
        b.shutdown().await.unwrap();

        // Format 1 is pending: the open (with autoRun, the default) applies format 2.
        let b = open(&base, "yaml", true).await;
        let status = b.migration_status().await.unwrap();
        assert!(status.iter().all(|m| m.applied && m.applied_at.is_some()), "{status:?}");
        check(&b, 4).await;
        let order: Vec<String> =
            b.chain_scan(0, 100).await.unwrap().into_iter().map(|c| c.entry.id.to_string()).collect();
        assert_eq!(order, [id(0), id(1), id(2), id(3)], "legacy entries are chained by time");
        b.append_audit(vec![entry(9, T0 - 1)]).await.unwrap();
        check(&b, 5).await;
        assert_eq!(b.migrate_up().await.unwrap().applied.len(), 0, "up is idempotent");
        b.shutdown().await.unwrap();
        let b = open(&base, "yaml", true).await;
        check(&b, 5).await;
        assert_eq!(all(&b).await.len(), 5);
        b.shutdown().await.unwrap();
    }
}
