use abi_stable::{
    std_types::{RStr, RVec},
    StableAbi,
};

#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
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
