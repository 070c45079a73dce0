//! The thin layer between the ABI trait object and a backend: guard, validate, call. Every method's whole body
//! (validation, id and timestamp defaults, building the backend call) runs inside [`Adapter::call`]'s
//! `catch_unwind`, and the backend's future is polled with panics caught (`src/on_caller.rs`), so a panic
//! anywhere in a call comes back as `ErrorKind::Panicked` instead of unwinding into abi_stable's guard (which
//! aborts the host). The call runs on the caller's thread with the plugin's own tokio runtime entered; what
//! rows mean (versions, pages, lifecycle rules) is decided in [`crate::rules`].

use std::{
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use abi_stable::std_types::{ROption, ROption::RSome, RResult, RString, RVec};
use async_ffi::FutureExt as _;
use parallax_storage_abi::*;
use tokio::runtime::{Handle, Runtime};

use crate::{
    contract::Contract,
    error::{Error, Result},
    on_caller::OnCaller,
    rules::{self, into_page},
    time::now_micros,
    validate::{self, Page},
};

pub struct Adapter<B: Contract> {
    /// Always `Some` until the adapter is dropped: taken there so that it is dropped inside the drop's guard.
    backend: Option<Arc<B>>,
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
    closed: Arc<AtomicBool>,
    /// Set just before the runtime shuts down: calls polled by the caller stop polling their work.
    stopped: Arc<AtomicBool>,
    /// The retention scheduler (`src/retention/schedule.rs`), when the config asks for one, and the metrics
    /// refresher (`src/metrics`); aborted at shutdown.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl<B: Contract> Adapter<B> {
    pub fn new(backend: B, runtime: Runtime) -> Self {
        let backend = Arc::new(backend);
        let background = [
            crate::retention::schedule::spawn(runtime.handle(), Arc::downgrade(&backend)),
            crate::metrics::spawn_refresher(runtime.handle(), Arc::downgrade(&backend)),
        ];
        Adapter {
            backend: Some(backend),
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            closed: Arc::new(AtomicBool::new(false)),
            stopped: Arc::new(AtomicBool::new(false)),
            background: Mutex::new(background.into_iter().flatten().collect()),
        }
    }

    /// The one guard of every storage call. `body` is the synchronous half of the call (validation, defaults):
    /// it yields the backend call `f`, which `call` runs on the caller's thread with the plugin runtime
    /// entered. A panic anywhere (in `body`, in `f`, in the future `f` returns, or here) comes back as a
    /// `Panicked` error; an `Err` from `body` comes back at once.
    fn call<T, F, Fut>(&self, op: &'static str, body: impl FnOnce() -> Result<F>) -> StorageFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let started = std::time::Instant::now();
        // Every call that reaches its backend work is recorded by that work when it ends (`Observed`), also when
        // the host dropped the call's future meanwhile (the work then finishes on the plugin runtime) and when the
        // work panicked; a call refused before (by `body`, or the instance closed) is recorded below.
        let stopped = self.stopped.clone();
        let running = catch_unwind(AssertUnwindSafe(|| {
            let f = body()?;
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::unavailable("this storage instance has been shut down; open a new one"));
            }
            let backend = self.backend()?;
            // `f` runs at the first poll: a panic in it is caught here, one in its future by `OnCaller`.
            let work = async move {
                let mut observed = Observed { backend: backend.clone(), op, started, stopped, outcome: None };
                let result = match catch_unwind(AssertUnwindSafe(|| f(backend))) {
                    Ok(fut) => fut.await,
                    Err(payload) => Err(Error::from_panic(payload, op)),
                };
                observed.outcome = Some(result.as_ref().err().map(|e| e.kind()));
                result
            };
            Ok(OnCaller::new(Box::pin(work), self.handle.clone(), op, self.stopped.clone()))
        }))
        .unwrap_or_else(|payload| Err(Error::from_panic(payload, op)));
        if let (Err(e), Some(b)) = (&running, &self.backend) {
            b.metrics().observe(op, started.elapsed(), Some(e.kind()));
        }
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
        query: RString,
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
        self.call(op, move || {
            let terms = validate::search_terms(&query)?;
            let page =
                Page { limit: validate::limit(page.limit)?, after: validate::offset_cursor(&page.cursor)? };
            Ok(move |b: Arc<B>| async move {
                let (limit, offset) = (page.limit, page.after.unwrap_or(0));
                let (items, next) = into_page(find(b, terms, page).await?, limit, |_| ());
                Ok(page_of(items, next.map(|_| validate::encode_offset_cursor(offset + limit)).into()))
            })
        })
    }

    fn backend(&self) -> Result<Arc<B>> {
        self.backend.clone().ok_or_else(|| Error::internal("this storage instance is being dropped"))
    }

    fn stop_runtime(&self) {
        if let Some(rt) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.stopped.store(true, Ordering::Release);
            rt.shutdown_background();
        }
    }
}

