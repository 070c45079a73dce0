//! Tampering with the audit log the way a person with access to the data would: with the backend's own tools
//! (`psql`, `sqlite3`, an editor on the file store's files), around the plugin. The storage is shut down first
//! (the file store keeps its index in memory); the test reopens it and verifies.

use super::Harness;

/// One change to the stored audit log.
#[derive(Clone, Copy, Debug)]
pub enum Tamper<'a> {
    /// Change the `actor` of the entry with this id to `mallory`.
    Alter(&'a str),
    /// Delete the entry with this id.
    Delete(&'a str),
    /// Insert an entry with this id (action `forged`, timestamp now), as someone writing around the plugin
    /// would: without chain columns.
    Forge(&'a str),
    /// Exchange the chain positions (sequence numbers) of the two entries with these ids.
    Swap(&'a str, &'a str),
}

/// Applies `t` to the data of `h` (whose storage the caller shut down).
pub fn tamper(h: &Harness, t: Tamper<'_>) {
    match h.backend() {
        "sqlite" => super::tamper_sqlite::apply(h, t),
        "postgresql" => super::tamper_pg::apply(h, t),
        "file" => super::tamper_file::apply(h, t),
        other => panic!("no way to tamper with a {other} store"),
    }
}
