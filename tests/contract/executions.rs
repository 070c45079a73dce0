use std::collections::HashSet;

use parallax_storage_host::*;
use serde_json::json;

use crate::common::*;

const HOUR: i64 = 3_600_000_000;
/// 2024-01-15T00:00:00Z in microseconds.
const T0: i64 = 1_705_276_800_000_000;

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| String::from(*s)).collect()
}

pub async fn execution_create_get_roundtrip(h: &Harness) {
    let s = &h.storage;
    let mut e = new_execution("summarize", "1.0.0");
    e.metadata = Some(doc("{\"team\": \"a\"}"));
    e.tags = tags(&["nightly", "eu", "nightly"]);
    e.status = ExecutionStatus::Pending;
    let created = s.create_execution(e).await.unwrap();
    assert_eq!(created.status, ExecutionStatus::Pending);
    assert!(created.started_at > at(T0), "started_at defaults to now");
    assert!(created.completed_at.is_none() && created.duration_ms.is_none());
    assert_eq!(created.tags, tags(&["nightly", "eu"]), "duplicate tags are dropped, order kept");
    assert_eq!(created.metadata.as_ref().map(|m| m.as_str()), Some("{\"team\":\"a\"}"));
    let got = s.get_execution(created.id).await.unwrap();
    assert_eq!(got, created);
    // Upper-case ids are the same id (a host on the ABI alone can send one; the plain API's Uuid prints lower
    // case).
    let raw = h.raw();
    let id = if raw.shared {
        created.id.to_string()
    } else {
        raw::plain(raw.storage.create_execution(raw::new_execution("summarize", "1.0.0")).await)
            .unwrap()
            .id
            .into()
    };
    let upper = raw::plain(raw.storage.get_execution(id.to_uppercase().into()).await).unwrap();
    assert_eq!(upper.id.as_str(), id);
    raw.finish().await;
}

