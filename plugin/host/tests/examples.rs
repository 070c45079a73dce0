//! Runs the embedding examples (`plugin/host/examples/`) as a user would, against the built plugin: they are
//! documentation that must keep working. `cargo test` builds the examples before it runs the tests; the
//! plugin cdylib must be built first (the README's test command, `cargo build --workspace && cargo test
//! --workspace`, does).

use std::{path::PathBuf, process::Command};

/// `target/<profile>/`, found from this test executable (`target/<profile>/deps/examples-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(|deps| deps.parent()).expect("target dir").to_path_buf()
}

fn run_example(name: &str) -> String {
    let target = target_dir();
    let lib = target.join(format!(
        "{}parallax_storage{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        lib.is_file(),
        "{} is missing: build the workspace first with `cargo build --workspace`",
        lib.display()
    );
    let exe = target.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.is_file(),
        "{} is missing: `cargo test -p parallax-storage-host` builds the examples (a test filter such as --test \
         does not)",
        exe.display()
    );
    // The example finds the plugin as any host does: next to its executable, or one directory up.
    let out = Command::new(&exe)
        .env_remove("PARALLAX_STORAGE_PLUGIN")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "example {name} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

#[test]
fn the_tokio_example_runs_an_execution_to_completion() {
    let out = run_example("embed");
    assert!(out.contains("stored pattern summarize 1.0.0"), "{out}");
    assert!(out.contains("listed summarize completed") && out.contains("with 2 events"), "{out}");
    assert!(out.trim_end().ends_with("embed: ok"), "{out}");
}

#[test]
fn the_example_without_tokio_runs_on_plain_threads() {
    let out = run_example("embed_without_tokio");
    assert!(out.contains("6 executions completed on plain threads"), "{out}");
    assert!(out.trim_end().ends_with("embed_without_tokio: ok"), "{out}");
}
