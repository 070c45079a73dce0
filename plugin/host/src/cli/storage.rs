//! `parallax storage info | test-connection | migrate …`.

use serde_json::{json, Value as Json};

use super::{
    args::{MigrateCmd, StorageCmd},
    render::{self, format_latency},
    table::{key_values, yaml_block},
    CliError, Output,
};
use crate::{config::ResolvedConfig, OpenOptions, Plugin, Storage};

/// Plugin, backends and the checked config, without opening the database. An invalid config is reported
/// after the plugin part (the plugin part is still printed) and fails the command.
pub fn info(plugin: &Plugin, cfg: &ResolvedConfig) -> Result<Output, CliError> {
    let info = plugin.info();
    let source = cfg.source.as_ref().map(|p| p.display().to_string());
    let checked = plugin.check_config(&cfg.storage);

    let mut out = key_values(&[
        ("plugin version", info.plugin_version.to_string()),
        ("abi version", info.abi_version.to_string()),
        ("config file", source.clone().unwrap_or_else(|| "defaults (no config file found)".into())),
    ]);
    out.push_str("backends:\n");
    let width = info.backends.iter().map(|b| b.name.len()).max().unwrap_or(0);
    for b in info.backends.iter() {
        let state = if b.available { "available" } else { "not available" };
        let mut line = format!("  {:<width$}  {state}", b.name.as_str());
        if !b.migrations.is_empty() {
            let versions: Vec<&str> = b.migrations.iter().map(|v| v.as_str()).collect();
            line.push_str(&format!("; migrations: {}", versions.join(", ")));
        }
        if !b.note.is_empty() {
            line.push_str(&format!("; {}", b.note));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let mut doc = json!({ "plugin": render::plugin_info(&info), "config_source": source });
    match &checked {
        Ok(report) => {
            let r = render::config_report(report);
            out.push_str(&key_values(&[("backend", report.backend.to_string())]));
            out.push_str("effective config:\n");
            out.push_str(&yaml_block(&r["effective"], 2));
            if let Some(routing) = routing(&r["effective"]) {
                out.push_str(&key_values(&[("routing", routing["text"].as_str().unwrap_or("").to_string())]));
                doc["routing"] = routing;
            }
            out.push_str(&warnings(&r["warnings"]));
            doc["config"] = r;
        }
        Err(e) => doc["config_error"] = json!(e.message()),
    }
    let output = Output::new(doc, out);
    // An invalid config: print what is known, then fail with the config error.
    Ok(match checked {
        Ok(_) => output,
        Err(e) => Output { failure: Some(e.into()), ..output },
    })
}

/// `storage info`'s last part: the storage is opened (schema maintenance mode, no schedule) to read the last
/// recorded retention run. When it cannot be opened, the reason is shown instead; `info` still succeeds.
pub fn append_last_run(plugin: &Plugin, cfg: &ResolvedConfig, out: &mut Output) {
    // Never create a database just to say it has no runs.
    let effective = &out.json["config"]["effective"];
    let missing = match out.json["config"]["backend"].as_str() {
        Some("sqlite") => effective["sqlite"]["path"].as_str().filter(|p| *p != ":memory:"),
        Some("file") => effective["file"]["basePath"].as_str(),
        _ => None,
    }
    .filter(|p| !std::path::Path::new(p).exists());
    if let Some(path) = missing {
        out.table
            .push_str(&key_values(&[("last retention run", format!("none (no storage at {path} yet)"))]));
        return;
    }
    let mut storage = cfg.storage.clone();
    super::without_schedule(&mut storage);
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            let store =
                plugin.open_with(&storage, OpenOptions { maintenance: true }).map_err(|e| e.to_string())?;
            rt.block_on(async {
                let s = store.retention_status().await.map_err(|e| e.to_string());
                let _ = store.shutdown().await;
                s
            })
        });
    match status {
        Ok(s) => {
            let last = s.runs.first();
            out.table.push_str(&key_values(&[
                ("retention schedule", s.schedule.clone().map_or("not set".into(), |e| format!("{e} (UTC)"))),
                ("next retention run", s.next_run.clone().unwrap_or_else(|| "-".into())),
                ("last retention run", last.map_or("none recorded".into(), super::retention::run_summary)),
            ]));
            out.json["retention"] = serde_json::to_value(&s).unwrap_or_default();
        }
        Err(e) => {
            out.table.push_str(&key_values(&[(
                "last retention run",
                format!("unknown (cannot open the storage: {e})"),
            )]));
            out.json["retention_error"] = json!(e);
        }
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: Option<u64>) -> String {
    let port = port.unwrap_or(5432);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// How a PostgreSQL storage routes writes and reads, computed from the effective configuration alone (nothing
/// is opened): `None` for the other backends. The JSON has the parts and the one-line `text`.
pub fn routing(effective: &Json) -> Option<Json> {
    if effective["type"] != "postgresql" {
        return None;
    }
    let pg = &effective["postgresql"];
    let port = |v: &Json| v["port"].as_u64();
    let primary = match (pg["primary"]["host"].as_str(), pg["host"].as_str()) {
        (Some(h), _) => Some(host_port(h, port(&pg["primary"]))),
        (None, Some(h)) => Some(host_port(h, port(pg))),
        (None, None) => None,
    };
    let replicas: Vec<String> = pg["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["host"].as_str().map(|h| host_port(h, port(r))))
        .collect();
    let preference = pg["readPreference"].as_str().unwrap_or("primary");
    let lag = pg["maxReplicaLag"].as_u64();
    let writes = match &primary {
        Some(p) => format!("primary {p}"),
        None => "primary (the url's host)".to_string(),
    };
    let n = plural(replicas.len(), "replica");
    let lag_text = lag.map_or(String::new(), |ms| format!(", maxReplicaLag {ms} ms"));
    let (reads_to, reads) = match (preference, replicas.is_empty()) {
        ("primary", true) => ("primary", "primary".to_string()),
        ("primary", false) => {
            ("primary", format!("primary ({n} configured but unused: readPreference primary)"))
        }
        (pref, true) => {
            ("primary", format!("primary (readPreference {pref} has no effect: no replicas configured)"))
        }
        ("any", false) => (
            "any",
            format!("any healthy host: the primary and {n}{lag_text}; a lagging or down replica gets none"),
        ),
        (_, false) => ("replica", format!("replica ({n}{lag_text}, falls back to the primary)")),
    };
    let text = format!("writes → {writes}; reads → {reads}");
    Some(json!({
        "writes": primary,
        "reads": reads_to,
        "read_preference": preference,
        "replicas": replicas,
        "max_replica_lag_ms": if replicas.is_empty() { Json::Null } else { json!(lag) },
        "fallback": if reads_to == "primary" { Json::Null } else { json!("primary") },
        "text": text,
    }))
}

fn warnings(list: &serde_json::Value) -> String {
    let items: Vec<&str> = list.as_array().into_iter().flatten().filter_map(|w| w.as_str()).collect();
    if items.is_empty() {
        return "warnings: none\n".to_string();
    }
    let mut s = "warnings:\n".to_string();
    for w in items {
        s.push_str(&format!("  - {w}\n"));
    }
    s
}

pub async fn run(store: &Storage, cmd: StorageCmd) -> Result<Output, CliError> {
    match cmd {
        StorageCmd::Info => {
            Err(CliError::new(1, "internal: `storage info` is answered without opening the storage"))
        }
        StorageCmd::TestConnection => {
            let h = store.health().await?;
            let r = render::health(&h);
            let schema =
                h.schema_version.as_ref().map_or("none (no migration applied)".into(), |v| v.to_string());
            let mut out = key_values(&[
                ("status", "reachable".into()),
                ("backend", h.backend.to_string()),
                ("server version", h.server_version.to_string()),
                ("location", h.location.to_string()),
                ("latency", format_latency(h.latency_us)),
                ("schema version", schema),
                ("pending migrations", h.pending_migrations.to_string()),
            ]);
            out.push_str(&warnings(r.get("warnings")));
            if h.pending_migrations > 0 {
                out.push_str(
                    "note: run `parallax storage migrate up` to apply the pending migrations (with \
                     storage.migrations.enabled and autoRun, the default, the next data command applies them)\n",
                );
            }
            let mut doc = r.json();
            // The primary (or only host) answered: from here on a host that is down is shown, not an error.
            match store.hosts().await {
                Ok(report) => {
                    out.push_str(&render::hosts_table(&report));
                    let hosts = render::hosts(&report);
                    doc["read_preference"] = hosts["read_preference"].clone();
                    doc["max_replica_lag_ms"] = hosts["max_replica_lag_ms"].clone();
                    doc["hosts"] = hosts["hosts"].clone();
                }
                // A plugin built before read replicas: today's output.
                Err(e) if e.kind() == crate::ErrorKind::Unsupported => {}
                Err(e) => {
                    out.push_str(&key_values(&[("hosts", format!("unknown ({})", e.message()))]));
                    doc["hosts_error"] = json!(e.message());
                }
            }
            Ok(Output::new(doc, out))
        }
        StorageCmd::Migrate(cmd) => migrate(store, cmd).await,
        StorageCmd::Cleanup(cmd) => super::retention::cleanup(store, cmd).await,
        StorageCmd::Retention(cmd) => super::retention::run(store, cmd).await,
        StorageCmd::Archive(cmd) => super::archive::run(store, cmd).await,
        StorageCmd::Restore(args) => super::archive::restore(store, args).await,
        StorageCmd::Copy(args) => super::transfer::copy(store, args).await,
        StorageCmd::Export(args) => super::transfer::export(store, args).await,
        StorageCmd::Import(args) => super::transfer::import(store, args).await,
        StorageCmd::Backup(args) => super::transfer::backup(store, args).await,
        StorageCmd::Audit(cmd) => super::audit::verify(store, cmd).await,
        StorageCmd::Metrics(_) => Err(CliError::new(
            1,
            "internal: `storage metrics` is answered by cli::metrics, with the plugin's version",
        )),
    }
}

async fn migrate(store: &Storage, cmd: MigrateCmd) -> Result<Output, CliError> {
    let report = match cmd {
        MigrateCmd::Status => {
            let status = store.migration_status().await?;
            let current = status.iter().rev().find(|m| m.applied).map(|m| m.version.to_string());
            let pending = status.iter().filter(|m| !m.applied).count();
            let doc = json!({
                "schema_version": current,
                "pending": pending,
                "migrations": render::all(&status, render::migration),
            });
            let mut out = render::migrations_table(&status);
            let shown = current.as_deref().unwrap_or("none");
            out.push_str(&format!("\nschema version: {shown}; {pending} pending\n"));
            return Ok(Output::new(doc, out));
        }
        MigrateCmd::Up => store.migrate_up().await?,
        MigrateCmd::Down => store.migrate_down().await?,
        MigrateCmd::To { version } => store.migrate_to(&version).await?,
        MigrateCmd::MarkApplied { version } => store.mark_migration_applied(&version).await?,
    };
    let (doc, out) = render::migration_report(&report);
    Ok(Output::new(doc, out))
}
