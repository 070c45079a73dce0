use parallax_storage_host::*;
use serde_json::json;

use crate::common::*;

fn event(kind: EventKind, payload: serde_json::Value) -> NewEvent {
    NewEvent::new(kind, payload)
}

pub async fn events_append_in_order(h: &Harness) {
    let s = &h.storage;
    let e = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let other = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    assert!(s.list_events(e.id).await.unwrap().is_empty());
    let a =
        s.append_event(e.id, event(EventKind::AgentAssignment, json!({ "agent": "writer" }))).await.unwrap();
    s.append_event(other.id, event(EventKind::StepResult, json!({ "step": 0 }))).await.unwrap();
    let b =
        s.append_event(e.id, event(EventKind::StepResult, json!({ "step": 1, "ok": true }))).await.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(a.execution_id, e.id);
    let listed = s.list_events(e.id).await.unwrap();
    assert_eq!(listed, vec![a, b]);
    // Appending does not rewrite the execution row.
    assert_eq!(s.get_execution(e.id).await.unwrap(), e);
    // A payload that is not JSON: refused by Json itself, and by the plugin from a host on the ABI alone.
    assert_kind(Json::parse("{oops"), ErrorKind::InvalidInput, "not valid JSON");
    let raw = h.raw();
    let id = if raw.shared {
        e.id.to_string().into()
    } else {
        raw::plain(raw.storage.create_execution(raw::new_execution("p", "1.0.0")).await).unwrap().id
    };
    let bad = parallax_storage_abi::NewEvent {
        kind: parallax_storage_abi::EventKind::StepResult,
        payload: raw::rs("{oops"),
        recorded_at: None.into(),
    };
    assert_kind(raw::plain(raw.storage.append_event(id, bad).await), ErrorKind::InvalidInput, "payload");
    raw.finish().await;
    assert_eq!(s.list_events(e.id).await.unwrap().len(), 2, "the refused event was not stored");
}

pub async fn events_refused_on_final_or_missing(h: &Harness) {
    let s = &h.storage;
    let text = "0190b3f2-7c1e-7a00-8000-00000000beef";
    let missing = id_of(text);
    assert_kind(
        s.append_event(missing, event(EventKind::StepResult, json!(1))).await,
        ErrorKind::NotFound,
        text,
    );
    assert_kind(s.list_events(missing).await, ErrorKind::NotFound, text);
    let e = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let c = ExecutionCompletion {
        status: ExecutionStatus::Cancelled,
        output: None,
        error: None,
        completed_at: None,
    };
    s.complete_execution(e.id, c).await.unwrap();
    assert_kind(
        s.append_event(e.id, event(EventKind::StepResult, json!(1))).await,
        ErrorKind::Conflict,
        "cancelled",
    );
}
