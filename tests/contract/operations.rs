use std::collections::HashSet;

use parallax_storage_host::*;

use crate::common::*;

fn applied(status: &[MigrationInfo]) -> Vec<String> {
    status.iter().filter(|m| m.applied).map(|m| m.version.to_string()).collect()
}

pub async fn migrations_status_down_up_to(h: &Harness) {
    if !h.schema_migrations {
        return single_format_version(h).await;
    }
    let s = &h.storage;
    let status = s.migration_status().await.unwrap();
    assert!(status.len() >= 2, "{status:?}");
    let all: Vec<String> = status.iter().map(|m| m.version.to_string()).collect();
    assert_eq!(applied(&status), all, "opening with autoRun applies everything");
    assert!(status.iter().all(|m| m.applied_at.is_some()));

    let down = s.migrate_down().await.unwrap();
    assert_eq!(
        down.reverted.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        [all.last().unwrap().clone()]
    );
    assert_eq!(applied(&down.status), all[..all.len() - 1]);
    let h2 = s.health().await.unwrap();
    assert_eq!(h2.pending_migrations, 1);

    let first = &all[0];
    let to_first = s.migrate_to(first).await.unwrap();
    assert_eq!(applied(&to_first.status), std::slice::from_ref(first));
    // The seed's `migrate to 20240115` style: a unique prefix of a version.
    let tags = all.iter().find(|v| v.starts_with("20240115")).expect("the seed's tags migration exists");
    let to_tags = s.migrate_to("20240115").await.unwrap();
    assert_eq!(applied(&to_tags.status).last(), Some(tags));
    assert_kind(s.migrate_to("2024").await, ErrorKind::InvalidInput, "give more digits");
    assert_kind(s.migrate_to("1999").await, ErrorKind::InvalidInput, "known versions");

    let none = s.migrate_to("0").await.unwrap();
    assert!(applied(&none.status).is_empty());
    assert_kind(s.migrate_down().await, ErrorKind::InvalidInput, "nothing to roll back");
    assert_kind(s.get_latest_pattern("x").await, ErrorKind::Schema, "migrate up");

    let up = s.migrate_up().await.unwrap();
    assert_eq!(up.applied.iter().map(|v| v.to_string()).collect::<Vec<_>>(), all);
    assert!(s.migrate_up().await.unwrap().applied.is_empty(), "up is idempotent");
    s.put_pattern(new_pattern("after", "1.0.0")).await.unwrap();
}

pub async fn mark_applied_records_without_running(h: &Harness) {
    let s = &h.storage;
    let all: Vec<String> =
        s.migration_status().await.unwrap().iter().map(|m| m.version.to_string()).collect();
    let last = all.last().unwrap().clone();
    assert_kind(s.mark_migration_applied(&last).await, ErrorKind::Conflict, "already applied");
    if !h.schema_migrations {
        // One format version, always applied while the store exists: nothing can be un-applied to re-mark.
        assert_kind(s.mark_migration_applied("1999").await, ErrorKind::InvalidInput, "known versions");
        assert_kind(s.mark_migration_applied("0").await, ErrorKind::InvalidInput, "not 0");
        return;
    }
    s.migrate_down().await.unwrap();
    // The operator "fixed it by hand": recording it must not run it (running it twice would fail).
    let report = s.mark_migration_applied(&last).await.unwrap();
    assert_eq!(report.applied.iter().map(|v| v.to_string()).collect::<Vec<_>>(), std::slice::from_ref(&last));
    assert!(report.status.iter().all(|m| m.applied));
    assert_eq!(s.health().await.unwrap().pending_migrations, 0);
    assert_kind(s.mark_migration_applied("1999").await, ErrorKind::InvalidInput, "known versions");
    // Put the real schema back for the harness: revert the record (runs down.sql of a never-applied
    // migration would fail), so redo it properly through `to`.
    let _ = s.migrate_to(&all[all.len() - 2]).await;
    s.migrate_up().await.unwrap();
}

