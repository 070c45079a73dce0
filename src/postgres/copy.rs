//! Audit batches by binary `COPY`, the fastest way into PostgreSQL. diesel-async has no COPY and does not
//! expose its client, so this keeps a few raw tokio-postgres clients, opened with the same `ConnectSpec` (TLS
//! included) as the diesel pool and counted against the same `maxConnections` ([`super::budget`]).
//!
//! Each batch is chained ([`crate::audit_chain`]) in one transaction: the head record locked (`FOR UPDATE`, so
//! batches of every process and host make one chain), the links computed here, the `COPY` with the three chain
//! columns, the head moved, commit. `BEGIN` travels with the lock and `COMMIT` with the head's update: two
//! round trips more than a bare `COPY`.

use std::{
    collections::HashSet,
    error::Error as StdError,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use bytes::BytesMut;
use futures_util::pin_mut;
use ipnetwork::IpNetwork;
use postgres_protocol::types as proto;
use tokio_postgres::{
    binary_copy::BinaryCopyInWriter,
    types::{to_sql_checked, IsNull, ToSql, Type},
    Client,
};
use uuid::Uuid;

use super::{
    budget::Raw,
    chain,
    connect::{ConnectSpec, Pool},
    models::AuditRow,
    replicas::Freshness,
};
use crate::{
    audit_chain::{self, Head},
    error::{Error, Result},
    rules,
};
use parallax_storage_abi::AuditEntry;

/// Raw clients for `COPY`, counted against `pool.maxConnections` with the pooled connections
/// ([`super::budget`]): a batch reuses an idle client, opens one when a slot is free, or waits for either.
pub struct CopyPool {
    spec: Arc<ConnectSpec>,
    /// The diesel pool, whose idle connections a batch may close to make room.
    pool: Pool,
    /// The storage object's read-your-writes mark, while reads may go to replicas: a batch that committed (or
    /// may have) counts as a write ([`Freshness::wrote`]).
    fresh: Option<Arc<Freshness>>,
}

impl CopyPool {
    pub fn new(spec: Arc<ConnectSpec>, pool: Pool, fresh: Option<Arc<Freshness>>) -> Self {
        CopyPool { spec, pool, fresh }
    }

    async fn client(&self) -> Result<Client> {
        match self.spec.budget.for_raw(Some(&self.pool), true).await? {
            Raw::Idle(client) => Ok(client),
            Raw::New(slot) => super::connect::connect_raw(&self.spec, slot).await,
        }
    }

    /// Appends `rows` (`entries` as they are stored, for their hashes) in one `COPY … FROM STDIN (FORMAT
    /// binary)`, chained after the head in one transaction: all rows or none.
    pub async fn audit(
        &self,
        rows: &[AuditRow],
        details: &[Option<&str>],
        entries: &[AuditEntry],
    ) -> Result<()> {
        // Dropped half-way (the caller gave up), the client is closed, never given back inside the
        // transaction: the server rolls it back and releases the head record.
        let client = self.client().await?;
        let copy = chained_copy(&client, rows, details, entries);
        let outcome = match self.spec.query_timeout {
            None => copy.await,
            Some(limit) => match tokio::time::timeout(limit, copy).await {
                Ok(outcome) => outcome,
                // Dropped with the client: the server rolls the transaction back when the socket closes.
                Err(_) => {
                    if let Some(fresh) = &self.fresh {
                        fresh.wrote(); // it may have committed
                    }
                    return Err(Error::new(
                        parallax_storage_abi::ErrorKind::Timeout,
                        format!(
                            "PostgreSQL at {} did not finish the audit COPY within {} ms \
                             (storage.postgresql.queryTimeout): the connection was closed; the batch may or \
                             may not have been committed",
                            self.spec.location,
                            limit.as_millis()
                        ),
                    ));
                }
            },
        };
        // A failure is rolled back before anything else is asked on this connection (the conflict's
        // explanation); a client whose rollback failed is closed rather than reused.
        let lost = match &outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.is_closed()),
            Err(_) => Some(false),
        };
        let clean = match lost {
            Some(lost) if !lost && !client.is_closed() => client.batch_execute("ROLLBACK").await.is_ok(),
            _ => true,
        };
        let result = match outcome {
            Ok(Ok(())) => {
                if let Some(fresh) = &self.fresh {
                    fresh.wrote();
                }
                Ok(())
            }
            Err(e) => Err(e),
            Ok(Err(e)) if is_unique_violation(&client, &e) => Err(explain_conflict(&client, rows, &e).await),
            Ok(Err(e)) => {
                if let (Some(fresh), true) = (&self.fresh, client.is_closed() || e.is_closed()) {
                    fresh.wrote(); // it may have committed
                }
                Err(copy_error(&client, &e))
            }
        };
        if clean {
            self.spec.budget.put_back_copy(client);
        }
        result
    }
}

