//! The lifecycle and pattern rules (`src/rules.rs`) answer the same on every backend: the same error kind
//! and, word for word, the same message. Each body states the exact message, so a backend that words a
//! refusal its own way fails here.

use parallax_storage_host::*;
use serde_json::json;

use crate::common::*;

/// 2024-01-15T00:00:00Z in microseconds.
const T0: i64 = 1_705_276_800_000_000;

#[track_caller]
fn assert_error<T: std::fmt::Debug>(r: Result<T, Error>, kind: ErrorKind, message: &str) {
    match r {
        Ok(v) => panic!("expected {kind:?} {message:?}, got Ok({v:?})"),
        Err(e) => assert_eq!((e.kind, e.message.as_str()), (kind, message), "the rule's answer differs"),
    }
}

fn completion(status: ExecutionStatus, completed_at: Option<i64>) -> ExecutionCompletion {
    ExecutionCompletion { status, output: None, error: None, completed_at: completed_at.map(at) }
}

fn event() -> NewEvent {
    NewEvent { kind: EventKind::StepResult, payload: json!({ "step": 1 }).into(), recorded_at: None }
}

/// An execution of pattern `p` 1.0.0, started at `T0`, completed with `status`.
async fn finished(s: &parallax_storage_host::Storage, status: ExecutionStatus) -> Execution {
    let mut e = new_execution("p", "1.0.0");
    e.started_at = Some(at(T0));
    let e = s.create_execution(e).await.unwrap();
    s.complete_execution(e.id, completion(status, Some(T0 + 1000))).await.unwrap()
}

pub async fn rules_final_execution_cannot_be_updated(h: &Harness) {
    let s = &h.storage;
    let done = finished(s, ExecutionStatus::Cancelled).await;
    let to_running = ExecutionUpdate { status: Some(ExecutionStatus::Running), ..Default::default() };
    let message = format!("execution {} is cancelled and can no longer be updated", done.id);
    assert_error(s.update_execution(done.id, to_running).await, ErrorKind::Conflict, &message);
    // Even an update that would change nothing is refused: the rule is about the state, not the change.
    assert_error(
        s.update_execution(done.id, ExecutionUpdate::default()).await,
        ErrorKind::Conflict,
        &message,
    );
    assert_eq!(s.get_execution(done.id).await.unwrap(), done, "the refused update wrote nothing");
}

pub async fn rules_final_execution_cannot_be_completed_again(h: &Harness) {
    let s = &h.storage;
    let done = finished(s, ExecutionStatus::Completed).await;
    let again = completion(ExecutionStatus::Failed, Some(T0 + 5000));
    assert_error(
        s.complete_execution(done.id, again).await,
        ErrorKind::Conflict,
        &format!("execution {} is already completed", done.id),
    );
    // Final comes before time: a completion both late and early names the final state.
    let early = completion(ExecutionStatus::Failed, Some(T0 - 1));
    assert_error(
        s.complete_execution(done.id, early).await,
        ErrorKind::Conflict,
        &format!("execution {} is already completed", done.id),
    );
    assert_eq!(s.get_execution(done.id).await.unwrap(), done);
}

pub async fn rules_events_only_while_pending_or_running(h: &Harness) {
    let s = &h.storage;
    let done = finished(s, ExecutionStatus::Failed).await;
    assert_error(
        s.append_event(done.id, event()).await,
        ErrorKind::Conflict,
        &format!(
            "execution {} is failed; events can only be appended to pending or running executions",
            done.id
        ),
    );
    assert!(s.list_events(done.id).await.unwrap().is_empty());
}

