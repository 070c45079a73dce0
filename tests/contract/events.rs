use parallax_storage_host::abi::*;
use serde_json::json;

use crate::common::*;

fn event(kind: EventKind, payload: serde_json::Value) -> NewEvent {
    NewEvent { kind, payload: payload.to_string().into(), recorded_at: None.into() }
}

pub async fn events_append_in_order(h: &Harness) {
    let s = &h.storage;
    let e = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let other = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    assert!(s.list_events(&e.id).await.unwrap().is_empty());
    let a =
        s.append_event(&e.id, event(EventKind::AgentAssignment, json!({ "agent": "writer" }))).await.unwrap();
    s.append_event(&other.id, event(EventKind::StepResult, json!({ "step": 0 }))).await.unwrap();
    let b =
        s.append_event(&e.id, event(EventKind::StepResult, json!({ "step": 1, "ok": true }))).await.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(a.execution_id, e.id);
    let listed = s.list_events(&e.id).await.unwrap();
    assert_eq!(listed, vec![a, b]);
    // Appending does not rewrite the execution row.
    assert_eq!(s.get_execution(&e.id).await.unwrap(), e);
    assert_kind(
        s.append_event(
            &e.id,
            NewEvent { kind: EventKind::StepResult, payload: "{oops".into(), recorded_at: None.into() },
        )
        .await,
        ErrorKind::InvalidInput,
        "payload",
    );
}

pub async fn events_refused_on_final_or_missing(h: &Harness) {
    let s = &h.storage;
    let missing = "0190b3f2-7c1e-7a00-8000-00000000beef";
    assert_kind(
        s.append_event(missing, event(EventKind::StepResult, json!(1))).await,
        ErrorKind::NotFound,
        missing,
    );
    assert_kind(s.list_events(missing).await, ErrorKind::NotFound, missing);
    let e = s.create_execution(new_execution("p", "1.0.0")).await.unwrap();
    let c = ExecutionCompletion {
        status: ExecutionStatus::Cancelled,
        output: None.into(),
        error: None.into(),
        completed_at: None.into(),
    };
    s.complete_execution(&e.id, c).await.unwrap();
    assert_kind(
        s.append_event(&e.id, event(EventKind::StepResult, json!(1))).await,
        ErrorKind::Conflict,
        "cancelled",
    );
}
