//! The `parallax` command line: argument parsing, logging, the runtime, output and exit codes.
//!
//! Exit codes: 0 success, 1 other failures, 2 usage, configuration or invalid input, 3 not found,
//! 4 conflict, 5 schema (pending or unknown migrations). Failures print one `error: <message>` line to stderr.

mod archive;
pub mod args;
mod audit;
mod executions;
pub mod input;
mod metrics;
mod patterns;
mod render;
mod retention;
mod storage;
mod table;
mod transfer;

use std::io::{IsTerminal, Write};

use clap::{error::ErrorKind as ClapKind, Parser};
use serde_json::Value as Json;
use tracing_subscriber::EnvFilter;

use self::args::{CleanupCmd, Cli, Command, Format, RetentionCmd, StorageCmd};
use crate::{config, loader, Error, ErrorKind, OpenOptions, Plugin, Storage};

pub const EXIT_OTHER: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_CONFLICT: i32 = 4;
pub const EXIT_SCHEMA: i32 = 5;

/// A failure: the exit code and the one-line message printed after `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError { code, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(EXIT_USAGE, message)
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let (code, prefix) = match e.kind {
            ErrorKind::NotFound => (EXIT_NOT_FOUND, false),
            ErrorKind::Conflict => (EXIT_CONFLICT, false),
            ErrorKind::InvalidInput => (EXIT_USAGE, false),
            ErrorKind::Schema => (EXIT_SCHEMA, false),
            _ => (EXIT_OTHER, true),
        };
        let message =
            if prefix { format!("{}: {}", e.kind.as_str(), e.message()) } else { e.message().into() };
        CliError::new(code, message)
    }
}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError::usage(e.to_string())
    }
}

/// What a command prints: one JSON document, or table text.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub json: Json,
    pub table: String,
    /// Printed after the output; the command then fails with its code.
    pub failure: Option<CliError>,
}

impl Output {
    pub fn new(json: Json, table: impl Into<String>) -> Self {
        Output { json, table: table.into(), failure: None }
    }
}