pub async fn rules_completion_not_before_start(h: &Harness) {
    let s = &h.storage;
    let mut e = new_execution("p", "1.0.0");
    e.started_at = Some(at(T0));
    let e = s.create_execution(e).await.unwrap();
    assert_error(
        s.complete_execution(e.id, completion(ExecutionStatus::Completed, Some(T0 - 1))).await,
        ErrorKind::InvalidInput,
        &format!("completed_at {} is before the execution's started_at {T0}", T0 - 1),
    );
    assert_eq!(s.get_execution(e.id).await.unwrap(), e, "the refused completion wrote nothing");
    // At the very start is allowed; the duration is whole milliseconds, rounded down, on every backend.
    let at_start =
        s.complete_execution(e.id, completion(ExecutionStatus::Completed, Some(T0))).await.unwrap();
    assert_eq!(at_start.duration_ms, Some(0));
    let mut e = new_execution("p", "1.0.0");
    e.started_at = Some(at(T0));
    let e = s.create_execution(e).await.unwrap();
    let done =
        s.complete_execution(e.id, completion(ExecutionStatus::Completed, Some(T0 + 2_999))).await.unwrap();
    assert_eq!((done.completed_at, done.duration_ms), (Some(at(T0 + 2_999)), Some(2)));
    assert_eq!(s.get_execution(e.id).await.unwrap(), done, "what complete answers is what is stored");
}

pub async fn rules_missing_execution_is_not_found(h: &Harness) {
    let s = &h.storage;
    let text = "0190b3f2-7c1e-7a00-8000-00000000f00d";
    let id = id_of(text);
    let message = format!("execution {text} not found");
    assert_error(s.get_execution(id).await, ErrorKind::NotFound, &message);
    let update = ExecutionUpdate { status: Some(ExecutionStatus::Running), ..Default::default() };
    assert_error(s.update_execution(id, update).await, ErrorKind::NotFound, &message);
    assert_error(s.update_execution(id, ExecutionUpdate::default()).await, ErrorKind::NotFound, &message);
    assert_error(
        s.complete_execution(id, completion(ExecutionStatus::Completed, None)).await,
        ErrorKind::NotFound,
        &message,
    );
    assert_error(s.append_event(id, event()).await, ErrorKind::NotFound, &message);
    assert_error(s.list_events(id).await, ErrorKind::NotFound, &message);
    // Upper-case input (from a host on the ABI alone) names the normalised id.
    let raw = h.raw();
    let upper = raw.storage.get_execution(raw::rs(&text.to_uppercase())).await;
    assert_error(raw::plain(upper), ErrorKind::NotFound, &message);
    raw.finish().await;
}

pub async fn rules_duplicate_execution_id_conflicts(h: &Harness) {
    let s = &h.storage;
    let id = "0190b3f2-7c1e-7a00-8000-00000000abcd";
    let mut e = new_execution("p", "1.0.0");
    e.id = Some(id_of(id));
    s.create_execution(e.clone()).await.unwrap();
    let message = format!("execution {id} already exists");
    assert_error(s.create_execution(e.clone()).await, ErrorKind::Conflict, &message);
    // Another start time (another month: another PostgreSQL partition, another file-store directory).
    e.started_at = Some(at(T0));
    assert_error(s.create_execution(e).await, ErrorKind::Conflict, &message);
}

pub async fn rules_duplicate_pattern_version_conflicts(h: &Harness) {
    let s = &h.storage;
    let first = s.put_pattern(new_pattern("dup", "1.0.0")).await.unwrap();
    assert_error(
        s.put_pattern(new_pattern("dup", "1.0.0")).await,
        ErrorKind::Conflict,
        "pattern \"dup\" version 1.0.0 already exists; versions are immutable",
    );
    // A new version under an id another version holds.
    let mut taken = new_pattern("dup", "1.0.1");
    taken.id = Some(first.id);
    assert_error(
        s.put_pattern(taken).await,
        ErrorKind::Conflict,
        &format!("pattern id {} is already taken by another pattern version; choose another id", first.id),
    );
    assert_eq!(s.list_pattern_versions("dup").await.unwrap(), vec![first]);
}

pub async fn rules_missing_pattern_is_not_found(h: &Harness) {
    let s = &h.storage;
    s.put_pattern(new_pattern("here", "1.0.0")).await.unwrap();
    let message = "pattern \"here\" version 2.0.0 not found";
    assert_error(s.get_pattern("here", "2.0.0").await, ErrorKind::NotFound, message);
    assert_error(s.delete_pattern("here", "2.0.0").await, ErrorKind::NotFound, message);
    assert_error(s.get_latest_pattern("gone").await, ErrorKind::NotFound, "pattern \"gone\" not found");
    s.delete_pattern("here", "1.0.0").await.unwrap();
    assert_error(s.get_latest_pattern("here").await, ErrorKind::NotFound, "pattern \"here\" not found");
}

