//! The plugin's side of maintenance operations (`StorageBackend::maintenance`, ABI 2.1.0): the JSON request
//! documents of [`parallax_storage_abi::maintenance`], dispatched by op and document version. A new operation
//! (cleanup, archive, import/export, metrics, verification) is a new entry in [`SUPPORTED`] and a new arm in
//! [`run`]; nothing else crosses the boundary for it.

use parallax_storage_abi::{
    maintenance::{unsupported_op, Describe, MaintenanceRequest, MaintenanceResponse, OpVersions, DESCRIBE},
    ABI_VERSION,
};

use crate::error::{Error, Result};

/// Every op this plugin answers, with its document versions.
pub const SUPPORTED: &[(&str, &[u32])] = &[(DESCRIBE, &[1])];

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

/// Runs a prepared request; the answer is the response document as JSON text.
pub fn run(req: MaintenanceRequest) -> Result<String> {
    match (req.op.as_str(), req.version) {
        (DESCRIBE, 1) => {
            // `describe` v1 takes no params: refuse any, so a newer host's option is never silently ignored.
            if !req.params.is_null() && req.params != serde_json::json!({}) {
                return Err(Error::invalid(format!(
                    "maintenance op describe version 1 takes no params, got {}",
                    req.params
                )));
            }
            let result = Describe {
                abi_version: ABI_VERSION.to_string(),
                plugin_version: crate::PLUGIN_VERSION.to_string(),
                ops: supported(),
            };
            Ok(MaintenanceResponse::new(&req, &result).to_json())
        }
        _ => Err(Error(unsupported_op(&req, &supported()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parallax_storage_abi::ErrorKind;

    #[test]
    fn describe_lists_the_supported_ops() {
        let text = run(prepare(r#"{"op":"describe","version":1}"#).unwrap()).unwrap();
        let resp = MaintenanceResponse::parse(&text).unwrap();
        assert_eq!((resp.op.as_str(), resp.version), ("describe", 1));
        let d: Describe = resp.result().unwrap();
        assert_eq!(d.abi_version, ABI_VERSION);
        assert_eq!(d.ops, vec![OpVersions { op: "describe".into(), versions: vec![1] }]);
    }

    #[test]
    fn unknown_ops_versions_and_params_are_refused_by_name() {
        let e = prepare(r#"{"op":"archive","version":1}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.0.message.contains("\"archive\""), "{e}");
        let e = prepare(r#"{"op":"describe","version":2}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.0.message.contains("version 2"), "{e}");
        let e = prepare("not json").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e =
            run(prepare(r#"{"op":"describe","version":1,"params":{"verbose":true}}"#).unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.0.message.contains("verbose"), "{e}");
    }
}
