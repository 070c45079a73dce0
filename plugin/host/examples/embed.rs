//! A minimal host on tokio: load the plugin, open the default SQLite store in a temporary directory, store a
//! pattern, run an execution with events to completion, list it, shut down.
//!
//! ```sh
//! cargo build --workspace && cargo run -p parallax-storage-host --example embed
//! ```
//!
//! The plugin is found as any host finds it: `PARALLAX_STORAGE_PLUGIN`, else `libparallax_storage.so` next to
//! the executable (here `target/debug/examples/`, or one directory up, `target/debug/`).

use parallax_storage_host::{
    EventKind, ExecutionCompletion, ExecutionFilter, ExecutionStatus, NewEvent, NewExecution, NewPattern,
    Plugin,
};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Load the plugin library (once per process).
    let plugin = Plugin::find()?;
    let info = plugin.info();
    println!("plugin {} (storage ABI {})", info.plugin_version, info.abi_version);

    // 2. Open the default backend, SQLite, in a temporary directory. `open` blocks until the database is
    //    ready (migrations included), so it runs outside the async context.
    let dir = std::env::temp_dir().join(format!("parallax-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = json!({ "type": "sqlite", "sqlite": { "path": dir.join("parallax.db") } });
    let storage = tokio::task::spawn_blocking(move || plugin.open(&config)).await??;

    // 3. Store a pattern.
    let definition = json!({ "steps": [{ "agent": "writer", "prompt": "Summarize: {{text}}" }] });
    let pattern = storage
        .put_pattern(NewPattern::new("summarize", "1.0.0", definition).description("Summarize a text"))
        .await?;
    println!("stored pattern {} {} ({})", pattern.name, pattern.version, pattern.id);

    // 4. Run an execution: create it, record its events, complete it.
    let run = storage
        .create_execution(
            NewExecution::new("summarize", "1.0.0").input(json!({ "text": "hello" })).tag("demo"),
        )
        .await?;
    storage
        .append_event(run.id, NewEvent::new(EventKind::AgentAssignment, json!({ "agent": "writer" })))
        .await?;
    storage
        .append_event(run.id, NewEvent::new(EventKind::StepResult, json!({ "step": 1, "ok": true })))
        .await?;
    let done = storage
        .complete_execution(
            run.id,
            ExecutionCompletion::new(ExecutionStatus::Completed).output(json!({ "summary": "hi" })),
        )
        .await?;
    println!("execution {} {} in {} ms", done.id, done.status, done.duration_ms.unwrap_or(0));

    // 5. List it: every page, through the page walker.
    let listed = storage.executions(ExecutionFilter::default().tag("demo"), 100).collect().await?;
    for e in &listed {
        let events = storage.list_events(e.id).await?;
        println!(
            "listed {} {} started {} with {} events",
            e.pattern_name,
            e.status,
            e.started_at,
            events.len()
        );
    }
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], done);

    // 6. Shut down: waits for queued writes. Always before the process exits.
    storage.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    println!("embed: ok");
    Ok(())
}
