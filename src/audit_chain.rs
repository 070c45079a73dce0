//! The tamper-evident audit chain, written once for every backend (the format is documented for operators in
//! [`parallax_storage_abi::audit`]): how an entry is hashed and linked ([`link`], [`extend`]), how a chain is
//! judged ([`Walker`], [`verify`]), and which oldest entries a cleanup or archive may remove so that what stays
//! still verifies ([`narrow`]). Backends only persist: they keep `seq`/`prev`/`hash` with each entry and one
//! head record (head, checkpoint), and serialise appends on that record.

use std::future::Future;

use parallax_storage_abi::{
    audit::{AuditBreak, AuditVerifyParams, AuditVerifyReport, ChainCheckpoint, ChainHead, MAX_BREAKS},
    AuditEntry, NewAuditEntry,
};

use crate::{
    error::{Error, Result},
    rules::{Key, Selection},
};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `prev` of the first entry.
pub const GENESIS: Hash = [0; 32];

const DOMAIN: &[u8] = b"parallax audit chain v1\0";

/// How many entries a walk reads at a time.
const PAGE: usize = 5000;

/// The hash of `entry` chained after `prev`.
pub fn link(prev: &[u8], entry: &AuditEntry) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(prev);
    ctx.update(crate::transfer::checksum::audit_canonical(entry).as_bytes());
    let mut out = GENESIS;
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// 64 lower-case hex digits.
pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads [`hex`] back.
pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = GENESIS;
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A stored hash column as a [`Hash`] (`None` when it is not 32 bytes: a damaged value).
pub fn hash_of(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// The entry a backend stores for a new one the adapter completed (id and timestamp set).
pub fn entry_of(n: &NewAuditEntry) -> AuditEntry {
    AuditEntry {
        id: n.id.clone().unwrap_or_default(),
        timestamp: n.timestamp.into_option().unwrap_or_default(),
        action: n.action.clone(),
        actor: n.actor.clone(),
        resource_type: n.resource_type.clone(),
        resource_id: n.resource_id.clone(),
        details: n.details.clone(),
        ip_address: n.ip_address.clone(),
        user_agent: n.user_agent.clone(),
    }
}

/// The newest entry's position (`seq` 0 and [`GENESIS`] for an empty chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: Hash,
}

impl Default for Head {
    fn default() -> Self {
        Head { seq: 0, hash: GENESIS }
    }
}

/// The last entry removed by a cleanup or archive, and how many were removed in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: Hash,
    pub removed: u64,
    pub at: i64,
}

/// A backend's head record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChainState {
    pub head: Head,
    pub checkpoint: Option<Checkpoint>,
    /// Entries written before the chain existed are not chained yet (the first open that may write does it).
    pub legacy_pending: bool,
}

impl ChainState {
    /// Where a walk of the kept chain starts: after the checkpoint, else at the beginning.
    pub fn start(&self) -> (i64, Hash) {
        self.checkpoint.map_or((0, GENESIS), |c| (c.seq, c.hash))
    }
}

/// The chain columns of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    pub prev: Hash,
    pub hash: Hash,
}

/// Chains `entries`, in order, after `head`, and moves `head` to the last one. The caller holds the head
/// record's lock from reading `head` until the entries and the new head are committed.
pub fn extend<'a>(head: &mut Head, entries: impl IntoIterator<Item = &'a AuditEntry>) -> Vec<Link> {
    entries.into_iter().map(|e| next_link(head, e)).collect()
}

/// Chains one entry after `head` and moves `head` to it ([`extend`] one at a time, for a writer that sends
/// each row as soon as its link is known).
pub fn next_link(head: &mut Head, entry: &AuditEntry) -> Link {
    let l = Link { seq: head.seq + 1, prev: head.hash, hash: link(&head.hash, entry) };
    *head = Head { seq: l.seq, hash: l.hash };
    l
}

