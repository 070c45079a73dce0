//! The `import` op: an export (or archive) into the open storage, through the same landing and verification as `copy`.
