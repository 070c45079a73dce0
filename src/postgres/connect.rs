//! Connecting to PostgreSQL: the seed's keys to a `tokio_postgres::Config`, TLS through rustls with the
//! configured CA (tokio-postgres itself refuses `sslmode=verify-full`, so the modes are implemented here), and
//! the bb8 pool of diesel-async connections (driven by their callers: [`super::driven`]).

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use percent_encoding::percent_decode;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::budget::{Budget, Slot};
use crate::{
    config::{PostgresConfig, SslMode},
    error::{Error, Result},
};

pub type Pool = bb8::Pool<super::driven::Manager>;

/// Everything needed to open a connection, resolved once at open. Holds the password: never log it; text that
/// may quote the settings goes through [`ConnectSpec::redact`].
pub struct ConnectSpec {
    pub pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// `user@host:port/database`, for messages, logs and `Health.location`. Built from the parsed settings,
    /// never from the URL text, so no form of the password can reach it.
    pub location: String,
    /// Every spelling of the password the settings carry (as decoded, and as written in the URL).
    secrets: Vec<String>,
    /// The one bound on this storage's server connections (`pool.maxConnections`).
    pub budget: Arc<Budget>,
    /// `queryTimeout`: how long a pooled connection's call or a `COPY` may wait for the server (`None`: no
    /// limit).
    pub query_timeout: Option<Duration>,
    /// `pool.acquireTimeout`: how long opening a connection may take, handshake and session setup included.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSpec").field("location", &self.location).finish_non_exhaustive()
    }
}

impl ConnectSpec {
    /// The one redaction: `text` with every spelling of the configured password replaced by `***`. Every message
    /// that may quote the connection settings or a driver's words about them passes through here.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    /// The `unavailable` error for a connection that could not be opened (`cause` is redacted).
    pub fn cannot_connect(&self, cause: impl std::fmt::Display) -> Error {
        Error::unavailable(format!(
            "cannot connect to PostgreSQL at {}: {}",
            self.location,
            self.redact(&cause.to_string())
        ))
    }
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// A PostgreSQL URL cut as tokio-postgres reads it: the user info runs to the *first* `@` anywhere after the
/// scheme (so a raw `/` or `?` in a password stays in it), the query starts at the first `?` after that.
struct UrlParts<'a> {
    /// `scheme://` plus the user info and its `@`, if any.
    head: &'a str,
    /// The raw password of the user info (`user:password@`), as written.
    userinfo_password: Option<&'a str>,
    /// Host list and path.
    body: &'a str,
    /// The `key=value` pairs after `?`, raw.
    query: Vec<(&'a str, &'a str)>,
}

