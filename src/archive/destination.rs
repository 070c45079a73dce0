//! Where archives are written and read: `s3://bucket/prefix/`, `file:///abs/path/` or a local path, behind one
//! [`ObjectStore`] API so every step (write, read back, list, delete orphans) is the same code for all of
//! them. Keys inside a destination are relative to its root (`executions/2024/01/<run-id>-0001.ndjson.gz`),
//! which makes an archive relocatable: copy the prefix elsewhere and it still verifies and restores.
//!
//! Errors name the destination as the operator gave it and, for S3, the endpoint; never a key or a secret.

use std::sync::Arc;

use object_store::{path::Path, ObjectStore};
use parallax_storage_abi::ErrorKind;

use crate::{
    config::ArchiveConfig,
    error::{Error, Result},
};

/// What kind of store a destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    S3,
    Local,
}

/// An opened destination.
#[derive(Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    /// The prefix inside the store (empty for a local directory, whose store is rooted at it).
    root: Path,
    /// The destination as given.
    text: String,
    /// Where requests go, for messages (`http://127.0.0.1:9000`, `AWS S3 (us-east-1)`, a directory).
    endpoint: String,
    pub kind: Kind,
    /// `storage.archive.partSize` and `maxObjectSize`.
    pub part_size: usize,
    pub max_object_bytes: u64,
    /// A local destination's directory (its objects are files below it).
    local_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the store: object_store's builders and some stores print credentials in `Debug`.
        f.debug_struct("Destination").field("text", &self.text).field("endpoint", &self.endpoint).finish()
    }
}

/// The forms a destination may take, for messages.
pub const FORMS: &str = "s3://bucket/prefix/, file:///absolute/path/ or a local directory path";

use std::os::unix::fs::PermissionsExt;

impl Destination {
    /// Makes the object at `key` owner-only (`0600`) when the destination is a local directory: object_store
    /// writes files with the process umask. A failure is logged, not fatal (the directories are `0700`).
    pub fn owner_only(&self, key: &str) {
        let Some(dir) = &self.local_dir else { return };
        let file = dir.join(key);
        let mode = std::fs::Permissions::from_mode(crate::private::FILE_MODE);
        if let Err(e) = std::fs::set_permissions(&file, mode) {
            tracing::warn!(target: "parallax_storage::access", path = %file.display(), error = %e, "cannot make an archive file owner-only");
        }
    }

    /// Parses `text` and builds its store; no request is made. `create`: a local directory that does not
    /// exist is created (an archive run); otherwise it must exist (verify, restore, a dry run).
    pub fn open(text: &str, cfg: &ArchiveConfig, create: bool) -> Result<Destination> {
        match parse(text, true)? {
            Parsed::S3(rest) => s3(text, rest, cfg),
            Parsed::Local(dir) => local(text, &dir, cfg, create),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The destination as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The store path of a key relative to the root.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The key relative to the root of a store path under it.
    pub fn relative(&self, p: &Path) -> Option<String> {
        let parts: Vec<String> = p.prefix_match(&self.root)?.map(|s| s.as_ref().to_string()).collect();
        Some(parts.join("/"))
    }

    /// One harmless request (list at most the first level under the root), so that bad credentials, a
    /// missing bucket or an unreachable endpoint show up before anything is written (dry runs, the start of a
    /// run).
    pub async fn probe(&self) -> Result<()> {
        self.store
            .list_with_delimiter(Some(&self.root))
            .await
            .map(|_| ())
            .map_err(|e| self.error("cannot reach the destination", e))
    }

    /// A failed request as our error: the kind from what failed (`NotFound`, permission, a precondition,
    /// a broken connection), the message naming `doing`, the destination and the endpoint. object_store's own
    /// messages carry URLs without credentials; they are kept for the detail.
    pub fn error(&self, doing: &str, e: object_store::Error) -> Error {
        // object_store reports some S3 answers (a list on a missing bucket, a refused signature on a list)
        // as generic errors; the S3 error code in the body says what happened.
        if let Some((kind, what)) = s3_fault(&e.to_string()) {
            return Error::new(kind, format!("{doing} at {} ({}): {what}: {e}", self.text, self.endpoint));
        }
        let kind = match &e {
            object_store::Error::NotFound { .. } => ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                ErrorKind::Conflict
            }
            // Wrong or missing credentials: the operator's settings are what needs fixing.
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                ErrorKind::InvalidInput
            }
            _ => ErrorKind::Unavailable,
        };
        Error::new(kind, format!("{doing} at {} ({}): {e}", self.text, self.endpoint))
    }
}