/// A stored entry with its chain columns, as read back (hash columns as stored, whatever their length).
#[derive(Clone, Debug, PartialEq)]
pub struct Chained {
    pub seq: i64,
    pub prev: Vec<u8>,
    pub hash: Vec<u8>,
    pub entry: AuditEntry,
}

/// What a backend keeps for the chain. The defaults describe a store that keeps no chain (test doubles);
/// every real backend implements all of it.
pub trait Store: Send + Sync {
    /// The head record; `None`: this store keeps no chain.
    fn chain_state(&self) -> impl Future<Output = Result<Option<ChainState>>> + Send {
        async { Ok(None) }
    }

    /// Up to `limit` entries with a sequence number above `after`, ascending by `(seq, id)`.
    fn chain_scan(&self, after: i64, limit: usize) -> impl Future<Output = Result<Vec<Chained>>> + Send {
        let _ = (after, limit);
        async { Ok(Vec::new()) }
    }

    /// The smallest sequence number of an entry whose timestamp is at or after `t`.
    fn chain_seq_since(&self, t: i64) -> impl Future<Output = Result<Option<i64>>> + Send {
        let _ = t;
        async { Ok(None) }
    }

    /// Entries without a sequence number: how many, and up to `limit` of their ids.
    fn unchained(&self, limit: usize) -> impl Future<Output = Result<(u64, Vec<String>)>> + Send {
        let _ = limit;
        async { Ok((0, Vec::new())) }
    }

    /// How many entries with a sequence number at most `seq` are present.
    fn chained_upto(&self, seq: i64) -> impl Future<Output = Result<u64>> + Send {
        let _ = seq;
        async { Ok(0) }
    }

    /// Entries with a sequence number above `after_seq` and a key `(timestamp, id)` below `before`: how
    /// many, and the largest sequence number among them.
    fn chain_below(
        &self,
        before: Key,
        after_seq: i64,
    ) -> impl Future<Output = Result<(u64, Option<i64>)>> + Send {
        let _ = (before, after_seq);
        async { Ok((0, None)) }
    }

    /// Up to `limit` entries with a key below `before` and above `after`, ascending by key: each key with
    /// its sequence number (`None` when it has none).
    fn chain_keys(
        &self,
        before: Key,
        after: Option<Key>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Key, Option<i64>)>>> + Send {
        let _ = (before, after, limit);
        async { Ok(Vec::new()) }
    }

    /// The stored hash of the entry with this sequence number.
    fn chain_hash_at(&self, seq: i64) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        let _ = seq;
        async { Ok(None) }
    }

    /// Records the checkpoint in the head record (before the entries up to it are deleted).
    fn set_chain_checkpoint(&self, cp: Checkpoint) -> impl Future<Output = Result<()>> + Send {
        let _ = cp;
        async { Ok(()) }
    }
}

// ------------------------------------------------------------------ retention and archive

