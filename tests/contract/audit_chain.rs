//! The tamper-evident audit chain (`audit-verify`, `src/audit_chain.rs`) answers the same on every backend:
//! concurrent appenders make one intact chain; a change made around the plugin with the backend's own tools
//! (`tests/common/tamper*.rs`) is found and named; cleanup and archive remove a prefix and leave a checkpoint
//! so that what stays still verifies.

use parallax_storage_host::{
    audit::{AuditVerifyParams, AuditVerifyReport, ChainHead},
    retention::{CleanupParams, CleanupTarget},
    *,
};

use crate::common::{tamper::Tamper, *};

const DAY: i64 = 86_400_000_000;

fn now() -> i64 {
    Timestamp::now().as_micros()
}

fn days_ago(days: i64) -> i64 {
    now() - days * DAY
}

async fn verify(s: &Storage) -> AuditVerifyReport {
    s.audit_verify(&AuditVerifyParams::default()).await.expect("audit verify")
}

fn kinds(r: &AuditVerifyReport) -> Vec<(String, Option<i64>)> {
    r.breaks.iter().map(|b| (b.kind.clone(), b.seq)).collect()
}

/// Entries at these times, one append each (so each is its own write), ids in order.
async fn append_at(s: &Storage, times: &[i64]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let mut a = audit("chain.test", "tester");
        a.timestamp = Some(Timestamp::from_micros(*t));
        a.details =
            Some(serde_json::json!({ "i": i, "n": 1.5e3, "nested": { "b": [1, 2], "a": "ü" } }).into());
        if i % 3 == 1 {
            a.ip_address = Some("2001:DB8::1".into());
        }
        ids.extend(s.append_audit(vec![a]).await.unwrap());
    }
    ids
}

fn audit_cleanup(older_than: &str) -> CleanupParams {
    CleanupParams {
        target: CleanupTarget::AuditLogs,
        older_than: Some(older_than.into()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    }
}

/// Four writers at once (four storage objects on one database, each with its own connections; on the
/// single-writer file store, four tasks on one object), single entries and batches: one chain, no gap, every
/// entry checked; `since` starts in the middle; a recorded head is found, a wrong one is named.
pub async fn audit_chain_verifies_after_concurrent_appends(h: &Harness) {
    let writers: Vec<Storage> = (0..4)
        .map(|i| if i == 0 || !h.concurrent_instances { h.storage.clone() } else { h.reopen() })
        .collect();
    let tasks = writers.iter().enumerate().map(|(w, s)| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            for round in 0..20usize {
                let size = 1 + (round + w) % 5;
                let batch: Vec<NewAuditEntry> =
                    (0..size).map(|i| audit(&format!("w{w}.r{round}.{i}"), &format!("writer{w}"))).collect();
                n += s.append_audit(batch).await.unwrap().len() as u64;
            }
            n
        })
    });
    let tasks: Vec<_> = tasks.collect();
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap();
    }
    for (i, s) in writers.iter().enumerate() {
        if i > 0 && h.concurrent_instances {
            s.shutdown().await.unwrap();
        }
    }
    h.settle().await;
    let r = verify(&h.storage).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        (r.checked, r.first_seq, r.last_seq, r.head.seq),
        (total, 1, total as i64, total as i64),
        "{r:#?}"
    );
    assert_eq!(r.head.hash.len(), 64);

    let since = h.storage.audit_entries(AuditQuery::default(), 1000).collect().await.unwrap();
    let mut times: Vec<i64> = since.iter().map(|e| e.timestamp.as_micros()).collect();
    times.sort();
    let mid = times[times.len() / 2];
    let part =
        h.storage.audit_verify(&AuditVerifyParams { since: Some(mid), ..Default::default() }).await.unwrap();
    assert!(part.ok && part.checked > 0 && part.checked < total, "{part:#?}");

    let head = ChainHead { seq: r.head.seq, hash: r.head.hash.clone() };
    let later = append_at(&h.storage, &[now()]).await;
    assert_eq!(later.len(), 1);
    h.settle().await;
    let p = AuditVerifyParams { expect_head: Some(head.clone()), ..Default::default() };
    let again = h.storage.audit_verify(&p).await.unwrap();
    assert_eq!((again.ok, again.expected_head_ok, again.head.seq), (true, Some(true), total as i64 + 1));
    let wrong = ChainHead { hash: "0".repeat(64), ..head };
    let bad =
        h.storage.audit_verify(&AuditVerifyParams { expect_head: Some(wrong), ..Default::default() }).await;
    let bad = bad.unwrap();
    assert_eq!((bad.ok, bad.expected_head_ok), (false, Some(false)), "{bad:#?}");
    assert_eq!(kinds(&bad), [("head".to_string(), Some(total as i64))]);
}