impl<'a> UrlParts<'a> {
    fn new(url: &'a str) -> UrlParts<'a> {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let (head, rest) = match url[scheme_end..].find('@') {
            Some(at) => url.split_at(scheme_end + at + 1),
            None => url.split_at(scheme_end),
        };
        let userinfo = &head[scheme_end..head.len().saturating_sub(1).max(scheme_end)];
        let userinfo_password = userinfo.split_once(':').map(|(_, pw)| pw);
        let (body, query) = match rest.split_once('?') {
            Some((body, q)) => (body, q),
            None => (rest, ""),
        };
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        UrlParts { head, userinfo_password, body, query }
    }

    /// Raw values of the query keys that tokio-postgres would read as `key` (keys are percent-decoded).
    fn values(&self, key: &str) -> impl Iterator<Item = &'a str> + '_ {
        let key = key.to_string();
        self.query.iter().filter(move |(k, _)| decode(k) == key).map(|(_, v)| *v)
    }
}

fn decode(s: &str) -> String {
    percent_decode(s.as_bytes()).decode_utf8_lossy().into_owned()
}

/// Removes `sslmode`/`sslrootcert` from a URL's query (we handle them; tokio-postgres rejects verify-full)
/// and returns them, decoded.
fn split_ssl_params(url: &str) -> (String, Option<String>, Option<String>) {
    let parts = UrlParts::new(url);
    let mode = parts.values("sslmode").last().map(decode);
    let ca = parts.values("sslrootcert").last().map(decode);
    let kept: Vec<String> = parts
        .query
        .iter()
        .filter(|(k, _)| !matches!(decode(k).as_str(), "sslmode" | "sslrootcert"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut stripped = format!("{}{}", parts.head, parts.body);
    if !kept.is_empty() {
        stripped.push('?');
        stripped.push_str(&kept.join("&"));
    }
    (stripped, mode, ca)
}

/// Every spelling of a password that `url` carries: the user info's and any `password=` query value, both as
/// written and decoded.
fn url_secrets(url: &str) -> Vec<String> {
    let parts = UrlParts::new(url);
    let raw: Vec<&str> = parts.userinfo_password.into_iter().chain(parts.values("password")).collect();
    let mut out = Vec::new();
    for r in raw {
        out.push(r.to_string());
        out.push(decode(r));
    }
    out
}

/// `user@host:port[,host:port…]/database` from parsed settings: the location shown everywhere.
fn location(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let user = pg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("{user}{}/{}", hosts.join(","), pg.get_dbname().unwrap_or(""))
}

/// The connection facts of `cfg`'s primary (tests); `metrics` is the storage's registry, where the budget counts waits
/// and acquire timeouts.
#[cfg(test)]
pub fn spec(cfg: &PostgresConfig, metrics: Arc<crate::metrics::Metrics>) -> Result<ConnectSpec> {
    Ok(specs(cfg, metrics)?.0)
}

/// One [`ConnectSpec`] per host, each with a budget of its own (`pool.maxConnections` per host): the primary
/// (`primary`, else the top-level `host`/`port` or `url`) and each of `replicas` in configuration order. The
/// replicas share the primary's user, password, database, TLS mode and CA; `verify-full` checks each host's
/// certificate against that host's own name (tokio-postgres passes the name it connects to).
pub fn specs(
    cfg: &PostgresConfig,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(ConnectSpec, Vec<ConnectSpec>)> {
    let base = base(cfg)?;
    let make = |pg: tokio_postgres::Config| ConnectSpec {
        location: redact(&location(&pg), &base.secrets),
        pg,
        tls: base.tls.clone(),
        secrets: base.secrets.clone(),
        budget: Arc::new(Budget::new(&cfg.pool, metrics.clone())),
        query_timeout: (cfg.query_timeout_ms > 0).then(|| Duration::from_millis(cfg.query_timeout_ms)),
        connect_timeout: Duration::from_millis(cfg.pool.acquire_timeout_ms.max(1)),
    };
    let primary = match &cfg.primary {
        Some(hp) => {
            let mut pg = on_host(&base.pg, &hp.host, hp.port.unwrap_or(5432));
            pg.target_session_attrs(base.pg.get_target_session_attrs());
            pg
        }
        None => base.pg.clone(),
    };
    let replicas = cfg.replicas.iter().map(|hp| make(on_host(&base.pg, &hp.host, hp.port.unwrap_or(5432))));
    let replicas = replicas.collect();
    Ok((make(primary), replicas))
}

/// A new config for `host:port` with `base`'s settings (never a clone of `base` with the host changed:
/// `Config::host` appends to the host list). `target_session_attrs` is not copied: a replica is read-only.
fn on_host(base: &tokio_postgres::Config, host: &str, port: u16) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host(host).port(port);
    if let Some(v) = base.get_user() {
        pg.user(v);
    }
    if let Some(v) = base.get_password() {
        pg.password(v);
    }
    if let Some(v) = base.get_dbname() {
        pg.dbname(v);
    }
    if let Some(v) = base.get_options() {
        pg.options(v);
    }
    if let Some(v) = base.get_application_name() {
        pg.application_name(v);
    }
    if let Some(v) = base.get_connect_timeout() {
        pg.connect_timeout(*v);
    }
    if let Some(v) = base.get_tcp_user_timeout() {
        pg.tcp_user_timeout(*v);
    }
    if let Some(v) = base.get_keepalives_interval() {
        pg.keepalives_interval(v);
    }
    if let Some(v) = base.get_keepalives_retries() {
        pg.keepalives_retries(v);
    }
    pg.ssl_mode(base.get_ssl_mode())
        .ssl_negotiation(base.get_ssl_negotiation())
        .keepalives(base.get_keepalives())
        .keepalives_idle(base.get_keepalives_idle())
        .channel_binding(base.get_channel_binding());
    pg
}

/// What every host's [`ConnectSpec`] shares: the settings (with the first host's address), TLS and secrets.
struct Base {
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    secrets: Vec<String>,
}

fn base(cfg: &PostgresConfig) -> Result<Base> {
    let mut ssl = cfg.ssl.clone();
    let mut secrets = Vec::new();
    let mut pg = match &cfg.url {
        Some(url) => {
            secrets = url_secrets(url.expose());
            let (stripped, mode, ca) = split_ssl_params(url.expose());
            if let Some(mode) = mode {
                let parsed = SslMode::CHOICES.iter().find(|(name, _)| *name == mode).map(|(_, m)| *m);
                ssl.mode = parsed.ok_or_else(|| {
                    Error::invalid(format!(
                        "config: storage.postgresql.url: unknown sslmode {:?}; expected disable, prefer, \
                         require, verify-ca or verify-full",
                        redact(&mode, &secrets)
                    ))
                })?;
                ssl.enabled = ssl.mode != SslMode::Disable;
            }
            if let Some(ca) = ca {
                ssl.ca = Some(ca.into());
            }
            let mut pg = tokio_postgres::Config::from_str(&stripped).map_err(|e| {
                Error::invalid(format!(
                    "config: storage.postgresql.url is not a valid PostgreSQL URL: {}",
                    redact(&e.to_string(), &secrets)
                ))
            })?;
            // The config allows a URL without a password next to the `password` key.
            if let (None, Some(pw)) = (pg.get_password(), &cfg.password) {
                pg.password(pw.expose());
            }
            pg
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
            pg
        }
    };
    if let Some(pw) = pg.get_password() {
        secrets.push(String::from_utf8_lossy(pw).into_owned());
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a password is never half-replaced by a shorter spelling of itself.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    // TCP keepalives after 30 s idle: a pooled connection to a host that vanished (no FIN, no RST) is noticed
    // in about a minute instead of the kernel's two hours.
    pg.application_name("parallax-storage")
        .connect_timeout(Duration::from_millis(cfg.pool.acquire_timeout_ms.max(1)))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3)
        .options("-c TimeZone=UTC");
    let mode = ssl.effective_mode();
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
    Ok(Base { pg, tls: tls.map(MakeRustlsConnect::new), secrets })
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
/// (pooled connections drive it themselves: [`super::driven`]). The future holds `slot` (a permit of
/// [`ConnectSpec::budget`]) until it ends, so the permit is free again only once the connection is closed.
/// A connect that fails before any socket opened (refused, unreachable, timed out) frees the permit at once;
/// one that fails later keeps it for the budget's grace, as the server may still have a backend for it.
pub async fn connect_parts(
    spec: &ConnectSpec,
    slot: Slot,
) -> std::result::Result<(tokio_postgres::Client, super::driven::Driver), ConnectionError> {
    let opened = Arc::new(AtomicBool::new(false));
    // tokio-postgres' connect_timeout bounds the TCP connect only: a server (or a network path) that accepts
    // and then answers nothing would hold the handshake forever.
    let connect = async {
        match &spec.tls {
            None => spec
                .pg
                .connect(NoticeSocket { tls: tokio_postgres::NoTls, opened: opened.clone() })
                .await
                .map(|(client, conn)| (client, Box::pin(conn) as super::driven::Driver)),
            Some(tls) => spec
                .pg
                .connect(NoticeSocket { tls: tls.clone(), opened: opened.clone() })
                .await
                .map(|(client, conn)| (client, Box::pin(conn) as super::driven::Driver)),
        }
    };
    let connected = tokio::time::timeout(spec.connect_timeout, connect).await;
    let (client, conn) = match connected {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => {
            if !opened.load(Ordering::SeqCst) {
                slot.release_now();
            }
            return Err(ConnectionError::BadConnection(spec.redact(&describe(&e))));
        }
        Err(_) => {
            if !opened.load(Ordering::SeqCst) {
                slot.release_now();
            }
            return Err(ConnectionError::BadConnection(format!(
                "the server did not complete the connection handshake within {} ms \
                 (storage.postgresql.pool.acquireTimeout)",
                spec.connect_timeout.as_millis()
            )));
        }
    };
    let driver = Box::pin(async move {
        let _slot = slot;
        conn.await
    });
    Ok((client, driver))
}

/// A TLS maker that notes when tokio-postgres asks it for a connector, which it does right after a socket to
/// a server opened (before the TLS and startup handshakes), whichever host it is.
struct NoticeSocket<T> {
    tls: T,
    opened: Arc<AtomicBool>,
}

impl<T: MakeTlsConnect<tokio_postgres::Socket>> MakeTlsConnect<tokio_postgres::Socket> for NoticeSocket<T> {
    type Stream = T::Stream;
    type TlsConnect = T::TlsConnect;
    type Error = T::Error;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<T::TlsConnect, T::Error> {
        self.opened.store(true, Ordering::SeqCst);
        self.tls.make_tls_connect(domain)
    }
}

/// Opens one raw tokio-postgres client (TLS as configured), its connection driven by a task on the current
/// runtime; the task ends (and frees `slot`) when the client is dropped.
async fn spawned(
    spec: &ConnectSpec,
    slot: Slot,
) -> std::result::Result<tokio_postgres::Client, ConnectionError> {
    let (client, driver) = connect_parts(spec, slot).await?;
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Opens one unpooled diesel-async connection (migrations) with a permit of the budget.
pub async fn connect(spec: &ConnectSpec, slot: Slot) -> Result<AsyncPgConnection> {
    let client = spawned(spec, slot).await.map_err(|e| spec.cannot_connect(e))?;
    AsyncPgConnection::try_from(client).await.map_err(|e| spec.cannot_connect(e))
}

/// Opens one raw tokio-postgres client (`COPY`) with a permit of the budget.
pub async fn connect_raw(spec: &ConnectSpec, slot: Slot) -> Result<tokio_postgres::Client> {
    spawned(spec, slot).await.map_err(|e| spec.cannot_connect(e))
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
    builder(cfg).build_unchecked(super::driven::Manager { spec })
}

/// A read replica's pool: the configured pool settings, except that a refused connect fails the checkout at
/// once (the read goes to the primary instead of waiting out `acquireTimeout`) and no idle connections are
/// kept open ahead of use (no reconnect storm against a standby that is down).
pub fn replica_pool(spec: Arc<ConnectSpec>, cfg: &PostgresConfig) -> Pool {
    builder(cfg).retry_connection(false).min_idle(Some(0)).build_unchecked(super::driven::Manager { spec })
}

fn builder(cfg: &PostgresConfig) -> bb8::Builder<super::driven::Manager> {
    let p = &cfg.pool;
    bb8::Pool::builder()
        .max_size(p.max_connections)
        .min_idle(Some(p.min_connections.min(p.max_connections)))
        .idle_timeout(Some(Duration::from_millis(p.idle_timeout_ms.max(1))))
        .max_lifetime(Some(Duration::from_millis(p.max_idle_time_ms.max(1))))
        // acquireTimeout + the budget's grace for a closed connection's permit (`budget.rs`).
        .connection_timeout(super::budget::wait(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn metrics() -> Arc<crate::metrics::Metrics> {
        Arc::new(crate::metrics::Metrics::new(&Default::default(), "postgresql"))
    }

    fn spec_of(url: &str) -> ConnectSpec {
        let mut cfg = crate::config::parse(
            &serde_json::json!({
                "type": "postgresql", "postgresql": { "url": url }
            })
            .to_string(),
        )
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .postgresql
        .unwrap();
        cfg.url = Some(Secret::new(url));
        spec(&cfg, metrics()).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn every_spelling_of_a_url_password_is_redacted() {
        let cases = [
            ("postgresql://u:Pw1secret@db:5432/x?application_name=a", "Pw1secret"),
            ("postgresql://u@db/x?password=Pw2secret", "Pw2secret"),
            ("postgresql://u@db/x?sslmode=disable&password=Pw3secret&application_name=b", "Pw3secret"),
            ("postgresql://u@db/x?pass%77ord=Pw4secret", "Pw4secret"),
            ("postgresql://u:Pw5%2Fsecret@db/x", "Pw5/secret"),
            ("postgresql://u:Pw6/secret@db/x", "Pw6/secret"),
            ("postgresql://u:Pw7?secret@db/x", "Pw7?secret"),
        ];
        for (url, password) in cases {
            let s = spec_of(url);
            assert_eq!(s.pg.get_password(), Some(password.as_bytes()), "{url}");
            assert!(!s.location.contains(password) && !s.location.contains("Pw"), "{url}: {}", s.location);
            assert!(s.location.starts_with("u@db:"), "{url}: {}", s.location);
            let quoted = format!("failed for {url} and {password}");
            let redacted = s.redact(&quoted);
            assert!(!redacted.contains("secret"), "{url}: {redacted}");
        }
    }

    #[test]
    fn a_password_key_next_to_a_url_is_used_and_redacted() {
        let mut cfg = crate::config::parse(
            &serde_json::json!({
                "type": "postgresql", "postgresql": { "url": "postgresql://u@db/x", "password": "Pw8secret" }
            })
            .to_string(),
        )
        .unwrap()
        .postgresql
        .unwrap();
        cfg.password = Some(Secret::new("Pw8secret"));
        let s = spec(&cfg, metrics()).unwrap();
        assert_eq!(s.pg.get_password(), Some("Pw8secret".as_bytes()));
        assert_eq!(s.redact("x Pw8secret y"), "x *** y");
    }

    #[test]
    fn ssl_params_are_taken_from_the_query_only() {
        let (url, mode, ca) =
            split_ssl_params("postgres://u@db/x?sslmode=verify-full&application_name=a&sslrootcert=/ca");
        assert_eq!(url, "postgres://u@db/x?application_name=a");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(ca.as_deref(), Some("/ca"));
        // A `?` inside the password is not the query.
        let (url, mode, _) = split_ssl_params("postgres://u:p?sslmode=x@db/x?sslmode=disable");
        assert_eq!(url, "postgres://u:p?sslmode=x@db/x");
        assert_eq!(mode.as_deref(), Some("disable"));
    }

    /// A spec for `127.0.0.1:port` with one connection allowed.
    fn one_connection_to(port: u16) -> ConnectSpec {
        let cfg = crate::config::parse(
            &serde_json::json!({
                "type": "postgresql",
                "postgresql": {
                    "url": format!("postgresql://u@127.0.0.1:{port}/x"),
                    "pool": { "maxConnections": 1, "acquireTimeout": 1000 }
                }
            })
            .to_string(),
        )
        .unwrap();
        spec(&cfg.postgresql.unwrap(), metrics()).unwrap()
    }

    #[tokio::test]
    async fn a_connect_that_opened_no_socket_frees_its_permit_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = one_connection_to(port); // nothing listens there any more: refused
        let slot = s.budget.for_new(None).await.unwrap();
        assert!(connect_parts(&s, slot).await.is_err());
        assert!(!s.budget.exhausted(), "no socket opened, so no server backend to wait for");
    }

    #[tokio::test]
    async fn a_connect_that_failed_after_opening_a_socket_keeps_its_permit_for_the_grace() {
        // A "server" that accepts and hangs up at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || drop(listener.accept()));
        let s = one_connection_to(port);
        let slot = s.budget.for_new(None).await.unwrap();
        assert!(connect_parts(&s, slot).await.is_err());
        assert!(s.budget.exhausted(), "the server may still be ending the backend of that socket");
        server.join().unwrap();
        tokio::time::sleep(super::super::budget::SERVER_GRACE + Duration::from_millis(100)).await;
        assert!(!s.budget.exhausted());
    }

    #[test]
    fn every_host_gets_a_spec_of_its_own_with_the_shared_settings() {
        let mut cfg = crate::config::parse(
            &serde_json::json!({
                "type": "postgresql",
                "postgresql": {
                    "url": "postgresql://u:Pw9secret@db:5432/x?sslmode=require&application_name=a",
                    "replicas": [{"host": "r1"}, {"host": "r2", "port": 6432}],
                    "readPreference": "replica",
                    "pool": {"maxConnections": 3}
                }
            })
            .to_string(),
        )
        .unwrap()
        .postgresql
        .unwrap();
        cfg.url = Some(Secret::new("postgresql://u:Pw9secret@db:5432/x?sslmode=require&application_name=a"));
        let (primary, replicas) = specs(&cfg, metrics()).unwrap();
        assert_eq!(primary.location, "u@db:5432/x");
        let locations: Vec<&str> = replicas.iter().map(|r| r.location.as_str()).collect();
        assert_eq!(locations, ["u@r1:5432/x", "u@r2:6432/x"]);
        for s in std::iter::once(&primary).chain(&replicas) {
            assert_eq!(s.pg.get_hosts().len(), 1, "{}: one host each", s.location);
            assert_eq!(s.pg.get_password(), Some("Pw9secret".as_bytes()));
            assert_eq!(s.pg.get_dbname(), Some("x"));
            assert_eq!(s.pg.get_application_name(), Some("parallax-storage"));
            assert_eq!(s.pg.get_ssl_mode(), PgSslMode::Require);
            assert!(s.tls.is_some());
            assert_eq!(s.budget.max(), 3, "each host has maxConnections of its own");
            assert_eq!(s.redact("x Pw9secret"), "x ***");
        }
        assert!(!Arc::ptr_eq(&replicas[0].budget, &replicas[1].budget));
        // `primary` replaces the URL's host.
        cfg.primary = Some(crate::config::HostPort { host: "p".into(), port: Some(5433) });
        let (primary, _) = specs(&cfg, metrics()).unwrap();
        assert_eq!(primary.location, "u@p:5433/x");
        assert_eq!(primary.pg.get_hosts().len(), 1);
    }

    #[test]
    fn the_ssl_mode_is_the_configs_effective_mode() {
        let s = spec_of("postgresql://u@db/x");
        assert_eq!(s.pg.get_ssl_mode(), PgSslMode::Disable, "ssl.enabled is false by default");
    }
}
