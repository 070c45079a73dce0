use abi_stable::{
    std_types::{RStr, RVec},
    StableAbi,
};

open_enum! {
    /// Severity of a plugin log event; lower is more severe. Open: an unknown level orders by its number.
    #[derive(PartialOrd, Ord)]
    pub struct LogLevel {
        /// Errors.
        Error = 1 => "error",
        /// Warnings.
        Warn = 2 => "warn",
        /// Information.
        Info = 3 => "info",
        /// Debugging detail.
        Debug = 4 => "debug",
        /// Tracing detail.
        Trace = 5 => "trace",
    }
}

/// One structured field of a log event, formatted as text by the plugin.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct LogField<'a> {
    /// The field's name.
    pub name: RStr<'a>,
    /// The field's value, formatted as text.
    pub value: RStr<'a>,
}

/// One `tracing` event from inside the plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct LogRecord<'a> {
    /// Its severity.
    pub level: LogLevel,
    /// The plugin module that logged it.
    pub target: RStr<'a>,
    /// The message.
    pub message: RStr<'a>,
    /// Its structured fields.
    pub fields: RVec<LogField<'a>>,
}

/// The host's log sink: the plugin forwards every event at or below `max_level` to `log`.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct LogSink {
    /// The most verbose level the host wants.
    pub max_level: LogLevel,
    /// Called with each event, on the plugin's thread that logged it; must not unwind.
    pub log: extern "C" fn(&LogRecord<'_>),
}
