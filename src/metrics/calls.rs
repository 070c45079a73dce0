//! The adapter's call names, their labels, and the error kinds as label values: the one home of the mapping
//! [`super::call_labels`] exposes.

use parallax_storage_abi::ErrorKind;

/// Every call the adapter records (`Adapter::call`'s `op`), data calls first with their `(operation, table)`
/// labels, then the calls that are not data operations. [`index`] answers a name's position; the unit tests
/// check both against each other and against every call name in `src/adapter.rs`.
pub(super) const CALLS: &[(&str, Option<(&str, &str)>)] = &[
    ("put_pattern", Some(("write", "patterns"))),
    ("get_pattern", Some(("read", "patterns"))),
    ("get_latest_pattern", Some(("read", "patterns"))),
    ("list_pattern_versions", Some(("list", "patterns"))),
    ("list_patterns", Some(("list", "patterns"))),
    ("delete_pattern", Some(("delete", "patterns"))),
    ("search_patterns", Some(("search", "patterns"))),
    ("create_execution", Some(("write", "executions"))),
    ("update_execution", Some(("write", "executions"))),
    ("complete_execution", Some(("write", "executions"))),
    ("get_execution", Some(("read", "executions"))),
    ("list_executions", Some(("list", "executions"))),
    ("count_executions", Some(("count", "executions"))),
    ("search_executions", Some(("search", "executions"))),
    ("append_event", Some(("write", "execution_events"))),
    ("list_events", Some(("list", "execution_events"))),
    ("append_audit", Some(("write", "audit_logs"))),
    ("query_audit", Some(("list", "audit_logs"))),
    ("migration_status", None),
    ("migrate_up", None),
    ("migrate_down", None),
    ("migrate_to", None),
    ("health", None),
    ("mark_migration_applied", None),
    ("ping", None),
    ("maintenance", None),
];

/// The position of `call` in [`CALLS`]: a `match` on the name (compiled to a length switch and a few byte
/// comparisons), so recording a call neither hashes nor allocates.
pub(super) fn index(call: &str) -> Option<usize> {
    Some(match call {
        "put_pattern" => 0,
        "get_pattern" => 1,
        "get_latest_pattern" => 2,
        "list_pattern_versions" => 3,
        "list_patterns" => 4,
        "delete_pattern" => 5,
        "search_patterns" => 6,
        "create_execution" => 7,
        "update_execution" => 8,
        "complete_execution" => 9,
        "get_execution" => 10,
        "list_executions" => 11,
        "count_executions" => 12,
        "search_executions" => 13,
        "append_event" => 14,
        "list_events" => 15,
        "append_audit" => 16,
        "query_audit" => 17,
        "migration_status" => 18,
        "migrate_up" => 19,
        "migrate_down" => 20,
        "migrate_to" => 21,
        "health" => 22,
        "mark_migration_applied" => 23,
        "ping" => 24,
        "maintenance" => 25,
        _ => return None,
    })
}

/// The `kind` label values, by [`kind_index`]: the ABI's kinds in snake_case, then `unknown` (a kind from a
/// newer peer).
pub(super) const KINDS: &[&str] = &[
    "not_found",
    "conflict",
    "invalid_input",
    "unavailable",
    "timeout",
    "schema",
    "unsupported",
    "internal",
    "panicked",
    "unknown",
];

pub(super) fn kind_index(kind: ErrorKind) -> usize {
    if kind.is_known() {
        usize::from(kind.raw()).min(KINDS.len() - 1)
    } else {
        KINDS.len() - 1
    }
}

