//! Test fixture: a host as a third party would have built it against ABI 2.0.0 (the frozen copy in `../abi`).
//!
//! `parallax-old-host PLUGIN DIR` loads the plugin cdylib, opens SQLite in DIR, makes real calls (put and get a
//! pattern, create and get an execution) and prints `OK …`; on any failure it prints one line to stderr and
//! exits 1.

use std::{
    future::Future,
    path::Path,
    process::ExitCode,
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
};

use parallax_storage_abi::*;

/// Runs a future on this thread with nothing but `std`.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run(plugin: &Path, dir: &Path) -> Result<String, String> {
    let header = abi_stable::library::lib_header_from_path(plugin).map_err(|e| format!("load: {e}"))?;
    let module = header.init_root_module::<PluginModRef>().map_err(|e| format!("load: {e}"))?;
    let info = (module.info())();
    let db = dir.join("old-host.db");
    let config = format!(r#"{{"type":"sqlite","sqlite":{{"path":{}}}}}"#, json_string(&db.to_string_lossy()));
    let storage = (module.open())(config.into(), OpenOptions::default())
        .into_result()
        .map_err(|e| format!("open: {e}"))?;
    let call = |what: &str, e: StorageError| format!("{what}: {e}");

    let put = block_on(storage.put_pattern(NewPattern {
        id: None.into(),
        name: "from-old-host".into(),
        version: "1.0.0".into(),
        description: None.into(),
        definition: r#"{"steps":[{"agent":"writer"}]}"#.into(),
        created_by: Some("old-host".into()).into(),
    }))
    .into_result()
    .map_err(|e| call("put_pattern", e))?;
    let got = block_on(storage.get_pattern("from-old-host".into(), "1.0.0".into()))
        .into_result()
        .map_err(|e| call("get_pattern", e))?;
    if got != put {
        return Err(format!("get_pattern returned {got:?}, put_pattern stored {put:?}"));
    }

    let created = block_on(storage.create_execution(NewExecution {
        id: None.into(),
        pattern_name: "from-old-host".into(),
        pattern_version: "1.0.0".into(),
        status: ExecutionStatus::Running,
        input: Some(r#"{"q":"hello"}"#.into()).into(),
        metadata: None.into(),
        tags: vec!["old-host".into()].into(),
        started_at: None.into(),
    }))
    .into_result()
    .map_err(|e| call("create_execution", e))?;
    let fetched = block_on(storage.get_execution(created.id.clone()))
        .into_result()
        .map_err(|e| call("get_execution", e))?;
    if fetched != created || fetched.status != ExecutionStatus::Running {
        return Err(format!("get_execution returned {fetched:?}, create_execution stored {created:?}"));
    }
    let missing = block_on(storage.get_pattern("from-old-host".into(), "9.9.9".into()));
    match missing.into_result() {
        Err(e) if e.kind == ErrorKind::NotFound => {}
        other => return Err(format!("get_pattern of a missing version answered {other:?}, not NotFound")),
    }
    block_on(storage.shutdown()).into_result().map_err(|e| call("shutdown", e))?;
    Ok(format!(
        "OK: plugin {} (ABI {}) in a host of ABI {ABI_VERSION}",
        info.plugin_version, info.abi_version
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, plugin, dir] = args.as_slice() else {
        eprintln!("usage: parallax-old-host PLUGIN DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(plugin), Path::new(dir)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
