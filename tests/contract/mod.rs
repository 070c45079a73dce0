//! The contract suite: backend-neutral test bodies that every backend runs unchanged, through the loaded
//! cdylib. `contract_suite!(factory)` generates one `#[tokio::test]` per function in `for_each_contract!`, so
//! a new contract function cannot be forgotten by a backend.

pub mod access;
pub mod archive;
pub mod audit;
pub mod audit_chain;
pub mod events;
pub mod executions;
pub mod metrics;
pub mod operations;
pub mod patterns;
pub mod retention;
pub mod rules;
pub mod schedule;
pub mod search;
pub mod transfer;

/// Calls `$callback!` with the full list of contract test functions.
#[macro_export]
macro_rules! for_each_contract {
    ($callback:ident, $factory:path) => {
        $callback! { $factory;
            patterns::pattern_put_get_roundtrip,
            patterns::pattern_duplicate_version_conflicts,
            patterns::pattern_not_found,
            patterns::pattern_latest_is_highest_semver,
            patterns::pattern_versions_sorted,
            patterns::pattern_list_pages_latest_of_each,
            patterns::pattern_delete,
            patterns::pattern_invalid_input_is_refused,
            executions::execution_create_get_roundtrip,
            executions::execution_update_and_complete,
            executions::execution_final_states_are_final,
            executions::execution_invalid_input_is_refused,
            executions::execution_client_ids_and_conflicts,
            executions::execution_filters_combine,
            executions::execution_pagination_is_exact,
            executions::execution_pagination_edges,
            events::events_append_in_order,
            events::events_refused_on_final_or_missing,
            audit::audit_append_and_query,
            audit::audit_batch_is_atomic,
            audit::audit_pagination_and_time_range,
            operations::migrations_status_down_up_to,
            operations::health_reports_backend,
            operations::panics_come_back_as_panicked,
            operations::panic_before_the_future_comes_back_as_panicked,
            operations::dropped_future_still_completes,
            operations::call_dropped_before_polling_still_runs,
            operations::calls_complete_on_a_thread_without_tokio,
            operations::shutdown_makes_calls_unavailable,
            operations::concurrent_writers_lose_nothing,
            operations::mark_applied_records_without_running,
            rules::rules_final_execution_cannot_be_updated,
            rules::rules_final_execution_cannot_be_completed_again,
            rules::rules_events_only_while_pending_or_running,
            rules::rules_completion_not_before_start,
            rules::rules_missing_execution_is_not_found,
            rules::rules_duplicate_execution_id_conflicts,
            rules::rules_duplicate_audit_id_conflicts,
            rules::rules_duplicate_pattern_version_conflicts,
            rules::rules_missing_pattern_is_not_found,
            rules::rules_large_inputs_get_a_size_error,
            search::search_executions_matches_words_in_documents,
            search::search_pages_are_exact,
            search::search_patterns_by_name_description_definition,
            retention::retention_dry_run_changes_nothing,
            retention::retention_unfinished_are_kept_unless_included,
            retention::retention_events_and_search_go_with_their_execution,
            retention::retention_max_count_keeps_the_newest,
            retention::retention_max_count_breaks_ties_by_id,
            retention::retention_removing_everything_needs_confirmation,
            retention::retention_bad_values_are_refused_by_name,
            retention::retention_audit_goes_by_age,
            retention::retention_manual_runs_are_recorded,
            retention::retention_run_follows_the_configured_rules,
            retention::retention_cleanup_runs_alongside_writers,
            retention::retention_whole_months_and_their_edges,
            retention::retention_runs_outlive_the_instance,
            schedule::schedule_missed_tick_runs_once_at_start,
            schedule::schedule_not_run_when_run_schedule_is_false,
            archive::archive_executions_older_than_a_cutoff,
            archive::archive_keep_and_dry_run,
            archive::archive_verify_names_a_damaged_object,
            archive::restore_into_a_fresh_storage_equals_the_originals,
            archive::restore_refuses_a_damaged_archive_and_writes_nothing,
            archive::archive_audit_logs_and_restore,
            archive::archive_max_count_selects_what_cleanup_would,
            archive::archive_confirm_all_and_runner_lock,
            archive::a_second_archive_adds_a_second_manifest,
            archive::restore_skips_present_rows_whole,
            archive::retention_archives_first_with_an_archive_destination,
            metrics::metrics_build_info_names_backend_and_versions,
            metrics::metrics_calls_are_counted_by_operation_and_table,
            metrics::metrics_errors_are_counted_by_kind,
            metrics::metrics_dropped_calls_are_still_counted,
            metrics::metrics_pool_gauges_are_present,
            metrics::metrics_table_stats_follow_the_data,
            metrics::metrics_disk_free_only_where_the_plugin_sees_the_disk,
            metrics::metrics_cleanup_sets_last_success_and_rows_removed,
            metrics::metrics_disabled_answers_invalid_input_naming_the_key,
            metrics::metrics_latency_buckets_make_a_histogram,
            metrics::metrics_exposition_passes_promtool,
            transfer::transfer_export_then_import_equals_the_original,
            transfer::transfer_import_needs_merge_and_reports_conflicts,
            audit_chain::audit_chain_verifies_after_concurrent_appends,
            audit_chain::audit_chain_names_each_tampering,
            audit_chain::audit_chain_survives_cleanup_and_archive,
            access::access_local_files_are_owner_only,
        }
    };
}

#[macro_export]
macro_rules! contract_tests {
    ($factory:path; $($area:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let h = $factory().await;
                $crate::contract::$area::$name(&h).await;
                h.finish().await;
            }
        )*
    };
}

#[macro_export]
macro_rules! contract_suite {
    ($factory:path) => {
        /// The contract suite on this backend: `cargo test --test <backend> contract_suite` runs only it.
        mod contract_suite {
            // The factory path and `contract_tests!` as the caller sees them.
            #[allow(unused_imports)]
            use super::*;
            $crate::for_each_contract!(contract_tests, $factory);
        }
    };
}
