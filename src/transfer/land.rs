//! Landing a page in a target: insert-if-absent, read back, compare canonical hashes, count copied / present / conflicts, save the state.