/// An audit selection narrowed to a prefix of the chain: every entry it selects has a sequence number at most
/// the checkpoint's, and every kept entry one above it. Entries are removed oldest first by key (timestamp,
/// id), but the chain is in the order they were written; an entry written with an older timestamp after newer
/// ones stays (with everything after it in the chain) until the limit passes all of them, so that what stays
/// is whole and verifies. `checkpoint` is `None` when no chained entry goes (nothing to record).
pub async fn narrow<S: Store>(store: &S, sel: Selection) -> Result<(Selection, Option<Checkpoint>)> {
    let Some(state) = store.chain_state().await? else { return Ok((sel, None)) };
    let (cp_seq, _) = state.start();
    let (n, max) = store.chain_below(sel.before.clone(), cp_seq).await?;
    let Some(max) = max else { return Ok((sel, None)) };
    let (sel, upto) = if max == cp_seq + n as i64 {
        // The usual case: timestamps in the order written, the selection is a prefix already.
        (sel, max)
    } else {
        // Walk the selected keys in order; a split is a point where the first k of them are exactly the
        // next k entries of the chain.
        let (mut k, mut top) = (0i64, cp_seq);
        let (mut split, mut boundary): (i64, Option<Key>) = (cp_seq, None);
        let mut after = None;
        loop {
            let page = store.chain_keys(sel.before.clone(), after.clone(), PAGE).await?;
            for (key, seq) in &page {
                if boundary.is_none() {
                    boundary = Some(key.clone());
                }
                if let Some(seq) = seq.filter(|s| *s > cp_seq) {
                    k += 1;
                    top = top.max(seq);
                    if top == cp_seq + k {
                        (split, boundary) = (top, None);
                    }
                }
            }
            let full = page.len() == PAGE;
            after = page.last().map(|(key, _)| key.clone());
            if !full {
                break;
            }
        }
        let before = boundary.unwrap_or(sel.before.clone());
        (Selection { before, ..sel }, split)
    };
    if upto <= cp_seq {
        return Ok((sel, None));
    }
    let hash = store.chain_hash_at(upto).await?.as_deref().and_then(hash_of).ok_or_else(|| {
        Error::internal(format!(
            "the audit chain has no valid entry at sequence number {upto}, which this run would remove up to; \
             nothing was removed: run `parallax storage audit verify` to see the break"
        ))
    })?;
    let removed = state.checkpoint.map_or(0, |c| c.removed) + (upto - cp_seq) as u64;
    Ok((sel, Some(Checkpoint { seq: upto, hash, removed, at: crate::time::now_micros() })))
}

// ------------------------------------------------------------------ verification

/// Judges a chain walked in `(seq, id)` order, one entry behind (an entry is judged once the next one is
/// known: whether the next one links to its stored hash tells an altered entry from an inserted one).
pub struct Walker {
    expected_prev: Option<Hash>,
    expected_seq: i64,
    pending: Option<Chained>,
    last_seq: Option<i64>,
    expect_head: Option<(i64, Option<Hash>)>,
    expected_head_ok: Option<bool>,
    report: AuditVerifyReport,
}

impl Walker {
    /// A walk of the entries after `after_seq`. `prev`: the hash the first one must link to (`None` when
    /// starting in the middle with `since`: its stored `prev` is trusted).
    pub fn new(after_seq: i64, prev: Option<Hash>) -> Walker {
        Walker {
            expected_prev: prev,
            expected_seq: after_seq + 1,
            pending: None,
            last_seq: None,
            expect_head: None,
            expected_head_ok: None,
            report: AuditVerifyReport::default(),
        }
    }

    /// Checks that the chain holds `seq` with `hash` (`None`: a hash that does not parse, never found).
    pub fn expect(&mut self, seq: i64, hash: Option<Hash>) {
        self.expect_head = Some((seq, hash));
    }

    fn brk(&mut self, kind: &str, seq: Option<i64>, id: Option<&str>, message: String) {
        self.report.break_count += 1;
        if self.report.breaks.len() < MAX_BREAKS {
            self.report.breaks.push(AuditBreak {
                kind: kind.to_string(),
                seq,
                id: id.map(str::to_string),
                message,
            });
        }
    }

    fn intact(row: &Chained) -> bool {
        link(&row.prev, &row.entry).as_slice() == row.hash.as_slice()
    }

    /// The next entry in `(seq, id)` order.
    pub fn push(&mut self, row: Chained) {
        if let Some(p) = self.pending.take() {
            if p.seq == row.seq {
                // Two entries at one position: the one that fits the chain stays, the other was slipped in.
                let fits = |r: &Chained| {
                    Self::intact(r) && self.expected_prev.is_none_or(|e| e.as_slice() == r.prev.as_slice())
                };
                let (keep, forged) = if !fits(&p) && fits(&row) { (row, p) } else { (p, row) };
                self.brk(
                    "inserted",
                    Some(forged.seq),
                    Some(&forged.entry.id),
                    format!(
                        "audit entry {} holds sequence number {}, which entry {} holds: it was slipped into the \
                         chain",
                        forged.entry.id, forged.seq, keep.entry.id
                    ),
                );
                self.pending = Some(keep);
                return;
            }
            let next_prev = row.prev.clone();
            self.judge(&p, Some(&next_prev));
        }
        self.pending = Some(row);
    }

