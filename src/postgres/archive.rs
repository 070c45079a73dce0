//! Archive and restore primitives ([`crate::archive::Store`]) for this backend.

use parallax_storage_abi::AuditEntry;

use super::PostgresBackend;
use crate::{
    archive::{Deleted, ExecutionRecord, Imported, Store},
    error::{Error, Result},
    rules::{Key, Selection},
};

fn todo_() -> Error {
    Error::unsupported("archive primitives are not built yet for this backend")
}

impl Store for PostgresBackend {
    async fn scan_executions(
        &self,
        _sel: Selection,
        _after: Option<Key>,
        _limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        Err(todo_())
    }

    async fn scan_audit(
        &self,
        _sel: Selection,
        _after: Option<Key>,
        _limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        Err(todo_())
    }

    async fn delete_executions(&self, _ids: Vec<String>) -> Result<Deleted> {
        Err(todo_())
    }

    async fn delete_audit(&self, _ids: Vec<String>) -> Result<Deleted> {
        Err(todo_())
    }

    async fn import_executions(&self, _records: Vec<ExecutionRecord>) -> Result<Imported> {
        Err(todo_())
    }

    async fn import_audit(&self, _entries: Vec<AuditEntry>) -> Result<Imported> {
        Err(todo_())
    }
}
