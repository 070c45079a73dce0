//! The transfer primitives (`crate::transfer::Store`) of this backend: see `crate::transfer` for the rules.

use super::SqliteBackend;

impl crate::transfer::Store for SqliteBackend {}
