use std::collections::HashSet;

use parallax_storage_host::*;

use crate::common::*;

const T0: i64 = 1_705_276_800_000_000;

pub async fn audit_append_and_query(h: &Harness) {
    let s = &h.storage;
    let mut entries = vec![
        audit("pattern.create", "alice"),
        audit("pattern.delete", "bob"),
        audit("pattern.create", "bob"),
    ];
    entries[2].ip_address = Some("2001:db8::1".into());
    entries[2].resource_id = Some("p2".into());
    let ids = s.append_audit(entries).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3);
    let by_bob = s
        .query_audit(AuditQuery { actor: Some("bob".into()), ..Default::default() }, page(10, None))
        .await
        .unwrap();
    assert_eq!(by_bob.items.len(), 2);
    let q = AuditQuery {
        actor: Some("bob".into()),
        action: Some("pattern.create".into()),
        resource_type: Some("pattern".into()),
        resource_id: Some("p2".into()),
        ..Default::default()
    };
    let one = s.query_audit(q, page(10, None)).await.unwrap();
    assert_eq!(one.items.len(), 1);
    let e = &one.items[0];
    assert_eq!(e.id, ids[2]);
    assert_eq!(e.ip_address.as_deref(), Some("2001:db8::1"));
    assert_eq!(e.details.as_ref().map(|s| s.as_str()), Some("{\"ok\":true}"));
    assert_eq!(e.user_agent.as_deref(), Some("tests/1.0"));
    assert!(s.append_audit(vec![]).await.unwrap().is_empty());
}

pub async fn audit_batch_is_atomic(h: &Harness) {
    let s = &h.storage;
    let mut batch: Vec<NewAuditEntry> = (0..5).map(|i| audit(&format!("a{i}"), "carol")).collect();
    batch[3].ip_address = Some("999.1.1.1".into());
    assert_kind(s.append_audit(batch.clone()).await, ErrorKind::InvalidInput, "audit entry 3");
    batch[3].ip_address = None;
    // Details that are not JSON: only a host on the ABI alone can send them (Json validates), and the plugin
    // refuses the whole batch.
    let raw = h.raw();
    let mut raw_batch: Vec<parallax_storage_abi::NewAuditEntry> = (0..5)
        .map(|i| parallax_storage_abi::NewAuditEntry {
            action: format!("a{i}").into(),
            actor: Some(raw::rs("carol")).into(),
            ..Default::default()
        })
        .collect();
    raw_batch[4].details = Some(raw::rs("{")).into();
    assert_kind(
        raw::plain(raw.storage.append_audit(raw_batch.into()).await),
        ErrorKind::InvalidInput,
        "details",
    );
    raw.finish().await;
    let mut dup = audit("x", "carol");
    dup.id = Some(id_of("0190b3f2-7c1e-7a00-8000-000000000abc"));
    s.append_audit(vec![dup.clone()]).await.unwrap();
    batch[4].details = None;
    batch.push(dup);
    let r = s.append_audit(batch).await;
    assert!(r.is_err(), "a duplicate id fails the whole batch");
    let q = AuditQuery { actor: Some("carol".into()), ..Default::default() };
    assert_eq!(
        s.query_audit(q, page(100, None)).await.unwrap().items.len(),
        1,
        "no partial batch was written"
    );
    let big: Vec<NewAuditEntry> = (0..3000).map(|_| audit("bulk", "dave")).collect();
    assert_eq!(s.append_audit(big).await.unwrap().len(), 3000);
    let too_big: Vec<NewAuditEntry> = (0..10_001).map(|_| audit("bulk", "dave")).collect();
    assert_kind(s.append_audit(too_big).await, ErrorKind::InvalidInput, "too large");
}

pub async fn audit_pagination_and_time_range(h: &Harness) {
    let s = &h.storage;
    let entries: Vec<NewAuditEntry> = (0..30)
        .map(|i| {
            let mut a = audit("login", if i % 2 == 0 { "even" } else { "odd" });
            a.timestamp = Some(at(T0 + (i / 3) * 1_000_000)); // triples share a timestamp
            a
        })
        .collect();
    s.append_audit(entries).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let pg = s.query_audit(AuditQuery::default(), page(4, cursor.as_ref())).await.unwrap();
        seen.extend(pg.items.iter().map(|e| (e.timestamp, e.id.to_string())));
        match pg.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, id breaks ties");
    let q = AuditQuery {
        from: Some(at(T0 + 2_000_000)),
        until: Some(at(T0 + 5_000_000)),
        actor: Some("odd".into()),
        ..Default::default()
    };
    let pg = s.query_audit(q, page(100, None)).await.unwrap();
    // timestamps 2,3,4 seconds → entries 6..=14, odd ones: 7, 9, 11, 13.
    assert_eq!(pg.items.len(), 4);
    assert!(pg.items.iter().all(|e| e.timestamp >= at(T0 + 2_000_000) && e.timestamp < at(T0 + 5_000_000)));
}
