//! Proof that the host crate's public API speaks plain Rust.
//!
//! This crate depends on `parallax-storage-host` and `serde_json` only; it cannot name an `abi_stable` or
//! `parallax-storage-abi` type. Every public call of the host crate is made here with its arguments and its
//! result written out as the host's plain types (`let _: Listed<Pattern> = …`), so a signature that took or
//! returned an FFI type would fail to compile. `cargo build --workspace` (the test command) builds it; it is
//! never run.
#![allow(dead_code, clippy::let_unit_value)]

use std::path::{Path, PathBuf};

use parallax_storage_host::{
    config::{self, ConfigError, ResolvedConfig},
    loader::{self, LoadError, LoadErrorKind, OpenError},
    logs::{self, PluginLog},
    AuditEntry, AuditQuery, BackendInfo, ConfigReport, Describe, Error, ErrorKind, EventKind, Execution,
    ExecutionCompletion, ExecutionEvent, ExecutionFilter, ExecutionHit, ExecutionStatus, ExecutionUpdate,
    Health, Json, Listed, LogLevel, MaintenanceRequest, MaintenanceResponse, MigrationInfo, MigrationReport,
    NewAuditEntry, NewEvent, NewExecution, NewPattern, OpVersions, OpenOptions, Page, Pages, Pattern,
    PatternHit, PingMode, Plugin, PluginInfo, Storage, Timestamp, Uuid,
};

/// Loading and opening.
pub fn load_and_open(path: &Path, config_file: &Path) -> Result<Storage, OpenError> {
    let found: Result<PathBuf, LoadError> = loader::locate(Some(path));
    let kind: Option<LoadErrorKind> = found.as_ref().err().map(LoadError::kind);
    let _: Option<&str> = found.as_ref().err().map(LoadError::message);
    let _ = kind;
    let _: String = loader::library_file_name();
    let plugin: Plugin = Plugin::load(path)?;
    let _: Result<Plugin, LoadError> = Plugin::find();
    let info: PluginInfo = plugin.info();
    let _: &Vec<BackendInfo> = &info.backends;
    let section = serde_json::json!({ "type": "sqlite" });
    let _: Result<ConfigReport, Error> = plugin.check_config(&section);
    let _: Result<Storage, Error> = plugin.open(&section);
    let _: Result<Storage, Error> = plugin.open_with(&section, OpenOptions { maintenance: true });
    let resolved: Result<ResolvedConfig, ConfigError> = config::resolve_from_env(Some(config_file));
    let resolved = resolved?;
    let _: &serde_json::Value = &resolved.storage;
    let _: Result<Storage, Error> = plugin.open_resolved(&resolved);
    let _: Result<Storage, OpenError> = parallax_storage_host::open(Some(config_file));
    logs::set_hook(|l: &PluginLog| {
        let _: LogLevel = l.level;
    });
    plugin.open_config_file(config_file)
}

/// Every storage call.
pub async fn every_call(s: &Storage) -> Result<(), Error> {
    let id: Uuid = Uuid::nil();
    let at: Timestamp = Timestamp::from_micros(0);
    let doc: Json = Json::parse("{}")?;
    let _: &str = s.plugin_abi_version();

    let _: Pattern = s.put_pattern(NewPattern::new("p", "1.0.0", doc.clone())).await?;
    let _: Pattern = s.get_pattern("p", "1.0.0").await?;
    let _: Pattern = s.get_latest_pattern("p").await?;
    let _: Vec<Pattern> = s.list_pattern_versions("p").await?;
    let _: Listed<Pattern> = s.list_patterns(Page::first(10)).await?;
    let _: () = s.delete_pattern("p", "1.0.0").await?;

    let e: Execution = s.create_execution(NewExecution::new("p", "1.0.0").input(doc.clone())).await?;
    let _: Execution = s.update_execution(e.id, ExecutionUpdate::default()).await?;
    let _: Execution = s
        .complete_execution(id, ExecutionCompletion::new(ExecutionStatus::Completed).completed_at(at))
        .await?;
    let _: Execution = s.get_execution(id).await?;
    let _: Listed<Execution> = s.list_executions(ExecutionFilter::default(), Page::default()).await?;
    let _: u64 = s.count_executions(ExecutionFilter::default()).await?;

    let _: ExecutionEvent = s.append_event(id, NewEvent::new(EventKind::StepResult, doc.clone())).await?;
    let _: Vec<ExecutionEvent> = s.list_events(id).await?;

    let _: Vec<Uuid> = s.append_audit(vec![NewAuditEntry::new("a")]).await?;
    let _: Listed<AuditEntry> = s.query_audit(AuditQuery::default(), Page::default()).await?;

    let _: Listed<ExecutionHit> = s.search_executions("w", Page::default()).await?;
    let _: Listed<PatternHit> = s.search_patterns("w", Page::default()).await?;

    let mut pages: Pages<Execution> = s.executions(ExecutionFilter::default(), 100);
    let _: Option<Vec<Execution>> = pages.next_page().await?;
    let _: Vec<Pattern> = s.patterns(100).collect().await?;
    let _: Vec<AuditEntry> = s.audit_entries(AuditQuery::default(), 100).collect().await?;

    let _: Vec<MigrationInfo> = s.migration_status().await?;
    let _: MigrationReport = s.migrate_up().await?;
    let _: MigrationReport = s.migrate_down().await?;
    let _: MigrationReport = s.migrate_to("0").await?;
    let _: MigrationReport = s.mark_migration_applied("20240115000000").await?;

    let _: Health = s.health().await?;
    let _: () = s.ping(PingMode::Echo).await?;
    let _: MaintenanceResponse = s.maintenance(&MaintenanceRequest::describe()).await?;
    let d: Describe = s.describe().await?;
    let _: &Vec<OpVersions> = &d.ops;
    let _: () = s.shutdown().await?;
    Ok(())
}

/// Errors are plain too: a kind to match, a message, `std::error::Error`.
pub fn errors(e: &Error) -> Option<&(dyn std::error::Error + 'static)> {
    let _: ErrorKind = e.kind();
    let _: &str = e.message();
    let boxed: Box<dyn std::error::Error> = Box::new(e.clone());
    let _ = boxed;
    None
}
