//! The transfer primitives (`crate::transfer::Store`) of this backend: see `crate::transfer` for the rules.

use super::PostgresBackend;

impl crate::transfer::Store for PostgresBackend {}
