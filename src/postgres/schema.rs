// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "tsvector", schema = "pg_catalog"))]
    pub struct Tsvector;
}

diesel::table! {
    audit_chain (id) {
        id -> Int2,
        head_seq -> Int8,
        head_hash -> Bytea,
        checkpoint_seq -> Nullable<Int8>,
        checkpoint_hash -> Nullable<Bytea>,
        checkpoint_removed -> Int8,
        checkpoint_at -> Nullable<Timestamptz>,
        legacy_pending -> Bool,
    }
}

diesel::table! {
    audit_logs (id) {
        id -> Uuid,
        timestamp -> Timestamptz,
        #[max_length = 100]
        action -> Varchar,
        #[max_length = 255]
        actor -> Nullable<Varchar>,
        #[max_length = 100]
        resource_type -> Nullable<Varchar>,
        #[max_length = 255]
        resource_id -> Nullable<Varchar>,
        details -> Nullable<Jsonb>,
        ip_address -> Nullable<Inet>,
        user_agent -> Nullable<Text>,
        chain_seq -> Nullable<Int8>,
        chain_prev -> Nullable<Bytea>,
        chain_hash -> Nullable<Bytea>,
    }
}

diesel::table! {
    execution_events (id, execution_started_at) {
        id -> Uuid,
        execution_id -> Uuid,
        seq -> Int8,
        #[max_length = 50]
        kind -> Varchar,
        payload -> Jsonb,
        recorded_at -> Timestamptz,
        execution_started_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Tsvector;

    executions (id, started_at) {
        id -> Uuid,
        #[max_length = 255]
        pattern_name -> Varchar,
        #[max_length = 50]
        pattern_version -> Varchar,
        #[max_length = 50]
        status -> Varchar,
        input -> Nullable<Jsonb>,
        output -> Nullable<Jsonb>,
        error -> Nullable<Jsonb>,
        started_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        duration_ms -> Nullable<Int8>,
        metadata -> Nullable<Jsonb>,
        tags -> Jsonb,
        search_vector -> Nullable<Tsvector>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Tsvector;

    patterns (id) {
        id -> Uuid,
        #[max_length = 255]
        name -> Varchar,
        #[max_length = 50]
        version -> Varchar,
        description -> Nullable<Text>,
        definition -> Jsonb,
        created_at -> Timestamptz,
        #[max_length = 255]
        created_by -> Nullable<Varchar>,
        search_vector -> Nullable<Tsvector>,
    }
}

diesel::table! {
    retention_runs (id) {
        id -> Uuid,
        trigger -> Text,
        tick -> Nullable<Timestamptz>,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        status -> Text,
        rows -> Jsonb,
        error -> Nullable<Text>,
        archive -> Nullable<Jsonb>,
    }
}

diesel::table! {
    transfer_runs (id) {
        id -> Uuid,
        source -> Text,
        started_at -> Timestamptz,
        updated_at -> Timestamptz,
        state -> Jsonb,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    audit_chain,
    audit_logs,
    execution_events,
    executions,
    patterns,
    retention_runs,
    transfer_runs,
);
