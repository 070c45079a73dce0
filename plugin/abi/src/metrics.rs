//! The document of the `metrics` maintenance op (see [`crate::maintenance`] for the envelope and its rules).
//!
//! - `metrics` v1 ([`MetricsParams`] → [`MetricsText`]): the plugin's metrics in the Prometheus text exposition
//!   format (version 0.0.4), ready to append to a host's own `/metrics` or to write for node_exporter's
//!   textfile collector.
//!
//! A metrics crate inside a cdylib has its own statics, so a recorder the host installs never sees the
//! plugin's events: the plugin keeps one registry per open storage object and renders it here. A scrape reads
//! gauges from the pools and from caches the plugin refreshes in the background; it never opens a connection
//! and never waits for the pool (the first scrape of a new storage object waits, bounded, for the first
//! refresh of the table statistics).

use serde::{Deserialize, Serialize};

/// The `metrics` op.
pub const METRICS: &str = "metrics";

/// The content type of [`MetricsText::text`] as an HTTP exporter serves it.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parameters of `metrics` v1: none so far (a newer host's option is refused by name, never ignored).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsParams {}

/// The result of `metrics` v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricsText {
    /// Always [`PROMETHEUS_TEXT_CONTENT_TYPE`] in version 1.
    pub content_type: String,
    /// The exposition: `# HELP`/`# TYPE` lines and samples, one metric family after another, ending in a
    /// newline. Metric names and labels are listed in the README's Monitoring section.
    pub text: String,
}
