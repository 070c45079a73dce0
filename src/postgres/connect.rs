//! Connecting to PostgreSQL: the seed's keys to a `tokio_postgres::Config`, TLS through rustls with the
//! configured CA (tokio-postgres itself refuses `sslmode=verify-full`, so the modes are implemented here), and
//! the bb8 pool of diesel-async connections (driven by their callers: [`super::driven`]).

use std::{str::FromStr, sync::Arc, time::Duration};

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{
    config::{PostgresConfig, SslMode},
    error::{Error, Result},
};

pub type Pool = bb8::Pool<super::driven::Manager>;

/// Everything needed to open a connection, resolved once at open. Holds the password: never log it.
pub struct ConnectSpec {
    pub pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// `host:port/database` (or the URL without credentials), for messages and health.
    pub location: String,
}

impl std::fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSpec").field("location", &self.location).finish_non_exhaustive()
    }
}

/// Removes `sslmode`/`sslrootcert` from a URL's query (we handle them; tokio-postgres rejects verify-full)
/// and returns them.
fn split_ssl_params(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None, None) };
    let (mut mode, mut ca, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            Some(("sslrootcert", v)) => ca = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, mode, ca)
}

/// The URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".into() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

pub fn spec(cfg: &PostgresConfig) -> Result<ConnectSpec> {
    let mut ssl = cfg.ssl.clone();
    let (mut pg, location) = match &cfg.url {
        Some(url) => {
            let (stripped, mode, ca) = split_ssl_params(url.expose());
            if let Some(mode) = mode {
                let parsed = SslMode::CHOICES.iter().find(|(name, _)| *name == mode).map(|(_, m)| *m);
                ssl.mode = parsed.ok_or_else(|| {
                    Error::invalid(format!(
                        "config: storage.postgresql.url: unknown sslmode {mode:?}; expected disable, prefer, \
                         require, verify-ca or verify-full"
                    ))
                })?;
                ssl.enabled = ssl.mode != SslMode::Disable;
            }
            if let Some(ca) = ca {
                ssl.ca = Some(ca.into());
            }
            let pg = tokio_postgres::Config::from_str(&stripped).map_err(|e| {
                Error::invalid(format!("config: storage.postgresql.url is not a valid PostgreSQL URL: {e}"))
            })?;
            (pg, redact_url(&stripped))
        }
        None => {
            let mut pg = tokio_postgres::Config::new();
            let host = cfg.host.clone().unwrap_or_default();
            let db = cfg.database.clone().unwrap_or_default();
            pg.host(&host).port(cfg.port).dbname(&db);
            if let Some(user) = &cfg.username {
                pg.user(user);
            }
            if let Some(pw) = &cfg.password {
                pg.password(pw.expose());
            }
            (pg, format!("{host}:{}/{db}", cfg.port))
        }
    };
    pg.application_name("parallax-storage")
        .connect_timeout(Duration::from_millis(cfg.pool.acquire_timeout_ms.max(1)))
        .options("-c TimeZone=UTC");
    let mode = if ssl.enabled { ssl.mode } else { SslMode::Disable };
    let tls = match mode {
        SslMode::Disable => {
            pg.ssl_mode(PgSslMode::Disable);
            None
        }
        SslMode::Prefer | SslMode::Require => {
            pg.ssl_mode(if mode == SslMode::Prefer { PgSslMode::Prefer } else { PgSslMode::Require });
            Some(client_config(Arc::new(RelaxedVerifier { mode: Relaxed::AnyCert, provider: provider() }))?)
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            pg.ssl_mode(PgSslMode::Require);
            let roots = Arc::new(roots(ssl.ca.as_deref())?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, Arc::new(provider()))
                    .build()
                    .map_err(|e| Error::invalid(format!("config: storage.postgresql.ssl.ca: {e}")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyCa {
                Arc::new(RelaxedVerifier { mode: Relaxed::ChainOnly(webpki), provider: provider() })
            } else {
                webpki
            };
            Some(client_config(verifier)?)
        }
    };
    Ok(ConnectSpec { pg, tls: tls.map(MakeRustlsConnect::new), location })
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The configured CA file, or the system's trust store when none is configured.
fn roots(ca: Option<&std::path::Path>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad = |what: String| Error::invalid(format!("config: storage.postgresql.ssl.ca: {what}"));
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let mut n = 0;
            for cert in <CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| bad(format!("{} is not a PEM certificate file: {e}", path.display())))?;
                store.add(cert).map_err(|e| bad(format!("{}: {e}", path.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(bad(format!("{} contains no PEM certificates", path.display())));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(Error::invalid(
                    "config: storage.postgresql.ssl.ca is not set and the system trust store is empty; set ssl.ca \
                     to the CA file that signed the server certificate",
                ));
            }
        }
    }
    Ok(store)
}

/// The two modes that check less than full verification. Handshake signatures are always verified.
#[derive(Debug)]
enum Relaxed {
    /// `verify-ca`: the chain must lead to a trusted CA; the host name is not checked.
    ChainOnly(Arc<rustls::client::WebPkiServerVerifier>),
    /// `prefer`/`require`: encrypt, but do not authenticate the server (as libpq does for these modes).
    AnyCert,
}

#[derive(Debug)]
struct RelaxedVerifier {
    mode: Relaxed,
    provider: rustls::crypto::CryptoProvider,
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError as C, Error as E};
        match &self.mode {
            Relaxed::AnyCert => Ok(ServerCertVerified::assertion()),
            Relaxed::ChainOnly(webpki) => {
                match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                    Err(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                        Ok(ServerCertVerified::assertion())
                    }
                    other => other,
                }
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens one connection (TLS as configured) and returns its client and its `Connection` future, unspawned
/// (pooled connections drive it themselves: [`super::driven`]).
pub async fn connect_parts(
    spec: &ConnectSpec,
) -> std::result::Result<(tokio_postgres::Client, super::driven::Driver), ConnectionError> {
    let bad = |e: tokio_postgres::Error| ConnectionError::BadConnection(describe(&e));
    Ok(match &spec.tls {
        None => {
            let (client, conn) = spec.pg.connect(tokio_postgres::NoTls).await.map_err(bad)?;
            (client, Box::pin(conn) as super::driven::Driver)
        }
        Some(tls) => {
            let (client, conn) = spec.pg.connect(tls.clone()).await.map_err(bad)?;
            (client, Box::pin(conn) as super::driven::Driver)
        }
    })
}

/// Opens one raw tokio-postgres client (TLS as configured), its connection driven by a task on the current
/// runtime; the task ends when the client is dropped.
async fn spawned(spec: &ConnectSpec) -> std::result::Result<tokio_postgres::Client, ConnectionError> {
    let (client, driver) = connect_parts(spec).await?;
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Opens one unpooled diesel-async connection (migrations, health).
pub async fn connect(spec: &ConnectSpec) -> std::result::Result<AsyncPgConnection, ConnectionError> {
    AsyncPgConnection::try_from(spawned(spec).await?).await
}

/// Opens one raw tokio-postgres client (`COPY`).
pub async fn connect_raw(spec: &ConnectSpec) -> std::result::Result<tokio_postgres::Client, String> {
    spawned(spec).await.map_err(|e| e.to_string())
}

/// tokio-postgres' error with its causes (the TLS reason sits in the source chain).
fn describe(e: &tokio_postgres::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

pub fn pool(spec: Arc<ConnectSpec>, cfg: &PostgresConfig) -> Pool {
    let p = &cfg.pool;
    bb8::Pool::builder()
        .max_size(p.max_connections)
        .min_idle(Some(p.min_connections.min(p.max_connections)))
        .idle_timeout(Some(Duration::from_millis(p.idle_timeout_ms.max(1))))
        .max_lifetime(Some(Duration::from_millis(p.max_idle_time_ms.max(1))))
        .connection_timeout(Duration::from_millis(p.acquire_timeout_ms.max(1)))
        .build_unchecked(super::driven::Manager { spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_ssl_params() {
        assert_eq!(redact_url("postgres://u:secret@db:5432/x?a=1"), "postgres://u:***@db:5432/x?a=1");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        let (url, mode, ca) =
            split_ssl_params("postgres://u@db/x?sslmode=verify-full&application_name=a&sslrootcert=/ca");
        assert_eq!(url, "postgres://u@db/x?application_name=a");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(ca.as_deref(), Some("/ca"));
    }
}
