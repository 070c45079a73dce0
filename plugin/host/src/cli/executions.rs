//! `parallax executions start | finish | update | event | get | events | list`.

use serde_json::json;

use super::{
    args::{AnyStatus, ExecFilterArgs, ExecutionsCmd, FinalStatus, Kind, StartStatus},
    patterns::page_request,
    render, CliError, Output, EXIT_NOT_FOUND,
};
use crate::{
    ErrorKind, EventKind, Execution, ExecutionCompletion, ExecutionFilter, ExecutionStatus, ExecutionUpdate,
    NewEvent, NewExecution, Storage,
};

fn start_status(s: StartStatus) -> ExecutionStatus {
    match s {
        StartStatus::Pending => ExecutionStatus::Pending,
        StartStatus::Running => ExecutionStatus::Running,
    }
}

fn final_status(s: FinalStatus) -> ExecutionStatus {
    match s {
        FinalStatus::Completed => ExecutionStatus::Completed,
        FinalStatus::Failed => ExecutionStatus::Failed,
        FinalStatus::Cancelled => ExecutionStatus::Cancelled,
    }
}

fn any_status(s: AnyStatus) -> ExecutionStatus {
    match s {
        AnyStatus::Pending => ExecutionStatus::Pending,
        AnyStatus::Running => ExecutionStatus::Running,
        AnyStatus::Completed => ExecutionStatus::Completed,
        AnyStatus::Failed => ExecutionStatus::Failed,
        AnyStatus::Cancelled => ExecutionStatus::Cancelled,
    }
}

fn one(e: &Execution) -> Output {
    let r = render::execution(e);
    Output::new(r.json(), r.table())
}

pub async fn run(store: &Storage, cmd: ExecutionsCmd) -> Result<Output, CliError> {
    match cmd {
        ExecutionsCmd::Start { pattern, pattern_version, input, metadata, tags, status, id } => {
            let version = match pattern_version {
                Some(v) => v,
                None => match store.get_latest_pattern(&pattern).await {
                    Ok(p) => p.version,
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        return Err(CliError::new(
                            EXIT_NOT_FOUND,
                            format!(
                            "pattern {pattern:?} does not exist, so it has no latest version; store it with \
                                 `parallax patterns put` or pass --pattern-version"
                        ),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let e = store
                .create_execution(NewExecution {
                    id,
                    status: start_status(status),
                    input,
                    metadata,
                    tags,
                    ..NewExecution::new(pattern, version)
                })
                .await?;
            Ok(one(&e))
        }
        ExecutionsCmd::Finish { id, status, output, error, .. } => {
            let c = ExecutionCompletion { output, error, ..ExecutionCompletion::new(final_status(status)) };
            Ok(one(&store.complete_execution(id, c).await?))
        }
        ExecutionsCmd::Update { id, status, output, error, metadata, .. } => {
            if status.is_none() && output.is_none() && error.is_none() && metadata.is_none() {
                return Err(CliError::usage(
                    "nothing to update; pass --status, --result, --error or --metadata",
                ));
            }
            let u = ExecutionUpdate { status: status.map(start_status), output, error, metadata };
            Ok(one(&store.update_execution(id, u).await?))
        }
        ExecutionsCmd::Event { id, kind, payload } => {
            let kind = match kind {
                Kind::AgentAssignment => EventKind::AgentAssignment,
                Kind::StepResult => EventKind::StepResult,
            };
            let ev = store.append_event(id, NewEvent::new(kind, payload)).await?;
            let r = render::event(&ev);
            Ok(Output::new(r.json(), r.table()))
        }
        ExecutionsCmd::Get { id, events } => {
            let e = store.get_execution(id).await?;
            let mut out = one(&e);
            if events {
                let list = store.list_events(id).await?;
                out.json["events"] = json!(render::all(&list, render::event));
                out.table.push_str("events:\n");
                out.table.push_str(&render::events_table(&list));
            }
            Ok(out)
        }
        ExecutionsCmd::Events { id } => {
            // Distinguish "no events yet" from "no such execution".
            store.get_execution(id).await?;
            let list = store.list_events(id).await?;
            let doc = json!({ "execution_id": id, "items": render::all(&list, render::event) });
            Ok(Output::new(doc, render::events_table(&list)))
        }
        ExecutionsCmd::List { filter, page, count } => {
            let filter = execution_filter(filter)?;
            if count {
                let n = store.count_executions(filter).await?;
                return Ok(Output::new(json!({ "count": n }), format!("{n}\n")));
            }
            let got = store.list_executions(filter, page_request(&page)).await?;
            let next = got.next_cursor;
            let items: Vec<Execution> = got.items;
            let doc = render::page(render::all(&items, render::execution), next.as_deref());
            let mut text = render::executions_table(&items);
            if let Some(c) = &next {
                text.push_str(&render::next_page_hint(c));
            }
            Ok(Output::new(doc, text))
        }
        ExecutionsCmd::Search { text, page } => {
            let got = store.search_executions(&text.join(" "), page_request(&page)).await?;
            let items: Vec<Execution> = got.items.iter().map(|h| h.execution.clone()).collect();
            let records = got.items.iter().map(|h| (render::execution(&h.execution), h.rank)).collect();
            let next = got.next_cursor.as_deref();
            let (doc, text) = render::ranked_page(records, render::executions_table(&items), next);
            Ok(Output::new(doc, text))
        }
    }
}

fn execution_filter(f: ExecFilterArgs) -> Result<ExecutionFilter, CliError> {
    if let (Some(since), Some(until)) = (f.since, f.until) {
        if since > until {
            return Err(CliError::usage("--since is later than --until; nothing can match"));
        }
    }
    let mut statuses: Vec<ExecutionStatus> = Vec::new();
    for s in f.statuses.into_iter().map(any_status) {
        if !statuses.contains(&s) {
            statuses.push(s);
        }
    }
    Ok(ExecutionFilter {
        pattern_name: f.pattern,
        pattern_version: f.pattern_version,
        statuses,
        started_from: f.since,
        started_until: f.until,
        tags: f.tags,
    })
}
