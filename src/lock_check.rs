//! The frozen ABI 2.0 fixture (`plugin/testing/abi-2.0/`) has its own `Cargo.lock`, and the compatibility
//! tests build it with `--locked --offline` (`tests/common/compat.rs`): offline, cargo finds a crate only if
//! building the main workspace already downloaded it. So every registry (or git) package the fixture's lock
//! names must be, at the same version, in the main `Cargo.lock`. When a dependency update of the main
//! workspace drops a version the fixture still pins, the compatibility tests would fail on a fresh machine
//! with "no matching package … (offline)"; this test fails first, naming the package and the fix.

use std::collections::BTreeSet;

const MAIN_LOCK: &str = include_str!("../Cargo.lock");
const FIXTURE_LOCK: &str = include_str!("../plugin/testing/abi-2.0/Cargo.lock");
const FIXTURE: &str = "plugin/testing/abi-2.0";

/// `(name, version, source)` of every `[[package]]` of a lock file that comes from somewhere (a registry or a
/// git repository); the workspace's own packages have no `source` and are skipped.
fn sourced_packages(lock: &str) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let value = l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            panic!("a [[package]] of a Cargo.lock without name or version:\n{block}");
        };
        if let Some(source) = field("source") {
            found.insert((name, version, source));
        }
    }
    found
}

/// The fixture's packages that the main lock lacks, one line each.
fn missing_from_main(main: &str, fixture: &str) -> Vec<String> {
    let main = sourced_packages(main);
    sourced_packages(fixture)
        .difference(&main)
        .map(|(name, version, source)| format!("{name} {version} ({source})"))
        .collect()
}

#[test]
fn the_frozen_fixture_builds_offline_from_the_main_workspaces_crates() {
    let fixture = sourced_packages(FIXTURE_LOCK);
    assert!(fixture.iter().any(|(name, ..)| name == "abi_stable"), "{FIXTURE}/Cargo.lock was not parsed");
    let missing = missing_from_main(MAIN_LOCK, FIXTURE_LOCK);
    assert!(
        missing.is_empty(),
        "{FIXTURE}/Cargo.lock pins packages the main Cargo.lock does not have, so `cargo build --locked \
         --offline` of the fixture (tests/common/compat.rs) fails on a machine that only built the main \
         workspace:\n  {}\nfix: in {FIXTURE}, run `cargo update --offline -p NAME@OLD --precise NEW` to the \
         version the main Cargo.lock has (ABI-relevant crates such as abi_stable must stay at their 2.0.0 \
         versions: then add that version back to the main workspace instead), and commit both lock files",
        missing.join("\n  ")
    );
}

#[test]
fn a_package_only_the_fixture_pins_is_named() {
    let main = "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\n\n\
                [[package]]\nname = \"local\"\nversion = \"0.1.0\"\n";
    let fixture = "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\n\n\
                   [[package]]\nname = \"a\"\nversion = \"0.9.0\"\nsource = \"registry+x\"\n\
                   dependencies = [\n \"b\",\n]\n\n\
                   [[package]]\nname = \"own\"\nversion = \"2.0.0\"\n";
    assert_eq!(missing_from_main(main, fixture), ["a 0.9.0 (registry+x)"]);
    assert!(missing_from_main(fixture, main).is_empty(), "packages without a source are the workspace's own");
}
