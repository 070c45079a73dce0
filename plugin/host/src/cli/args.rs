//! The command line, as clap derive types. Spellings here are the documented contract.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use super::input::{parse_id, parse_json_arg, parse_time};
use crate::{Json, Timestamp, Uuid};

const ROOT_LONG: &str = "Manage Parallax's durable storage: patterns, execution history and audit logs.

The storage backend is a plugin library (libparallax_storage.so) loaded at run time; it is found next to \
this executable unless --plugin or PARALLAX_STORAGE_PLUGIN names it. The `storage` section of \
parallax.config.yaml (--config, $PARALLAX_CONFIG or ./parallax.config.yaml) configures it.

Examples:
  parallax storage test-connection
  parallax storage migrate status
  parallax patterns put review.yaml
  parallax --output json executions list --status failed --since 24h";

#[derive(Debug, Parser)]
#[command(name = "parallax", version, about = "Parallax storage CLI", long_about = ROOT_LONG)]
#[command(arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// The config file (default: $PARALLAX_CONFIG, then ./parallax.config.yaml, else built-in defaults)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The storage plugin library to load (default: next to this executable)
    #[arg(long, global = true, value_name = "PATH", env = "PARALLAX_STORAGE_PLUGIN")]
    pub plugin: Option<PathBuf>,
    /// How to print results: aligned tables and `key: value` lines, or one JSON document
    #[arg(long = "output", id = "format", visible_alias = "format", global = true, value_enum)]
    #[arg(value_name = "FORMAT")]
    pub format: Option<Format>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG also works
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect the plugin and the configuration, test the connection, run schema migrations
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Store, read, list and delete versioned pattern definitions
    #[command(subcommand)]
    Patterns(PatternsCmd),
    /// Record and query pattern executions and their events
    #[command(subcommand)]
    Executions(ExecutionsCmd),
    /// Append to and query the audit log
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Debug, Subcommand)]
pub enum StorageCmd {
    /// Show the plugin, its backends, the effective configuration and the last retention run
    #[command(long_about = "Show the plugin version and ABI version, the backends this build offers with \
        their embedded migrations, which config file was read, and the effective storage config (secrets \
        redacted) with warnings about keys that have no effect as configured, and for PostgreSQL how \
        writes and reads are routed (primary, replicas, readPreference, maxReplicaLag). Then it opens the \
        storage (without \
        running migrations) to show the retention schedule and the last recorded retention run; when the \
        storage cannot be opened it says why and still succeeds.\n\n\
        Example: parallax storage info --config /etc/parallax/parallax.config.yaml")]
    Info,
    /// Connect to the configured backend and report its version, latency and schema state
    #[command(long_about = "Connect to the configured backend and report the server version, location, \
        round-trip latency, schema version and pending migrations, then every host: for PostgreSQL the \
        primary and each read replica with its role, whether it is reachable, what the server says it is \
        (primary or standby), latency, replay lag, routing state and whether it receives reads now. Works \
        while migrations are pending. Exits 0 when the backend (the primary) is reachable, even with a \
        replica down.\n\nExample: parallax storage test-connection")]
    TestConnection,
    /// Show, apply or roll back schema migrations
    #[command(subcommand)]
    Migrate(MigrateCmd),
    /// Remove old executions or audit entries now (with --dry-run: only report what would go)
    #[command(subcommand)]
    Cleanup(CleanupCmd),
    /// Show, run or serve the scheduled retention policy (storage.retention)
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// Write old executions or audit entries to an archive, verify it, then delete them; check an archive
    #[command(subcommand)]
    Archive(ArchiveCmd),
    /// Re-import an archive into the configured storage (verified first; rows already present are skipped)
    #[command(long_about = RESTORE_LONG)]
    Restore(RestoreArgs),
    /// Copy everything (patterns, executions with events, audit log) into the storage of another config file
    #[command(long_about = COPY_LONG)]
    Copy(CopyArgs),
    /// Write everything (patterns, executions with events, audit log) to a directory or bucket, to import elsewhere
    #[command(long_about = EXPORT_LONG)]
    Export(ExportArgs),
    /// Import an export (or an archive) into the configured storage, verified, refusing a non-empty one
    #[command(long_about = IMPORT_LONG)]
    Import(ImportArgs),
    /// Take a consistent copy of the SQLite file or the file store's tree while Parallax writes
    #[command(long_about = BACKUP_LONG)]
    Backup(BackupArgs),
    /// Print the storage metrics in the Prometheus text format, or serve them over HTTP (--listen)
    #[command(long_about = METRICS_LONG)]
    Metrics(MetricsArgs),
    /// Prove that no audit entry was altered, removed or slipped in (walks the hash chain)
    #[command(subcommand)]
    Audit(StorageAuditCmd),
}

