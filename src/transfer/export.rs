//! The `export` op: everything in the archive's format (plus patterns) under a destination, `export.json` last.