enum Parsed<'a> {
    /// What follows `s3://`.
    S3(&'a str),
    Local(std::path::PathBuf),
}

/// Which form `text` has; no I/O. `relative`: a relative path is taken against the current directory (a
/// command line) rather than refused (a config file, read by a long-running process).
fn parse(text: &str, relative: bool) -> Result<Parsed<'_>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(format!("destination is empty; expected {FORMS}")));
    }
    if let Some(rest) = trimmed.strip_prefix("s3://") {
        return Ok(Parsed::S3(rest));
    }
    if let Some(rest) = trimmed.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(Error::invalid(format!(
                "destination {text:?}: a file URL needs an absolute path (file:///var/backups/parallax/)"
            )));
        }
        return Ok(Parsed::Local(std::path::PathBuf::from(rest)));
    }
    if trimmed.contains("://") {
        return Err(Error::invalid(format!(
            "destination {}: unsupported scheme; expected {FORMS}",
            shown_url(text)
        )));
    }
    let p = std::path::PathBuf::from(trimmed);
    if p.is_absolute() {
        return Ok(Parsed::Local(p));
    }
    if !relative {
        return Err(Error::invalid(format!(
            "destination {text:?} is a relative path, which would depend on the directory the process starts \
             in; write an absolute path or a file:/// URL"
        )));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::invalid(format!("destination {text:?}: relative path, and {e}")))?;
    Ok(Parsed::Local(cwd.join(p)))
}

/// Checks the form of a destination without any I/O or environment (the S3 bucket and prefix rules
/// included; credentials and endpoint are checked when it is opened). For `storage.retention.
/// archiveDestination`, with `relative` false.
pub fn check_syntax(text: &str, relative: bool) -> std::result::Result<(), String> {
    match parse(text, relative).map_err(|e| e.0.message.to_string())? {
        Parsed::S3(rest) => parse_s3(text, rest).map(|_| ()).map_err(|e| e.0.message.to_string()),
        Parsed::Local(_) => Ok(()),
    }
}

fn local(text: &str, dir: &std::path::Path, cfg: &ArchiveConfig, create: bool) -> Result<Destination> {
    if create {
        owner_only_tree(text, dir)?;
    } else if !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("destination {text:?}: directory {} does not exist", dir.display()),
        ));
    }
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| Error::invalid(format!("destination {text:?}: {e}")))?
        .with_fsync(true)
        .with_automatic_cleanup(true);
    Ok(Destination {
        store: Arc::new(store),
        root: Path::default(),
        text: text.to_string(),
        endpoint: dir.display().to_string(),
        kind: Kind::Local,
        part_size: cfg.part_size as usize,
        max_object_bytes: cfg.max_object_bytes,
        local_dir: Some(dir.to_path_buf()),
    })
}

/// A local destination about to be written: created owner-only (`0700`) where missing, so that other local users
/// cannot read what an archive or export puts there (object_store writes the files themselves with the process
/// umask). Below an existing root that others may enter, the table directories are created owner-only before
/// anything is written into them; an existing table directory that others may read is named in a warning.
fn owner_only_tree(text: &str, dir: &std::path::Path) -> Result<()> {
    let failed = |d: &std::path::Path, e: std::io::Error| {
        Error::invalid(format!("destination {text:?}: cannot create directory {}: {e}", d.display()))
    };
    crate::private::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    if crate::private::exposure(dir, "").is_none() {
        return Ok(());
    }
    for table in super::format::Table::ALL {
        let sub = dir.join(table.dir());
        match crate::private::create_dir(&sub) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Some(w) = crate::private::exposure(&sub, "the archive directory") {
                    tracing::warn!(target: "parallax_storage::access", "{w}");
                }
            }
            Err(e) => return Err(failed(&sub, e)),
        }
    }
    Ok(())
}

