use parallax_storage_host::*;
use serde_json::json;

use crate::common::*;

pub async fn pattern_put_get_roundtrip(h: &Harness) {
    let s = &h.storage;
    let mut p = new_pattern("summarize", "1.0.0");
    p.definition = doc("{ \"b\": [1, 2], \"a\": {\"x\": null} }");
    let stored = s.put_pattern(p.clone()).await.unwrap();
    assert_eq!(stored.name, "summarize");
    assert_eq!(stored.version, "1.0.0");
    assert_eq!(stored.created_by.as_deref(), Some("tester"));
    assert!(uuid_is_v7(&stored.id.to_string()), "generated ids are UUIDv7: {}", stored.id);
    assert_eq!(stored.id.get_version_num(), 7);
    let got = s.get_pattern("summarize", "1.0.0").await.unwrap();
    assert_eq!(got, stored);
    let def: serde_json::Value = serde_json::from_str(got.definition.as_str()).unwrap();
    assert_eq!(def, json!({ "a": { "x": null }, "b": [1, 2] }));
    // A client-supplied id is kept.
    let mut p2 = new_pattern("summarize", "1.0.1");
    p2.id = Some(id_of("0190b3f2-7c1e-7a00-8000-000000000001"));
    let stored2 = s.put_pattern(p2).await.unwrap();
    assert_eq!(stored2.id.to_string(), "0190b3f2-7c1e-7a00-8000-000000000001");
}

fn uuid_is_v7(id: &str) -> bool {
    id.len() == 36 && id.as_bytes()[14] == b'7'
}

pub async fn pattern_duplicate_version_conflicts(h: &Harness) {
    let s = &h.storage;
    s.put_pattern(new_pattern("dup", "1.0.0")).await.unwrap();
    assert_kind(s.put_pattern(new_pattern("dup", "1.0.0")).await, ErrorKind::Conflict, "already exists");
    // Same version under another name is fine.
    s.put_pattern(new_pattern("dup2", "1.0.0")).await.unwrap();
}

pub async fn pattern_not_found(h: &Harness) {
    let s = &h.storage;
    assert_kind(s.get_pattern("nope", "1.0.0").await, ErrorKind::NotFound, "nope");
    assert_kind(s.get_latest_pattern("nope").await, ErrorKind::NotFound, "nope");
    assert!(s.list_pattern_versions("nope").await.unwrap().is_empty());
    assert_kind(s.delete_pattern("nope", "1.0.0").await, ErrorKind::NotFound, "nope");
}

pub async fn pattern_latest_is_highest_semver(h: &Harness) {
    let s = &h.storage;
    for v in ["1.2.0", "1.10.0", "1.9.3", "2.0.0-rc.1", "0.9.0"] {
        s.put_pattern(new_pattern("flow", v)).await.unwrap();
    }
    assert_eq!(s.get_latest_pattern("flow").await.unwrap().version, "2.0.0-rc.1");
    s.put_pattern(new_pattern("flow", "2.0.0")).await.unwrap();
    assert_eq!(s.get_latest_pattern("flow").await.unwrap().version, "2.0.0");
    // Build metadata does not order versions: the newer row wins the tie.
    s.put_pattern(new_pattern("tie", "1.0.0+a")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    s.put_pattern(new_pattern("tie", "1.0.0+b")).await.unwrap();
    assert_eq!(s.get_latest_pattern("tie").await.unwrap().version, "1.0.0+b");
}

pub async fn pattern_versions_sorted(h: &Harness) {
    let s = &h.storage;
    for v in ["1.0.0", "1.10.0", "1.2.0"] {
        s.put_pattern(new_pattern("sorted", v)).await.unwrap();
    }
    let versions: Vec<String> =
        s.list_pattern_versions("sorted").await.unwrap().into_iter().map(|p| p.version).collect();
    assert_eq!(versions, ["1.10.0", "1.2.0", "1.0.0"]);
}

pub async fn pattern_list_pages_latest_of_each(h: &Harness) {
    let s = &h.storage;
    assert!(s.list_patterns(page(10, None)).await.unwrap().items.is_empty());
    for i in 0..7 {
        for v in ["1.0.0", "1.1.0"] {
            s.put_pattern(new_pattern(&format!("p{i}"), v)).await.unwrap();
        }
    }
    let mut names = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let pg = s.list_patterns(page(3, cursor.as_ref())).await.unwrap();
        pages += 1;
        assert!(pg.items.len() <= 3);
        for p in pg.items.iter() {
            assert_eq!(p.version, "1.1.0", "list shows the latest version of each name");
            names.push(p.name.to_string());
        }
        match pg.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
    // An exact multiple of the page size ends without an empty trailing page.
    let pg = s.list_patterns(page(7, None)).await.unwrap();
    assert_eq!(pg.items.len(), 7);
    assert!(pg.next_cursor.is_none());
    assert_kind(
        s.list_patterns(page(3, Some(&"garbage".to_string()))).await,
        ErrorKind::InvalidInput,
        "cursor",
    );
    assert_kind(s.list_patterns(page(5000, None)).await, ErrorKind::InvalidInput, "maximum");
}

pub async fn pattern_delete(h: &Harness) {
    let s = &h.storage;
    s.put_pattern(new_pattern("del", "1.0.0")).await.unwrap();
    s.put_pattern(new_pattern("del", "1.1.0")).await.unwrap();
    s.delete_pattern("del", "1.1.0").await.unwrap();
    assert_kind(s.get_pattern("del", "1.1.0").await, ErrorKind::NotFound, "del");
    assert_eq!(s.get_latest_pattern("del").await.unwrap().version, "1.0.0");
    // The version can be stored again after deletion.
    s.put_pattern(new_pattern("del", "1.1.0")).await.unwrap();
}

pub async fn pattern_invalid_input_is_refused(h: &Harness) {
    let s = &h.storage;
    // A definition that is not JSON: refused by Json itself, and by the plugin from a host on the ABI alone.
    assert_kind(Json::parse("{ not json"), ErrorKind::InvalidInput, "not valid JSON");
    let raw = h.raw();
    let mut p = raw::new_pattern("bad", "1.0.0");
    p.definition = raw::rs("{ not json");
    assert_kind(raw::plain(raw.storage.put_pattern(p).await), ErrorKind::InvalidInput, "not valid JSON");
    let mut p = raw::new_pattern("bad", "1.0.0");
    p.id = Some(raw::rs("not-a-uuid")).into();
    assert_kind(raw::plain(raw.storage.put_pattern(p).await), ErrorKind::InvalidInput, "not a UUID");
    raw.finish().await;
    let mut p = new_pattern("bad", "1.0.0");
    p.definition = doc("[1, 2]");
    assert_kind(s.put_pattern(p.clone()).await, ErrorKind::InvalidInput, "must be a JSON object");
    assert_kind(s.put_pattern(new_pattern("bad", "1.0")).await, ErrorKind::InvalidInput, "semantic version");
    assert_kind(s.put_pattern(new_pattern("", "1.0.0")).await, ErrorKind::InvalidInput, "must not be empty");
    assert_kind(
        s.put_pattern(new_pattern(&"x".repeat(256), "1.0.0")).await,
        ErrorKind::InvalidInput,
        "maximum is 255",
    );
    // Nothing was written by any of the refused calls.
    assert!(s.list_pattern_versions("bad").await.unwrap().is_empty());
}
