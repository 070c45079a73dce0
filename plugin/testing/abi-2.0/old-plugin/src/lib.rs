//! Test fixture: a storage plugin as a third party would have built it against ABI 2.0.0 (the frozen copy in
//! `../abi`), before `maintenance` was appended in 2.1.0. It keeps patterns and executions in memory; the
//! calls the compatibility test does not need answer `Unsupported`.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RString, RVec},
};
use async_ffi::FutureExt as _;
use parallax_storage_abi::*;

#[derive(Default)]
struct Memory {
    patterns: Mutex<HashMap<(String, String), Pattern>>,
    executions: Mutex<HashMap<String, Execution>>,
    next_id: AtomicU64,
}

type R<T> = Result<T, StorageError>;

fn ready<T: Send + 'static>(r: R<T>) -> StorageFuture<T> {
    let r: RResult<T, StorageError> = r.into();
    async move { r }.into_ffi()
}

fn unsupported<T: Send + 'static>(what: &str) -> StorageFuture<T> {
    ready(Err(StorageError::new(
        ErrorKind::Unsupported,
        format!("the ABI 2.0.0 fixture plugin does not implement {what}"),
    )))
}

fn not_found(what: String) -> StorageError {
    StorageError::new(ErrorKind::NotFound, what)
}

impl Memory {
    fn id(&self) -> RString {
        format!("00000000-0000-7000-8000-{:012x}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1).into()
    }
}

impl StorageBackend for Memory {
    fn put_pattern(&self, p: NewPattern) -> StorageFuture<Pattern> {
        let key = (p.name.to_string(), p.version.to_string());
        let mut patterns = self.patterns.lock().unwrap();
        if patterns.contains_key(&key) {
            return ready(Err(StorageError::new(
                ErrorKind::Conflict,
                format!("pattern {}@{} exists", key.0, key.1),
            )));
        }
        let stored = Pattern {
            id: p.id.into_option().unwrap_or_else(|| self.id()),
            name: p.name,
            version: p.version,
            description: p.description,
            definition: p.definition,
            created_at: 1,
            created_by: p.created_by,
        };
        patterns.insert(key, stored.clone());
        ready(Ok(stored))
    }
    fn get_pattern(&self, name: RString, version: RString) -> StorageFuture<Pattern> {
        let found = self.patterns.lock().unwrap().get(&(name.to_string(), version.to_string())).cloned();
        ready(found.ok_or_else(|| not_found(format!("pattern {name}@{version} not found"))))
    }
    fn get_latest_pattern(&self, _: RString) -> StorageFuture<Pattern> {
        unsupported("get_latest_pattern")
    }
    fn list_pattern_versions(&self, _: RString) -> StorageFuture<RVec<Pattern>> {
        unsupported("list_pattern_versions")
    }
    fn list_patterns(&self, _: PageRequest) -> StorageFuture<PatternPage> {
        unsupported("list_patterns")
    }
    fn delete_pattern(&self, _: RString, _: RString) -> StorageFuture<()> {
        unsupported("delete_pattern")
    }

    fn create_execution(&self, e: NewExecution) -> StorageFuture<Execution> {
        let stored = Execution {
            id: e.id.into_option().unwrap_or_else(|| self.id()),
            pattern_name: e.pattern_name,
            pattern_version: e.pattern_version,
            status: e.status,
            input: e.input,
            output: None.into(),
            error: None.into(),
            started_at: e.started_at.into_option().unwrap_or(1),
            completed_at: None.into(),
            duration_ms: None.into(),
            metadata: e.metadata,
            tags: e.tags,
        };
        self.executions.lock().unwrap().insert(stored.id.to_string(), stored.clone());
        ready(Ok(stored))
    }
    fn update_execution(&self, _: RString, _: ExecutionUpdate) -> StorageFuture<Execution> {
        unsupported("update_execution")
    }
    fn complete_execution(&self, _: RString, _: ExecutionCompletion) -> StorageFuture<Execution> {
        unsupported("complete_execution")
    }
    fn get_execution(&self, id: RString) -> StorageFuture<Execution> {
        let found = self.executions.lock().unwrap().get(id.as_str()).cloned();
        ready(found.ok_or_else(|| not_found(format!("execution {id} not found"))))
    }
    fn list_executions(&self, _: ExecutionFilter, _: PageRequest) -> StorageFuture<ExecutionPage> {
        unsupported("list_executions")
    }
    fn count_executions(&self, _: ExecutionFilter) -> StorageFuture<u64> {
        ready(Ok(self.executions.lock().unwrap().len() as u64))
    }

