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
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the store: object_store's builders and some stores print credentials in `Debug`.
        f.debug_struct("Destination").field("text", &self.text).field("endpoint", &self.endpoint).finish()
    }
}

/// The forms a destination may take, for messages.
pub const FORMS: &str = "s3://bucket/prefix/, file:///absolute/path/ or a local directory path";

impl Destination {
    /// Parses `text` and builds its store; no request is made. `create`: a local directory that does not
    /// exist is created (an archive run); otherwise it must exist (verify, restore, a dry run).
    pub fn open(text: &str, cfg: &ArchiveConfig, create: bool) -> Result<Destination> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::invalid(format!("destination is empty; expected {FORMS}")));
        }
        if let Some(rest) = trimmed.strip_prefix("s3://") {
            return s3(text, rest, cfg);
        }
        let dir = if let Some(rest) = trimmed.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(Error::invalid(format!(
                    "destination {text:?}: a file URL needs an absolute path (file:///var/backups/parallax/)"
                )));
            }
            std::path::PathBuf::from(rest)
        } else if trimmed.contains("://") {
            return Err(Error::invalid(format!(
                "destination {text:?}: unsupported scheme; expected {FORMS}"
            )));
        } else {
            let p = std::path::PathBuf::from(trimmed);
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::invalid(format!("destination {text:?}: relative path, and {e}")))?
                    .join(p)
            }
        };
        local(text, &dir, cfg, create)
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

fn local(text: &str, dir: &std::path::Path, cfg: &ArchiveConfig, create: bool) -> Result<Destination> {
    if create {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::invalid(format!("destination {text:?}: cannot create directory {}: {e}", dir.display()))
        })?;
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
    })
}

/// `s3://bucket/prefix/`: settings from `storage.archive` over the AWS environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`,
/// `AWS_ALLOW_HTTP`). Refuses a destination without credentials (object_store would otherwise ask the EC2
/// metadata endpoint), naming the missing keys.
fn s3(text: &str, rest: &str, cfg: &ArchiveConfig) -> Result<Destination> {
    let _ = (rest, cfg);
    Err(Error::unsupported(format!("destination {text:?}: S3 destinations are not built yet")))
}