/// A store whose "migrations" are versions of its own format (the file store): every version is applied on
/// open; `down` steps back one format and `up` applies it again; the first format cannot be rolled back (that
/// would delete the store), and unknown versions are refused as for the SQL backends.
async fn single_format_version(h: &Harness) {
    let s = &h.storage;
    let status = s.migration_status().await.unwrap();
    let all: Vec<String> = status.iter().map(|m| m.version.to_string()).collect();
    assert_eq!(applied(&status), all, "opening with autoRun applies every format");
    assert!(status.iter().all(|m| m.applied_at.is_some()), "{status:?}");
    assert!(s.migrate_up().await.unwrap().applied.is_empty(), "up is idempotent");
    let last = all.last().unwrap().clone();
    let to = s.migrate_to(&last).await.unwrap();
    assert!(to.applied.is_empty() && to.reverted.is_empty(), "{to:?}");
    assert_kind(s.migrate_to("0").await, ErrorKind::Unsupported, "first format");
    assert_kind(s.migrate_to("1999").await, ErrorKind::InvalidInput, "known versions");
    let first = s.migrate_to(&all[0]).await.unwrap();
    assert_eq!(applied(&first.status), std::slice::from_ref(&all[0]));
    assert_eq!(s.health().await.unwrap().pending_migrations as usize, all.len() - 1);
    assert_kind(s.migrate_down().await, ErrorKind::Unsupported, "first format");
    let up = s.migrate_up().await.unwrap();
    assert_eq!(up.applied.iter().map(|v| v.to_string()).collect::<Vec<_>>(), all[1..]);
    assert_eq!(s.health().await.unwrap().pending_migrations, 0);
    assert_eq!(applied(&s.migration_status().await.unwrap()), all);
    s.put_pattern(new_pattern("after", "1.0.0")).await.unwrap();
}

pub async fn health_reports_backend(h: &Harness) {
    let health = h.storage.health().await.unwrap();
    assert!(!health.backend.is_empty());
    assert!(!health.server_version.is_empty());
    assert!(health.latency_us >= 0);
    assert_eq!(health.pending_migrations, 0);
    let status = h.storage.migration_status().await.unwrap();
    assert_eq!(health.schema_version, status.last().map(|m| m.version.clone()));
}

pub async fn panics_come_back_as_panicked(h: &Harness) {
    let s = &h.storage;
    assert_kind(s.ping(PingMode::Panic).await, ErrorKind::Panicked, "asked to panic");
    // The host and the storage object both survive.
    s.ping(PingMode::Echo).await.unwrap();
    s.put_pattern(new_pattern("survivor", "1.0.0")).await.unwrap();
    assert_kind(s.ping(PingMode::Panic).await, ErrorKind::Panicked, "ping");
    s.get_pattern("survivor", "1.0.0").await.unwrap();
}

/// A panic in the synchronous half of a call (validation, defaults; before the plugin has a future to hand
/// back) comes back as `Panicked` through the loaded library too, instead of unwinding into abi_stable's guard,
/// which would abort this test process.
pub async fn panic_before_the_future_comes_back_as_panicked(h: &Harness) {
    let s = &h.storage;
    assert_kind(s.ping(PingMode::PanicInPrepare).await, ErrorKind::Panicked, "before its future exists");
    // The host is alive and the storage object still works, for reads and writes.
    s.ping(PingMode::Echo).await.unwrap();
    let p = s.put_pattern(new_pattern("after-sync-panic", "1.0.0")).await.unwrap();
    assert_kind(s.ping(PingMode::PanicInPrepare).await, ErrorKind::Panicked, "ping");
    assert_eq!(s.get_pattern("after-sync-panic", "1.0.0").await.unwrap(), p);
}