pub async fn execution_update_and_complete(h: &Harness) {
    let s = &h.storage;
    let mut e = new_execution("p", "1.0.0");
    e.status = ExecutionStatus::Pending;
    e.started_at = Some(at(T0));
    let created = s.create_execution(e).await.unwrap();
    let upd = ExecutionUpdate { status: Some(ExecutionStatus::Running), ..Default::default() };
    let running = s.update_execution(created.id, upd).await.unwrap();
    assert_eq!(running.status, ExecutionStatus::Running);
    assert_eq!(running.input, created.input, "fields not named are kept");
    let upd = ExecutionUpdate { metadata: Some(doc("{\"progress\": 0.5}")), ..Default::default() };
    let with_meta = s.update_execution(created.id, upd).await.unwrap();
    assert_eq!(with_meta.status, ExecutionStatus::Running);
    assert_eq!(with_meta.metadata.as_ref().map(|m| m.as_str()), Some("{\"progress\":0.5}"));
    // An empty update changes nothing and still answers with the row.
    assert_eq!(s.update_execution(created.id, ExecutionUpdate::default()).await.unwrap(), with_meta);

    let done = s
        .complete_execution(
            created.id,
            ExecutionCompletion {
                status: ExecutionStatus::Completed,
                output: Some(json!({ "summary": "ok" }).into()),
                error: None,
                completed_at: Some(at(T0 + 1_234_567)),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.completed_at, Some(at(T0 + 1_234_567)));
    assert_eq!(done.duration_ms, Some(1234));
    assert_eq!(s.get_execution(created.id).await.unwrap(), done);
}

pub async fn execution_final_states_are_final(h: &Harness) {
    let s = &h.storage;
    let created = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let fail = ExecutionCompletion {
        status: ExecutionStatus::Failed,
        output: None,
        error: Some(json!({ "message": "boom" }).into()),
        completed_at: None,
    };
    let failed = s.complete_execution(created.id, fail.clone()).await.unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert!(failed.duration_ms.unwrap() >= 0);
    assert_kind(s.complete_execution(created.id, fail).await, ErrorKind::Conflict, "already failed");
    let upd = ExecutionUpdate { output: Some(doc("1")), ..Default::default() };
    assert_kind(s.update_execution(created.id, upd).await, ErrorKind::Conflict, "no longer be updated");
    // Final statuses cannot be set through update, nor given at creation.
    let other = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let upd = ExecutionUpdate { status: Some(ExecutionStatus::Completed), ..Default::default() };
    assert_kind(s.update_execution(other.id, upd).await, ErrorKind::InvalidInput, "final");
    let mut e = new_execution("p", "1.0.0");
    e.status = ExecutionStatus::Cancelled;
    assert_kind(s.create_execution(e).await, ErrorKind::InvalidInput, "pending or running");
    // Completing before the start is refused.
    let mut e = new_execution("p", "1.0.0");
    e.started_at = Some(at(T0));
    let early = s.create_execution(e).await.unwrap();
    let c = ExecutionCompletion {
        status: ExecutionStatus::Completed,
        output: None,
        error: None,
        completed_at: Some(at(T0 - 1)),
    };
    assert_kind(s.complete_execution(early.id, c).await, ErrorKind::InvalidInput, "before");
}

pub async fn execution_invalid_input_is_refused(h: &Harness) {
    let s = &h.storage;
    // Text that is not JSON, and ids that are not UUIDs, cannot be written with the plain API: the host refuses
    // them before any call ...
    let e = Json::parse("{\"unterminated\": ").unwrap_err();
    assert!(e.kind() == ErrorKind::InvalidInput && e.message().contains("not valid JSON"), "{e}");
    // ... and the plugin refuses them from a host on the ABI alone.
    let raw = h.raw();
    let mut e = raw::new_execution("p", "1.0.0");
    e.input = Some(raw::rs("{\"unterminated\": ")).into();
    assert_kind(
        raw::plain(raw.storage.create_execution(e).await),
        ErrorKind::InvalidInput,
        "input is not valid JSON",
    );
    assert_kind(
        raw::plain(raw.storage.get_execution(raw::rs("123")).await),
        ErrorKind::InvalidInput,
        "not a UUID",
    );
    let created = raw::plain(raw.storage.create_execution(raw::new_execution("p", "1.0.0")).await).unwrap();
    let upd =
        parallax_storage_abi::ExecutionUpdate { output: Some(raw::rs("nope{")).into(), ..Default::default() };
    assert_kind(
        raw::plain(raw.storage.update_execution(created.id.clone(), upd).await),
        ErrorKind::InvalidInput,
        "output",
    );
    let unchanged = raw::plain(raw.storage.get_execution(created.id).await).unwrap();
    assert!(unchanged.output.is_none(), "the refused update wrote nothing");
    raw.finish().await;

    let mut e = new_execution("p", "1.0.0");
    e.tags = tags(&[""]);
    assert_kind(s.create_execution(e).await, ErrorKind::InvalidInput, "tag");
    let mut e = new_execution("p", "1.0.0");
    e.started_at = Some(at(-5));
    assert_kind(s.create_execution(e).await, ErrorKind::InvalidInput, "out of range");
    let missing: Uuid = "0190b3f2-7c1e-7a00-8000-0000000000ff".parse().unwrap();
    assert_kind(s.get_execution(missing).await, ErrorKind::NotFound, "0190b3f2-7c1e-7a00-8000-0000000000ff");
    let created = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let f = ExecutionFilter { started_from: Some(at(10)), started_until: Some(at(5)), ..Default::default() };
    assert_kind(s.list_executions(f, page(10, None)).await, ErrorKind::InvalidInput, "after");
    assert_eq!(
        s.count_executions(ExecutionFilter::default()).await.unwrap(),
        if h.concurrent_instances { 2 } else { 1 },
        "refused calls wrote nothing (the ABI instance above created one more when it shares the data)"
    );
    assert_eq!(s.get_execution(created.id).await.unwrap(), created);
}

pub async fn execution_client_ids_and_conflicts(h: &Harness) {
    let s = &h.storage;
    let mut e = new_execution("p", "1.0.0");
    e.id = Some("0190B3F2-7C1E-7A00-8000-0000000000AA".parse().unwrap());
    let created = s.create_execution(e.clone()).await.unwrap();
    assert_eq!(
        created.id.to_string(),
        "0190b3f2-7c1e-7a00-8000-0000000000aa",
        "ids are normalised to lower case"
    );
    assert_kind(s.create_execution(e).await, ErrorKind::Conflict, "already exists");
    // Upper-case text from a host on the ABI alone names the same id.
    let raw = h.raw();
    let mut e = raw::new_execution("p", "1.0.0");
    e.id = Some(raw::rs("0190B3F2-7C1E-7A00-8000-0000000000BB")).into();
    let created = raw::plain(raw.storage.create_execution(e).await).unwrap();
    assert_eq!(
        created.id.as_str(),
        "0190b3f2-7c1e-7a00-8000-0000000000bb",
        "ids are normalised to lower case"
    );
    raw.finish().await;
}

/// 24 executions over 3 patterns × 2 versions × 4 statuses, one per hour, with tags.
async fn seed_grid(s: &parallax_storage_host::Storage) -> Vec<Execution> {
    let mut out = Vec::new();
    let statuses = [ExecutionStatus::Pending, ExecutionStatus::Running];
    for i in 0..24i64 {
        let mut e = new_execution(&format!("pat{}", i % 3), if i % 2 == 0 { "1.0.0" } else { "2.0.0" });
        e.started_at = Some(at(T0 + i * HOUR));
        e.status = statuses[(i % 2) as usize];
        let mut t = vec!["all"];
        if i % 4 == 0 {
            t.push("four");
        }
        if i % 6 == 0 {
            t.push("six");
        }
        e.tags = tags(&t);
        let mut created = s.create_execution(e).await.unwrap();
        if i % 5 == 0 {
            let c = ExecutionCompletion {
                status: ExecutionStatus::Completed,
                output: None,
                error: None,
                completed_at: Some(at(T0 + i * HOUR + 1000)),
            };
            created = s.complete_execution(created.id, c).await.unwrap();
        }
        out.push(created);
    }
    out
}

fn expect(all: &[Execution], pred: impl Fn(&Execution) -> bool) -> Vec<String> {
    let mut v: Vec<&Execution> = all.iter().filter(|e| pred(e)).collect();
    v.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    v.into_iter().map(|e| e.id.to_string()).collect()
}

async fn list_all(s: &parallax_storage_host::Storage, f: ExecutionFilter, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let pg = s.list_executions(f.clone(), page(limit, cursor.as_ref())).await.unwrap();
        assert!(pg.items.len() <= limit as usize);
        ids.extend(pg.items.iter().map(|e| e.id.to_string()));
        match pg.next_cursor {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
}

pub async fn execution_filters_combine(h: &Harness) {
    let s = &h.storage;
    let all = seed_grid(s).await;
    type Case = (ExecutionFilter, Box<dyn Fn(&Execution) -> bool>);
    let cases: Vec<Case> = vec![
        (ExecutionFilter::default(), Box::new(|_| true)),
        (
            ExecutionFilter { pattern_name: Some("pat1".into()), ..Default::default() },
            Box::new(|e| e.pattern_name == "pat1"),
        ),
        (
            ExecutionFilter {
                pattern_name: Some("pat0".into()),
                pattern_version: Some("1.0.0".into()),
                ..Default::default()
            },
            Box::new(|e| e.pattern_name == "pat0" && e.pattern_version == "1.0.0"),
        ),
        (
            ExecutionFilter {
                statuses: vec![ExecutionStatus::Completed, ExecutionStatus::Pending],
                ..Default::default()
            },
            Box::new(|e| matches!(e.status, ExecutionStatus::Completed | ExecutionStatus::Pending)),
        ),
        (
            ExecutionFilter {
                started_from: Some(at(T0 + 5 * HOUR)),
                started_until: Some(at(T0 + 11 * HOUR)),
                ..Default::default()
            },
            Box::new(|e| e.started_at >= at(T0 + 5 * HOUR) && e.started_at < at(T0 + 11 * HOUR)),
        ),
        (
            ExecutionFilter { tags: tags(&["four", "six"]), ..Default::default() },
            Box::new(|e| e.tags.iter().any(|t| t == "four") && e.tags.iter().any(|t| t == "six")),
        ),
        (
            ExecutionFilter {
                pattern_name: Some("pat0".into()),
                statuses: vec![ExecutionStatus::Pending],
                tags: tags(&["four"]),
                started_from: Some(at(T0 + HOUR)),
                ..Default::default()
            },
            Box::new(|e| {
                e.pattern_name == "pat0"
                    && e.status == ExecutionStatus::Pending
                    && e.tags.iter().any(|t| t == "four")
                    && e.started_at >= at(T0 + HOUR)
            }),
        ),
        (ExecutionFilter { tags: tags(&["missing"]), ..Default::default() }, Box::new(|_| false)),
        (ExecutionFilter { pattern_name: Some("pat%".into()), ..Default::default() }, Box::new(|_| false)),
    ];
    for (i, (f, pred)) in cases.into_iter().enumerate() {
        let want = expect(&all, pred);
        assert_eq!(list_all(s, f.clone(), 4).await, want, "case {i}: {f:?}");
        assert_eq!(s.count_executions(f.clone()).await.unwrap(), want.len() as u64, "count, case {i}");
    }
}

pub async fn execution_pagination_is_exact(h: &Harness) {
    let s = &h.storage;
    // Many executions share one started_at: the id breaks the tie, so no row is lost or repeated.
    let mut ids = HashSet::new();
    for i in 0..25 {
        let mut e = new_execution("same", "1.0.0");
        e.started_at = Some(at(T0 + (i % 3)));
        ids.insert(s.create_execution(e).await.unwrap().id.to_string());
    }
    for limit in [1, 2, 7, 25, 26, 1000] {
        let listed = list_all(s, ExecutionFilter::default(), limit).await;
        assert_eq!(listed.len(), 25, "limit {limit}");
        assert_eq!(listed.iter().cloned().collect::<HashSet<_>>(), ids, "limit {limit}");
    }
    // The page walker of the host API follows the same cursors: 25 rows in pages of 7 are 4 pages.
    let mut pages = s.executions(ExecutionFilter::default(), 7);
    let mut walked = Vec::new();
    while let Some(batch) = pages.next_page().await.unwrap() {
        assert!(batch.len() <= 7);
        walked.push(batch.len());
    }
    assert_eq!(walked, [7, 7, 7, 4]);
    let all = s.executions(ExecutionFilter::default(), 7).collect().await.unwrap();
    assert_eq!(all.iter().map(|e| e.id.to_string()).collect::<HashSet<_>>(), ids);
}

pub async fn execution_pagination_edges(h: &Harness) {
    let s = &h.storage;
    let pg = s.list_executions(ExecutionFilter::default(), page(10, None)).await.unwrap();
    assert!(pg.items.is_empty() && pg.next_cursor.is_none(), "empty store: empty page, no cursor");
    for i in 0..10 {
        let mut e = new_execution("edge", "1.0.0");
        e.started_at = Some(at(T0 + i));
        s.create_execution(e).await.unwrap();
    }
    let pg = s.list_executions(ExecutionFilter::default(), page(10, None)).await.unwrap();
    assert_eq!(pg.items.len(), 10);
    assert!(pg.next_cursor.is_none(), "exactly one full page: no cursor");
    assert_eq!(pg.items[0].started_at, at(T0 + 9), "newest first");
    let pg = s.list_executions(ExecutionFilter::default(), page(0, None)).await.unwrap();
    assert_eq!(pg.items.len(), 10, "limit 0 means the default page size");
    for bad in ["", "abc", "12:nope", "x:0190b3f2-7c1e-7a00-8000-000000000001"] {
        let r = s.list_executions(ExecutionFilter::default(), page(5, Some(&bad.into()))).await;
        assert_kind(r, ErrorKind::InvalidInput, "cursor");
    }
    assert_kind(
        s.list_executions(ExecutionFilter::default(), page(1001, None)).await,
        ErrorKind::InvalidInput,
        "maximum",
    );
}
