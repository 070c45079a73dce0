use abi_stable::{
    std_types::{RStr, RVec},
    StableAbi,
};

open_enum! {
    /// Severity of a plugin log event; lower is more severe. Open: an unknown level orders by its number.
    #[derive(PartialOrd, Ord)]
    pub struct LogLevel {
        Error = 1 => "error",
        Warn = 2 => "warn",
        Info = 3 => "info",
        Debug = 4 => "debug",
        Trace = 5 => "trace",
    }
}

/// One structured field of a log event, formatted as text by the plugin.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct LogField<'a> {
    pub name: RStr<'a>,
    pub value: RStr<'a>,
}

/// One `tracing` event from inside the plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct LogRecord<'a> {
    pub level: LogLevel,
    pub target: RStr<'a>,
    pub message: RStr<'a>,
    pub fields: RVec<LogField<'a>>,
}

/// The host's log sink: the plugin forwards every event at or below `max_level` to `log`.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct LogSink {
    pub max_level: LogLevel,
    pub log: extern "C" fn(&LogRecord<'_>),
}