/// `BEGIN`, the head record locked, the rows copied with their links, the head moved, `COMMIT`. The outer
/// error: the head record is missing (rolled back by the caller).
async fn chained_copy(
    client: &Client,
    rows: &[AuditRow],
    details: &[Option<&str>],
    entries: &[AuditEntry],
) -> std::result::Result<std::result::Result<(), tokio_postgres::Error>, Error> {
    let run = async {
        let Some(mut head) = chain::begin_and_lock(client).await? else { return Ok(None) };
        copy_audit(client, rows, details, entries, &mut head).await?;
        chain::move_head_and_commit(client, &head).await?;
        Ok(Some(()))
    };
    match run.await {
        Ok(Some(())) => Ok(Ok(())),
        Ok(None) => Err(chain::no_head()),
        Err(e) => Ok(Err(e)),
    }
}

/// A unique key refused a row (the id, or the chain's sequence number); the connection is still usable.
fn is_unique_violation(client: &Client, e: &tokio_postgres::Error) -> bool {
    !client.is_closed()
        && !e.is_closed()
        && e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Which entry the id key refused, by the same rule as every backend ([`rules::explain_audit_conflict`]),
/// asked after the failed `COPY` (which stored nothing): the server's detail names a key in its own words,
/// this names the same first clashing entry as SQLite and the file store.
///
/// The sequence number's index refuses a row only when an entry holding the next position was written around
/// the plugin (the head record is behind the chain).
async fn explain_conflict(client: &Client, rows: &[AuditRow], e: &tokio_postgres::Error) -> Error {
    if e.as_db_error().and_then(|d| d.constraint()) == Some(chain::SEQ_INDEX) {
        let detail = e.as_db_error().map(|d| d.detail().unwrap_or_default().to_string()).unwrap_or_default();
        return Error::internal(format!(
            "the audit chain's next sequence number is already held by an entry its head record does not know \
             ({detail}): an entry was written around the plugin; nothing of the batch was stored. Run `parallax \
             storage audit verify`"
        ));
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    match client.query("SELECT id FROM audit_logs WHERE id = ANY($1)", &[&ids]).await {
        Ok(found) => {
            // Hyphenated lower case, as the adapter normalised the ids the client gave.
            let text = |id: Uuid| id.hyphenated().to_string();
            let stored: HashSet<String> = found.iter().map(|r| text(r.get(0))).collect();
            let names: Vec<String> = ids.into_iter().map(text).collect();
            rules::explain_audit_conflict(names.iter().map(String::as_str), |id| stored.contains(id))
        }
        Err(e) => copy_error(client, &e),
    }
}

/// Each row's link is computed just before the row is written: the writer sends every few kilobytes, so the
/// server inserts the first rows while the next ones are hashed.
async fn copy_audit(
    client: &Client,
    rows: &[AuditRow],
    details: &[Option<&str>],
    entries: &[AuditEntry],
    head: &mut Head,
) -> std::result::Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY audit_logs (id, timestamp, action, actor, resource_type, resource_id, details, ip_address, \
             user_agent, chain_seq, chain_prev, chain_hash) FROM STDIN (FORMAT binary)",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::JSONB,
        Type::INET,
        Type::TEXT,
        Type::INT8,
        Type::BYTEA,
        Type::BYTEA,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for ((r, details), e) in rows.iter().zip(details).zip(entries) {
        let l = audit_chain::next_link(head, e);
        let ts = UNIX_EPOCH + Duration::from_micros(super::models::from_pg(r.timestamp).max(0) as u64);
        let details = details.map(JsonbText);
        let ip = r.ip_address.map(Inet);
        writer
            .as_mut()
            .write(&[
                &r.id,
                &ts,
                &r.action,
                &r.actor,
                &r.resource_type,
                &r.resource_id,
                &details,
                &ip,
                &r.user_agent,
                &l.seq,
                &l.prev.as_slice(),
                &l.hash.as_slice(),
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// The error kind of a failed `COPY`, from the connection's state and the server's SQLSTATE.
fn copy_error(client: &Client, e: &tokio_postgres::Error) -> Error {
    let detail = e.source().map(|s| s.to_string()).unwrap_or_default();
    if client.is_closed() || e.is_closed() {
        return Error::connection_lost(format!("during an audit COPY: {e} {detail}"));
    }
    match e.code() {
        Some(c) => match crate::error::pg_sqlstate_kind(c) {
            Some(kind) => Error::new(kind, format!("audit COPY failed: {detail}")).with_schema_hint(),
            None => Error::internal(format!("audit COPY failed: {e} {detail}")),
        },
        None => Error::internal(format!("audit COPY failed: {e} {detail}")),
    }
}

/// JSON text already validated by the adapter, sent as binary `jsonb` without parsing it again (version byte 1,
/// then the text; the server parses it as the `::jsonb` cast would): audit `COPY` and a copy's owned pages.
#[derive(Debug)]
pub(super) struct JsonbText<'a>(pub(super) &'a str);

impl ToSql for JsonbText<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&[1]); // JSONB binary format version
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
    to_sql_checked!();
}

/// An INET value with its prefix length.
#[derive(Debug)]
struct Inet(IpNetwork);

impl ToSql for Inet {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        proto::inet_to_sql(self.0.ip(), self.0.prefix(), out);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INET
    }
    to_sql_checked!();
}
