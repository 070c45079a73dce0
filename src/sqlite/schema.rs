// @generated automatically by Diesel CLI.

diesel::table! {
    audit_chain (id) {
        id -> Integer,
        head_seq -> BigInt,
        head_hash -> Binary,
        checkpoint_seq -> Nullable<BigInt>,
        checkpoint_hash -> Nullable<Binary>,
        checkpoint_removed -> BigInt,
        checkpoint_at -> Nullable<BigInt>,
        legacy_pending -> Bool,
    }
}

diesel::table! {
    audit_logs (id) {
        id -> Text,
        timestamp -> BigInt,
        action -> Text,
        actor -> Nullable<Text>,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        details -> Nullable<Text>,
        ip_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        chain_seq -> Nullable<BigInt>,
        chain_prev -> Nullable<Binary>,
        chain_hash -> Nullable<Binary>,
    }
}

diesel::table! {
    execution_events (id) {
        id -> Text,
        execution_id -> Text,
        seq -> BigInt,
        kind -> Text,
        payload -> Text,
        recorded_at -> BigInt,
    }
}

diesel::table! {
    execution_search (doc_id) {
        doc_id -> Integer,
        execution_id -> Text,
    }
}

diesel::table! {
    execution_search_queue (execution_id) {
        execution_id -> Text,
    }
}

diesel::table! {
    executions (id) {
        id -> Text,
        pattern_name -> Text,
        pattern_version -> Text,
        status -> Text,
        input -> Nullable<Text>,
        output -> Nullable<Text>,
        error -> Nullable<Text>,
        started_at -> BigInt,
        completed_at -> Nullable<BigInt>,
        duration_ms -> Nullable<BigInt>,
        metadata -> Nullable<Text>,
        tags -> Text,
    }
}

diesel::table! {
    pattern_search (doc_id) {
        doc_id -> Integer,
        pattern_id -> Text,
    }
}

diesel::table! {
    patterns (id) {
        id -> Text,
        name -> Text,
        version -> Text,
        description -> Nullable<Text>,
        definition -> Text,
        created_at -> BigInt,
        created_by -> Nullable<Text>,
    }
}

diesel::table! {
    retention_runs (id) {
        id -> Text,
        trigger -> Text,
        tick -> Nullable<BigInt>,
        started_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        status -> Text,
        rows -> Text,
        error -> Nullable<Text>,
        archive -> Nullable<Text>,
    }
}

diesel::table! {
    transfer_runs (id) {
        id -> Text,
        source -> Text,
        started_at -> BigInt,
        updated_at -> BigInt,
        state -> Text,
    }
}

diesel::joinable!(execution_events -> executions (execution_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_chain,
    audit_logs,
    execution_events,
    execution_search,
    execution_search_queue,
    executions,
    pattern_search,
    patterns,
    retention_runs,
    transfer_runs,
);
