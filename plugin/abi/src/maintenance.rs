//! Maintenance operations: the one way low-frequency operations (cleanup and retention runs, archive,
//! import/export, metrics, verification, …) cross the boundary.
//!
//! They all go through one trait method, `StorageBackend::maintenance` (added in ABI 2.1.0), as JSON text:
//!
//! ```text
//! request:  {"op": "describe", "version": 1, "params": {…}}      params optional, op-specific
//! response: {"op": "describe", "version": 1, "result": {…}}      failures are the call's StorageError
//! ```
//!
//! Each operation's documents are versioned on their own. Rules:
//! - A new operation is a new `op` name, with version 1. A change to an operation's request (a new field, a
//!   changed meaning) is a new version of that op; a plugin keeps answering the versions it supports.
//! - Requests are strict: an unknown field in the envelope or in an op's `params` is refused as
//!   `InvalidInput`, so an older plugin never ignores what a newer host asked for.
//! - Responses are tolerant: a plugin may add a field to a result within a version; readers ignore unknown
//!   fields.
//! - An op, or a version of an op, the plugin does not support is answered with `Unsupported` naming it and
//!   listing what it does support ([`unsupported_op`]). `describe` (version 1) is supported by every plugin
//!   of ABI 2.1.0 or later and lists the rest, so a host can ask before it calls.
//!
//! The typed request and result of each op live here (e.g. [`Describe`]) or in a module of their own
//! ([`crate::retention`]: `cleanup`, `retention_status`, `retention_run`); the host's client offers each as a
//! plain call.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{ErrorKind, StorageError, ABI_VERSION};

/// The ABI version that appended `StorageBackend::maintenance`.
pub const MAINTENANCE_SINCE: &str = "2.1.0";

/// The `describe` op: what the plugin is and which maintenance ops (and document versions) it supports.
pub const DESCRIBE: &str = "describe";

/// A maintenance request document.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// The operation's name.
    pub op: String,
    /// The version of the op's documents.
    pub version: u32,
    /// The op's parameters; `null` (or absent) when it takes none.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
}

/// A maintenance response document.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MaintenanceResponse {
    /// The operation's name.
    pub op: String,
    /// The version of the op's documents.
    pub version: u32,
    /// The op's result.
    pub result: serde_json::Value,
}

/// The result of `describe`, version 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Describe {
    /// The plugin's ABI version ([`ABI_VERSION`] of the crate it was built with).
    pub abi_version: String,
    /// The plugin crate's version.
    pub plugin_version: String,
    /// Every op the plugin supports, with the document versions of each.
    pub ops: Vec<OpVersions>,
}

/// One supported op and its document versions, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpVersions {
    /// The operation's name.
    pub op: String,
    /// Its document versions, oldest first.
    pub versions: Vec<u32>,
}

impl MaintenanceRequest {
    /// A request for `op` at document `version` with `params`.
    pub fn new(op: &str, version: u32, params: serde_json::Value) -> Self {
        MaintenanceRequest { op: op.to_string(), version, params }
    }

    /// `{"op":"describe","version":1}`.
    pub fn describe() -> Self {
        Self::new(DESCRIBE, 1, serde_json::Value::Null)
    }

    /// The document as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a maintenance request serializes")
    }

    /// Parses a request document; `InvalidInput` naming what is wrong and the expected shape.
    pub fn parse(text: &str) -> Result<Self, StorageError> {
        serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "invalid maintenance request ({e}); expected {{\"op\": NAME, \"version\": N, \"params\": {{…}}}}, \
                 e.g. {}",
                MaintenanceRequest::describe().to_json()
            ))
        })
    }

    /// The op's parameters as `T` (strict: unknown fields are refused if `T` denies them).
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, StorageError> {
        serde_json::from_value(self.params.clone()).map_err(|e| {
            invalid(format!("invalid params for maintenance op {} version {}: {e}", self.op, self.version))
        })
    }
}

impl MaintenanceResponse {
    /// The response to `request` with `result`.
    pub fn new<T: Serialize>(request: &MaintenanceRequest, result: &T) -> Self {
        MaintenanceResponse {
            op: request.op.clone(),
            version: request.version,
            result: serde_json::to_value(result).expect("a maintenance result serializes"),
        }
    }

