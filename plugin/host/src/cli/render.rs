//! The one place where the ABI records become JSON values (snake_case keys, RFC3339 times, stored JSON
//! documents embedded as values) and table text.

use serde_json::{json, Map, Value as Json};

use crate::{
    hosts::HostsReport, AuditEntry, ConfigReport, Execution, ExecutionEvent, Health, MigrationInfo,
    MigrationReport, Pattern, PluginInfo, Timestamp,
};

use super::{
    input::format_time,
    table::{key_values, text, Table},
};

/// A record's fields in display order.
#[derive(Debug, Clone, PartialEq)]
pub struct Record(pub Vec<(&'static str, Json)>);

impl Record {
    pub fn json(&self) -> Json {
        Json::Object(self.0.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Map<_, _>>())
    }

    /// `key: value` lines, skipping the keys in `except`.
    pub fn table_except(&self, except: &[&str]) -> String {
        let pairs: Vec<(&str, String)> =
            self.0.iter().filter(|(k, _)| !except.contains(k)).map(|(k, v)| (*k, text(v))).collect();
        key_values(&pairs)
    }

    pub fn table(&self) -> String {
        self.table_except(&[])
    }

    pub fn get(&self, key: &str) -> &Json {
        self.0.iter().find(|(k, _)| *k == key).map_or(&Json::Null, |(_, v)| v)
    }
}

fn opt(s: &Option<String>) -> Json {
    s.as_ref().map_or(Json::Null, |s| Json::String(s.to_string()))
}

/// A stored JSON document as a value (as a string if it somehow does not parse).
fn doc_text(s: &str) -> Json {
    serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.to_string()))
}

fn doc(s: &Option<crate::Json>) -> Json {
    s.as_ref().map_or(Json::Null, |s| doc_text(s.as_str()))
}

fn time(t: Timestamp) -> Json {
    Json::String(format_time(t.as_micros()))
}

