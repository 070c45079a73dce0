//! Monthly `executions` partitions, each with the `execution_events` partition of the same month: created for
//! this month and the configured number of months ahead at startup, then re-checked periodically, under an
//! advisory lock so several hosts do not race on DDL. Only this month and later are ever created, so a past month
//! dropped by a cleanup (`retention.rs`, which takes the same lock for its DETACH + DROP) is never re-created;
//! rows written later into such a month land in the default partitions, where the next cleanup deletes them (and
//! their events) in batches.

use diesel::{sql_query, sql_types::Integer, QueryableByName};
use diesel_async::{AsyncConnection, RunQueryDsl};

use std::sync::Arc;

use super::{
    connect::{ConnectSpec, Pool},
    KEEP_AHEAD_EVERY,
};
use crate::error::{Error, Result};

/// Arbitrary, fixed key of the advisory lock serialising partition DDL ("plx-part").
pub(super) const PARTITION_LOCK: i64 = 0x706c_782d_7061_7274;

#[derive(QueryableByName)]
struct Made {
    #[diesel(sql_type = Integer)]
    made: i32,
}

/// Makes sure partitions exist from this month through `months_ahead` months ahead; returns how many it made.
pub async fn ensure(pool: &Pool, spec: &ConnectSpec, months_ahead: u32) -> Result<u32> {
    let mut conn = spec
        .budget
        .pooled(pool)
        .await
        .map_err(|e| Error::unavailable(format!("partition maintenance: {e}")))?;
    let made = conn
        .run(async |conn| {
            conn.transaction::<_, Error, _>(async |conn| {
                sql_query(format!("SELECT pg_advisory_xact_lock({PARTITION_LOCK})")).execute(conn).await?;
                let made: Made = sql_query(
                    "SELECT count(*) FILTER (WHERE created)::int AS made FROM generate_series(0, $1) AS m, \
                 LATERAL parallax_create_execution_partition(now() + make_interval(months => m)) AS created",
                )
                .bind::<Integer, _>(months_ahead as i32)
                .get_result(conn)
                .await?;
                Ok(made.made)
            })
            .await
        })
        .await?;
    Ok(made as u32)
}

/// Re-checks periodically; errors are logged and retried at the next tick.
pub fn keep_ahead(pool: Pool, spec: Arc<ConnectSpec>, months_ahead: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEP_AHEAD_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            match ensure(&pool, &spec, months_ahead).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(created = n, "created executions partitions ahead of time"),
                Err(e) => tracing::warn!(error = %e, "partition maintenance failed; retrying later"),
            }
        }
    })
}
