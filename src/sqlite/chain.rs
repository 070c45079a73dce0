//! The audit chain's persistence on this backend (the rules are in [`crate::audit_chain`]).

impl crate::audit_chain::Store for super::SqliteBackend {}