fn opt_time(t: &Option<Timestamp>) -> Json {
    t.map_or(Json::Null, time)
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Json {
    Json::Array(items.into_iter().map(|s| Json::String(s.to_string())).collect())
}

pub fn pattern(p: &Pattern) -> Record {
    Record(vec![
        ("id", json!(p.id.to_string())),
        ("name", json!(p.name.as_str())),
        ("version", json!(p.version.as_str())),
        ("description", opt(&p.description)),
        ("created_at", time(p.created_at)),
        ("created_by", opt(&p.created_by)),
        ("definition", doc_text(p.definition.as_str())),
    ])
}

pub fn execution(e: &Execution) -> Record {
    Record(vec![
        ("id", json!(e.id.to_string())),
        ("pattern_name", json!(e.pattern_name.as_str())),
        ("pattern_version", json!(e.pattern_version.as_str())),
        ("status", json!(e.status.as_str())),
        ("started_at", time(e.started_at)),
        ("completed_at", opt_time(&e.completed_at)),
        ("duration_ms", e.duration_ms.map_or(Json::Null, Json::from)),
        ("tags", strings(e.tags.iter())),
        ("input", doc(&e.input)),
        ("output", doc(&e.output)),
        ("error", doc(&e.error)),
        ("metadata", doc(&e.metadata)),
    ])
}

pub fn event(e: &ExecutionEvent) -> Record {
    Record(vec![
        ("id", json!(e.id.to_string())),
        ("execution_id", json!(e.execution_id.to_string())),
        ("seq", json!(e.seq)),
        ("kind", json!(e.kind.as_str())),
        ("recorded_at", time(e.recorded_at)),
        ("payload", doc_text(e.payload.as_str())),
    ])
}

pub fn audit(a: &AuditEntry) -> Record {
    Record(vec![
        ("id", json!(a.id.to_string())),
        ("timestamp", time(a.timestamp)),
        ("action", json!(a.action.as_str())),
        ("actor", opt(&a.actor)),
        ("resource_type", opt(&a.resource_type)),
        ("resource_id", opt(&a.resource_id)),
        ("details", doc(&a.details)),
        ("ip_address", opt(&a.ip_address)),
        ("user_agent", opt(&a.user_agent)),
    ])
}

pub fn migration(m: &MigrationInfo) -> Record {
    Record(vec![
        ("version", json!(m.version.as_str())),
        ("name", json!(m.name.as_str())),
        ("status", json!(if m.applied { "applied" } else { "pending" })),
        ("applied_at", opt_time(&m.applied_at)),
    ])
}

pub fn health(h: &Health) -> Record {
    Record(vec![
        ("backend", json!(h.backend.as_str())),
        ("server_version", json!(h.server_version.as_str())),
        ("location", json!(h.location.as_str())),
        ("latency_us", json!(h.latency_us)),
        ("schema_version", opt(&h.schema_version)),
        ("pending_migrations", json!(h.pending_migrations)),
        ("warnings", strings(h.warnings.iter())),
    ])
}

/// The `hosts` op's report as JSON (snake_case, like every CLI document).
pub fn hosts(r: &HostsReport) -> Json {
    let hosts: Vec<Json> = r
        .hosts
        .iter()
        .map(|h| {
            json!({
                "role": h.role,
                "address": h.address,
                "reachable": h.reachable,
                "server_role": h.server_role,
                "latency_us": h.latency_us,
                "replay_lag_ms": h.replay_lag_ms,
                "replay_lag_bytes": h.replay_lag_bytes,
                "state": h.state,
                "receives_reads": h.receives_reads,
                "reads": h.reads,
                "error": h.error,
            })
        })
        .collect();
    json!({
        "read_preference": r.read_preference,
        "max_replica_lag_ms": r.max_replica_lag_ms,
        "hosts": hosts,
    })
}

/// The `hosts` op's report as a table: one row per host, then why each unreachable or refused host is so.
pub fn hosts_table(r: &HostsReport) -> String {
    let mut out = String::from("hosts:\n");
    let mut t = Table::new(&[
        "ROLE",
        "ADDRESS",
        "REACHABLE",
        "SERVER ROLE",
        "LATENCY",
        "REPLAY LAG",
        "STATE",
        "RECEIVES READS",
    ]);
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    for h in &r.hosts {
        let lag = match (h.replay_lag_ms, h.replay_lag_bytes) {
            (Some(ms), Some(b)) => format!("{ms} ms ({})", format_bytes(b)),
            (Some(ms), None) => format!("{ms} ms"),
            (None, Some(b)) => format_bytes(b),
            (None, None) => "-".to_string(),
        };
        t.row(vec![
            h.role.clone(),
            h.address.clone(),
            yes_no(h.reachable),
            h.server_role.clone().unwrap_or_else(|| "-".into()),
            h.latency_us.map_or("-".into(), format_latency),
            lag,
            h.state.clone(),
            yes_no(h.receives_reads),
        ]);
    }
    out.push_str(&t.render());
    for h in r.hosts.iter().filter(|h| h.error.is_some()) {
        out.push_str(&format!("  {} {}: {}\n", h.role, h.address, h.error.as_deref().unwrap_or("")));
    }
    if r.hosts.iter().any(|h| h.role == "replica") {
        let lag = r.max_replica_lag_ms.map_or(String::new(), |ms| format!(", maxReplicaLag {ms} ms"));
        out.push_str(&format!("reads: readPreference {}{lag}\n", r.read_preference));
    }
    out
}

pub fn plugin_info(info: &PluginInfo) -> Json {
    let backends: Vec<Json> = info
        .backends
        .iter()
        .map(|b| {
            json!({
                "name": b.name.as_str(),
                "available": b.available,
                "note": if b.note.is_empty() { Json::Null } else { json!(b.note.as_str()) },
                "migrations": strings(b.migrations.iter()),
            })
        })
        .collect();
    json!({
        "plugin_version": info.plugin_version.as_str(),
        "abi_version": info.abi_version.as_str(),
        "backends": backends,
    })
}

pub fn config_report(r: &ConfigReport) -> Json {
    json!({
        "backend": r.backend.as_str(),
        "effective": doc_text(r.effective.as_str()),
        "warnings": strings(r.warnings.iter()),
    })
}

pub fn page(items: Vec<Json>, next_cursor: Option<&str>) -> Json {
    json!({ "items": items, "next_cursor": next_cursor })
}

/// A list of records as JSON values.
/// A page of search hits: each record with its `rank`, and the table text with the next-page hint.
pub fn ranked_page(records: Vec<(Record, f64)>, table: String, next_cursor: Option<&str>) -> (Json, String) {
    let items = records
        .into_iter()
        .map(|(r, rank)| {
            let mut v = r.json();
            v["rank"] = serde_json::json!(rank);
            v
        })
        .collect();
    let mut text = table;
    if let Some(c) = next_cursor {
        text.push_str(&next_page_hint(c));
    }
    (page(items, next_cursor), text)
}

pub fn all<T>(items: &[T], f: impl Fn(&T) -> Record) -> Vec<Json> {
    items.iter().map(|i| f(i).json()).collect()
}

pub fn migrations_table(status: &[MigrationInfo]) -> String {
    let mut t = Table::new(&["VERSION", "NAME", "STATUS", "APPLIED_AT"]);
    for m in status {
        let r = migration(m);
        t.row(["version", "name", "status", "applied_at"].iter().map(|k| text(r.get(k))).collect());
    }
    t.render()
}

pub fn migration_report(r: &MigrationReport) -> (Json, String) {
    let applied: Vec<String> = r.applied.iter().map(|v| v.to_string()).collect();
    let reverted: Vec<String> = r.reverted.iter().map(|v| v.to_string()).collect();
    let json = json!({
        "applied": applied,
        "reverted": reverted,
        "status": all(&r.status, migration),
    });
    let mut out = String::new();
    for (what, list) in [("applied", &applied), ("reverted", &reverted)] {
        if !list.is_empty() {
            out.push_str(&format!("{what}: {}\n", list.join(", ")));
        }
    }
    if applied.is_empty() && reverted.is_empty() {
        out.push_str("nothing to do: the schema is already there\n");
    }
    out.push('\n');
    out.push_str(&migrations_table(&r.status));
    (json, out)
}

pub fn patterns_table(items: &[Pattern], with_name: bool) -> String {
    let headers: &[&'static str] = if with_name {
        &["NAME", "VERSION", "CREATED_AT", "CREATED_BY", "DESCRIPTION"]
    } else {
        &["VERSION", "CREATED_AT", "CREATED_BY", "DESCRIPTION", "ID"]
    };
    let keys: &[&str] = if with_name {
        &["name", "version", "created_at", "created_by", "description"]
    } else {
        &["version", "created_at", "created_by", "description", "id"]
    };
    let mut t = Table::new(headers);
    for p in items {
        let r = pattern(p);
        t.row(keys.iter().map(|k| text(r.get(k))).collect());
    }
    t.render()
}

pub fn executions_table(items: &[Execution]) -> String {
    let mut t = Table::new(&["ID", "PATTERN", "VERSION", "STATUS", "STARTED_AT", "DURATION", "TAGS"]);
    for e in items {
        let r = execution(e);
        let duration = e.duration_ms.map_or("-".to_string(), format_ms);
        let mut row: Vec<String> = ["id", "pattern_name", "pattern_version", "status", "started_at"]
            .iter()
            .map(|k| text(r.get(k)))
            .collect();
        row.push(duration);
        row.push(text(r.get("tags")));
        t.row(row);
    }
    t.render()
}

pub fn events_table(items: &[ExecutionEvent]) -> String {
    let mut t = Table::new(&["SEQ", "KIND", "RECORDED_AT", "PAYLOAD"]);
    for e in items {
        let r = event(e);
        t.row(["seq", "kind", "recorded_at", "payload"].iter().map(|k| text(r.get(k))).collect());
    }
    t.render()
}

pub fn audit_table(items: &[AuditEntry]) -> String {
    let mut t =
        Table::new(&["TIMESTAMP", "ACTION", "ACTOR", "RESOURCE_TYPE", "RESOURCE_ID", "DETAILS", "ID"]);
    for a in items {
        let r = audit(a);
        let keys = ["timestamp", "action", "actor", "resource_type", "resource_id", "details", "id"];
        t.row(keys.iter().map(|k| text(r.get(k))).collect());
    }
    t.render()
}

pub fn format_ms(ms: i64) -> String {
    if ms.abs() < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.3}s", ms as f64 / 1000.0)
    }
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn format_latency(us: i64) -> String {
    if us.abs() < 1000 {
        format!("{us}µs")
    } else {
        format!("{:.2}ms", us as f64 / 1000.0)
    }
}

/// The hint printed after a partial page, the cursor shell-quoted when needed.
pub fn next_page_hint(cursor: &str) -> String {
    let safe =
        !cursor.is_empty() && cursor.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@+=,".contains(c));
    if safe {
        format!("next page: --cursor {cursor}\n")
    } else {
        format!("next page: --cursor '{}'\n", cursor.replace('\'', r"'\''"))
    }
}