    fn judge(&mut self, row: &Chained, next_prev: Option<&[u8]>) {
        let r = &mut self.report;
        r.checked += 1;
        if r.first_seq == 0 {
            r.first_seq = row.seq;
        }
        r.last_seq = row.seq;
        let id = row.entry.id.as_str();
        if let Some((seq, hash)) = self.expect_head {
            if seq == row.seq {
                self.expected_head_ok = Some(hash.is_some_and(|h| h.as_slice() == row.hash.as_slice()));
            }
        }
        if !Self::intact(row) {
            if next_prev == Some(row.hash.as_slice()) {
                self.brk(
                    "altered",
                    Some(row.seq),
                    Some(id),
                    format!(
                        "audit entry {id} (sequence number {}) was changed after it was written: its content no \
                         longer gives its hash, which the chain after it links to",
                        row.seq
                    ),
                );
            } else {
                self.brk(
                    "inserted",
                    Some(row.seq),
                    Some(id),
                    format!(
                        "audit entry {id} at sequence number {} is not the entry the chain holds there: its hash \
                         matches neither its content nor the link of the entry after it",
                        row.seq
                    ),
                );
            }
        } else if self.expected_prev.is_some_and(|e| e.as_slice() != row.prev.as_slice()) {
            if row.seq > self.expected_seq {
                let (from, to) = (self.expected_seq, row.seq - 1);
                let what = if from == to {
                    format!("entry {from} is")
                } else {
                    format!("entries {from} to {to} are")
                };
                self.brk(
                    "missing",
                    Some(from),
                    Some(id),
                    format!("audit {what} missing: removed from the chain (the next one present is {id})"),
                );
            } else {
                self.brk(
                    "reordered",
                    Some(row.seq),
                    Some(id),
                    format!(
                        "audit entry {id} at sequence number {} is intact but was chained after another entry \
                         than the one before it: entries were swapped or moved",
                        row.seq
                    ),
                );
            }
        } else if row.seq != self.expected_seq && self.expected_prev.is_some() {
            self.brk(
                "altered",
                Some(row.seq),
                Some(id),
                format!(
                    "audit entry {id} has sequence number {} but follows the entry it links to at {}: its \
                     sequence number was changed",
                    row.seq,
                    self.expected_seq - 1
                ),
            );
        }
        // Go on from what is stored: one damaged entry is one break, not a break of everything after it.
        self.expected_prev = Some(hash_of(&row.hash).unwrap_or(GENESIS));
        self.expected_seq = row.seq + 1;
        self.last_seq = Some(row.seq);
    }

    /// Ends the walk against the head record.
    pub fn finish(mut self, head: &Head) -> AuditVerifyReport {
        if let Some(p) = self.pending.take() {
            let next = (p.seq == head.seq).then_some(head.hash);
            self.judge(&p, next.as_ref().map(|h| h.as_slice()));
        }
        let last = self.last_seq.unwrap_or(self.expected_seq - 1);
        if last < head.seq {
            let from = last + 1;
            let what = if from == head.seq {
                format!("entry {from} is")
            } else {
                format!("entries {from} to {} are", head.seq)
            };
            self.brk(
                "missing",
                Some(from),
                None,
                format!(
                    "audit {what} missing: the newest entries were removed (the head record says the chain ends \
                     at {})",
                    head.seq
                ),
            );
        } else if last > head.seq {
            self.brk(
                "inserted",
                Some(head.seq + 1),
                None,
                format!(
                    "the chain holds entries up to sequence number {last} but its head record ends at {}: entries \
                     were added around the plugin",
                    head.seq
                ),
            );
        }
        if let Some((seq, _)) = self.expect_head {
            let ok = self.expected_head_ok.unwrap_or(false);
            self.expected_head_ok = Some(ok);
            if !ok {
                let why = if seq > last.max(head.seq) {
                    format!("the chain now ends at {}: the newest entries were removed", last.max(head.seq))
                } else {
                    "that entry is gone or has another hash: the chain was rewritten".to_string()
                };
                self.brk(
                    "head",
                    Some(seq),
                    None,
                    format!("the recorded head at sequence number {seq} does not match: {why}"),
                );
            }
        }
        self.report.expected_head_ok = self.expected_head_ok;
        self.report.head = ChainHead { seq: head.seq, hash: hex(&head.hash) };
        self.report
    }
}

