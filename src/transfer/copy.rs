//! The `copy` driver: source scan → landing in the target → verification (owned by the copy engine).