const AUDIT_VERIFY_LONG: &str = "Walk the audit log's hash chain and report: entries checked, the chain's head \
(sequence number and hash), the checkpoint left by retention or archive runs, and every break, each with the \
entry where it shows and its kind: altered (a field changed after the entry was written), missing (entries \
removed, or the newest ones gone), inserted (an entry written around the plugin, or at a position the chain \
does not hold), reordered (entries swapped or moved), head (the chain does not end where its head record, or \
--expect-head, says). Exits 0 when the chain is intact, 1 on any break.

Every entry's hash covers the hash before it, so changing, removing or adding an entry breaks the chain from \
there; someone able to rewrite the whole table (and the head record) can forge a consistent chain: record the \
head elsewhere now and then (--print-head), and check against it later (--expect-head SEQ:HASH), which detects a \
truncation of the newest entries or a rewritten chain. The README's section \"Verifying the audit log\" \
describes the hash (canonical form of an entry) so that anyone can verify it with their own tools.

Examples:
  parallax storage audit verify
  parallax storage audit verify --since 7d --output json
  parallax storage audit verify --print-head
  parallax storage audit verify --expect-head 1204332:3f9c…(64 hex digits)";

#[derive(Debug, Subcommand)]
pub enum StorageAuditCmd {
    /// Walk the audit chain and report every break (exits 1 on a break)
    #[command(long_about = AUDIT_VERIFY_LONG)]
    Verify {
        /// Start at the first entry with a timestamp at or after T (RFC3339, or an age like 7d)
        #[arg(long, value_name = "T", value_parser = parse_time)]
        since: Option<Timestamp>,
        /// Print only the chain's current head (SEQ:HASH) after verifying, to record it elsewhere
        #[arg(long)]
        print_head: bool,
        /// A head recorded earlier (SEQ:HASH, as --print-head printed it): the chain must still hold it
        #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
        expect_head: Option<(i64, String)>,
    },
}

/// `SEQ:HASH`, as `audit verify --print-head` prints it.
fn parse_head(text: &str) -> Result<(i64, String), String> {
    let bad = || {
        format!(
            "{text:?} is not a chain head: give SEQ:HASH as `parallax storage audit verify --print-head` printed it \
             (a sequence number, a colon, 64 hex digits)"
        )
    };
    let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
    let seq: i64 = seq.parse().map_err(|_| bad())?;
    if seq < 1 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The target's config file (its storage section; ${VAR} interpolated, PARALLAX_* overrides not applied)
    #[arg(long, value_name = "FILE")]
    pub to_config: PathBuf,
    /// Write nothing on either side: count what would be copied and what the target already holds
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a target that already holds rows: equal rows are skipped, different ones reported as conflicts
    #[arg(long)]
    pub merge: bool,
    /// The op's parameters, with the resolved target, filled in by the CLI once the plugin is loaded.
    #[arg(skip)]
    pub params: Option<crate::transfer::CopyParams>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write: s3://bucket/prefix/, file:///abs/path/ or a directory path
    #[arg(long, value_name = "URL")]
    pub destination: String,
    /// Count what would be exported and check the destination; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export (or archive) to import: s3://bucket/prefix/, file:///abs/path/ or a directory path
    #[arg(long, value_name = "URL")]
    pub source: String,
    /// Allow a storage that already holds rows: equal rows are skipped, different ones reported as conflicts
    #[arg(long)]
    pub merge: bool,
    /// Verify the source and count what would be imported; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new SQLite file or file store directory (must not exist yet)
    #[arg(long, value_name = "PATH")]
    pub destination: PathBuf,
}

const METRICS_LONG: &str = "Print the plugin's metrics (latency per operation and table, errors, pool, \
table rows and sizes, free disk space, cleanup and archive runs, build info) in the Prometheus text \
exposition format, exactly as the Parallax control plane appends them to its own /metrics. The README's \
Monitoring section lists every metric; deploy/prometheus/parallax-storage.rules.yml has the alert rules.

Print mode (the default) writes the exposition to stdout once, ready for node_exporter's textfile \
collector. Write a temporary file and rename it, so the collector never reads a half-written file:

  parallax storage metrics > $DIR/parallax.prom.$$ && mv $DIR/parallax.prom.$$ $DIR/parallax.prom