    fn append_event(&self, _: RString, _: NewEvent) -> StorageFuture<ExecutionEvent> {
        unsupported("append_event")
    }
    fn list_events(&self, _: RString) -> StorageFuture<RVec<ExecutionEvent>> {
        unsupported("list_events")
    }
    fn append_audit(&self, _: RVec<NewAuditEntry>) -> StorageFuture<RVec<RString>> {
        unsupported("append_audit")
    }
    fn query_audit(&self, _: AuditQuery, _: PageRequest) -> StorageFuture<AuditPage> {
        unsupported("query_audit")
    }

    fn migration_status(&self) -> StorageFuture<RVec<MigrationInfo>> {
        ready(Ok(RVec::new()))
    }
    fn migrate_up(&self) -> StorageFuture<MigrationReport> {
        unsupported("migrate_up")
    }
    fn migrate_down(&self) -> StorageFuture<MigrationReport> {
        unsupported("migrate_down")
    }
    fn migrate_to(&self, _: RString) -> StorageFuture<MigrationReport> {
        unsupported("migrate_to")
    }

    fn health(&self) -> StorageFuture<Health> {
        ready(Ok(Health {
            backend: "memory".into(),
            server_version: "ABI 2.0.0 fixture".into(),
            location: "memory".into(),
            latency_us: 0,
            schema_version: None.into(),
            pending_migrations: 0,
            warnings: RVec::new(),
        }))
    }
    fn ping(&self, mode: PingMode) -> StorageFuture<()> {
        match mode {
            PingMode::Echo => ready(Ok(())),
            other => unsupported(&format!("ping mode {other}")),
        }
    }
    fn shutdown(&self) -> StorageFuture<()> {
        ready(Ok(()))
    }

    fn search_executions(&self, _: RString, _: PageRequest) -> StorageFuture<ExecutionSearchPage> {
        unsupported("search_executions")
    }
    fn search_patterns(&self, _: RString, _: PageRequest) -> StorageFuture<PatternSearchPage> {
        unsupported("search_patterns")
    }
    fn mark_migration_applied(&self, _: RString) -> StorageFuture<MigrationReport> {
        unsupported("mark_migration_applied")
    }
}

#[export_root_module]
pub fn get_library() -> PluginModRef {
    PluginMod { info, set_log_sink, check_config, open }.leak_into_prefix()
}

extern "C" fn info() -> PluginInfo {
    PluginInfo {
        plugin_version: "0.0.0-abi-2.0.0-fixture".into(),
        abi_version: ABI_VERSION.into(),
        backends: vec![BackendInfo {
            name: "memory".into(),
            available: true,
            note: "".into(),
            migrations: RVec::new(),
        }]
        .into(),
    }
}

extern "C" fn set_log_sink(_: LogSink) {}

extern "C" fn check_config(config_json: RString) -> RResult<ConfigReport, StorageError> {
    RResult::ROk(ConfigReport {
        backend: "memory".into(),
        effective_json: config_json,
        warnings: RVec::new(),
    })
}

extern "C" fn open(_: RString, _: OpenOptions) -> RResult<StorageBox, StorageError> {
    RResult::ROk(StorageBackend_TO::from_value(Memory::default(), TD_Opaque))
}
