//! The thin, shared layer between the ABI trait object and a backend: validates input, fills in ids and
//! timestamps, runs the backend call on the caller's thread with the plugin's own tokio runtime entered
//! (`src/on_caller.rs`), turns panics into `Panicked` errors and shapes raw rows into pages.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use abi_stable::std_types::{ROption, RResult, RString, RVec};
use async_ffi::FutureExt as _;
use parallax_storage_abi::*;
use tokio::runtime::{Handle, Runtime};

use crate::{
    contract::{into_page, Contract},
    error::{Error, Result},
    on_caller::OnCaller,
    time::now_micros,
    validate::{self, Page},
};

pub struct Adapter<B: Contract> {
    backend: Arc<B>,
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
    closed: Arc<AtomicBool>,
    /// Set just before the runtime shuts down: calls polled by the caller stop polling their work.
    stopped: Arc<AtomicBool>,
}

impl<B: Contract> Adapter<B> {
    pub fn new(backend: B, runtime: Runtime) -> Self {
        Adapter {
            backend: Arc::new(backend),
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            closed: Arc::new(AtomicBool::new(false)),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `f(backend)` on the plugin runtime. Validation errors (`Err` from `prepare`) return at once.
    fn call<T, F, Fut>(&self, op: &'static str, prepare: Result<F>) -> StorageFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let running = match prepare {
            Err(e) => Err(e),
            Ok(_) if self.closed.load(Ordering::Acquire) => {
                Err(Error::unavailable("this storage instance has been shut down; open a new one"))
            }
            Ok(f) => {
                let backend = self.backend.clone();
                // The closure itself may panic before it yields a future: catch that too.
                let work = async move {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| f(backend))) {
                        Ok(fut) => fut.await,
                        Err(payload) => Err(Error::from_panic(payload, op)),
                    }
                };
                Ok(OnCaller::new(Box::pin(work), self.handle.clone(), op, self.stopped.clone()))
            }
        };
        async move {
            let result = match running {
                Err(e) => Err(e),
                Ok(work) => work.await,
            };
            match &result {
                Ok(_) => {
                    tracing::trace!(op, elapsed_us = started.elapsed().as_micros() as u64, "storage call")
                }
                Err(e) => tracing::debug!(op, kind = e.kind().as_str(), error = %e, "storage call failed"),
            }
            match result {
                Ok(v) => RResult::ROk(v),
                Err(e) => RResult::RErr(e.0),
            }
        }
        .into_ffi()
    }

    /// Full-text search: splits the query into terms, runs `find` for one page past an offset cursor and
    /// shapes the ranked hits with `page_of`.
    fn search<T, P, F, Fut>(
        &self,
        op: &'static str,
        query: &str,
        page: PageRequest,
        find: F,
        page_of: fn(Vec<(T, f64)>, ROption<RString>) -> P,
    ) -> StorageFuture<P>
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(Arc<B>, Vec<String>, Page<usize>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<(T, f64)>>> + Send + 'static,
    {
        let prepare = (|| {
            let terms = validate::search_terms(query)?;
            let page =
                Page { limit: validate::limit(page.limit)?, after: validate::offset_cursor(&page.cursor)? };
            Ok(move |b: Arc<B>| async move {
                let (limit, offset) = (page.limit, page.after.unwrap_or(0));
                let (items, next) = into_page(find(b, terms, page).await?, limit, |_| ());
                Ok(page_of(items, next.map(|_| validate::encode_offset_cursor(offset + limit)).into()))
            })
        })();
        self.call(op, prepare)
    }

    fn stop_runtime(&self) {
        if let Some(rt) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.stopped.store(true, Ordering::Release);
            rt.shutdown_background();
        }
    }
}

impl<B: Contract> Drop for Adapter<B> {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}

fn sort_versions(mut v: Vec<Pattern>) -> Vec<Pattern> {
    // Highest semantic version first; equal versions (e.g. 1.0.0+a and 1.0.0+b) by newest created_at.
    v.sort_by(|a, b| {
        let va = semver::Version::parse(&a.version).ok();
        let vb = semver::Version::parse(&b.version).ok();
        vb.cmp(&va).then(b.created_at.cmp(&a.created_at))
    });
    v
}

fn execution_filter(f: &ExecutionFilter) -> Result<()> {
    validate::opt_label(&f.pattern_name, "pattern_name", 255)?;
    validate::opt_label(&f.pattern_version, "pattern_version", 50)?;
    for s in f.statuses.iter() {
        validate::known_status(*s, "status filter")?;
    }
    for t in f.tags.iter() {
        validate::label(t, "tag", 100)?;
    }
    if let (Some(a), Some(b)) = (f.started_from.into_option(), f.started_until.into_option()) {
        if a > b {
            return Err(Error::invalid(format!("started_from ({a}) is after started_until ({b})")));
        }
    }
    Ok(())
}

