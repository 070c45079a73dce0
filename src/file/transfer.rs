//! The transfer primitives (`crate::transfer::Store`) of this backend: see `crate::transfer` for the rules.

use super::FileBackend;

impl crate::transfer::Store for FileBackend {}
