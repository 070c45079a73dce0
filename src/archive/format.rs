//! The archive's format: the record schema (one JSON object per line), object naming, and the manifest.
//! Written by the archive-core work of issue 13; see the module docs of [`crate::archive`].

/// The version of the record schema (the JSON of one line). Bumped when a field changes meaning or goes away;
/// added fields keep it.
pub const RECORD_SCHEMA_VERSION: u32 = 1;