/// Each change made with the backend's own tools is found, with its kind, position and entry; the breaks
/// accumulate as the changes do.
pub async fn audit_chain_names_each_tampering(h: &Harness) {
    let ids = append_at(&h.storage, &(0..12).map(|i| days_ago(12 - i)).collect::<Vec<_>>()).await;
    let id = |i: usize| ids[i].to_string();
    assert!(verify(&h.storage).await.ok);
    h.storage.shutdown().await.unwrap();
    let check = |want: Vec<(&'static str, Option<i64>, Option<String>)>| {
        let s = h.reopen();
        async move {
            let r = verify(&s).await;
            s.shutdown().await.unwrap();
            let got: Vec<(&str, Option<i64>, Option<String>)> =
                r.breaks.iter().map(|b| (b.kind.as_str(), b.seq, b.id.clone())).collect();
            for w in &want {
                assert!(
                    got.iter().any(|g| g.0 == w.0 && g.1 == w.1 && (w.2.is_none() || g.2 == w.2)),
                    "{w:?} in {r:#?}"
                );
            }
            assert!(!r.ok && r.break_count >= want.len() as u64, "{r:#?}");
            r
        }
    };

    tamper::tamper(h, Tamper::Alter(&id(2)));
    let r = check(vec![("altered", Some(3), Some(id(2)))]).await;
    assert_eq!(r.break_count, 1, "{r:#?}");
    assert!(r.breaks[0].message.contains(&id(2)), "{r:#?}");

    tamper::tamper(h, Tamper::Delete(&id(5)));
    check(vec![("altered", Some(3), Some(id(2))), ("missing", Some(6), None)]).await;

    let forged = "0190b3f2-7c1e-7a00-8000-00000000f0f0";
    tamper::tamper(h, Tamper::Forge(forged));
    check(vec![("inserted", None, Some(forged.to_string()))]).await;

    tamper::tamper(h, Tamper::Swap(&id(8), &id(10)));
    check(vec![("reordered", Some(9), None)]).await;
}

/// Cleanup and archive remove the chain's oldest entries as a prefix and leave a checkpoint: what stays
/// verifies, and the checkpoint counts what went. An entry written with an older timestamp after newer ones
/// stays until everything chained before it goes too (the chain keeps no holes).
pub async fn audit_chain_survives_cleanup_and_archive(h: &Harness) {
    let s = &h.storage;
    let ids =
        append_at(s, &[days_ago(400), days_ago(300), days_ago(200), days_ago(150), days_ago(10), now()])
            .await;
    let (root, dest) = crate::common::archive::destination(h, "chain");
    let _ = root;
    let params = parallax_storage_host::archive::ArchiveParams {
        target: CleanupTarget::AuditLogs,
        older_than: Some("250d".into()),
        max_count: None,
        destination: dest.clone(),
        dry_run: false,
        keep: false,
        confirm_all: false,
    };
    let a = s.archive(&params).await.unwrap();
    assert_eq!(a.rows.get("audit_logs").copied(), Some(2), "{a:?}");
    h.settle().await;
    let r = verify(s).await;
    assert!(r.ok, "{r:#?}");
    let cp = r.checkpoint.clone().expect("a checkpoint after the archive");
    assert_eq!((cp.seq, cp.removed, r.first_seq, r.checked, r.awaiting_removal), (2, 2, 3, 4, 0), "{r:#?}");

    let c = s.cleanup(&audit_cleanup("120d")).await.unwrap();
    assert_eq!(c.tables[0].rows, 2, "{c:?}");
    h.settle().await;
    let r = verify(s).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!((r.checkpoint.as_ref().map(|c| (c.seq, c.removed)), r.checked), (Some((4, 4)), 2), "{r:#?}");

    // Written late with an old time: it stays while newer entries are chained before it.
    let late = append_at(s, &[days_ago(365)]).await;
    let c = s.cleanup(&audit_cleanup("90d")).await.unwrap();
    assert_eq!(c.tables[0].rows, 0, "{c:?}");
    h.settle().await;
    let r = verify(s).await;
    assert!(r.ok && r.checked == 3, "{r:#?}");
    let left: Vec<Uuid> =
        s.audit_entries(AuditQuery::default(), 10).collect().await.unwrap().iter().map(|e| e.id).collect();
    assert!(left.contains(&late[0]) && left.contains(&ids[4]) && left.contains(&ids[5]), "{left:?}");
}