/// What an S3 error answer means, from its error code (`<Code>…</Code>`) or HTTP status in object_store's
/// message: the kind, and what to tell the operator.
fn s3_fault(msg: &str) -> Option<(ErrorKind, &'static str)> {
    let code = msg.split_once("<Code>").and_then(|(_, r)| r.split_once("</Code>")).map(|(c, _)| c);
    let status =
        msg.split_once("status code: ").and_then(|(_, r)| r.get(..3)).and_then(|s| s.parse::<u16>().ok());
    Some(match (code, status) {
        (Some("NoSuchBucket"), _) => {
            (ErrorKind::NotFound, "the bucket does not exist (create it, or fix the destination)")
        }
        (Some("NoSuchKey"), _) => (ErrorKind::NotFound, "no such object"),
        (Some("SignatureDoesNotMatch"), _) => {
            (ErrorKind::InvalidInput, "the server refused the signature: the secret access key is wrong")
        }
        (Some("InvalidAccessKeyId" | "NotSignedUp"), _) => {
            (ErrorKind::InvalidInput, "the server does not know the access key id")
        }
        (Some("ExpiredToken" | "InvalidToken" | "TokenRefreshRequired"), _) => {
            (ErrorKind::InvalidInput, "the session token is invalid or expired")
        }
        (Some("RequestTimeTooSkewed"), _) => {
            (ErrorKind::InvalidInput, "the server refused the request time: this machine's clock is off")
        }
        (Some("AccessDenied"), _) | (_, Some(401 | 403)) => {
            (ErrorKind::InvalidInput, "access denied (check the credentials and the bucket's policy)")
        }
        (_, Some(500..=599)) => (ErrorKind::Unavailable, "the server failed the request"),
        _ => return None,
    })
}

/// The settings of an S3 destination once `storage.archive` is merged over the AWS environment. No `Debug`:
/// it holds the secret.
struct S3Settings {
    bucket: String,
    /// The key prefix, without slashes at either end (empty: the bucket's root).
    prefix: String,
    /// `None`: AWS itself.
    endpoint: Option<String>,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    allow_http: bool,
}

/// The environment variables read for S3 settings (the rest of the `AWS_*` family is ignored: no profiles,
/// no instance metadata, no web identity).
const AWS_ENV: [&str; 8] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
];

/// The process environment for [`s3_settings`]; an empty value counts as unset.
fn process_env(name: &str) -> Option<String> {
    debug_assert!(AWS_ENV.contains(&name));
    non_empty(std::env::var(name).ok())
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.trim().is_empty())
}

