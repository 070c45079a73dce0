//! Receives the plugin's log events and forwards them to the host's `tracing` subscriber, fields included.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::RwLock,
};

use parallax_storage_abi::{self as abi, LogRecord, LogSink, PluginModRef};

use crate::types::LogLevel;

/// A plugin log event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLog {
    /// Its severity.
    pub level: LogLevel,
    /// The plugin module that logged it (e.g. `parallax_storage::sqlite`).
    pub target: String,
    /// The message.
    pub message: String,
    /// Its structured fields, formatted as text by the plugin.
    pub fields: Vec<(String, String)>,
}

type Hook = Box<dyn Fn(&PluginLog) + Send + Sync>;

static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Also hands every plugin log event to `hook` (for embedding applications and tests).
pub fn set_hook(hook: impl Fn(&PluginLog) + Send + Sync + 'static) {
    *HOOK.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
}

pub(crate) fn install(module: PluginModRef, max_level: abi::LogLevel) {
    (module.set_log_sink())(LogSink { max_level, log: forward });
}

extern "C" fn forward(r: &LogRecord<'_>) {
    // Never unwind into the plugin.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let log = crate::convert::plugin_log(r);
        if let Some(hook) = HOOK.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            hook(&log);
        }
        emit(&log);
    }));
}

fn emit(log: &PluginLog) {
    let fields: String = log.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    let (t, m) = (log.target.as_str(), log.message.as_str());
    match log.level {
        LogLevel::Error => tracing::error!(target: "parallax_storage", plugin_target = t, "{m}{fields}"),
        LogLevel::Warn => tracing::warn!(target: "parallax_storage", plugin_target = t, "{m}{fields}"),
        LogLevel::Info => tracing::info!(target: "parallax_storage", plugin_target = t, "{m}{fields}"),
        LogLevel::Debug => tracing::debug!(target: "parallax_storage", plugin_target = t, "{m}{fields}"),
        LogLevel::Trace => tracing::trace!(target: "parallax_storage", plugin_target = t, "{m}{fields}"),
        // A level from a newer plugin: order it by its number, like the known ones.
        LogLevel::Unknown(n) if abi::LogLevel::from_raw(n) < abi::LogLevel::Error => {
            tracing::error!(target: "parallax_storage", plugin_target = t, "{m}{fields}")
        }
        _ => tracing::trace!(target: "parallax_storage", plugin_target = t, "{m}{fields}"),
    }
}