--output json prints {\"contentType\": ..., \"text\": ...} instead.

--listen ADDR runs a standalone exporter: it serves GET /metrics on ADDR (HOST:PORT, e.g. \
127.0.0.1:9187; port 0 picks a free port) until SIGINT or SIGTERM, then closes the storage cleanly. The \
address is logged on stderr. One storage object serves every scrape, and a scrape never opens a \
connection. Other paths answer 404, other methods 405, and a scrape that fails answers 503 with the error.

Both modes open the storage without running migrations or the retention schedule: the exporter changes \
nothing. Where to run it:

File store: NOT next to a running Parallax control plane. The file store has a single writer: the second \
process to open it is refused (`unavailable`, naming the holder's pid), so either the exporter or \
Parallax would fail. Let the control plane export the metrics instead.

SQLite: the exporter is a second process on the same database file; that is fine (WAL: readers never \
block the writer). PostgreSQL: fine; the exporter holds its own small pool.

The pool gauges and latencies describe the process that exports them (a standalone exporter's are its \
own, not the control plane's); table rows and sizes, free disk space and the recorded cleanup runs are \
the same from any process.

Examples:
  parallax storage metrics
  parallax storage metrics --listen 127.0.0.1:9187 --config /etc/parallax/parallax.config.yaml";

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve GET /metrics on this address (HOST:PORT) until SIGINT or SIGTERM instead of printing once
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// The parts every archive command's help shares: destinations, S3 settings, progress.
macro_rules! archive_help {
    () => {
        "Destinations (and sources):
  s3://bucket/prefix/         an S3 bucket or any S3-compatible server
  file:///abs/path/           a local directory (three slashes: the path is absolute)
  /abs/path/ or rel/path/     a local directory; a relative path is taken from the current directory

S3 settings come from the storage.archive section of the config file, over the standard AWS environment of \
this process: endpoint (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), region (AWS_REGION, then AWS_DEFAULT_REGION, else us-east-1), \
accessKeyId (AWS_ACCESS_KEY_ID), secretAccessKey (AWS_SECRET_ACCESS_KEY), sessionToken (AWS_SESSION_TOKEN), \
allowHttp (AWS_ALLOW_HTTP, for a plain-HTTP local endpoint); also maxObjectSize, partSize, retries and \
timeout. Secrets never appear in output or errors.

Progress: on a terminal, the elapsed time and the plugin's progress lines (every 2 s on a long run) are \
shown on stderr; when stderr is not a terminal nothing is shown unless -v (RUST_LOG also works). \
--output json prints the result document as is."
    };
}

const ARCHIVE_EXECUTIONS_LONG: &str = concat!(
    "Archive executions whose started_at is older than --older-than AND whose status is final (completed, \
failed, cancelled), with their events embedded (--max-count N: also the final executions beyond the newest \
N) -- the same selection as `parallax storage cleanup executions`. Pending and running executions are never \
archived.

The run writes gzip-compressed newline-delimited JSON objects split by month and size \
(executions/YYYY/MM/<run-id>-NNNN.ndjson.gz), reads each back to check its size and SHA-256, writes the \
manifest last (executions/manifests/<run-id>.json), and only then deletes exactly the archived rows, by id: \
nothing is deleted before the archive is stored and verified. --keep archives without deleting. --dry-run \
changes nothing and writes nothing: it reports what would be archived and checks that the destination can \
be reached. An archive that would remove every execution also needs --yes.

A run that was killed is finished by the next run to the same destination: a stored manifest's rows are \
deleted, objects without a manifest are removed; no object or row is duplicated. The run is recorded (see \
`parallax storage retention status`).

AGE is a number and a unit (s, m, h, d, w), e.g. 30d, 12h, 1d12h.

",
    archive_help!(),
    "

Examples:
  parallax storage archive executions --older-than 30d --dry-run --destination s3://backups/px/
  parallax storage archive executions --older-than 30d --destination s3://backups/parallax/
  parallax storage archive executions --max-count 100000 --destination /var/backups/parallax/ --keep"
);

const ARCHIVE_AUDIT_LONG: &str = concat!(
    "Archive audit entries whose timestamp is older than --older-than, as \
audit_logs/YYYY/MM/<run-id>-NNNN.ndjson.gz with the manifest audit_logs/manifests/<run-id>.json, verify \
them, then delete exactly the archived entries (unless --keep). Nothing is deleted before the archive is \
stored and verified. --dry-run changes nothing and writes nothing. Audit entries are archived by age only \
(no --max-count). An archive that would remove every entry also needs --yes.

",
    archive_help!(),
    "

Examples:
  parallax storage archive audit-logs --older-than 90d --dry-run --destination file:///var/backups/px/
  parallax storage archive audit-logs --older-than 90d --destination s3://backups/parallax/"
);

const ARCHIVE_VERIFY_LONG: &str = concat!(
    "Check an archive without changing anything: every manifest under --source (or the one manifest it \
names), and for every object the manifest lists its size, SHA-256, that it gunzips completely and that \
every line is a record, and the row counts. Objects no manifest names (left by a run that was killed before \
its manifest; the next archive run to that destination removes them) are listed as orphans. Exits 0 when \
everything checks out; otherwise lists each bad object and manifest with what is wrong, and exits 1.

",
    archive_help!(),
    "

Examples:
  parallax storage archive verify --source s3://backups/parallax/
  parallax storage archive verify --source s3://backups/parallax/executions/manifests/<run-id>.json"
);

const RESTORE_LONG: &str = concat!(
    "Import an archive back into the configured storage (any backend, whatever backend it was archived \
from): every manifest under --source, oldest run first, or the one manifest it names. The whole source is \
verified first (sizes, SHA-256, gzip, records): a corrupt or truncated object is refused by name and nothing \
is written. Ids, timestamps, statuses and events are kept; rows already present (by id) are skipped, so a \
restore can be repeated or resumed after an interruption. --dry-run verifies and counts what would be \
inserted, and writes nothing.

",
    archive_help!(),
    "

Examples:
  parallax storage restore --source s3://backups/parallax/ --dry-run
  parallax storage restore --source s3://backups/parallax/executions/manifests/<run-id>.json"
);

/// What copy and import share in their help: what moves, merge, verification, resume, exit codes.
macro_rules! transfer_help {
    () => {
        "Everything moves: every pattern version with its created_at and created_by, every execution in any \
status (pending and running too) with its input, output, error, metadata, tags, timings and all its events in \
order, every audit entry; ids are kept. Search works on the target afterwards (its search entries are built \
as rows land); on PostgreSQL rows land in their month's partition.

A target that already holds rows is refused (exit 4) unless --merge: then rows already present by id with \
equal content are counted as present, and a row present with different content is a conflict, listed and \
never overwritten.

At the end, per table, the rows and a content checksum are computed on both sides (the target's by reading \
back every row it was given) and printed: `verified: counts and checksums equal`, or the mismatch. \
Conflicts and executions changed after the snapshot are left out of both checksums.

Resumable: the run's state is kept in the target. A run that was interrupted (killed, a lost connection) is \
finished by running the same command again, without duplicates.

Exit codes: 0 done (or, with --dry-run, counted); 1 verification mismatch (printed first) or another \
failure; 2 bad input (a bad config file, a bad location); 4 the target is not empty and --merge was not \
given, or conflicts were found (printed first); 5 a schema behind (run `storage migrate up` on that side).

Progress: on a terminal, the elapsed time and the plugin's progress lines are shown on stderr; elsewhere \
nothing is unless -v. --output json prints the report document (per table counts and full checksums)."
    };
}

const COPY_LONG: &str = concat!(
    "Copy everything this storage holds (the source: --config) into the storage described by another \
config file (the target: --to-config FILE), then verify it. The plugin opens the target itself; the \
target's schema must be current (run `parallax --config FILE storage migrate up` first, or set \
migrations.autoRun in FILE).

The target file is read like --config (its storage section, ${VAR} and ${VAR:-default} interpolated), \
but the PARALLAX_* environment overrides (PARALLAX_DATABASE_URL, PARALLAX_DATABASE_PASSWORD, ...) are NOT \
applied to it: they describe this process's storage, the source. A copy into the very storage it reads \
from is refused. Passwords never appear in output, logs or errors.

The snapshot cut: the copying process's clock when the run started. The copy holds every pattern version \
with createdAt <= cut, every execution with startedAt <= cut (with its events as read) and every audit entry \
with timestamp <= cut. Newer rows are \"after the snapshot\": counted and reported, not copied (a second \
copy run catches up with them). An execution that was pending or running when copied and changed before the \
end of the run is reported as \"changed after the snapshot\". The source keeps working during the copy: it \
is read in pages and no long lock is held, so Parallax may keep running; stop it and run the copy again for \
an exact final copy.

Running the copy again after it finished catches up: a new snapshot, and only what is not in the target \
yet is copied (the rows written since); executions that were pending or running are refreshed.

",
    transfer_help!(),
    "

--dry-run writes nothing on either side (neither storage is migrated): it opens both, counts what would be \
copied and what the target already holds.

A file store admits one process at a time: to copy from (or into) one, stop the Parallax process that \
has it open first.

Examples:
  parallax storage copy --to-config prod.yaml --dry-run
  parallax storage copy --to-config prod.yaml
  parallax --output json storage copy --to-config prod.yaml --merge"
);

const EXPORT_LONG: &str = concat!(
    "Write everything this storage holds under a destination, in the archive's format (gzip'd JSON \
lines, see `parallax storage archive --help`) plus a patterns table: patterns/, executions/ (events \
embedded) and audit_logs/, each with its manifest, then export.json last (the snapshot, per table rows \
and checksum): an export without export.json is unfinished, and the next export to that destination \
removes its objects. A destination that holds a finished export is refused. Nothing is deleted or \
changed in the storage (it is opened without running migrations).

The snapshot cut is the process's clock when the export started: pattern versions created, executions \
started and audit entries written at or before it are exported (executions in any status), newer ones \
are counted as \"after the snapshot\". Import it with `parallax storage import --source ...` into any \
backend. --dry-run counts what would be exported and checks the destination; it writes nothing.

",
    archive_help!(),
    "

Examples:
  parallax storage export --destination /var/backups/parallax-export/ --dry-run
  parallax storage export --destination s3://backups/parallax/export-2026-12/"
);

const IMPORT_LONG: &str = concat!(
    "Import an export (`parallax storage export`) or a plain archive into the configured storage (the \
target): patterns, then executions with their events, then audit entries, keeping ids and times. The \
whole source is verified first (sizes, SHA-256, gzip, records): a damaged object is refused by name and \
nothing is written. With export.json the per table checksums are compared with it; a plain archive is \
checked by counts. --dry-run verifies and counts, writes nothing, and does not migrate the storage.

",
    transfer_help!(),
    "

",
    archive_help!(),
    "

Examples:
  parallax --config prod.yaml storage import --source /var/backups/parallax-export/ --dry-run
  parallax --config prod.yaml storage import --source s3://backups/parallax/export-2026-12/"
);

const BACKUP_LONG: &str = "Take a consistent copy of the configured storage while Parallax keeps \
writing, to PATH (an absolute path, or relative to the current directory, that does not exist yet; \
nothing is ever overwritten).

SQLite: SQLite's online copy (VACUUM INTO) into a new file, synced to disk, then checked with PRAGMA \
integrity_check (printed). The copy is an ordinary database file: open it with sqlite3, or point \
sqlite.path at it to restore. Works while Parallax writes (WAL: the copy never blocks the writer for long).

File store: a consistent copy of the whole tree taken under the store's lock, as a new directory that \
opens as a file store. The file store admits one process at a time, so run it when the Parallax process \
that has the store open is stopped (or call the backup op from that process).

PostgreSQL: refused; use pg_dump --format=custom and pg_restore (the README's Backups section has a \
tested example).

The storage is opened without running migrations. --output json prints the report document.

Examples:
  parallax storage backup --destination /var/backups/parallax-2026-12-02.db
  parallax --config files.yaml storage backup --destination /var/backups/parallax-files-2026-12-02";

#[derive(Debug, Subcommand)]
pub enum ArchiveCmd {
    /// Archive old final executions with their events, verify, then delete them (unless --keep)
    #[command(long_about = ARCHIVE_EXECUTIONS_LONG)]
    Executions {
        #[command(flatten)]
        common: ArchiveArgs,
        /// Also archive final executions beyond the newest N (N at least 1)
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        max_count: Option<i64>,
    },
    /// Archive old audit entries, verify, then delete them (unless --keep)
    #[command(name = "audit-logs", long_about = ARCHIVE_AUDIT_LONG)]
    AuditLogs {
        #[command(flatten)]
        common: ArchiveArgs,
        /// Refused: audit entries are archived by age only
        #[arg(long, value_name = "N", hide = true, allow_hyphen_values = true)]
        max_count: Option<String>,
    },
    /// Check an archive's manifests and objects (sizes, SHA-256, gzip, counts); changes nothing
    #[command(long_about = ARCHIVE_VERIFY_LONG)]
    Verify {
        /// The archive: its root (every manifest under it) or one manifest (…/manifests/RUN-ID.json)
        #[arg(long, value_name = "URL")]
        source: String,
    },
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Archive rows older than AGE (30d, 12h, 1d12h; units s, m, h, d, w)
    #[arg(long, value_name = "AGE", allow_hyphen_values = true)]
    pub older_than: Option<String>,
    /// Where to write: s3://bucket/prefix/, file:///abs/path/ or a directory
    #[arg(long, value_name = "URL")]
    pub destination: String,
    /// Change nothing, write nothing; report what would be archived and check the destination
    #[arg(long)]
    pub dry_run: bool,
    /// Archive without deleting the archived rows
    #[arg(long)]
    pub keep: bool,
    /// Confirm an archive that removes every row of the table
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive: its root (every manifest under it) or one manifest (…/manifests/RUN-ID.json)
    #[arg(long, value_name = "URL")]
    pub source: String,
    /// Verify and count what would be inserted; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

const CLEANUP_EXECUTIONS_LONG: &str =
    "Remove executions whose started_at is older than --older-than AND whose \
status is final (completed, failed, cancelled), with their events and search entries. With --max-count N, \
final executions beyond the newest N (counting every status) go as well. Pending and running executions \
are kept unless --include-unfinished; the report says how many old ones were kept.

Start with --dry-run: it changes nothing and reports, per table, the rows that would go, their time range, \
how they would go (whole partitions or months dropped, rows deleted in batches), unfinished rows kept and a \
few sample ids. A cleanup that would remove every execution also needs --yes. Deletion runs in short steps \
so writers keep going; it is recorded (see `parallax storage retention status`). An interrupted cleanup \
leaves a consistent database, and running it again finishes the job. -v shows progress.

AGE is a number and a unit (s, m, h, d, w), e.g. 30d, 12h, 1d12h.

Examples:
  parallax storage cleanup executions --older-than 30d --dry-run
  parallax storage cleanup executions --older-than 30d --max-count 100000
  parallax --output json storage cleanup executions --older-than 90d --include-unfinished";

const CLEANUP_AUDIT_LONG: &str =
    "Remove audit entries whose timestamp is older than --older-than. Start with \
--dry-run: it changes nothing and reports what would go. A cleanup that would remove every entry also needs \
--yes. The run is recorded (see `parallax storage retention status`).

Examples:
  parallax storage cleanup audit-logs --older-than 90d --dry-run
  parallax storage cleanup audit-logs --older-than 90d";

#[derive(Debug, Subcommand)]
pub enum CleanupCmd {
    /// Remove old final executions with their events and search entries
    #[command(long_about = CLEANUP_EXECUTIONS_LONG)]
    Executions {
        #[command(flatten)]
        common: CleanupArgs,
        /// Also remove final executions beyond the newest N (N at least 1)
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        max_count: Option<i64>,
        /// Also remove old pending and running executions (a stuck run is your call)
        #[arg(long)]
        include_unfinished: bool,
    },
    /// Remove old audit entries
    #[command(name = "audit-logs", long_about = CLEANUP_AUDIT_LONG)]
    AuditLogs {
        #[command(flatten)]
        common: CleanupArgs,
    },
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Remove rows older than AGE (30d, 12h, 1d12h; units s, m, h, d, w)
    #[arg(long, value_name = "AGE", allow_hyphen_values = true)]
    pub older_than: Option<String>,
    /// Change nothing; report what would go
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm a cleanup that removes every row of the table
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCmd {
    /// Show the retention policy, the schedule, the next run and the recorded runs
    #[command(long_about = "Show storage.retention as configured, the cleanup schedule (UTC) and its next \
        run, and the recorded runs (manual cleanups, scheduled and catch-up runs): when, trigger, status, \
        rows removed per table, duration and error.\n\n\
        Example: parallax storage retention status")]
    Status,
    /// Run the configured retention policy once, now
    #[command(long_about = "Run storage.retention's enabled rules once, now, as the scheduler would: \
        executions by maxAge/maxCount (final ones only), audit logs by maxAge. Skipped when another \
        instance holds the database's runner lock. With --tick, it runs as the scheduled run of that tick \
        and is skipped if that tick already ran (how several instances agree on one run per tick). \
        --dry-run reports what would go.\n\n\
        Example: parallax storage retention run --dry-run")]
    Run {
        /// Run as the scheduled run of this tick (RFC 3339, e.g. 2026-01-31T02:00:00Z)
        #[arg(long, value_name = "TIME")]
        tick: Option<String>,
        /// Change nothing; report what the policy would remove
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep the storage open and run the retention schedule in the foreground until stopped
    #[command(
        long_about = "Open the storage and run storage.retention on storage.retention.cleanupSchedule \
        until SIGINT or SIGTERM, for installations where no long-running Parallax process has the storage \
        open (any process that has it open runs the schedule; across processes and hosts one run happens \
        per tick). A tick missed while nothing was running runs once at start. Runs are logged on stderr \
        and recorded (`retention status`).\n\n\
        Example: parallax storage retention serve --config /etc/parallax/parallax.config.yaml"
    )]
    Serve,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCmd {
    /// List every migration as applied or pending
    #[command(long_about = "List every migration with its status (applied or pending) and when it was \
        applied.\n\nExample: parallax storage migrate status")]
    Status,
    /// Apply every pending migration
    #[command(long_about = "Apply every pending migration, in one transaction, then show the status.\n\n\
        Example: parallax storage migrate up")]
    Up,
    /// Roll back the newest applied migration
    #[command(long_about = "Roll back the newest applied migration, then show the status.\n\n\
        Example: parallax storage migrate down")]
    Down,
    /// Apply or roll back migrations until VERSION is the newest applied one (0 reverts all)
    #[command(long_about = "Apply or roll back migrations until VERSION is the newest applied one. \
        VERSION is a full version or a unique prefix of one (20240115); 0 reverts every migration.\n\n\
        Example: parallax storage migrate to 20240115")]
    To {
        /// Target version, a unique prefix of one, or 0
        #[arg(value_name = "VERSION")]
        version: String,
    },
    /// Record a migration as applied without running it (after fixing the schema by hand)
    #[command(
        long_about = "Record VERSION as applied without running it. Use this after a migration failed \
        and you fixed the schema by hand, instead of inserting into Diesel's migration table yourself. \
        VERSION is a full version or a unique prefix of one; an already applied version is refused.\n\n\
        Example: parallax storage migrate mark-applied 20240115"
    )]
    MarkApplied {
        /// The version to record, or a unique prefix of one
        #[arg(value_name = "VERSION")]
        version: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PatternsCmd {
    /// Store a pattern definition read from a YAML or JSON file
    #[command(long_about = "Store a pattern definition. FILE is YAML (.yaml, .yml) or JSON (.json), or - \
        for stdin; the whole document (a mapping) becomes the definition. The name, version and description \
        come from the document's top-level `name`, `version` and `description` keys unless given as \
        flags. Storing an existing name and version again is a conflict (exit code 4).\n\n\
        Example: parallax patterns put review.yaml --created-by alice")]
    Put {
        /// The definition file (YAML or JSON; - reads stdin)
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Pattern name (default: the document's `name`)
        #[arg(long)]
        name: Option<String>,
        /// Semantic version such as 1.2.0 (default: the document's `version`)
        #[arg(long)]
        version: Option<String>,
        /// Description (default: the document's `description`)
        #[arg(long)]
        description: Option<String>,
        /// Who stored it
        #[arg(long, value_name = "WHO")]
        created_by: Option<String>,
    },
    /// Show one version of a pattern (the latest when VERSION is omitted)
    #[command(
        long_about = "Show a pattern's metadata and definition. Without VERSION, the highest semantic \
        version is shown.\n\nExamples:\n  parallax patterns get code-review\n  parallax patterns get \
        code-review 1.2.0 --output json"
    )]
    Get { name: String, version: Option<String> },
    /// List the latest version of every pattern, by name
    #[command(
        long_about = "List the latest version of every pattern, ordered by name, one page at a time; \
        pass the printed cursor to get the next page, or --all to fetch every page.\n\n\
        Example: parallax patterns list --limit 20"
    )]
    List {
        #[command(flatten)]
        page: PageArgs,
        /// Follow next_cursor until every pattern is listed
        #[arg(long, conflicts_with = "cursor")]
        all: bool,
    },
    /// List every stored version of a pattern, newest version first
    #[command(long_about = "List every stored version of a pattern, highest semantic version first.\n\n\
        Example: parallax patterns versions code-review")]
    Versions { name: String },
    /// Full-text search over names, descriptions and definitions
    #[command(
        long_about = "Find pattern versions whose name, description or definition (its string values) \
        contain every word of TEXT, case-insensitively; best match first.\n\n\
        Example: parallax patterns search incident severity"
    )]
    Search {
        /// The words to look for (all must match)
        #[arg(value_name = "TEXT", required = true, num_args = 1..)]
        text: Vec<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete one version of a pattern
    #[command(long_about = "Delete one stored version of a pattern.\n\n\
        Example: parallax patterns delete code-review 1.0.0")]
    Delete { name: String, version: String },
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page size, 1 to 1000 (default 50)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// The cursor printed after the previous page
    #[arg(long, value_name = "C")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartStatus {
    Pending,
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FinalStatus {
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnyStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    AgentAssignment,
    StepResult,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionsCmd {
    /// Record a new execution of a pattern
    #[command(
        long_about = "Record a new execution. Without --pattern-version the latest stored version of \
        the pattern is used (the pattern must exist). JSON arguments take a JSON document or @FILE (@- for \
        stdin).\n\nExample: parallax executions start --pattern code-review --input '{\"pr\": 42}' --tag ci"
    )]
    Start {
        #[arg(long, value_name = "NAME")]
        pattern: String,
        #[arg(long, value_name = "V")]
        pattern_version: Option<String>,
        /// Input document: JSON or @FILE
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        input: Option<Json>,
        /// Metadata document: JSON or @FILE
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        metadata: Option<Json>,
        /// A tag (repeatable)
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        #[arg(long, value_enum, default_value = "running")]
        status: StartStatus,
        /// Use this UUID instead of a generated one
        #[arg(long, value_name = "UUID", value_parser = parse_id)]
        id: Option<Uuid>,
    },
    /// Complete an execution as completed, failed or cancelled
    #[command(long_about = "Complete an execution: set its final status, completed_at and duration, and \
        optionally its result (output document) and error document.\n\n\
        Example: parallax executions finish 0190d5e2-... --status completed --result @result.json")]
    Finish {
        #[arg(value_parser = parse_id)]
        id: Uuid,
        #[arg(long, value_enum)]
        status: FinalStatus,
        /// The execution's output document (stored in its `output` column): JSON or @FILE
        #[arg(long = "result", value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        output: Option<Json>,
        /// Error document: JSON or @FILE
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        error: Option<Json>,
    },
    /// Change the status or documents of a running or pending execution
    #[command(long_about = "Change a non-final execution: its status (pending or running), result (output \
        document), error or metadata.\n\n\
        Example: parallax executions update 0190d5e2-... --status running --metadata '{\"node\": 3}'")]
    Update {
        #[arg(value_parser = parse_id)]
        id: Uuid,
        #[arg(long, value_enum)]
        status: Option<StartStatus>,
        /// The execution's output document (stored in its `output` column): JSON or @FILE
        #[arg(long = "result", value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        output: Option<Json>,
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        error: Option<Json>,
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        metadata: Option<Json>,
    },
    /// Append an agent assignment or step result to an execution
    #[command(long_about = "Append an event to an execution's history.\n\n\
        Example: parallax executions event 0190d5e2-... --kind step-result --payload '{\"step\": 1}'")]
    Event {
        #[arg(value_parser = parse_id)]
        id: Uuid,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        payload: Json,
    },
    /// Show one execution
    #[command(long_about = "Show one execution, optionally with its events.\n\n\
        Example: parallax executions get 0190d5e2-... --events")]
    Get {
        #[arg(value_parser = parse_id)]
        id: Uuid,
        /// Also show the execution's events
        #[arg(long)]
        events: bool,
    },
    /// List an execution's events in order
    #[command(long_about = "List an execution's events in the order they were appended.\n\n\
        Example: parallax executions events 0190d5e2-...")]
    Events {
        #[arg(value_parser = parse_id)]
        id: Uuid,
    },
    /// List executions, newest first, with filters
    #[command(long_about = "List executions, newest first. Filters combine; --status and --tag repeat \
        (--status also takes a comma-separated list). --since/--until take an RFC3339 time \
        (2024-01-15T10:30:00Z) or an age such as 30d or 12h (meaning that long ago).\n\n\
        Example: parallax executions list --pattern code-review --status failed,cancelled --since 7d")]
    List {
        #[command(flatten)]
        filter: ExecFilterArgs,
        #[command(flatten)]
        page: PageArgs,
        /// Print only the number of matching executions
        #[arg(long, conflicts_with_all = ["limit", "cursor"])]
        count: bool,
    },
    /// Full-text search over execution input, output and error documents
    #[command(long_about = "Find executions whose input, output or error documents (their string values) \
        contain every word of TEXT, case-insensitively; best match first.\n\n\
        Example: parallax executions search quota exhausted")]
    Search {
        /// The words to look for (all must match)
        #[arg(value_name = "TEXT", required = true, num_args = 1..)]
        text: Vec<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Args)]
pub struct ExecFilterArgs {
    #[arg(long, value_name = "N")]
    pub pattern: Option<String>,
    #[arg(long, value_name = "V")]
    pub pattern_version: Option<String>,
    /// Any of these statuses (repeatable or comma-separated)
    #[arg(long = "status", value_enum, value_delimiter = ',', value_name = "S")]
    pub statuses: Vec<AnyStatus>,
    /// Started at or after T (RFC3339, or an age like 30d)
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Started before T (RFC3339, or an age like 12h)
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<Timestamp>,
    /// Carries this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Append one audit log entry
    #[command(long_about = "Append one entry to the audit log and print its id.\n\n\
        Example: parallax audit append --action pattern.update --actor alice --resource-type pattern \
        --resource-id code-review --details '{\"version\": \"1.1.0\"}'")]
    Append {
        #[arg(long, value_name = "A")]
        action: String,
        #[arg(long, value_name = "X")]
        actor: Option<String>,
        #[arg(long, value_name = "T")]
        resource_type: Option<String>,
        #[arg(long, value_name = "I")]
        resource_id: Option<String>,
        /// Details document: JSON or @FILE
        #[arg(long, value_name = "JSON|@FILE", value_parser = parse_json_arg)]
        details: Option<Json>,
        /// Client IP address (IPv4 or IPv6, optionally with a prefix length)
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        #[arg(long, value_name = "UA")]
        user_agent: Option<String>,
    },
    /// Query the audit log, newest first
    #[command(long_about = "Query the audit log, newest first. --since/--until take an RFC3339 time or an \
        age such as 90d.\n\nExample: parallax audit list --actor alice --since 24h")]
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        resource_type: Option<String>,
        #[arg(long)]
        resource_id: Option<String>,
        #[arg(long, value_name = "T", value_parser = parse_time)]
        since: Option<Timestamp>,
        #[arg(long, value_name = "T", value_parser = parse_time)]
        until: Option<Timestamp>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