/// `s3://bucket/prefix/`: settings from `storage.archive` over the AWS environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`/
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`). Refuses a destination without credentials (object_store would
/// otherwise ask the EC2 metadata endpoint), naming the missing keys.
fn s3(text: &str, rest: &str, cfg: &ArchiveConfig) -> Result<Destination> {
    let s = s3_settings(text, rest, cfg, &process_env)?;
    let endpoint_shown = match &s.endpoint {
        Some(e) => shown_endpoint(e),
        None => format!("AWS S3 ({})", s.region),
    };
    install_crypto_provider();
    let timeout = std::time::Duration::from_millis(cfg.timeout_ms.max(1));
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: cfg.retries as usize,
        // Bounded: every attempt may take the whole request timeout, and no more than five minutes in all
        // (object_store retries with the same signature, which S3 accepts for fifteen minutes).
        retry_timeout: timeout
            .saturating_mul(cfg.retries.saturating_add(1))
            .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(300)),
    };
    let options = object_store::ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
        .with_allow_http(s.allow_http);
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&s.bucket)
        .with_region(&s.region)
        .with_access_key_id(&s.access_key_id)
        .with_secret_access_key(&s.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(s.allow_http)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(token) = &s.session_token {
        builder = builder.with_token(token);
    }
    if let Some(endpoint) = &s.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
    }
    // Never `{builder:?}`: its Debug prints the secret. Build errors are about the URL and the settings.
    let store = builder.build().map_err(|e| {
        Error::invalid(format!("destination {text:?} ({endpoint_shown}): cannot set up the S3 client: {e}"))
    })?;
    let root = if s.prefix.is_empty() {
        Path::default()
    } else {
        Path::parse(&s.prefix)
            .map_err(|e| Error::invalid(format!("destination {text:?}: key prefix: {e}")))?
    };
    Ok(Destination {
        store: Arc::new(store),
        root,
        text: text.trim().to_string(),
        endpoint: endpoint_shown,
        kind: Kind::S3,
        part_size: cfg.part_size as usize,
        max_object_bytes: cfg.max_object_bytes,
        local_dir: None,
    })
}

/// reqwest is built without a rustls crypto provider (object_store's `aws` feature would pull aws-lc): it
/// panics when a client is built and the process has none. Ring's is installed once, in this library's own
/// copy of rustls; an `Err` means one is there already.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An endpoint for messages: any `user:password@` removed (up to the last `@`: a password may hold a `/`).
fn shown_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, h)| h)),
        None => endpoint.rsplit_once('@').map_or(endpoint, |(_, h)| h).to_string(),
    }
}

/// A destination URL for messages: anything up to the last `@` hidden (it may be `key:secret@`).
fn shown_url(text: &str) -> String {
    let t = text.trim();
    match (t.split_once("://"), t.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, after))) => format!("{scheme}://***@{after}"),
        _ => t.to_string(),
    }
}

/// Parses `rest` (what follows `s3://`) and merges `cfg` over `env`; no I/O.
fn s3_settings(
    text: &str,
    rest: &str,
    cfg: &ArchiveConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Settings> {
    let (bucket, prefix) = parse_s3(text, rest)?;
    let endpoint = cfg
        .endpoint
        .clone()
        .map(|e| (e, "storage.archive.endpoint"))
        .or_else(|| env("AWS_ENDPOINT_URL_S3").map(|e| (e, "AWS_ENDPOINT_URL_S3")))
        .or_else(|| env("AWS_ENDPOINT_URL").map(|e| (e, "AWS_ENDPOINT_URL")));
    let allow_http = match cfg.allow_http {
        Some(b) => b,
        None => match env("AWS_ALLOW_HTTP") {
            None => false,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(Error::invalid(format!(
                        "destination {text:?}: AWS_ALLOW_HTTP is {v:?}; expected true or false"
                    )))
                }
            },
        },
    };
    let endpoint = match endpoint {
        None => None,
        Some((e, from)) => {
            let e = e.trim().to_string();
            let shown = shown_endpoint(&e);
            let lower = e.to_ascii_lowercase();
            if lower.starts_with("http://") {
                if !allow_http {
                    return Err(Error::invalid(format!(
                        "destination {text:?}: endpoint {shown} (from {from}) is plain HTTP, which is refused \
                         unless allowed: set storage.archive.allowHttp: true or AWS_ALLOW_HTTP=true (for a \
                         local or otherwise trusted network only), or use https://"
                    )));
                }
            } else if !lower.starts_with("https://") {
                return Err(Error::invalid(format!(
                    "destination {text:?}: endpoint {shown:?} (from {from}) is not a URL; expected \
                     https://host[:port] or http://host:port"
                )));
            }
            if e.contains('@') {
                return Err(Error::invalid(format!(
                    "destination {text:?}: endpoint {shown} (from {from}) carries credentials; give them as \
                     storage.archive.accessKeyId/secretAccessKey or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                )));
            }
            Some(e)
        }
    };
    let region = cfg
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    let access_key_id = cfg.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret_access_key = cfg
        .secret_access_key
        .as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let session_token =
        cfg.session_token.as_ref().map(|s| s.expose().to_string()).or_else(|| env("AWS_SESSION_TOKEN"));
    let (access_key_id, secret_access_key) = match (access_key_id, secret_access_key) {
        (Some(a), Some(s)) => (a, s),
        (a, s) => {
            let mut missing = Vec::new();
            if a.is_none() {
                missing.push("the access key id (storage.archive.accessKeyId or AWS_ACCESS_KEY_ID)");
            }
            if s.is_none() {
                missing
                    .push("the secret access key (storage.archive.secretAccessKey or AWS_SECRET_ACCESS_KEY)");
            }
            return Err(Error::invalid(format!(
                "destination {text:?}: no S3 credentials: missing {}. Instance metadata, profiles and web \
                 identity are not used",
                missing.join(" and ")
            )));
        }
    };
    Ok(S3Settings {
        bucket,
        prefix,
        endpoint,
        region,
        access_key_id,
        secret_access_key,
        session_token,
        allow_http,
    })
}

/// `bucket[/prefix][/]` → (bucket, prefix without slashes at the ends).
fn parse_s3(text: &str, rest: &str) -> Result<(String, String)> {
    let rest = rest.trim();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') || bucket.contains(':') {
        return Err(Error::invalid(format!(
            "destination {}: the bucket may not carry credentials or a port; expected s3://bucket/prefix/ \
             (credentials go in storage.archive or the AWS environment, the endpoint in storage.archive.endpoint \
             or AWS_ENDPOINT_URL)",
            shown_url(text)
        )));
    }
    if let Err(why) = check_bucket(bucket) {
        return Err(Error::invalid(format!(
            "destination {text:?}: bucket name {bucket:?} {why}; expected s3://bucket/prefix/"
        )));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.starts_with('/') || prefix.split('/').any(|p| p.is_empty() && !prefix.is_empty()) {
        return Err(Error::invalid(format!(
            "destination {text:?}: the key prefix {prefix:?} has an empty segment (`//`)"
        )));
    }
    if let Some(bad) = prefix.split('/').find(|p| *p == "." || *p == "..") {
        return Err(Error::invalid(format!(
            "destination {text:?}: the key prefix may not contain {bad:?} segments"
        )));
    }
    if prefix.contains('?') || prefix.contains('#') {
        return Err(Error::invalid(format!(
            "destination {text:?}: the key prefix may not contain `?` or `#`"
        )));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// S3's bucket naming rules (general purpose buckets): 3–63 characters of lower-case letters, digits, `.` and
/// `-`, starting and ending with a letter or digit, no `..`, not an IP address.
fn check_bucket(b: &str) -> std::result::Result<(), &'static str> {
    if b.is_empty() {
        return Err("is missing");
    }
    if b.len() < 3 || b.len() > 63 {
        return Err("must be 3 to 63 characters long");
    }
    if !b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-') {
        return Err("may only contain lower-case letters, digits, `.` and `-`");
    }
    let first_last = [b.as_bytes()[0], b.as_bytes()[b.len() - 1]];
    if !first_last.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("must start and end with a letter or digit");
    }
    if b.contains("..") {
        return Err("may not contain `..`");
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("may not be an IP address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN";

    fn full() -> ArchiveConfig {
        ArchiveConfig {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some(Secret::new(SECRET)),
            session_token: Some(Secret::new(TOKEN)),
            allow_http: Some(true),
            ..ArchiveConfig::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn settings(url: &str, cfg: &ArchiveConfig, env: &[(&str, &str)]) -> Result<S3Settings> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| {
            assert!(AWS_ENV.contains(&k), "reads {k}, which is not in AWS_ENV");
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        s3_settings(url, url.strip_prefix("s3://").unwrap(), cfg, &lookup)
    }

    #[track_caller]
    fn refused(r: Result<S3Settings>, needles: &[&str]) -> String {
        let e = match r {
            Ok(s) => panic!("expected an error mentioning {needles:?}, got bucket {:?}", s.bucket),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{msg}");
        for n in needles {
            assert!(msg.contains(n), "{msg:?} does not mention {n:?}");
        }
        for secret in [SECRET, TOKEN, "sk-in-url"] {
            assert!(!msg.contains(secret), "{msg:?} shows a secret");
        }
        msg
    }

    #[test]
    fn bucket_and_prefix_with_or_without_slashes() {
        for (url, bucket, prefix) in [
            ("s3://backups", "backups", ""),
            ("s3://backups/", "backups", ""),
            ("s3://backups/parallax", "backups", "parallax"),
            ("s3://backups/parallax/executions/", "backups", "parallax/executions"),
            ("s3://my.bucket-01/a b/c", "my.bucket-01", "a b/c"),
        ] {
            let s = settings(url, &full(), &[]).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((s.bucket.as_str(), s.prefix.as_str()), (bucket, prefix), "{url}");
        }
    }

    #[test]
    fn bad_bucket_names_are_refused_by_rule() {
        for (url, why) in [
            ("s3://", "is missing"),
            ("s3:///prefix/", "is missing"),
            ("s3://ab/", "3 to 63"),
            (&format!("s3://{}/", "a".repeat(64)), "3 to 63"),
            ("s3://Backups/", "lower-case"),
            ("s3://back_ups/", "lower-case"),
            ("s3://-backups/", "start and end"),
            ("s3://backups./", "start and end"),
            ("s3://back..ups/", "`..`"),
            ("s3://192.168.1.10/", "IP address"),
        ] {
            refused(settings(url, &full(), &[]), &[why, "s3://bucket/prefix/"]);
        }
        for url in ["s3://backups//x/", "s3://backups/a//b/", "s3://backups/a/../b", "s3://backups/a?x=1"] {
            refused(settings(url, &full(), &[]), &["prefix"]);
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_showing_them() {
        let msg = refused(settings("s3://AKID:sk-in-url@backups/p/", &full(), &[]), &["credentials"]);
        assert!(msg.contains("s3://***@backups/p/") && !msg.contains("AKID"), "{msg}");
        // Real secrets hold `/` and `+`: the bucket segment then ends inside the secret.
        let msg = refused(settings("s3://AKID:sk-in/url+x@backups/p/", &full(), &[]), &["credentials"]);
        assert!(!msg.contains("AKID") && !msg.contains("sk-in") && !msg.contains("url+x"), "{msg}");
        let e = check_syntax("s3://AKID:sk-in/url@backups/", false).unwrap_err();
        assert!(!e.contains("AKID") && !e.contains("sk-in"), "{e}");
        let e = check_syntax("gs://AKID:sk-in/url@backups/", false).unwrap_err();
        assert!(!e.contains("AKID") && !e.contains("sk-in"), "{e}");
    }

    #[test]
    fn config_wins_over_the_environment() {
        let env = [
            ("AWS_ACCESS_KEY_ID", "env-key"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_REGION", "env-region"),
            ("AWS_ENDPOINT_URL", "https://env.example"),
            ("AWS_ALLOW_HTTP", "false"),
        ];
        let s = settings("s3://b-1/p/", &full(), &env).unwrap();
        assert_eq!(s.access_key_id, "AKIDEXAMPLE");
        assert_eq!(s.secret_access_key, SECRET);
        assert_eq!(s.session_token.as_deref(), Some(TOKEN));
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s.allow_http);

        let s = settings("s3://b-1/p/", &ArchiveConfig::default(), &env).unwrap();
        assert_eq!(s.access_key_id, "env-key");
        assert_eq!(s.secret_access_key, "env-secret");
        assert_eq!(s.session_token.as_deref(), Some("env-token"));
        assert_eq!(s.region, "env-region");
        assert_eq!(s.endpoint.as_deref(), Some("https://env.example"));
        assert!(!s.allow_http);
    }

    #[test]
    fn environment_precedence_and_defaults() {
        let keys = [("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")];
        let s = settings("s3://bkt/", &ArchiveConfig::default(), &keys).unwrap();
        assert_eq!((s.region.as_str(), s.endpoint.as_deref(), s.allow_http), ("us-east-1", None, false));
        assert_eq!(s.session_token, None);

        let more = [
            keys[0],
            keys[1],
            ("AWS_DEFAULT_REGION", "default-region"),
            ("AWS_ENDPOINT_URL", "https://generic.example"),
            ("AWS_ENDPOINT_URL_S3", "http://s3-specific.example:9000"),
            ("AWS_ALLOW_HTTP", "TRUE"),
        ];
        let s = settings("s3://bkt/", &ArchiveConfig::default(), &more).unwrap();
        assert_eq!(s.region, "default-region");
        assert_eq!(s.endpoint.as_deref(), Some("http://s3-specific.example:9000"));
        assert!(s.allow_http);
        let mut with_region = more.to_vec();
        with_region.push(("AWS_REGION", "region"));
        assert_eq!(settings("s3://bkt/", &ArchiveConfig::default(), &with_region).unwrap().region, "region");

        let bad = [keys[0], keys[1], ("AWS_ALLOW_HTTP", "maybe")];
        refused(settings("s3://bkt/", &ArchiveConfig::default(), &bad), &["AWS_ALLOW_HTTP", "\"maybe\""]);
    }

    #[test]
    fn missing_credentials_are_named_and_metadata_is_never_asked() {
        let msg = refused(
            settings("s3://bkt/p/", &ArchiveConfig::default(), &[]),
            &["s3://bkt/p/", "AWS_ACCESS_KEY_ID", "accessKeyId", "AWS_SECRET_ACCESS_KEY", "secretAccessKey"],
        );
        assert!(msg.contains("Instance metadata"), "{msg}");
        let only_key = ArchiveConfig { access_key_id: Some("k".into()), ..ArchiveConfig::default() };
        let msg = refused(settings("s3://bkt/p/", &only_key, &[]), &["AWS_SECRET_ACCESS_KEY"]);
        assert!(!msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
        let msg = refused(
            settings("s3://bkt/p/", &ArchiveConfig::default(), &[("AWS_SECRET_ACCESS_KEY", SECRET)]),
            &["AWS_ACCESS_KEY_ID"],
        );
        assert!(!msg.contains("AWS_SECRET_ACCESS_KEY"), "{msg}");
        // Empty counts as unset (process_env filters; the config parser refuses empty strings).
        assert_eq!(non_empty(Some("  ".into())), None);
        assert_eq!(non_empty(Some("x".into())).as_deref(), Some("x"));
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let cfg = ArchiveConfig { allow_http: None, ..full() };
        refused(
            settings("s3://bkt/", &cfg, &[]),
            &["plain HTTP", "allowHttp", "AWS_ALLOW_HTTP=true", "127.0.0.1:9000"],
        );
        let cfg = ArchiveConfig { allow_http: Some(false), ..full() };
        refused(settings("s3://bkt/", &cfg, &[("AWS_ALLOW_HTTP", "true")]), &["allowHttp"]);
        let cfg = ArchiveConfig { allow_http: None, endpoint: None, ..full() };
        let s = settings("s3://bkt/", &cfg, &[("AWS_ENDPOINT_URL", "http://h:1"), ("AWS_ALLOW_HTTP", "1")])
            .unwrap();
        assert!(s.allow_http);
        let cfg = ArchiveConfig { endpoint: Some("ftp://h/".into()), ..full() };
        refused(settings("s3://bkt/", &cfg, &[]), &["not a URL", "https://"]);
        for e in ["https://user:sk-in-url@h.example/", "https://user:sk-in/url@h.example/"] {
            let cfg = ArchiveConfig { endpoint: Some(e.into()), ..full() };
            let msg =
                refused(settings("s3://bkt/", &cfg, &[]), &["carries credentials", "https://h.example"]);
            assert!(!msg.contains("user:") && !msg.contains("sk-in"), "{msg}");
        }
    }

    #[test]
    fn s3_error_codes_say_what_to_fix() {
        let body = |status: &str, code: &str| {
            format!("Generic S3 error: Error performing GET http://h/b in 1ms - Server returned non-2xx status code: {status}: <?xml version=\"1.0\"?><Error><Code>{code}</Code></Error>")
        };
        for (status, code, kind, needle) in [
            ("404 Not Found", "NoSuchBucket", ErrorKind::NotFound, "bucket does not exist"),
            ("403 Forbidden", "SignatureDoesNotMatch", ErrorKind::InvalidInput, "secret access key"),
            ("403 Forbidden", "InvalidAccessKeyId", ErrorKind::InvalidInput, "access key id"),
            ("400 Bad Request", "ExpiredToken", ErrorKind::InvalidInput, "session token"),
            ("403 Forbidden", "RequestTimeTooSkewed", ErrorKind::InvalidInput, "clock"),
            ("403 Forbidden", "AccessDenied", ErrorKind::InvalidInput, "access denied"),
            ("403 Forbidden", "SomethingNew", ErrorKind::InvalidInput, "access denied"),
            ("503 Service Unavailable", "SlowDown", ErrorKind::Unavailable, "server failed"),
        ] {
            let (k, what) = s3_fault(&body(status, code)).unwrap_or_else(|| panic!("{code}: no meaning"));
            assert_eq!(k, kind, "{code}");
            assert!(what.contains(needle), "{code}: {what}");
        }
        assert_eq!(s3_fault("Generic S3 error: connection refused"), None);
        assert_eq!(s3_fault(&body("409 Conflict", "BucketAlreadyExists")), None);
    }

    #[test]
    fn endpoints_are_shown_without_credentials() {
        assert_eq!(shown_endpoint("https://u:p@h.example:9000/base/"), "https://h.example:9000/base");
        assert_eq!(shown_endpoint("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(shown_endpoint("http://a@b@c/x"), "http://c/x");
        assert_eq!(shown_endpoint("http://u:p/q@c:1"), "http://c:1");
    }

    #[test]
    fn an_s3_destination_is_built_without_a_request_and_keys_are_under_its_prefix() {
        let d = Destination::open("s3://backups/parallax/exec/", &full(), true).unwrap();
        assert_eq!(d.kind, Kind::S3);
        assert_eq!(d.text(), "s3://backups/parallax/exec/");
        let p = d.path("executions/2024/01/r-0001.ndjson.gz");
        assert_eq!(p.as_ref(), "parallax/exec/executions/2024/01/r-0001.ndjson.gz");
        assert_eq!(d.relative(&p).as_deref(), Some("executions/2024/01/r-0001.ndjson.gz"));
        assert_eq!(d.relative(&Path::from("elsewhere/x")), None);
        let debug = format!("{d:?}");
        assert!(
            debug.contains("http://127.0.0.1:9000") && !debug.contains(SECRET) && !debug.contains(TOKEN),
            "{debug}"
        );
        let e = d.error("writing", object_store::Error::NotFound { path: "k".into(), source: "gone".into() });
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(
            msg.contains("s3://backups/parallax/exec/") && msg.contains("http://127.0.0.1:9000"),
            "{msg}"
        );

        let root = Destination::open("s3://backups", &full(), false).unwrap();
        assert_eq!(root.path("a/b").as_ref(), "a/b");
        let aws =
            Destination::open("s3://backups/x", &ArchiveConfig { endpoint: None, ..full() }, false).unwrap();
        assert!(format!("{aws:?}").contains("AWS S3 (eu-west-1)"), "{aws:?}");
    }

    #[test]
    fn other_schemes_and_relative_file_urls_are_refused() {
        let cfg = ArchiveConfig::default();
        for (text, needle) in
            [("", "empty"), ("gs://b/p", "unsupported scheme"), ("file://rel/x", "absolute path")]
        {
            let e = Destination::open(text, &cfg, false).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }
}

/// Against a real S3-compatible server: `s3s-fs` (as the integration tests' harness, `tests/common/s3.rs`,
/// which this module cannot reach), so the S3 client settings are proven here, below the plugin boundary.
#[cfg(test)]
mod live {
    use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

    use super::*;
    use crate::config::Secret;

    struct Server {
        child: std::process::Child,
        port: u16,
        _root: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const AK: &str = "AKLIVETEST";
    const SK: &str = "live-test-secret-0123456789";

    fn server() -> Server {
        let bin = std::env::var_os("PARALLAX_TEST_S3S_FS")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("PATH")
                    .into_iter()
                    .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .chain(std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin")))
                    .map(|d| d.join("s3s-fs"))
                    .find(|p| p.is_file())
            })
            .expect(
                "the S3 tests need s3s-fs 0.14.1: `cargo install s3s-fs --version =0.14.1 --features binary \
                 --locked` (./test.sh installs it)",
            );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bkt")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                AK,
                "--secret-key",
                SK,
            ])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Server { child, port, _root: root }
    }

    fn cfg(port: u16, key: &str, secret: &str) -> ArchiveConfig {
        ArchiveConfig {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some(key.into()),
            secret_access_key: Some(Secret::new(secret)),
            allow_http: Some(true),
            retries: 0,
            timeout_ms: 5000,
            ..ArchiveConfig::default()
        }
    }

    #[track_caller]
    fn check(e: Error, kind: ErrorKind, url: &str, port: u16, needle: &str) {
        let msg = e.to_string();
        assert!(msg.contains(needle), "{msg:?} does not say {needle:?}");
        assert_eq!(e.kind(), kind, "{msg}");
        assert!(msg.contains(url) && msg.contains(&format!("http://127.0.0.1:{port}")), "{msg}");
        assert!(!msg.contains(SK) && !msg.contains("wrong-secret"), "{msg}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_multipart_get_list_and_the_faults() {
        let s = server();
        let d = Destination::open("s3://bkt/pre/fix/", &cfg(s.port, AK, SK), true).unwrap();
        d.probe().await.unwrap();
        d.store().put(&d.path("a/one.txt"), PutPayload::from_static(b"hello")).await.unwrap();

        // Two parts of 5 MiB and a short last one: S3's minimum part size, as partSize allows.
        let big: Vec<u8> = (0..(11 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let upload = d.store().put_multipart(&d.path("a/big.bin")).await.unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
        for chunk in big.chunks(1 << 20) {
            w.wait_for_capacity(2).await.unwrap();
            w.write(chunk);
        }
        w.finish().await.unwrap();
        let got = d.store().get(&d.path("a/big.bin")).await.unwrap().bytes().await.unwrap();
        assert!(got.as_ref() == big.as_slice(), "multipart object differs");

        use futures_util::StreamExt;
        let mut listed: Vec<String> = d
            .store()
            .list(Some(&d.path("a")))
            .map(|m| d.relative(&m.unwrap().location).unwrap())
            .collect()
            .await;
        listed.sort();
        assert_eq!(listed, ["a/big.bin", "a/one.txt"]);

        // A manifest is written with PutMode::Create: never overwritten.
        let create = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        let again = d.store().put_opts(&d.path("a/one.txt"), PutPayload::from_static(b"x"), create).await;
        check(
            d.error("writing", again.unwrap_err()),
            ErrorKind::Conflict,
            "s3://bkt/pre/fix/",
            s.port,
            "writing",
        );

        let missing = Destination::open("s3://no-such-bucket/p/", &cfg(s.port, AK, SK), false).unwrap();
        check(
            missing.probe().await.unwrap_err(),
            ErrorKind::NotFound,
            "s3://no-such-bucket/p/",
            s.port,
            "bucket does not exist",
        );

        let wrong = Destination::open("s3://bkt/p/", &cfg(s.port, AK, "wrong-secret"), false).unwrap();
        check(
            wrong.probe().await.unwrap_err(),
            ErrorKind::InvalidInput,
            "s3://bkt/p/",
            s.port,
            "secret access key is wrong",
        );
        let put = wrong.store().put(&wrong.path("x"), PutPayload::from_static(b"x")).await.unwrap_err();
        check(
            wrong.error("writing", put),
            ErrorKind::InvalidInput,
            "s3://bkt/p/",
            s.port,
            "secret access key is wrong",
        );
        let unknown = Destination::open("s3://bkt/p/", &cfg(s.port, "AKUNKNOWN", SK), false).unwrap();
        check(
            unknown.probe().await.unwrap_err(),
            ErrorKind::InvalidInput,
            "s3://bkt/p/",
            s.port,
            "access key id",
        );

        let port = s.port;
        drop(s);
        let started = std::time::Instant::now();
        let gone = Destination::open("s3://bkt/p/", &cfg(port, AK, SK), false).unwrap();
        check(gone.probe().await.unwrap_err(), ErrorKind::Unavailable, "s3://bkt/p/", port, "cannot reach");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
