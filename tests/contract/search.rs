use std::collections::HashSet;

use parallax_storage_host::*;
use serde_json::json;

use crate::common::*;

fn doc(v: serde_json::Value) -> Option<Json> {
    Some(v.into())
}

pub async fn search_executions_matches_words_in_documents(h: &Harness) {
    let s = &h.storage;
    let mut a = new_execution("p", "1.0.0");
    a.input = doc(json!({ "question": "Why is the Reactor overheating?" }));
    let a = s.create_execution(a).await.unwrap();
    let mut b = new_execution("p", "1.0.0");
    b.input = doc(json!({ "items": ["reactor", { "deep": "coolant pump" }] }));
    let b = s.create_execution(b).await.unwrap();
    let mut c = new_execution("p", "1.0.0");
    // Keys are not indexed, only string values.
    c.input = doc(json!({ "reactor": 1, "note": "nothing to see" }));
    let c = s.create_execution(c).await.unwrap();
    let _ = c;

    let ids = |page: Listed<ExecutionHit>| -> HashSet<String> {
        page.items.iter().map(|h| h.execution.id.to_string()).collect()
    };
    let hits = s.search_executions("reactor", page(10, None)).await.unwrap();
    assert_eq!(ids(hits.clone()), HashSet::from([a.id.to_string(), b.id.to_string()]));
    assert!(hits.items.windows(2).all(|w| w[0].rank >= w[1].rank), "best match first");
    // Every word must match, case-insensitively, punctuation ignored.
    let hits = s.search_executions("REACTOR, coolant!", page(10, None)).await.unwrap();
    assert_eq!(ids(hits), HashSet::from([b.id.to_string()]));
    assert!(s.search_executions("reactor unicorn", page(10, None)).await.unwrap().items.is_empty());

    // Output and error documents are searched too, and updates are reflected.
    let done = ExecutionCompletion {
        status: ExecutionStatus::Failed,
        output: doc(json!({ "summary": "partial" })),
        error: doc(json!({ "message": "quota exhausted" })),
        completed_at: None,
    };
    s.complete_execution(a.id, done).await.unwrap();
    let hits = s.search_executions("quota", page(10, None)).await.unwrap();
    assert_eq!(ids(hits), HashSet::from([a.id.to_string()]));
    let hits = s.search_executions("partial", page(10, None)).await.unwrap();
    assert_eq!(ids(hits), HashSet::from([a.id.to_string()]));

    assert_kind(s.search_executions(" ?! ", page(10, None)).await, ErrorKind::InvalidInput, "no words");
}

pub async fn search_pages_are_exact(h: &Harness) {
    let s = &h.storage;
    let mut want = HashSet::new();
    for i in 0..23 {
        let mut e = new_execution("p", "1.0.0");
        e.input = doc(json!({ "text": format!("needle number {i}") }));
        want.insert(s.create_execution(e).await.unwrap().id.to_string());
    }
    let mut got = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let pg = s.search_executions("needle", page(5, cursor.as_ref())).await.unwrap();
        pages += 1;
        for hit in pg.items.iter() {
            assert!(got.insert(hit.execution.id.to_string()), "no hit repeats across pages");
        }
        match pg.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(got, want);
    assert_kind(
        s.search_executions("needle", page(5, Some(&"o:x".to_string()))).await,
        ErrorKind::InvalidInput,
        "cursor",
    );
}

pub async fn search_patterns_by_name_description_definition(h: &Harness) {
    let s = &h.storage;
    let mut p = new_pattern("incident-triage", "1.0.0");
    p.description = Some("Route pager alerts".into());
    p.definition = json!({ "steps": [{ "agent": "classifier", "prompt": "label the severity" }] }).into();
    s.put_pattern(p).await.unwrap();
    let mut q = new_pattern("weekly-report", "2.0.0");
    q.description = Some("Summarize the week".into());
    s.put_pattern(q).await.unwrap();
    let names = |pg: Listed<PatternHit>| -> Vec<String> {
        pg.items.iter().map(|h| format!("{}@{}", h.pattern.name, h.pattern.version)).collect()
    };
    assert_eq!(
        names(s.search_patterns("severity", page(10, None)).await.unwrap()),
        ["incident-triage@1.0.0"]
    );
    assert_eq!(names(s.search_patterns("pager", page(10, None)).await.unwrap()), ["incident-triage@1.0.0"]);
    assert_eq!(names(s.search_patterns("weekly", page(10, None)).await.unwrap()), ["weekly-report@2.0.0"]);
    s.delete_pattern("weekly-report", "2.0.0").await.unwrap();
    assert!(
        s.search_patterns("weekly", page(10, None)).await.unwrap().items.is_empty(),
        "deleted versions vanish"
    );
}
