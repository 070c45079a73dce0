//! Loading something that is not a plugin fails with a clear, one-line error. These tests never load the real
//! plugin, so they live in their own test binary. (A plugin of another ABI major: `tests/plugin_boundary.rs`,
//! with the other ABI compatibility tests.)

use parallax_storage_host::{loader, LoadErrorKind, Plugin};

fn one_line(msg: &str) {
    assert!(!msg.contains('\n'), "the error must be one line: {msg}");
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libparallax_storage.so");
    std::fs::write(&fake, b"this is not an ELF file").unwrap();
    let err = Plugin::load(&fake).unwrap_err();
    assert_eq!(err.kind(), LoadErrorKind::NotAPlugin);
    let err = err.to_string();
    one_line(&err);
    assert!(
        err.contains(&fake.display().to_string()) && err.contains("not a loadable shared library"),
        "{err}"
    );
}

#[test]
fn a_library_without_the_root_module_is_refused() {
    // Any shared library without our symbol: the system's libc will do.
    let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .expect("a libc.so.6 to load");
    let err = Plugin::load(&libc).unwrap_err();
    assert_eq!(err.kind(), LoadErrorKind::NotAPlugin);
    let err = err.to_string();
    one_line(&err);
    assert!(err.contains("not a Parallax storage plugin"), "{err}");
}

#[test]
fn a_missing_plugin_lists_where_it_looked() {
    let err = loader::locate(Some(std::path::Path::new("/nowhere/libparallax_storage.so"))).unwrap_err();
    assert_eq!(err.kind(), LoadErrorKind::Missing);
    let err = err.to_string();
    assert!(err.contains("/nowhere/libparallax_storage.so") && err.contains("--plugin"), "{err}");
    let err = Plugin::load(std::path::Path::new("/nowhere/libx.so")).unwrap_err();
    assert_eq!(err.kind(), LoadErrorKind::Missing);
    let err = err.to_string();
    assert!(err.contains("/nowhere/libx.so"), "{err}");
}
