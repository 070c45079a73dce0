//! `parallax storage info | test-connection | migrate …`.

use serde_json::json;

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

fn warnings(list: &serde_json::Value) -> String {
    let items: Vec<&str> = list.as_array().into_iter().flatten().filter_map(|w| w.as_str()).collect();
    if items.is_empty() {
        return "warnings: none\n".to_string();
    }
    let mut s = "warnings (configured but not enforced):\n".to_string();
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
            Ok(Output::new(r.json(), out))
        }
        StorageCmd::Migrate(cmd) => migrate(store, cmd).await,
        StorageCmd::Cleanup(cmd) => super::retention::cleanup(store, cmd).await,
        StorageCmd::Retention(cmd) => super::retention::run(store, cmd).await,
        StorageCmd::Archive(cmd) => super::archive::run(store, cmd).await,
        StorageCmd::Restore(args) => super::archive::restore(store, args).await,
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
