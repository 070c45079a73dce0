//! ABI overhead: `ping(Echo)` through the dynamically loaded cdylib vs the same call on the plugin's rlib
//! linked into this program. Both go through the same adapter (a SQLite-backed storage, whose calls the adapter
//! polls on the caller's thread with the plugin runtime entered); the difference is the library boundary itself.

use std::time::Instant;

use parallax_storage_abi::{OpenOptions, PingMode as AbiPingMode, StorageBox};
use parallax_storage_host::PingMode;

use crate::{
    sqlite_writes,
    util::{self, Latencies, Opts},
};

/// Opens the rlib's storage on a plain thread: `open_storage` blocks on its own runtime, which must not
/// happen inside ours.
fn open_in_process(config: serde_json::Value) -> StorageBox {
    std::thread::spawn(move || {
        parallax_storage::open_storage(&config.to_string(), &OpenOptions::default())
            .unwrap_or_else(|e| util::fail(&format!("open_storage: {}", e.0)))
    })
    .join()
    .expect("open thread")
}

pub async fn ping(opts: &Opts) {
    let calls = opts.n(40_000, 4_000);
    let dir = tempfile::Builder::new().prefix("parallax-bench-").tempdir().expect("tempdir");
    let loaded = sqlite_writes::open(&dir.path().join("loaded.db"));
    let linked = open_in_process(sqlite_writes::config(&dir.path().join("linked.db")));

    // Interleave chunks so that drift (frequency, other load) hits both sides alike.
    const CHUNK: usize = 1_000;
    let (mut ours, mut base) = (Latencies::with_capacity(calls), Latencies::with_capacity(calls));
    for round in 0..(calls / CHUNK + 1) {
        let warmup = round == 0;
        let mut o = Latencies::with_capacity(CHUNK);
        for _ in 0..CHUNK {
            let t = Instant::now();
            loaded.ping(PingMode::Echo).await.expect("ping");
            o.push(t.elapsed());
        }
        let mut b = Latencies::with_capacity(CHUNK);
        for _ in 0..CHUNK {
            let t = Instant::now();
            linked.ping(AbiPingMode::Echo).await.into_result().expect("ping");
            b.push(t.elapsed());
        }
        if !warmup {
            ours.extend(o);
            base.extend(b);
        }
    }
    util::report_overhead(
        "abi_ping",
        &ours,
        &base,
        10.0,
        &format!("{calls} sequential ping(Echo) each; loaded cdylib vs linked rlib, same adapter path"),
    );
    loaded.shutdown().await.expect("shutdown");
    linked.shutdown().await.into_result().expect("shutdown");
}
