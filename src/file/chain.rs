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
