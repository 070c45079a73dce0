//! The plugin's side of maintenance operations (`StorageBackend::maintenance`, ABI 2.1.0): the JSON request
//! documents of [`parallax_storage_abi::maintenance`], dispatched by op and document version. A new operation
//! (cleanup, archive, import/export, metrics, verification) is a new entry in [`SUPPORTED`] and a new arm in
//! [`run`]; nothing else crosses the boundary for it.

use parallax_storage_abi::{
    archive::{ArchiveParams, RestoreParams, VerifyParams, ARCHIVE, ARCHIVE_VERIFY, RESTORE},
    audit::{AuditVerifyParams, AUDIT_VERIFY},
    hosts::{HostsParams, HOSTS},
    maintenance::{unsupported_op, Describe, MaintenanceRequest, MaintenanceResponse, OpVersions, DESCRIBE},
    metrics::{MetricsParams, MetricsText, METRICS, PROMETHEUS_TEXT_CONTENT_TYPE},
    retention::{CleanupParams, RetentionRunParams, CLEANUP, RETENTION_RUN, RETENTION_STATUS},
    transfer::{BackupParams, CopyParams, ExportParams, ImportParams, BACKUP, COPY, EXPORT, IMPORT},
    ABI_VERSION,
};

use crate::{
    archive,
    error::{Error, Result},
    retention,
};

/// Every op this plugin answers, with its document versions.
pub const SUPPORTED: &[(&str, &[u32])] = &[
    (DESCRIBE, &[1]),
    (CLEANUP, &[1]),
    (RETENTION_STATUS, &[1]),
    (RETENTION_RUN, &[1]),
    (ARCHIVE, &[1]),
    (ARCHIVE_VERIFY, &[1]),
    (RESTORE, &[1]),
    (METRICS, &[1]),
    (HOSTS, &[1]),
    (COPY, &[1]),
    (EXPORT, &[1]),
    (IMPORT, &[1]),
    (BACKUP, &[1]),
    (AUDIT_VERIFY, &[1]),
];

pub fn supported() -> Vec<OpVersions> {
    SUPPORTED.iter().map(|(op, v)| OpVersions { op: op.to_string(), versions: v.to_vec() }).collect()
}

/// Parses a request and refuses an op or document version this plugin does not support (`Unsupported`,
/// naming it and listing what is supported) before any work starts.
pub fn prepare(request: &str) -> Result<MaintenanceRequest> {
    let req = MaintenanceRequest::parse(request).map_err(Error)?;
    if !SUPPORTED.iter().any(|(op, versions)| *op == req.op && versions.contains(&req.version)) {
        return Err(Error(unsupported_op(&req, &supported())));
    }
    Ok(req)
}

/// Refuses params for an op that takes none, so a newer host's option is never silently ignored.
fn no_params(req: &MaintenanceRequest) -> Result<()> {
    if !req.params.is_null() && req.params != serde_json::json!({}) {
        return Err(Error::invalid(format!(
            "maintenance op {} version {} takes no params, got {}",
            req.op, req.version, req.params
        )));
    }
    Ok(())
}

/// Runs a prepared request; the answer is the response document as JSON text.
pub async fn run<S: crate::contract::Contract>(req: MaintenanceRequest, store: &S) -> Result<String> {
    match (req.op.as_str(), req.version) {
        (CLEANUP, 1) => {
            let params: CleanupParams = req.params().map_err(Error)?;
            let report = retention::run::cleanup(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (RETENTION_STATUS, 1) => {
            no_params(&req)?;
            let status = retention::run::status(store).await?;
            Ok(MaintenanceResponse::new(&req, &status).to_json())
        }
        (RETENTION_RUN, 1) => {
            let params: RetentionRunParams = if req.params.is_null() {
                RetentionRunParams::default()
            } else {
                req.params().map_err(Error)?
            };
            let result = retention::run::retention_run(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &result).to_json())
        }
        (ARCHIVE, 1) => {
            let params: ArchiveParams = req.params().map_err(Error)?;
            let report = archive::run::archive(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (ARCHIVE_VERIFY, 1) => {
            let params: VerifyParams = req.params().map_err(Error)?;
            let report = archive::run::verify(&store.storage_config().archive, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (RESTORE, 1) => {
            let params: RestoreParams = req.params().map_err(Error)?;
            let report = archive::run::restore(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (METRICS, 1) => {
            let _: MetricsParams =
                if req.params.is_null() { MetricsParams::default() } else { req.params().map_err(Error)? };
            let text = crate::metrics::render(store).await?;
            let result = MetricsText { content_type: PROMETHEUS_TEXT_CONTENT_TYPE.to_string(), text };
            Ok(MaintenanceResponse::new(&req, &result).to_json())
        }
        (HOSTS, 1) => {
            let _: HostsParams =
                if req.params.is_null() { HostsParams::default() } else { req.params().map_err(Error)? };
            let report = store.hosts_report().await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (AUDIT_VERIFY, 1) => {
            let params: AuditVerifyParams = if req.params.is_null() {
                AuditVerifyParams::default()
            } else {
                req.params().map_err(Error)?
            };
            let report = crate::audit_chain::verify(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (COPY, 1) => {
            let params: CopyParams = req.params().map_err(Error)?;
            let report = crate::transfer::copy::run(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (EXPORT, 1) => {
            let params: ExportParams = req.params().map_err(Error)?;
            let report = crate::transfer::export::run(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (IMPORT, 1) => {
            let params: ImportParams = req.params().map_err(Error)?;
            let report = crate::transfer::import::run(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (BACKUP, 1) => {
            let params: BackupParams = req.params().map_err(Error)?;
            let report = crate::transfer::backup(store, params).await?;
            Ok(MaintenanceResponse::new(&req, &report).to_json())
        }
        (DESCRIBE, 1) => describe(&req),
        _ => Err(Error(unsupported_op(&req, &supported()))),
    }
}

/// The `describe` op.
fn describe(req: &MaintenanceRequest) -> Result<String> {
    no_params(req)?;
    let result = Describe {
        abi_version: ABI_VERSION.to_string(),
        plugin_version: crate::PLUGIN_VERSION.to_string(),
        ops: supported(),
    };
    Ok(MaintenanceResponse::new(req, &result).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parallax_storage_abi::ErrorKind;

    #[test]
    fn describe_lists_the_supported_ops() {
        let text = describe(&prepare(r#"{"op":"describe","version":1}"#).unwrap()).unwrap();
        let resp = MaintenanceResponse::parse(&text).unwrap();
        assert_eq!((resp.op.as_str(), resp.version), ("describe", 1));
        let d: Describe = resp.result().unwrap();
        assert_eq!(d.abi_version, ABI_VERSION);
        assert_eq!(d.ops[0], OpVersions { op: "describe".into(), versions: vec![1] });
        assert!(d.ops.iter().any(|o| o.op == "cleanup"), "{:?}", d.ops);
        for op in ["copy", "export", "import", "backup"] {
            assert!(d.ops.contains(&OpVersions { op: op.into(), versions: vec![1] }), "{op}: {:?}", d.ops);
        }
    }

    #[test]
    fn unknown_ops_versions_and_params_are_refused_by_name() {
        let e = prepare(r#"{"op":"teleport","version":1}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.0.message.contains("\"teleport\""), "{e}");
        let e = prepare(r#"{"op":"describe","version":2}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.0.message.contains("version 2"), "{e}");
        let e = prepare("not json").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = describe(&prepare(r#"{"op":"describe","version":1,"params":{"verbose":true}}"#).unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.0.message.contains("verbose"), "{e}");
    }
}