    /// The document as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a maintenance response serializes")
    }

    /// Parses a response document; a malformed one is the plugin's bug (`Internal`).
    pub fn parse(text: &str) -> Result<Self, StorageError> {
        serde_json::from_str(text).map_err(|e| {
            StorageError::new(
                ErrorKind::Internal,
                format!("the plugin sent an invalid maintenance response: {e}"),
            )
        })
    }

    /// The result as `T`.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T, StorageError> {
        serde_json::from_value(self.result.clone()).map_err(|e| {
            StorageError::new(
                ErrorKind::Internal,
                format!(
                    "the plugin's result for maintenance op {} version {} is invalid: {e}",
                    self.op, self.version
                ),
            )
        })
    }
}

fn invalid(message: String) -> StorageError {
    StorageError::new(ErrorKind::InvalidInput, message)
}

/// `Unsupported` for an op, or a version of it, that the plugin does not support, listing what it does.
pub fn unsupported_op(request: &MaintenanceRequest, supported: &[OpVersions]) -> StorageError {
    let list = supported
        .iter()
        .map(|o| {
            let v: Vec<String> = o.versions.iter().map(u32::to_string).collect();
            format!("{} (version {})", o.op, v.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let what = match supported.iter().find(|o| o.op == request.op) {
        Some(_) => format!("version {} of maintenance op {:?}", request.version, request.op),
        None => format!("maintenance op {:?}", request.op),
    };
    StorageError::new(
        ErrorKind::Unsupported,
        format!("this plugin (ABI {ABI_VERSION}) does not support {what}; it supports {list}"),
    )
}

/// `Unsupported` for a trait method appended in ABI `since` that the plugin does not have. `plugin_abi` is the
/// plugin's [`crate::PluginInfo::abi_version`] when the caller knows it (the host's client does; the trait's
/// default body, which runs in the host without the plugin's info, does not).
pub fn missing_method(method: &str, since: &str, plugin_abi: Option<&str>) -> StorageError {
    let plugin = match plugin_abi {
        Some(v) => format!("the plugin speaks storage ABI {v}"),
        None => format!("the plugin was built against a storage ABI older than {since}"),
    };
    StorageError::new(
        ErrorKind::Unsupported,
        format!(
            "{plugin}, which has no `{method}` call (added in ABI {since}); this host speaks ABI {ABI_VERSION}: \
             upgrade the plugin to a build of ABI {since} or later"
        ),
    )
}

/// Whether ABI version `have` (`major.minor.patch`) includes what was added in `since`: same major, and a minor
/// (then patch) at least as high. An unparsable version has nothing.
pub fn abi_has(have: &str, since: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64, u64)> {
        let mut it = v.trim().splitn(3, '.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    }
    match (parse(have), parse(since)) {
        (Some(h), Some(s)) => h.0 == s.0 && (h.1, h.2) >= (s.1, s.2),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_are_strict() {
        let text = MaintenanceRequest::describe().to_json();
        assert_eq!(text, r#"{"op":"describe","version":1}"#);
        assert_eq!(MaintenanceRequest::parse(&text).unwrap(), MaintenanceRequest::describe());
        let e = MaintenanceRequest::parse(r#"{"op":"describe","version":1,"dryRun":true}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.message.contains("dryRun"), "{e}");
        let e = MaintenanceRequest::parse("{}").unwrap_err();
        assert!(e.message.contains("op") && e.message.contains(r#"{"op":"describe","version":1}"#), "{e}");
    }

    #[test]
    fn unsupported_ops_and_versions_are_named() {
        let supported = [OpVersions { op: DESCRIBE.into(), versions: vec![1] }];
        let e = unsupported_op(&MaintenanceRequest::new("archive", 1, serde_json::Value::Null), &supported);
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("\"archive\"") && e.message.contains("describe (version 1)"), "{e}");
        let e = unsupported_op(&MaintenanceRequest::new(DESCRIBE, 7, serde_json::Value::Null), &supported);
        assert!(e.message.contains("version 7 of maintenance op \"describe\""), "{e}");
    }

    #[test]
    fn abi_versions_compare_within_a_major() {
        assert!(abi_has("2.1.0", "2.1.0"));
        assert!(abi_has("2.3.0", "2.1.0"));
        assert!(!abi_has("2.0.0", "2.1.0"));
        assert!(!abi_has("3.1.0", "2.1.0"));
        assert!(!abi_has("garbage", "2.1.0"));
        assert!(abi_has(ABI_VERSION, MAINTENANCE_SINCE));
    }

    #[test]
    fn missing_methods_name_both_versions() {
        let e = missing_method("maintenance", MAINTENANCE_SINCE, Some("2.0.0"));
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("2.0.0") && e.message.contains(ABI_VERSION), "{e}");
    }
}