fn new_execution(mut e: NewExecution) -> Result<NewExecution> {
    e.id = RSome(validate::id_or_new(&e.id, "execution id")?.into());
    validate::label(&e.pattern_name, "pattern_name", 255)?;
    validate::label(&e.pattern_version, "pattern_version", 50)?;
    validate::known_status(e.status, "status")?;
    if e.status.is_final() {
        return Err(Error::invalid(format!(
            "a new execution must be pending or running, not {}; create it, then complete it",
            e.status.as_str()
        )));
    }
    validate::opt_json(&mut e.input, "input")?;
    validate::opt_json(&mut e.metadata, "metadata")?;
    let mut tags: Vec<RString> = Vec::with_capacity(e.tags.len());
    for t in e.tags.iter() {
        validate::label(t, "tag", 100)?;
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    e.tags = tags.into();
    let started = e.started_at.unwrap_or_else(now_micros);
    validate::timestamp(started, "started_at")?;
    e.started_at = RSome(started);
    Ok(e)
}

fn audit_entry(mut a: NewAuditEntry, now: i64) -> Result<NewAuditEntry> {
    a.id = RSome(validate::id_or_new(&a.id, "audit entry id")?.into());
    let ts = a.timestamp.unwrap_or(now);
    validate::timestamp(ts, "timestamp")?;
    a.timestamp = RSome(ts);
    validate::label(&a.action, "action", 100)?;
    validate::opt_label(&a.actor, "actor", 255)?;
    validate::opt_label(&a.resource_type, "resource_type", 100)?;
    validate::opt_label(&a.resource_id, "resource_id", 255)?;
    validate::opt_json(&mut a.details, "details")?;
    if let RSome(ip) = &a.ip_address {
        validate::ip_address(ip)?;
    }
    Ok(a)
}

use abi_stable::std_types::ROption::RSome;

impl<B: Contract> StorageBackend for Adapter<B> {
    fn put_pattern(&self, mut p: NewPattern) -> StorageFuture<Pattern> {
        let prepare = (|| {
            p.id = RSome(validate::id_or_new(&p.id, "pattern id")?.into());
            validate::label(&p.name, "pattern name", 255)?;
            validate::semver(&p.version)?;
            validate::opt_label(&p.created_by, "created_by", 255)?;
            p.definition = validate::json_object(&p.definition, "pattern definition")?.into();
            Ok(move |b: Arc<B>| async move { b.put_pattern(p).await })
        })();
        self.call("put_pattern", prepare)
    }

    fn get_pattern(&self, name: RString, version: RString) -> StorageFuture<Pattern> {
        self.call(
            "get_pattern",
            Ok(move |b: Arc<B>| async move { b.get_pattern(name.into(), version.into()).await }),
        )
    }

    fn get_latest_pattern(&self, name: RString) -> StorageFuture<Pattern> {
        self.call(
            "get_latest_pattern",
            Ok(move |b: Arc<B>| async move {
                let versions = sort_versions(b.pattern_versions(name.to_string()).await?);
                versions
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::not_found(format!("pattern {name:?} not found")))
            }),
        )
    }

    fn list_pattern_versions(&self, name: RString) -> StorageFuture<RVec<Pattern>> {
        self.call(
            "list_pattern_versions",
            Ok(move |b: Arc<B>| async move { Ok(sort_versions(b.pattern_versions(name.into()).await?).into()) }),
        )
    }

    fn list_patterns(&self, page: PageRequest) -> StorageFuture<PatternPage> {
        let prepare = (|| {
            let page =
                Page { limit: validate::limit(page.limit)?, after: validate::name_cursor(&page.cursor)? };
            Ok(move |b: Arc<B>| async move {
                let limit = page.limit;
                let rows = b.patterns_after(page).await?;
                // Latest version of each name, names in order.
                let mut latest: Vec<Pattern> = Vec::new();
                let mut group: Vec<Pattern> = Vec::new();
                let flush = |group: &mut Vec<Pattern>, latest: &mut Vec<Pattern>| {
                    if let Some(p) = sort_versions(std::mem::take(group)).into_iter().next() {
                        latest.push(p);
                    }
                };
                for p in rows {
                    if group.last().is_some_and(|g| g.name != p.name) {
                        flush(&mut group, &mut latest);
                    }
                    group.push(p);
                }
                flush(&mut group, &mut latest);
                let (items, next) = into_page(latest, limit, |p| p.name.to_string());
                Ok(PatternPage {
                    items: items.into(),
                    next_cursor: next.map(|n| validate::encode_name_cursor(&n)).into(),
                })
            })
        })();
        self.call("list_patterns", prepare)
    }

    fn delete_pattern(&self, name: RString, version: RString) -> StorageFuture<()> {
        self.call(
            "delete_pattern",
            Ok(move |b: Arc<B>| async move { b.delete_pattern(name.into(), version.into()).await }),
        )
    }

    fn create_execution(&self, e: NewExecution) -> StorageFuture<Execution> {
        let id_from_client = e.id.is_some();
        let prepare = new_execution(e)
            .map(|e| move |b: Arc<B>| async move { b.create_execution(e, id_from_client).await });
        self.call("create_execution", prepare)
    }

    fn update_execution(&self, id: RString, mut u: ExecutionUpdate) -> StorageFuture<Execution> {
        let prepare = (|| {
            let id = validate::uuid(&id, "execution id")?;
            if let RSome(s) = u.status {
                validate::known_status(s, "status")?;
                if s.is_final() {
                    return Err(Error::invalid(format!(
                        "status {} is final: use complete_execution (`parallax executions finish`) to set it",
                        s.as_str()
                    )));
                }
            }
            validate::opt_json(&mut u.output, "output")?;
            validate::opt_json(&mut u.error, "error")?;
            validate::opt_json(&mut u.metadata, "metadata")?;
            Ok(move |b: Arc<B>| async move { b.update_execution(id, u).await })
        })();
        self.call("update_execution", prepare)
    }

    fn complete_execution(&self, id: RString, mut c: ExecutionCompletion) -> StorageFuture<Execution> {
        let prepare = (|| {
            let id = validate::uuid(&id, "execution id")?;
            if !c.status.is_final() {
                return Err(Error::invalid(format!(
                    "cannot complete an execution with status {}; use completed, failed or cancelled",
                    c.status.as_str()
                )));
            }
            validate::opt_json(&mut c.output, "output")?;
            validate::opt_json(&mut c.error, "error")?;
            let at = c.completed_at.unwrap_or_else(now_micros);
            validate::timestamp(at, "completed_at")?;
            c.completed_at = RSome(at);
            Ok(move |b: Arc<B>| async move { b.complete_execution(id, c).await })
        })();
        self.call("complete_execution", prepare)
    }

    fn get_execution(&self, id: RString) -> StorageFuture<Execution> {
        let prepare = validate::uuid(&id, "execution id")
            .map(|id| move |b: Arc<B>| async move { b.get_execution(id).await });
        self.call("get_execution", prepare)
    }

    fn list_executions(&self, filter: ExecutionFilter, page: PageRequest) -> StorageFuture<ExecutionPage> {
        let prepare = (|| {
            execution_filter(&filter)?;
            let page =
                Page { limit: validate::limit(page.limit)?, after: validate::time_cursor(&page.cursor)? };
            Ok(move |b: Arc<B>| async move {
                let limit = page.limit;
                let rows = b.list_executions(filter, page).await?;
                let (items, next) =
                    into_page(rows, limit, |e| validate::encode_time_cursor(e.started_at, &e.id));
                Ok(ExecutionPage { items: items.into(), next_cursor: next.into() })
            })
        })();
        self.call("list_executions", prepare)
    }

    fn count_executions(&self, filter: ExecutionFilter) -> StorageFuture<u64> {
        let prepare = execution_filter(&filter)
            .map(|_| move |b: Arc<B>| async move { b.count_executions(filter).await });
        self.call("count_executions", prepare)
    }

    fn append_event(&self, execution_id: RString, mut e: NewEvent) -> StorageFuture<ExecutionEvent> {
        let prepare = (|| {
            let id = validate::uuid(&execution_id, "execution id")?;
            validate::known_event_kind(e.kind)?;
            e.payload = validate::json(&e.payload, "event payload")?.into();
            let at = e.recorded_at.unwrap_or_else(now_micros);
            validate::timestamp(at, "recorded_at")?;
            e.recorded_at = RSome(at);
            let event_id = validate::id_or_new(&abi_stable::std_types::ROption::RNone, "event id")?;
            Ok(move |b: Arc<B>| async move { b.append_event(id, event_id, e).await })
        })();
        self.call("append_event", prepare)
    }

    fn list_events(&self, execution_id: RString) -> StorageFuture<RVec<ExecutionEvent>> {
        let prepare = validate::uuid(&execution_id, "execution id")
            .map(|id| move |b: Arc<B>| async move { Ok(b.list_events(id).await?.into()) });
        self.call("list_events", prepare)
    }

    fn append_audit(&self, entries: RVec<NewAuditEntry>) -> StorageFuture<RVec<RString>> {
        let prepare = (|| {
            if entries.len() > validate::MAX_AUDIT_BATCH {
                return Err(Error::invalid(format!(
                    "audit batch of {} entries is too large; the maximum is {}",
                    entries.len(),
                    validate::MAX_AUDIT_BATCH
                )));
            }
            let now = now_micros();
            let entries = entries
                .into_iter()
                .enumerate()
                .map(|(i, a)| {
                    audit_entry(a, now)
                        .map_err(|e| Error::invalid(format!("audit entry {i}: {}", e.0.message)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(move |b: Arc<B>| async move {
                let ids: RVec<RString> = entries.iter().map(|a| a.id.clone().unwrap_or_default()).collect();
                if !entries.is_empty() {
                    b.append_audit(entries).await?;
                }
                Ok(ids)
            })
        })();
        self.call("append_audit", prepare)
    }

    fn query_audit(&self, query: AuditQuery, page: PageRequest) -> StorageFuture<AuditPage> {
        let prepare = (|| {
            validate::opt_label(&query.actor, "actor", 255)?;
            validate::opt_label(&query.action, "action", 100)?;
            let page =
                Page { limit: validate::limit(page.limit)?, after: validate::time_cursor(&page.cursor)? };
            Ok(move |b: Arc<B>| async move {
                let limit = page.limit;
                let rows = b.query_audit(query, page).await?;
                let (items, next) =
                    into_page(rows, limit, |a| validate::encode_time_cursor(a.timestamp, &a.id));
                Ok(AuditPage { items: items.into(), next_cursor: next.into() })
            })
        })();
        self.call("query_audit", prepare)
    }

    fn migration_status(&self) -> StorageFuture<RVec<MigrationInfo>> {
        self.call("migration_status", Ok(|b: Arc<B>| async move { Ok(b.migration_status().await?.into()) }))
    }

    fn migrate_up(&self) -> StorageFuture<MigrationReport> {
        self.call("migrate_up", Ok(|b: Arc<B>| async move { b.migrate_up().await }))
    }

    fn migrate_down(&self) -> StorageFuture<MigrationReport> {
        self.call("migrate_down", Ok(|b: Arc<B>| async move { b.migrate_down().await }))
    }

    fn migrate_to(&self, version: RString) -> StorageFuture<MigrationReport> {
        self.call("migrate_to", Ok(move |b: Arc<B>| async move { b.migrate_to(version.into()).await }))
    }

    fn health(&self) -> StorageFuture<Health> {
        self.call("health", Ok(|b: Arc<B>| async move { b.health().await }))
    }

    fn search_executions(&self, query: RString, page: PageRequest) -> StorageFuture<ExecutionSearchPage> {
        self.search(
            "search_executions",
            &query,
            page,
            |b, terms, page| async move { b.search_executions(terms, page).await },
            |items, next_cursor| ExecutionSearchPage {
                items: items.into_iter().map(|(execution, rank)| ExecutionHit { execution, rank }).collect(),
                next_cursor,
            },
        )
    }

    fn search_patterns(&self, query: RString, page: PageRequest) -> StorageFuture<PatternSearchPage> {
        self.search(
            "search_patterns",
            &query,
            page,
            |b, terms, page| async move { b.search_patterns(terms, page).await },
            |items, next_cursor| PatternSearchPage {
                items: items.into_iter().map(|(pattern, rank)| PatternHit { pattern, rank }).collect(),
                next_cursor,
            },
        )
    }

    fn mark_migration_applied(&self, version: RString) -> StorageFuture<MigrationReport> {
        self.call(
            "mark_migration_applied",
            Ok(move |b: Arc<B>| async move { b.mark_migration_applied(version.into()).await }),
        )
    }

    fn ping(&self, mode: PingMode) -> StorageFuture<()> {
        self.call(
            "ping",
            Ok(move |_: Arc<B>| async move {
                if !mode.is_known() {
                    return Err(Error::unsupported(format!(
                        "ping mode {mode} is not one this plugin knows (storage ABI {ABI_VERSION})"
                    )));
                }
                if mode == PingMode::Panic {
                    panic!("ping(Panic) was asked to panic");
                }
                Ok(())
            }),
        )
    }

    fn shutdown(&self) -> StorageFuture<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return async { RResult::ROk(()) }.into_ffi();
        }
        let backend = self.backend.clone();
        let job = self.handle.spawn(async move { backend.shutdown().await });
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take();
        let stopped = self.stopped.clone();
        async move {
            let result = match job.await {
                Ok(r) => r,
                Err(je) if je.is_panic() => Err(Error::from_panic(je.into_panic(), "shutdown")),
                Err(_) => Ok(()),
            };
            if let Some(rt) = runtime {
                stopped.store(true, Ordering::Release);
                rt.shutdown_background();
            }
            result.map_err(|e| e.0).into()
        }
        .into_ffi()
    }

    // Appended in ABI 2.1.0; keep it last (see `parallax_storage_abi::maintenance`).
    fn maintenance(&self, request: RString) -> StorageFuture<RString> {
        let prepare = crate::maintenance::prepare(&request)
            .map(|req| move |_: Arc<B>| async move { crate::maintenance::run(req).map(RString::from) });
        self.call("maintenance", prepare)
    }
}
