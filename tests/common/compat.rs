//! The ABI compatibility fixtures in `plugin/testing/abi-2.0/`: a frozen copy of ABI 2.0.0, an old plugin and an
//! old host built from it. They are their own workspace (the frozen crate has the real crate's package name),
//! so the tests build them here, once per test process, with their own lock file, offline (every crate they
//! use is in the main lock file, hence in cargo's cache after the main build), into `target/abi-2.0/`, which
//! later runs reuse. The host crate's CLI tests include this file too.

use std::{path::PathBuf, process::Command, sync::OnceLock};

pub struct Fixtures {
    /// `libparallax_old_plugin.so`: an in-memory plugin built against ABI 2.0.0.
    pub old_plugin: PathBuf,
    /// `parallax-old-host PLUGIN DIR`: a host built against ABI 2.0.0; prints `OK …` after real calls.
    pub old_host: PathBuf,
}

pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(build)
}

fn build() -> Fixtures {
    // The workspace root: this file is included by the root package's tests and by the host crate's CLI tests.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("plugin/testing/abi-2.0/Cargo.toml").is_file())
        .expect("the workspace holding plugin/testing/abi-2.0")
        .to_path_buf();
    let manifest = root.join("plugin/testing/abi-2.0/Cargo.toml");
    // target/<profile>/deps/<test> -> target/abi-2.0/: separate from the main build (its own lock, its own
    // `parallax-storage-abi`).
    let exe = std::env::current_exe().expect("current_exe");
    let target =
        exe.ancestors().nth(3).expect("test executables live in target/<profile>/deps").join("abi-2.0");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let out = Command::new(&cargo)
        .args(["build", "--locked", "--offline", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the ABI 2.0.0 fixtures: {e}"));
    assert!(
        out.status.success(),
        "building the ABI 2.0.0 fixtures ({}) failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ABI 2.0.0 fixtures built in {:.1?}", started.elapsed());
    let debug = target.join("debug");
    let fixtures = Fixtures {
        old_plugin: debug.join(format!(
            "{}parallax_old_plugin{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )),
        old_host: debug.join(format!("parallax-old-host{}", std::env::consts::EXE_SUFFIX)),
    };
    for f in [&fixtures.old_plugin, &fixtures.old_host] {
        assert!(f.is_file(), "the fixture build did not produce {}", f.display());
    }
    fixtures
}
