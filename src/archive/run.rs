//! One archive, verify or restore run, the same on every backend.

use parallax_storage_abi::archive::{
    ArchiveParams, ArchiveReport, RestoreParams, RestoreReport, VerifyParams, VerifyReport,
};

use super::Store;
use crate::error::{Error, Result};

/// The `archive` op.
pub async fn archive<S: Store>(store: &S, params: ArchiveParams) -> Result<ArchiveReport> {
    let _ = (store, params);
    Err(Error::unsupported("archive is not built yet"))
}

/// The `archive_verify` op (changes nothing; needs no backend).
pub async fn verify(config: &crate::config::ArchiveConfig, params: VerifyParams) -> Result<VerifyReport> {
    let _ = (config, params);
    Err(Error::unsupported("archive verify is not built yet"))
}

/// The `restore` op.
pub async fn restore<S: Store>(store: &S, params: RestoreParams) -> Result<RestoreReport> {
    let _ = (store, params);
    Err(Error::unsupported("restore is not built yet"))
}