/// Runs in the ABI object's destructor, which the host calls across the FFI boundary: a panic escaping it
/// (from the runtime's shutdown, or from the backend's own drop: the writer thread, the store lock, the
/// connection pool, a log call) would abort the host. Each step is guarded, and a caught panic is logged.
impl<B: Contract> Drop for Adapter<B> {
    fn drop(&mut self) {
        let backend = self.backend.take();
        contain_panic("stopping the plugin runtime", || self.stop_runtime());
        if let Some(b) = &backend {
            contain_panic("closing the storage backend", || b.close_on_drop());
        }
        contain_panic("dropping the storage backend", move || drop(backend));
    }
}

/// Records one call's latency and outcome in its backend's metrics when the call's work ends: normally with the
/// outcome the work set; dropped without one, the work panicked while polled (`panicked`) or was dropped
/// unfinished because the plugin runtime stopped (`unavailable`).
struct Observed<B: Contract> {
    backend: Arc<B>,
    op: &'static str,
    started: std::time::Instant,
    stopped: Arc<AtomicBool>,
    outcome: Option<Option<ErrorKind>>,
}

impl<B: Contract> Drop for Observed<B> {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or_else(|| {
            Some(if self.stopped.load(Ordering::Acquire) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Panicked
            })
        });
        self.backend.metrics().observe(self.op, self.started.elapsed(), outcome);
    }
}

/// Runs `f`, logging a panic instead of letting it unwind (the log call itself guarded too).
fn contain_panic(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        let _ = catch_unwind(AssertUnwindSafe(move || {
            let e = Error::from_panic(payload, what);
            tracing::error!(error = %e, "a panic while closing the storage instance was contained");
        }));
    }
}

/// The filter rules, for the fuzz target ([`crate::fuzz_api`]).
pub(crate) fn check_execution_filter(f: &ExecutionFilter) -> Result<()> {
    execution_filter(f)
}