/// `audit-verify` v1: walks the kept chain of `store`.
pub async fn verify<S: Store>(store: &S, params: AuditVerifyParams) -> Result<AuditVerifyReport> {
    let started = std::time::Instant::now();
    let state = store.chain_state().await?.ok_or_else(|| {
        Error::internal("this storage keeps no audit chain (a test double); nothing can be verified")
    })?;
    if state.legacy_pending {
        return Err(Error::schema(
            "the audit entries written before this plugin version are not chained yet: the first open that may \
             write chains them (any command that writes, e.g. `parallax storage migrate up` or `parallax audit \
             append`), then verify again",
        ));
    }
    let (mut after, prev) = match params.since {
        Some(t) => match store.chain_seq_since(t).await? {
            Some(seq) => (seq.max(state.start().0 + 1) - 1, None),
            None => (state.head.seq, Some(state.head.hash)),
        },
        None => {
            let (seq, hash) = state.start();
            (seq, Some(hash))
        }
    };
    let mut walker = Walker::new(after, prev);
    if let Some(h) = &params.expect_head {
        let hash = parse_hex(&h.hash);
        if hash.is_none() {
            return Err(Error::invalid(format!(
                "expectHead hash {:?} is not 64 hex digits; give the hash `audit verify --print-head` printed",
                h.hash
            )));
        }
        if let Some(cp) = state.checkpoint.filter(|cp| h.seq <= cp.seq) {
            return Err(Error::invalid(format!(
                "the recorded head {} is at or below the checkpoint {} (entries up to it were removed by retention \
                 or archive): record a newer head",
                h.seq, cp.seq
            )));
        }
        walker.expect(h.seq, hash);
    }
    loop {
        let page = store.chain_scan(after, PAGE).await?;
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        for row in page {
            walker.push(row);
        }
        if !full {
            break;
        }
    }
    let mut report = walker.finish(&state.head);
    let (unchained, ids) = store.unchained(MAX_BREAKS).await?;
    report.break_count += unchained.saturating_sub(ids.len() as u64);
    for id in ids {
        report.break_count += 1;
        if report.breaks.len() < MAX_BREAKS {
            report.breaks.push(AuditBreak {
                kind: "inserted".into(),
                seq: None,
                id: Some(id.clone()),
                message: format!(
                    "audit entry {id} has no sequence number: it was written around the plugin, not appended \
                     to the chain"
                ),
            });
        }
    }
    if let Some(cp) = state.checkpoint {
        report.checkpoint =
            Some(ChainCheckpoint { seq: cp.seq, hash: hex(&cp.hash), removed: cp.removed, at: cp.at });
        report.awaiting_removal = store.chained_upto(cp.seq).await?;
    }
    report.ok = report.break_count == 0;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Checks an archived audit segment on its own as its records stream by, in the order written (chain order):
/// each entry's hash from its content and `prev`, each link, and the ends against the manifest's positions.
pub struct SegmentCheck {
    after_seq: i64,
    expected_seq: i64,
    expected_prev: Option<Hash>,
    pub checked: u64,
    problem: Option<String>,
}

impl SegmentCheck {
    /// A segment of the entries after `after_seq`, whose hash is `prev_hash` (hex).
    pub fn new(after_seq: i64, prev_hash: &str) -> SegmentCheck {
        let expected_prev = parse_hex(prev_hash);
        let problem = expected_prev
            .is_none()
            .then(|| format!("its chain's prevHash {prev_hash:?} is not 64 hex digits"));
        SegmentCheck { after_seq, expected_seq: after_seq + 1, expected_prev, checked: 0, problem }
    }

    fn fail(&mut self, why: String) {
        if self.problem.is_none() {
            self.problem = Some(why);
        }
    }

    /// The next record: its entry and chain columns (`seq`, `prev`, `hash` as hex), if it has them.
    pub fn push(&mut self, entry: &AuditEntry, columns: Option<(i64, &str, &str)>) {
        let id = entry.id.as_str();
        let Some((seq, prev, hash)) = columns else {
            return self.fail(format!("audit entry {id} has no chain columns"));
        };
        let (Some(prev), Some(hash)) = (parse_hex(prev), parse_hex(hash)) else {
            return self.fail(format!("audit entry {id} has chain hashes that are not 64 hex digits"));
        };
        if link(&prev, entry) != hash {
            return self
                .fail(format!("audit entry {id} (sequence number {seq}) does not give its hash: altered"));
        }
        if seq <= self.after_seq {
            // Left by an interrupted earlier run: intact on its own, outside this segment's links.
            return;
        }
        if seq != self.expected_seq || Some(prev) != self.expected_prev {
            return self.fail(format!(
                "audit entry {id} at sequence number {seq} does not follow sequence number {} of the segment: entries \
                 are missing, inserted or reordered",
                self.expected_seq - 1
            ));
        }
        self.checked += 1;
        self.expected_seq = seq + 1;
        self.expected_prev = Some(hash);
    }

    /// The end: the segment must reach `last_seq` with `last_hash` (hex). `Err` names the first problem.
    pub fn finish(mut self, last_seq: i64, last_hash: &str) -> std::result::Result<u64, String> {
        if self.expected_seq - 1 != last_seq || self.expected_prev != parse_hex(last_hash) {
            self.fail(format!(
                "the segment ends at sequence number {} but its manifest says {last_seq}",
                self.expected_seq - 1
            ));
        }
        match self.problem {
            None => Ok(self.checked),
            Some(p) => Err(format!("audit chain segment: {p}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RNone, RSome};

    use super::*;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            id: format!("0190b3f2-7c1e-7a00-8000-{n:012}").into(),
            timestamp: 1_700_000_000_000_000 + i64::from(n),
            action: "pattern.create".into(),
            actor: RSome("alice".into()),
            resource_type: RNone,
            resource_id: RNone,
            details: RSome(format!(r#"{{"n": {n}, "a": 1.0}}"#).into()),
            ip_address: RSome("10.0.0.1".into()),
            user_agent: RNone,
        }
    }

    fn chain(n: u32) -> (Vec<Chained>, Head) {
        let mut head = Head::default();
        let entries: Vec<AuditEntry> = (1..=n).map(entry).collect();
        let links = extend(&mut head, &entries);
        let rows = entries
            .into_iter()
            .zip(links)
            .map(|(entry, l)| Chained { seq: l.seq, prev: l.prev.to_vec(), hash: l.hash.to_vec(), entry })
            .collect();
        (rows, head)
    }

    fn walk(rows: Vec<Chained>, head: &Head) -> AuditVerifyReport {
        let mut rows = rows;
        rows.sort_by(|a, b| (a.seq, a.entry.id.as_str()).cmp(&(b.seq, b.entry.id.as_str())));
        let mut w = Walker::new(0, Some(GENESIS));
        for r in rows {
            w.push(r);
        }
        w.finish(head)
    }

    fn kinds(r: &AuditVerifyReport) -> Vec<(&str, Option<i64>)> {
        r.breaks.iter().map(|b| (b.kind.as_str(), b.seq)).collect()
    }

    #[test]
    fn the_hash_is_of_the_canonical_form_and_the_link() {
        let mut a = entry(1);
        let h = link(&GENESIS, &a);
        a.details = RSome(r#"{"a": 1, "n": 1e0}"#.into());
        a.ip_address = RSome("10.0.0.1/32".into());
        assert_eq!(link(&GENESIS, &a), h, "JSONB and INET spellings hash the same");
        assert_ne!(link(&h, &a), h);
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex("zz"), None);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (rows, head) = chain(5);
        let r = walk(rows, &head);
        assert_eq!((r.checked, r.break_count, r.first_seq, r.last_seq), (5, 0, 1, 5), "{r:?}");
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let (rows, head) = chain(6);
        let mut altered = rows.clone();
        altered[2].entry.actor = RSome("mallory".into());
        assert_eq!(kinds(&walk(altered, &head)), [("altered", Some(3))]);

        let mut missing = rows.clone();
        missing.remove(3);
        assert_eq!(kinds(&walk(missing, &head)), [("missing", Some(4))]);

        let mut newest_gone = rows.clone();
        newest_gone.truncate(4);
        assert_eq!(kinds(&walk(newest_gone, &head)), [("missing", Some(5))]);

        let mut swapped = rows.clone();
        (swapped[1].seq, swapped[4].seq) = (5, 2);
        let r = walk(swapped, &head);
        assert_eq!(kinds(&r)[0], ("reordered", Some(2)), "{r:?}");

        let mut forged = rows.clone();
        let mut f = forged[2].clone();
        f.entry.id = "0190b3f2-7c1e-7a00-8000-999999999999".into();
        forged.push(f);
        let r = walk(forged, &head);
        assert_eq!(kinds(&r), [("inserted", Some(3))], "{r:?}");
        assert_eq!(r.breaks[0].id.as_deref(), Some("0190b3f2-7c1e-7a00-8000-999999999999"));

        let mut appended = rows.clone();
        let mut f = entry(7);
        f.action = "forged".into();
        appended.push(Chained { seq: 7, prev: head.hash.to_vec(), hash: vec![1; 32], entry: f });
        assert_eq!(kinds(&walk(appended, &head))[0], ("inserted", Some(7)));
    }

    #[test]
    fn an_archived_segment_checks_on_its_own() {
        let (rows, head) = chain(5);
        let last = hex(&head.hash);
        let seg = |rows: &[Chained]| {
            let mut c = SegmentCheck::new(1, &hex(&rows[0].hash));
            for r in &rows[1..] {
                c.push(&r.entry, Some((r.seq, &hex(&r.prev), &hex(&r.hash))));
            }
            c.finish(5, &last)
        };
        assert_eq!(seg(&rows), Ok(4));
        let mut altered = rows.clone();
        altered[3].entry.action = "x".into();
        assert!(seg(&altered).unwrap_err().contains("altered"));
        let mut gone = rows.clone();
        gone.remove(2);
        assert!(seg(&gone).unwrap_err().contains("missing, inserted or reordered"));
        let short = &rows[..4];
        assert!(seg(short).is_err());
    }

    #[test]
    fn an_expected_head_detects_a_rewritten_or_truncated_chain() {
        let (rows, head) = chain(4);
        let mut w = Walker::new(0, Some(GENESIS));
        w.expect(4, Some(head.hash));
        rows.iter().cloned().for_each(|r| w.push(r));
        assert_eq!(w.finish(&head).expected_head_ok, Some(true));

        let (short, short_head) = chain(3);
        let mut w = Walker::new(0, Some(GENESIS));
        w.expect(4, Some(head.hash));
        short.into_iter().for_each(|r| w.push(r));
        let r = w.finish(&short_head);
        assert_eq!((r.expected_head_ok, kinds(&r)), (Some(false), vec![("head", Some(4))]));
    }
}