pub async fn rules_duplicate_audit_id_conflicts(h: &Harness) {
    let s = &h.storage;
    let exists = |id: &str| {
        format!(
            "audit entry {id} already exists; audit entries are immutable: give the new entry another id or \
             leave the id out to have one generated"
        )
    };
    let id = "0190b3f2-7c1e-7a00-8000-00000000a0d1";
    let mut first = audit("login", "erin");
    first.id = Some(id_of(id));
    s.append_audit(vec![first.clone()]).await.unwrap();
    // The same id again, alone.
    assert_error(s.append_audit(vec![first.clone()]).await, ErrorKind::Conflict, &exists(id));
    // After fresh entries in one batch: the batch is refused whole.
    let mut batch: Vec<NewAuditEntry> = (0..3).map(|i| audit(&format!("b{i}"), "frank")).collect();
    batch.push(first.clone());
    assert_error(s.append_audit(batch).await, ErrorKind::Conflict, &exists(id));
    // An id repeated inside one batch of new ids, before a stored one: the first clash in batch order is named.
    let twice = "0190b3f2-7c1e-7a00-8000-00000000a0d2";
    let mut repeated = audit("logout", "frank");
    repeated.id = Some(id_of(twice));
    let batch = vec![audit("c", "frank"), repeated.clone(), repeated, first];
    assert_error(s.append_audit(batch).await, ErrorKind::Conflict, &exists(twice));
    // Nothing of a refused batch was stored; the first entry is there once.
    let q = AuditQuery { actor: Some("frank".into()), ..Default::default() };
    assert!(
        s.query_audit(q, page(100, None)).await.unwrap().items.is_empty(),
        "no partial batch was written"
    );
    let q = AuditQuery { actor: Some("erin".into()), ..Default::default() };
    assert_eq!(s.query_audit(q, page(100, None)).await.unwrap().items.len(), 1);
}

/// Large inputs get a clear size error, not an out-of-memory or a crawl: a 64 MiB JSON document (the limit is
/// 16 MiB per document), an execution with 10,000 tags (the limit is 100), a 1 MiB pattern name (255
/// characters); nothing is written. Documents just under the limit are stored and read back whole.
pub async fn rules_large_inputs_get_a_size_error(h: &Harness) {
    let huge = format!(r#"{{"blob":"{}"}}"#, "x".repeat(64 * 1024 * 1024));
    let mut e = new_execution("large", "1.0.0");
    e.input = Some(Json::parse(huge).unwrap());
    let err = h.storage.create_execution(e).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("input is 67108") && err.message.contains("16 MiB"), "{err}");

    let mut e = new_execution("large", "1.0.0");
    e.tags = (0..10_000).map(|i| format!("t{i}")).collect();
    let err = h.storage.create_execution(e).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("10000 tags") && err.message.contains("maximum is 100"), "{err}");

    let err = h.storage.put_pattern(new_pattern(&"n".repeat(1024 * 1024), "1.0.0")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("maximum is 255"), "{err}");

    let mut a = audit("large", "tester");
    a.details = Some(Json::parse(format!(r#"{{"blob":"{}"}}"#, "y".repeat(17 * 1024 * 1024))).unwrap());
    let err = h.storage.append_audit(vec![a]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("details") && err.message.contains("maximum"), "{err}");

    // Nothing of it was stored; a document of 1 MiB is.
    let listed = h.storage.executions(ExecutionFilter::default(), 100).collect().await.unwrap();
    assert!(listed.is_empty(), "{} executions stored", listed.len());
    let mut e = new_execution("large", "1.0.0");
    let big = format!(r#"{{"blob":"{}"}}"#, "z".repeat(1024 * 1024));
    e.input = Some(Json::parse(big.clone()).unwrap());
    let x = h.storage.create_execution(e).await.unwrap();
    h.settle().await;
    let back = h.storage.get_execution(x.id).await.unwrap();
    assert_eq!(back.input.unwrap().value(), serde_json::from_str::<serde_json::Value>(&big).unwrap());
}
