//! Audit batches by binary `COPY`, the fastest way into PostgreSQL. diesel-async has no COPY and does not
//! expose its client, so this keeps a few raw tokio-postgres clients, opened with the same `ConnectSpec` (TLS
//! included) as the diesel pool.

use std::{
    error::Error as StdError,
    sync::{Arc, Mutex},
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

use super::{connect::ConnectSpec, models::AuditRow};
use crate::error::{Error, Result};

/// Most idle raw clients kept for COPY.
const MAX_IDLE: usize = 2;

pub struct CopyPool {
    spec: Arc<ConnectSpec>,
    idle: Mutex<Vec<Client>>,
}

impl CopyPool {
    pub fn new(spec: Arc<ConnectSpec>) -> Self {
        CopyPool { spec, idle: Mutex::new(Vec::new()) }
    }

    async fn client(&self) -> Result<Client> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        match reused {
            Some(c) => Ok(c),
            None => super::connect::connect_raw(&self.spec).await.map_err(|e| {
                Error::unavailable(format!("cannot connect to PostgreSQL at {}: {e}", self.spec.location))
            }),
        }
    }

    fn put_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !client.is_closed() && idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }

    /// Appends `rows` in one `COPY … FROM STDIN (FORMAT binary)`: all rows or none.
    pub async fn audit(&self, rows: &[AuditRow], details: &[Option<&str>]) -> Result<()> {
        let client = self.client().await?;
        let result = copy_audit(&client, rows, details).await;
        self.put_back(client);
        result
    }
}

async fn copy_audit(client: &Client, rows: &[AuditRow], details: &[Option<&str>]) -> Result<()> {
    let fail = |e: tokio_postgres::Error| {
        let detail = e.source().map(|s| s.to_string()).unwrap_or_default();
        if e.is_closed() {
            Error::unavailable(format!("the database connection was lost during COPY: {e} {detail}"))
        } else if detail.contains("duplicate key") {
            Error::conflict(format!("audit batch refused: {detail}"))
        } else {
            Error::internal(format!("audit COPY failed: {e} {detail}"))
        }
    };
    let sink = client
        .copy_in(
            "COPY audit_logs (id, timestamp, action, actor, resource_type, resource_id, details, ip_address, \
             user_agent) FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(fail)?;
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
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (r, details) in rows.iter().zip(details) {
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
            ])
            .await
            .map_err(fail)?;
    }
    writer.finish().await.map_err(fail)?;
    Ok(())
}

/// JSON text already validated by the adapter, sent as JSONB without parsing it again.
#[derive(Debug)]
struct JsonbText<'a>(&'a str);

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
