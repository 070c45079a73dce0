//! The same promise without tokio: the plugin's calls can be awaited on any executor. This host drives them on
//! a plain thread with a dozen-line `block_on` (park the thread until the plugin wakes it), and on two threads
//! at once.
//!
//! ```sh
//! cargo build --workspace && cargo run -p parallax-storage-host --example embed_without_tokio
//! ```

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
    thread::Thread,
};

use parallax_storage_host::{ExecutionCompletion, ExecutionFilter, ExecutionStatus, NewExecution, Plugin};
use serde_json::json;

/// Runs a future to completion on the current thread: polls it, and parks until its waker unparks the thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plugin = Plugin::find()?;
    let dir = std::env::temp_dir().join(format!("parallax-embed-thread-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // No async context here, so opening (which blocks until the database is ready) is a plain call.
    let storage = plugin.open(&json!({ "type": "sqlite", "sqlite": { "path": dir.join("parallax.db") } }))?;

    // Two plain threads, each running executions to completion with its own block_on.
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                block_on(async move {
                    for i in 0..3 {
                        let input = json!({ "worker": worker, "i": i });
                        let run = storage
                            .create_execution(NewExecution::new("batch", "1.0.0").input(input))
                            .await?;
                        storage
                            .complete_execution(run.id, ExecutionCompletion::new(ExecutionStatus::Completed))
                            .await?;
                    }
                    Ok::<_, parallax_storage_host::Error>(())
                })
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread")?;
    }

    block_on(async {
        let done =
            storage.count_executions(ExecutionFilter::default().status(ExecutionStatus::Completed)).await?;
        println!("{done} executions completed on plain threads");
        assert_eq!(done, 6);
        storage.shutdown().await
    })?;
    std::fs::remove_dir_all(&dir)?;
    println!("embed_without_tokio: ok");
    Ok(())
}