/// Runs the CLI with the process arguments and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_tracing(cli.global.verbose);
    let format = effective_format(&cli);
    match run(cli) {
        Ok(out) => {
            let text = match format {
                Format::Json => {
                    let mut s = serde_json::to_string_pretty(&out.json).unwrap_or_default();
                    s.push('\n');
                    s
                }
                Format::Table => out.table,
            };
            // A closed stdout (e.g. `| head`) is not an error worth reporting.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            out.failure.map_or(0, |e| fail(&e))
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> i32 {
    let _ = writeln!(std::io::stderr().lock(), "error: {}", input::one_line(&e.message));
    e.code
}

fn effective_format(cli: &Cli) -> Format {
    cli.global.format.unwrap_or(Format::Table)
}

/// Help and version go to stdout with exit 0; any other clap error becomes one `error:` line, exit 2.
fn clap_error(e: clap::Error) -> i32 {
    match e.kind() {
        ClapKind::DisplayHelp | ClapKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ClapKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            EXIT_USAGE
        }
        _ => {
            let rendered = e.render().to_string();
            let parts: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let mut message = String::new();
            for part in parts {
                if !message.is_empty() {
                    message.push_str(if message.ends_with(':') { " " } else { "; " });
                }
                message.push_str(part);
            }
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            fail(&CliError::usage(format!("{message} (see --help)")))
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => None,
        1 => Some("info"),
        2 => Some("debug"),
        _ => Some("trace"),
    };
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn run(mut cli: Cli) -> Result<Output, CliError> {
    archive::precheck(&mut cli.command)?;
    transfer::precheck(&mut cli.command)?;
    let cfg = config::resolve_from_env(cli.global.config.as_deref())?;
    let path = loader::locate(cli.global.plugin.as_deref()).map_err(|e| CliError::usage(e.to_string()))?;
    let plugin = Plugin::load(&path).map_err(|e| CliError::new(EXIT_OTHER, e.to_string()))?;
    tracing::debug!(plugin = %path.display(), config = ?cfg.source, "plugin loaded");
    // `copy`: a bad target config fails before the source is opened, naming the file.
    match &mut cli.command {
        Command::Storage(StorageCmd::Copy(args)) => transfer::prepare_copy(&plugin, args)?,
        Command::Storage(StorageCmd::Backup(_)) => transfer::refuse_postgres_backup(&plugin, &cfg.storage)?,
        _ => {}
    }

    if let Command::Storage(StorageCmd::Info) = &cli.command {
        let mut out = storage::info(&plugin, &cfg)?;
        if out.failure.is_none() {
            storage::append_last_run(&plugin, &cfg, &mut out);
        }
        return Ok(out);
    }
    // `metrics --listen`: a bad or busy address fails before the storage is opened.
    let listener = match &cli.command {
        Command::Storage(StorageCmd::Metrics(args)) => {
            args.listen.as_deref().map(metrics::bind).transpose()?
        }
        _ => None,
    };
    // Only `retention serve` runs the retention schedule: any other command is short-lived, and a run it
    // started would be cut short when it exits.
    let serve = matches!(&cli.command, Command::Storage(StorageCmd::Retention(RetentionCmd::Serve)));
    let mut cfg = cfg;
    if !serve {
        without_schedule(&mut cfg.storage);
    }
    // Schema maintenance, and whatever must change nothing in this storage (dry runs, status, metrics, export,
    // backup), opens in maintenance mode: no migration is auto-run, SQLite is not converted to incremental
    // vacuum. A real cleanup, retention run, copy or import opens normally.
    let maintenance = match &cli.command {
        Command::Storage(
            StorageCmd::TestConnection | StorageCmd::Migrate(_) | StorageCmd::Info | StorageCmd::Metrics(_),
        ) => true,
        Command::Storage(StorageCmd::Cleanup(
            CleanupCmd::Executions { common, .. } | CleanupCmd::AuditLogs { common },
        )) => common.dry_run,
        Command::Storage(StorageCmd::Retention(RetentionCmd::Status)) => true,
        // Verifying reads only; it must see the chain as it is (an older plugin's schema is refused by name).
        Command::Storage(StorageCmd::Audit(_)) => true,
        Command::Storage(StorageCmd::Retention(RetentionCmd::Run { dry_run, .. })) => *dry_run,
        Command::Storage(cmd @ (StorageCmd::Archive(_) | StorageCmd::Restore(_))) => {
            archive::changes_nothing(cmd)
        }
        Command::Storage(
            cmd @ (StorageCmd::Copy(_)
            | StorageCmd::Export(_)
            | StorageCmd::Import(_)
            | StorageCmd::Backup(_)),
        ) => transfer::changes_nothing(cmd),
        _ => false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(EXIT_OTHER, format!("cannot start the async runtime: {e}")))?;
    let store = plugin.open_with(&cfg.storage, OpenOptions { maintenance })?;
    let plugin_version = plugin.info().plugin_version;
    runtime.block_on(async {
        let result = match (cli.command, listener) {
            (Command::Storage(StorageCmd::Metrics(_)), Some(listener)) => {
                metrics::serve(&store, listener, &plugin_version).await
            }
            (Command::Storage(StorageCmd::Metrics(_)), None) => metrics::print(&store, &plugin_version).await,
            (command, _) => dispatch(&store, command).await,
        };
        if let Err(e) = store.shutdown().await {
            tracing::warn!("closing the storage failed: {e}");
        }
        result
    })
}

/// Sets `retention.runSchedule: false` in a `storage` config section: the instance opened with it never runs
/// the retention schedule.
pub(crate) fn without_schedule(storage: &mut Json) {
    if let Some(s) = storage.as_object_mut() {
        if let Some(r) = s.entry("retention").or_insert_with(|| serde_json::json!({})).as_object_mut() {
            r.insert("runSchedule".into(), Json::Bool(false));
        }
    }
}

async fn dispatch(store: &Storage, command: Command) -> Result<Output, CliError> {
    match command {
        Command::Storage(cmd) => storage::run(store, cmd).await,
        Command::Patterns(cmd) => patterns::run(store, cmd).await,
        Command::Executions(cmd) => executions::run(store, cmd).await,
        Command::Audit(cmd) => audit::run(store, cmd).await,
    }
}