/// Waits (up to 2 s) until execution `id` can be read.
async fn eventually_readable(s: &parallax_storage_host::Storage, id: Uuid) -> bool {
    for _ in 0..200 {
        match s.get_execution(id).await {
            Ok(_) => return true,
            Err(e) if e.kind == ErrorKind::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    false
}

/// A plugin call whose FFI future the host drops without ever polling it still runs: the backends differ in
/// where a call's work happens (spawned at once, or polled by the caller and handed to the plugin runtime when
/// dropped), and neither may lose the write. (`Storage`'s own methods are `async fn`s that would not even call
/// the plugin unpolled, so this goes through the storage object of the ABI.)
pub async fn call_dropped_before_polling_still_runs(h: &Harness) {
    let raw = h.raw();
    let id = "0190b3f2-7c1e-7a00-8000-00000000d0d0";
    let mut e = raw::new_execution("dropped-unpolled", "1.0.0");
    e.id = Some(raw::rs(id)).into();
    drop(raw.storage.create_execution(e));
    let mut landed = false;
    for _ in 0..200 {
        match raw::plain(raw.storage.get_execution(raw::rs(id)).await) {
            Ok(_) => {
                landed = true;
                break;
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(landed, "the write dropped before its first poll never landed");
    if raw.shared {
        assert!(eventually_readable(&h.storage, id_of(id)).await, "the plain client sees the write too");
    }
    raw.finish().await;
}

/// The host may await calls on any executor: here a plain thread that parks between polls, no tokio at all.
pub async fn calls_complete_on_a_thread_without_tokio(h: &Harness) {
    let s = h.storage.clone();
    let got = std::thread::spawn(move || {
        block_on(async move {
            let created = s.create_execution(new_execution("no-tokio", "1.0.0")).await?;
            let listed = s.list_executions(ExecutionFilter::default(), page(10, None)).await?;
            Ok::<_, Error>((s.get_execution(created.id).await?, created, listed.items.len()))
        })
    })
    .join()
    .expect("the thread panicked");
    let (got, created, listed) = got.unwrap();
    assert_eq!(got, created);
    assert!(listed >= 1);
}

pub async fn dropped_future_still_completes(h: &Harness) {
    let s = &h.storage;
    // Poll the call once (which hands the write to the plugin runtime), then drop it unfinished: dropping
    // only stops the caller from hearing the answer. A fast server can answer within that first poll (the
    // caller polls the connection itself); such a call proves nothing, so try again with a new id, up to 20
    // times, until one is still pending after its first poll.
    let mut dropped = None;
    for attempt in 0..20u32 {
        let id = id_of(&format!("0190b3f2-7c1e-7a00-8000-{:012x}", 0xd00d + attempt));
        let mut e = new_execution("dropped", "1.0.0");
        e.id = Some(id);
        let mut call = Box::pin(s.create_execution(e));
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(call.as_mut(), cx)))
                .await;
        if first.is_pending() {
            drop(call);
            dropped = Some(id);
            break;
        }
        if let std::task::Poll::Ready(done) = first {
            done.expect("a call that finished on its first poll must have succeeded");
        }
    }
    let id = dropped.expect("20 calls in a row finished on their first poll; the test proves nothing");
    assert!(eventually_readable(s, id).await, "the dropped write never landed");
    s.create_execution(new_execution("dropped", "1.0.0")).await.unwrap();
}

pub async fn shutdown_makes_calls_unavailable(h: &Harness) {
    if !h.concurrent_instances {
        return single_instance_shutdown(h).await;
    }
    let other = h.reopen();
    other.put_pattern(new_pattern("before", "1.0.0")).await.unwrap();
    other.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
    assert_kind(other.get_pattern("before", "1.0.0").await, ErrorKind::Unavailable, "shut down");
    // The first instance is unaffected and sees the write (another object's: once it has reached every host).
    h.settle().await;
    h.storage.get_pattern("before", "1.0.0").await.unwrap();
}

/// A single-writer store refuses a second instance while the first is open (naming why); once the first is
/// shut down its calls are unavailable, and a new instance opens and sees its writes.
async fn single_instance_shutdown(h: &Harness) {
    let s = &h.storage;
    match plugin().open(&h.config) {
        Ok(_) => panic!("a second instance on a single-writer store must be refused"),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
            assert!(e.message.contains("in use"), "{e}");
        }
    }
    s.put_pattern(new_pattern("before", "1.0.0")).await.unwrap();
    s.shutdown().await.unwrap();
    s.shutdown().await.unwrap();
    assert_kind(s.get_pattern("before", "1.0.0").await, ErrorKind::Unavailable, "shut down");
    let other = h.reopen();
    other.get_pattern("before", "1.0.0").await.unwrap();
    other.shutdown().await.unwrap();
}

pub async fn concurrent_writers_lose_nothing(h: &Harness) {
    const TASKS: usize = 32;
    const WRITES: usize = 500;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = h.storage.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(WRITES);
            for i in 0..WRITES {
                let mut e = new_execution(&format!("load{}", t % 4), "1.0.0");
                e.tags = vec![format!("task{t}")];
                e.input = Some(doc(&format!("{{\"i\": {i}}}")));
                let created =
                    s.create_execution(e).await.unwrap_or_else(|e| panic!("task {t} write {i}: {e}"));
                ids.push(created.id.to_string());
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for h in handles {
        written.extend(h.await.unwrap());
    }
    assert_eq!(written.len(), TASKS * WRITES);
    let s = &h.storage;
    assert_eq!(s.count_executions(ExecutionFilter::default()).await.unwrap(), (TASKS * WRITES) as u64);
    let mut listed = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let pg = s.list_executions(ExecutionFilter::default(), page(1000, cursor.as_ref())).await.unwrap();
        listed.extend(pg.items.iter().map(|e| e.id.to_string()));
        match pg.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(listed, written);
    let f = ExecutionFilter { tags: vec![String::from("task7")], ..Default::default() };
    assert_eq!(s.count_executions(f).await.unwrap(), WRITES as u64);
}
