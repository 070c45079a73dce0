//! Forwards the plugin's `tracing` events to the host's log sink. The plugin's `tracing` is a separate copy
//! from the host's, so without this every event would go nowhere.

use std::{
    fmt::{self, Write as _},
    sync::{Once, RwLock},
};

use abi_stable::std_types::{RStr, RVec};
use parallax_storage_abi::{LogField, LogLevel, LogRecord, LogSink};
use tracing::{field::Field, Event, Level, Subscriber};
use tracing_subscriber::{layer::Context, prelude::*, Layer};

static SINK: RwLock<Option<LogSink>> = RwLock::new(None);
static INSTALL: Once = Once::new();

pub fn set_sink(sink: LogSink) {
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    INSTALL.call_once(|| {
        // Fails only if something in this library already set a global subscriber, which nothing does.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(ForwardLayer));
        // This library has its own copy of std and so its own panic hook: report plugin panics through the
        // host's log sink instead of raw stderr. They are still caught and returned as `Panicked` errors.
        std::panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(target: "parallax_storage::panic", location = %location, "plugin panicked: {payload}");
        }));
    });
}

fn level(l: &Level) -> LogLevel {
    match *l {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    }
}

struct ForwardLayer;

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl tracing::field::Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    // The sink's level can change at run time: never let tracing cache a callsite as disabled.
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        match *SINK.read().unwrap_or_else(|p| p.into_inner()) {
            Some(sink) => level(metadata.level()) <= sink.max_level,
            None => false,
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let Some(sink) = *SINK.read().unwrap_or_else(|p| p.into_inner()) else { return };
        let lvl = level(event.metadata().level());
        if lvl > sink.max_level {
            return;
        }
        let mut c = Collect::default();
        event.record(&mut c);
        let fields: RVec<LogField<'_>> = c
            .fields
            .iter()
            .map(|(n, v)| LogField { name: RStr::from_str(n), value: RStr::from_str(v) })
            .collect();
        let record = LogRecord {
            level: lvl,
            target: RStr::from_str(event.metadata().target()),
            message: RStr::from_str(&c.message),
            fields,
        };
        (sink.log)(&record);
    }
}