fn execution_filter(f: &ExecutionFilter) -> Result<()> {
    validate::opt_label(&f.pattern_name, "pattern_name", 255)?;
    validate::opt_label(&f.pattern_version, "pattern_version", 50)?;
    for s in f.statuses.iter() {
        validate::known_status(*s, "status filter")?;
    }
    if f.tags.len() > validate::MAX_TAGS {
        return Err(Error::invalid(format!(
            "the filter names {} tags; the maximum is {}",
            f.tags.len(),
            validate::MAX_TAGS
        )));
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

fn new_pattern(mut p: NewPattern) -> Result<NewPattern> {
    p.id = RSome(validate::id_or_new(&p.id, "pattern id")?.into());
    validate::label(&p.name, "pattern name", 255)?;
    validate::semver(&p.version)?;
    validate::opt_label(&p.created_by, "created_by", 255)?;
    p.definition = validate::json_object(&p.definition, "pattern definition")?.into();
    Ok(p)
}

fn new_execution(mut e: NewExecution) -> Result<NewExecution> {
    e.id = RSome(validate::id_or_new(&e.id, "execution id")?.into());
    validate::label(&e.pattern_name, "pattern_name", 255)?;
    validate::label(&e.pattern_version, "pattern_version", 50)?;
    rules::check_new_status(e.status)?;
    validate::opt_json(&mut e.input, "input")?;
    validate::opt_json(&mut e.metadata, "metadata")?;
    if e.tags.len() > validate::MAX_TAGS {
        return Err(Error::invalid(format!(
            "an execution has {} tags; the maximum is {}",
            e.tags.len(),
            validate::MAX_TAGS
        )));
    }
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

fn execution_update(mut u: ExecutionUpdate) -> Result<ExecutionUpdate> {
    rules::check_update_status(u.status)?;
    validate::opt_json(&mut u.output, "output")?;
    validate::opt_json(&mut u.error, "error")?;
    validate::opt_json(&mut u.metadata, "metadata")?;
    Ok(u)
}

fn execution_completion(mut c: ExecutionCompletion) -> Result<rules::Completion> {
    rules::check_completion_status(c.status)?;
    validate::opt_json(&mut c.output, "output")?;
    validate::opt_json(&mut c.error, "error")?;
    let c = rules::completion(c, now_micros());
    validate::timestamp(c.completed_at, "completed_at")?;
    Ok(c)
}

fn new_event(mut e: NewEvent) -> Result<NewEvent> {
    validate::known_event_kind(e.kind)?;
    e.payload = validate::json(&e.payload, "event payload")?.into();
    let at = e.recorded_at.unwrap_or_else(now_micros);
    validate::timestamp(at, "recorded_at")?;
    e.recorded_at = RSome(at);
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

fn audit_batch(entries: RVec<NewAuditEntry>) -> Result<Vec<NewAuditEntry>> {
    if entries.len() > validate::MAX_AUDIT_BATCH {
        return Err(Error::invalid(format!(
            "audit batch of {} entries is too large; the maximum is {}",
            entries.len(),
            validate::MAX_AUDIT_BATCH
        )));
    }
    let now = now_micros();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            audit_entry(a, now).map_err(|e| Error::invalid(format!("audit entry {i}: {}", e.0.message)))
        })
        .collect()
}

impl<B: Contract> StorageBackend for Adapter<B> {
    fn put_pattern(&self, p: NewPattern) -> StorageFuture<Pattern> {
        self.call("put_pattern", move || {
            let id_from_client = p.id.is_some();
            let p = new_pattern(p)?;
            Ok(move |b: Arc<B>| async move { b.put_pattern(p, id_from_client).await })
        })
    }

    fn get_pattern(&self, name: RString, version: RString) -> StorageFuture<Pattern> {
        self.call("get_pattern", move || {
            Ok(move |b: Arc<B>| async move { b.get_pattern(name.into(), version.into()).await })
        })
    }

    fn get_latest_pattern(&self, name: RString) -> StorageFuture<Pattern> {
        self.call("get_latest_pattern", move || {
            Ok(move |b: Arc<B>| async move {
                rules::latest_version(&name, b.pattern_versions(name.to_string()).await?)
            })
        })
    }

    fn list_pattern_versions(&self, name: RString) -> StorageFuture<RVec<Pattern>> {
        self.call("list_pattern_versions", move || {
            Ok(move |b: Arc<B>| async move {
                Ok(rules::sort_versions(b.pattern_versions(name.into()).await?).into())
            })
        })
    }

    fn list_patterns(&self, page: PageRequest) -> StorageFuture<PatternPage> {
        self.call("list_patterns", move || {
            let page =
                Page { limit: validate::limit(page.limit)?, after: validate::name_cursor(&page.cursor)? };
            Ok(move |b: Arc<B>| async move {
                let limit = page.limit;
                let latest = rules::latest_of_each(b.patterns_after(page).await?);
                let (items, next) = into_page(latest, limit, |p| p.name.to_string());
                Ok(PatternPage {
                    items: items.into(),
                    next_cursor: next.map(|n| validate::encode_name_cursor(&n)).into(),
                })
            })
        })
    }

    fn delete_pattern(&self, name: RString, version: RString) -> StorageFuture<()> {
        self.call("delete_pattern", move || {
            Ok(move |b: Arc<B>| async move { b.delete_pattern(name.into(), version.into()).await })
        })
    }

    fn create_execution(&self, e: NewExecution) -> StorageFuture<Execution> {
        self.call("create_execution", move || {
            let id_from_client = e.id.is_some();
            let e = new_execution(e)?;
            Ok(move |b: Arc<B>| async move { b.create_execution(e, id_from_client).await })
        })
    }

    fn update_execution(&self, id: RString, u: ExecutionUpdate) -> StorageFuture<Execution> {
        self.call("update_execution", move || {
            let id = validate::uuid(&id, "execution id")?;
            let u = execution_update(u)?;
            Ok(move |b: Arc<B>| async move { b.update_execution(id, u).await })
        })
    }

    fn complete_execution(&self, id: RString, c: ExecutionCompletion) -> StorageFuture<Execution> {
        self.call("complete_execution", move || {
            let id = validate::uuid(&id, "execution id")?;
            let c = execution_completion(c)?;
            Ok(move |b: Arc<B>| async move { b.complete_execution(id, c).await })
        })
    }

    fn get_execution(&self, id: RString) -> StorageFuture<Execution> {
        self.call("get_execution", move || {
            let id = validate::uuid(&id, "execution id")?;
            Ok(move |b: Arc<B>| async move { b.get_execution(id).await })
        })
    }

    fn list_executions(&self, filter: ExecutionFilter, page: PageRequest) -> StorageFuture<ExecutionPage> {
        self.call("list_executions", move || {
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
        })
    }

    fn count_executions(&self, filter: ExecutionFilter) -> StorageFuture<u64> {
        self.call("count_executions", move || {
            execution_filter(&filter)?;
            Ok(move |b: Arc<B>| async move { b.count_executions(filter).await })
        })
    }

    fn append_event(&self, execution_id: RString, e: NewEvent) -> StorageFuture<ExecutionEvent> {
        self.call("append_event", move || {
            let id = validate::uuid(&execution_id, "execution id")?;
            let e = new_event(e)?;
            let event_id = validate::id_or_new(&ROption::RNone, "event id")?;
            Ok(move |b: Arc<B>| async move { b.append_event(id, event_id, e).await })
        })
    }

    fn list_events(&self, execution_id: RString) -> StorageFuture<RVec<ExecutionEvent>> {
        self.call("list_events", move || {
            let id = validate::uuid(&execution_id, "execution id")?;
            Ok(move |b: Arc<B>| async move { Ok(b.list_events(id).await?.into()) })
        })
    }

    fn append_audit(&self, entries: RVec<NewAuditEntry>) -> StorageFuture<RVec<RString>> {
        self.call("append_audit", move || {
            let entries = audit_batch(entries)?;
            Ok(move |b: Arc<B>| async move {
                let ids: RVec<RString> = entries.iter().map(|a| a.id.clone().unwrap_or_default()).collect();
                if !entries.is_empty() {
                    b.append_audit(entries).await?;
                }
                Ok(ids)
            })
        })
    }

    fn query_audit(&self, query: AuditQuery, page: PageRequest) -> StorageFuture<AuditPage> {
        self.call("query_audit", move || {
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
        })
    }

    fn migration_status(&self) -> StorageFuture<RVec<MigrationInfo>> {
        self.call("migration_status", || {
            Ok(|b: Arc<B>| async move { Ok(b.migration_status().await?.into()) })
        })
    }

    fn migrate_up(&self) -> StorageFuture<MigrationReport> {
        self.call("migrate_up", || Ok(|b: Arc<B>| async move { b.migrate_up().await }))
    }

    fn migrate_down(&self) -> StorageFuture<MigrationReport> {
        self.call("migrate_down", || Ok(|b: Arc<B>| async move { b.migrate_down().await }))
    }

    fn migrate_to(&self, version: RString) -> StorageFuture<MigrationReport> {
        self.call("migrate_to", move || {
            Ok(move |b: Arc<B>| async move { b.migrate_to(version.into()).await })
        })
    }

    fn health(&self) -> StorageFuture<Health> {
        self.call("health", || Ok(|b: Arc<B>| async move { b.health().await }))
    }

    fn search_executions(&self, query: RString, page: PageRequest) -> StorageFuture<ExecutionSearchPage> {
        self.search(
            "search_executions",
            query,
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
            query,
            page,
            |b, terms, page| async move { b.search_patterns(terms, page).await },
            |items, next_cursor| PatternSearchPage {
                items: items.into_iter().map(|(pattern, rank)| PatternHit { pattern, rank }).collect(),
                next_cursor,
            },
        )
    }

    fn mark_migration_applied(&self, version: RString) -> StorageFuture<MigrationReport> {
        self.call("mark_migration_applied", move || {
            Ok(move |b: Arc<B>| async move { b.mark_migration_applied(version.into()).await })
        })
    }

    fn ping(&self, mode: PingMode) -> StorageFuture<()> {
        self.call("ping", move || {
            if mode == PingMode::PanicInPrepare {
                panic!("ping(PanicInPrepare) was asked to panic before its future exists");
            }
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
            })
        })
    }

    /// Not through [`Adapter::call`]: it must run after the instance is closed to other calls, and it stops
    /// the runtime `call` polls on. Its synchronous half is guarded the same way.
    fn shutdown(&self) -> StorageFuture<()> {
        let start = catch_unwind(AssertUnwindSafe(|| {
            if self.closed.swap(true, Ordering::AcqRel) {
                return None;
            }
            for task in self.background.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                task.abort();
            }
            let backend = self.backend().ok()?;
            let job = self.handle.spawn(async move { backend.shutdown().await });
            let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take();
            Some((job, runtime))
        }));
        let (job, runtime) = match start {
            Ok(Some(started)) => started,
            Ok(None) => return async { RResult::ROk(()) }.into_ffi(),
            Err(payload) => {
                let e = Error::from_panic(payload, "shutdown");
                return async move { RResult::RErr(e.0) }.into_ffi();
            }
        };
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
        self.call("maintenance", move || {
            let req = crate::maintenance::prepare(&request)?;
            Ok(move |b: Arc<B>| async move { crate::maintenance::run(req, &*b).await.map(RString::from) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The destructor's steps run in `contain_panic`: a panic in one (here with a log subscriber that panics
    /// too, as a broken log call in the drop chain would) comes back as a normal return, and the next step runs.
    #[test]
    fn a_panic_while_closing_is_contained_and_the_next_step_runs() {
        struct PanicsOnLog;
        impl tracing::Subscriber for PanicsOnLog {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {
                panic!("injected failure in a log call");
            }
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let mut ran = Vec::new();
        tracing::subscriber::with_default(PanicsOnLog, || {
            contain_panic("dropping the storage backend", || panic!("injected failure in a drop"));
            contain_panic("a later step", || ran.push("later"));
        });
        assert_eq!(ran, ["later"]);
    }
}