/// The `(operation, table)` labels of a call's errors: a data call's labels, else the call name and `""`.
pub(super) fn error_labels(call: &'static str) -> (&'static str, &'static str) {
    super::call_labels(call).unwrap_or((call, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{call_labels, TABLES};

    /// Every `self.call("…"` and `self.search("…"` in the adapter, by reading its source: a call added there
    /// without a row here fails this test.
    fn adapter_calls() -> Vec<String> {
        let src = include_str!("../adapter.rs");
        let mut names = Vec::new();
        for marker in ["self.call(\"", "self.search(\""] {
            for (at, _) in src.match_indices(marker) {
                let rest = &src[at + marker.len()..];
                names.push(rest[..rest.find('"').unwrap()].to_string());
            }
        }
        // `self.search(` is written on its own line with the name on the next one.
        let mut lines = src.lines();
        while let Some(line) = lines.next() {
            if line.trim_end().ends_with("self.search(") {
                let next = lines.next().unwrap().trim();
                names.push(next.trim_start_matches('"').split('"').next().unwrap().to_string());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn the_index_matches_the_table() {
        for (i, (name, _)) in CALLS.iter().enumerate() {
            assert_eq!(index(name), Some(i), "{name}");
        }
        assert_eq!(index("no_such_call"), None);
        assert_eq!(index(""), None);
    }

    #[test]
    fn every_adapter_call_is_known() {
        let calls = adapter_calls();
        assert!(calls.len() >= 26, "found only {calls:?} in src/adapter.rs");
        for c in &calls {
            assert!(
                index(c).is_some(),
                "the adapter records {c:?} but src/metrics/calls.rs does not list it"
            );
        }
        for (name, _) in CALLS {
            assert!(calls.iter().any(|c| c == name), "{name} is listed but the adapter has no such call");
        }
        assert!(
            calls.iter().any(|c| c == "search_patterns") && calls.iter().any(|c| c == "search_executions")
        );
    }

    #[test]
    fn call_labels_follow_the_documented_mapping() {
        let expected: &[(&str, Option<(&str, &str)>)] = &[
            ("put_pattern", Some(("write", "patterns"))),
            ("get_pattern", Some(("read", "patterns"))),
            ("get_latest_pattern", Some(("read", "patterns"))),
            ("list_pattern_versions", Some(("list", "patterns"))),
            ("list_patterns", Some(("list", "patterns"))),
            ("delete_pattern", Some(("delete", "patterns"))),
            ("search_patterns", Some(("search", "patterns"))),
            ("create_execution", Some(("write", "executions"))),
            ("update_execution", Some(("write", "executions"))),
            ("complete_execution", Some(("write", "executions"))),
            ("get_execution", Some(("read", "executions"))),
            ("list_executions", Some(("list", "executions"))),
            ("count_executions", Some(("count", "executions"))),
            ("search_executions", Some(("search", "executions"))),
            ("append_event", Some(("write", "execution_events"))),
            ("list_events", Some(("list", "execution_events"))),
            ("append_audit", Some(("write", "audit_logs"))),
            ("query_audit", Some(("list", "audit_logs"))),
            ("migration_status", None),
            ("migrate_up", None),
            ("migrate_down", None),
            ("migrate_to", None),
            ("health", None),
            ("mark_migration_applied", None),
            ("ping", None),
            ("maintenance", None),
            ("shutdown", None),
            ("unknown_call", None),
        ];
        for (call, labels) in expected {
            assert_eq!(call_labels(call), *labels, "{call}");
        }
        for c in adapter_calls() {
            if let Some((op, table)) = call_labels(&c) {
                assert!(["read", "list", "count", "search", "write", "delete"].contains(&op), "{c}: {op}");
                assert!(TABLES.contains(&table), "{c}: {table}");
            }
        }
    }

    #[test]
    fn kinds_are_snake_case_of_the_abi_kinds() {
        for kind in ErrorKind::ALL {
            assert_eq!(KINDS[kind_index(kind)], kind.as_str().replace(' ', "_"));
        }
        assert_eq!(KINDS[kind_index(ErrorKind::from_raw(200))], "unknown");
        assert_eq!(error_labels("create_execution"), ("write", "executions"));
        assert_eq!(error_labels("migrate_up"), ("migrate_up", ""));
    }
}
