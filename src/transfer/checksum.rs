//! The content checksum of a transfer (`checksumVersion` 1), the same on every backend: each row is written
//! in a canonical form and hashed; a table's checksum is the row count and the sum (mod 2^128) of the row
//! hashes. A sum is order-independent, so it is computed page by page, survives a resume (it is saved with
//! the cursor), and a row excluded later (a conflict, a row changed after the snapshot) is subtracted exactly.
//! It detects accidental loss and corruption, not forgery (a sum of truncated hashes can be forged).
//!
//! The canonical form is what every backend reads back as the same value, whatever it stores:
//! - JSON documents are parsed and rewritten with object keys sorted by their UTF-8 bytes (explicitly: the
//!   map type's order is not relied on), numbers normalised (an integer that fits an `i64`/`u64` as that
//!   integer, any other number through its `f64` shortest form, so `1e2`, `100.0` and `100` are equal and
//!   `2.50` equals `2.5`; `-0` is `0`), strings as `serde_json` writes them (escapes normalised). PostgreSQL's
//!   JSONB reorders keys and renormalises numbers; SQLite and the file store keep the caller's text.
//! - A document that is JSON `null` equals an absent one (the archive format cannot tell them apart).
//! - Times are integers (microseconds), ids as given (every backend stores lower-case UUIDs).
//! - An IP address is parsed and printed in its canonical text form (`::ffff:1.2.3.4` stays IPv6; a `/32` or
//!   `/128` suffix is dropped), anything unparsable as given.
//! - Tags in their order; events hashed as rows of their own table, with their execution's id.
//!
//! `hash(row) = the first 16 bytes (big-endian) of SHA-256(table name ‖ 0x00 ‖ canonical JSON of the row)`.

use std::fmt;

use parallax_storage_abi::{AuditEntry, Execution, ExecutionEvent, Pattern};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Rows and the sum of their hashes: one table's checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows: u64,
    pub sum: u128,
}

impl Tally {
    pub fn add(&mut self, hash: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    pub fn remove(&mut self, hash: u128) {
        self.rows = self.rows.saturating_sub(1);
        self.sum = self.sum.wrapping_sub(hash);
    }

    pub fn merge(&mut self, other: Tally) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The sum as 32 lower-case hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, {}", self.rows, self.hex())
    }
}

/// The saved form: `{"rows": 3, "sum": "<32 hex digits>"}` (a u128 does not survive every JSON reader).
#[derive(Serialize, Deserialize)]
struct TallyJson {
    rows: u64,
    sum: String,
}

impl Serialize for Tally {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        TallyJson { rows: self.rows, sum: self.hex() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tally {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let j = TallyJson::deserialize(d)?;
        let sum = u128::from_str_radix(&j.sum, 16).map_err(serde::de::Error::custom)?;
        Ok(Tally { rows: j.rows, sum })
    }
}

fn hash(table: &str, row: &Value) -> u128 {
    let mut text = String::with_capacity(256);
    write_canonical(row, &mut text);
    hash_text(table, &text)
}

/// [`hash`] of a row already in its canonical form.
fn hash_text(table: &str, text: &str) -> u128 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(table.as_bytes());
    ctx.update(&[0]);
    ctx.update(text.as_bytes());
    let d = ctx.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d.as_ref()[..16]);
    u128::from_be_bytes(first)
}

/// A stored JSON document as its canonical value: `None` (absent) for an absent document and for JSON `null`;
/// text that does not parse is kept as a string (it is compared as given).
fn doc(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(v) => v,
            Err(_) => Value::String(format!("unparsable:{t}")),
        },
    }
}

fn opt(v: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Option<&str> {
    v.as_ref().map(|s| s.as_str()).into_option()
}

fn text(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// An IP address in its canonical text form.
pub fn canonical_ip(ip: &str) -> String {
    let bare = ip.strip_suffix("/32").or_else(|| ip.strip_suffix("/128")).unwrap_or(ip);
    match bare.parse::<std::net::IpAddr>() {
        Ok(a) => a.to_string(),
        Err(_) => ip.to_string(),
    }
}

/// An execution row (without its events).
pub fn execution(e: &Execution) -> u128 {
    let row = serde_json::json!({
        "id": e.id.as_str(),
        "patternName": e.pattern_name.as_str(),
        "patternVersion": e.pattern_version.as_str(),
        "status": e.status.as_str(),
        "input": doc(opt(&e.input)),
        "output": doc(opt(&e.output)),
        "error": doc(opt(&e.error)),
        "startedAt": e.started_at,
        "completedAt": Option::<i64>::from(e.completed_at),
        "durationMs": Option::<i64>::from(e.duration_ms),
        "metadata": doc(opt(&e.metadata)),
        "tags": e.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    });
    hash("executions", &row)
}

/// An event row.
pub fn event(v: &ExecutionEvent) -> u128 {
    let row = serde_json::json!({
        "id": v.id.as_str(),
        "executionId": v.execution_id.as_str(),
        "seq": v.seq,
        "kind": v.kind.as_str(),
        "payload": doc(Some(v.payload.as_str())),
        "recordedAt": v.recorded_at,
    });
    hash("execution_events", &row)
}

/// An audit row.
pub fn audit(a: &AuditEntry) -> u128 {
    hash_text("audit_logs", &audit_canonical(a))
}

/// An audit row's canonical form, as bytes: what the audit chain hashes ([`crate::audit_chain::link`]).
///
/// The same bytes as `write_canonical(&audit_row(a))` (a unit test holds it to that), written directly: the
/// chain hashes every appended entry, and building the row as a JSON value first cost more than the hash.
/// The keys in their sorted order: action, actor, details, id, ipAddress, resourceId, resourceType,
/// timestamp, userAgent.
pub fn audit_canonical(a: &AuditEntry) -> String {
    let mut out = String::with_capacity(256);
    let opt_str = |out: &mut String, v: Option<&str>| match v {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    };
    out.push_str("{\"action\":");
    push_json_str(&mut out, a.action.as_str());
    out.push_str(",\"actor\":");
    opt_str(&mut out, opt(&a.actor));
    out.push_str(",\"details\":");
    write_canonical(&doc(opt(&a.details)), &mut out);
    out.push_str(",\"id\":");
    push_json_str(&mut out, a.id.as_str());
    out.push_str(",\"ipAddress\":");
    opt_str(&mut out, opt(&a.ip_address).map(canonical_ip).as_deref());
    out.push_str(",\"resourceId\":");
    opt_str(&mut out, opt(&a.resource_id));
    out.push_str(",\"resourceType\":");
    opt_str(&mut out, opt(&a.resource_type));
    out.push_str(",\"timestamp\":");
    push_int(&mut out, a.timestamp);
    out.push_str(",\"userAgent\":");
    opt_str(&mut out, opt(&a.user_agent));
    out.push('}');
    out
}

/// `s` as `serde_json` writes a string (quoted, escapes normalised), without an intermediate allocation for
/// the common case of nothing to escape.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

fn push_int(out: &mut String, i: impl fmt::Display) {
    use fmt::Write;
    write!(out, "{i}").expect("writing to a String");
}

/// The reference form of [`audit_canonical`]: the row as a JSON value, written canonically.
#[cfg(test)]
fn audit_row(a: &AuditEntry) -> Value {
    serde_json::json!({
        "id": a.id.as_str(),
        "timestamp": a.timestamp,
        "action": a.action.as_str(),
        "actor": text(opt(&a.actor)),
        "resourceType": text(opt(&a.resource_type)),
        "resourceId": text(opt(&a.resource_id)),
        "details": doc(opt(&a.details)),
        "ipAddress": text(opt(&a.ip_address).map(canonical_ip).as_deref()),
        "userAgent": text(opt(&a.user_agent)),
    })
}

/// A pattern version.
pub fn pattern(p: &Pattern) -> u128 {
    let row = serde_json::json!({
        "id": p.id.as_str(),
        "name": p.name.as_str(),
        "version": p.version.as_str(),
        "description": text(opt(&p.description)),
        "definition": doc(Some(p.definition.as_str())),
        "createdAt": p.created_at,
        "createdBy": text(opt(&p.created_by)),
    });
    hash("patterns", &row)
}

/// Writes `v` canonically: sorted keys, normalised numbers, no whitespace.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                push_int(out, i);
            } else if let Some(u) = n.as_u64() {
                push_int(out, u);
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f == f.trunc() && f.abs() < 9.007_199_254_740_992e15 {
                    // 100.0 and 1e2 are the integer 100; -0.0 is 0.
                    push_int(out, f as i64);
                } else {
                    out.push_str(&format!("{f:?}"));
                }
            }
        }
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, k);
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        let mut out = String::new();
        write_canonical(&serde_json::from_str(text).unwrap(), &mut out);
        out
    }

    #[test]
    fn key_order_number_spelling_and_escapes_do_not_matter() {
        assert_eq!(canon(r#"{"a":1e2,"b":[2.50, -0.0]}"#), canon(r#"{"b":[2.5,0],"a":100}"#));
        assert_eq!(canon(r#"{"s":"\u00e9\n"}"#), canon("{\"s\":\"é\\n\"}"));
        assert_ne!(canon(r#"{"a":1}"#), canon(r#"{"a":"1"}"#));
        assert_ne!(canon(r#"[1,2]"#), canon(r#"[2,1]"#));
        assert_eq!(canon(r#"{"b":{"y":1,"x":2},"a":0.1}"#), r#"{"a":0.1,"b":{"x":2,"y":1}}"#);
    }

    #[test]
    fn null_documents_equal_absent_ones_and_ips_are_canonical() {
        assert_eq!(doc(Some("null")), doc(None));
        assert_eq!(canonical_ip("10.0.0.1/32"), "10.0.0.1");
        assert_eq!(canonical_ip("2001:DB8:0:0::1"), "2001:db8::1");
        assert_eq!(canonical_ip("2001:db8::1/128"), "2001:db8::1");
        assert_eq!(canonical_ip("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(canonical_ip("not an ip"), "not an ip");
    }

    /// The audit chain's stored hashes depend on these bytes: the direct writer equals the reference form.
    #[test]
    fn audit_canonical_equals_the_row_written_canonically() {
        use abi_stable::std_types::{RNone, RSome};
        let base = AuditEntry {
            id: "0190f0c2-7b7e-7a3c-9d5e-2b1f3c4d5e6f".into(),
            timestamp: 1_717_000_000_123_456,
            action: "pattern.update".into(),
            actor: RSome("jürgen ✓ \"quoted\" \\ back\tslash\u{1}".into()),
            resource_type: RSome("pattern".into()),
            resource_id: RSome("p-7".into()),
            details: RSome(r#"{"z":1e2,"a":[2.50,-0.0,"\u00e9"],"m":{"y":null,"x":true}}"#.into()),
            ip_address: RSome("10.0.0.1/32".into()),
            user_agent: RSome("curl/8".into()),
        };
        let mut cases = vec![base.clone()];
        cases.push(AuditEntry {
            actor: RNone,
            resource_type: RNone,
            resource_id: RNone,
            details: RNone,
            ip_address: RNone,
            user_agent: RNone,
            timestamp: -5,
            ..base.clone()
        });
        for details in ["null", "not json", "\"s\"", "[]", "12345678901234567890", "1.5e300"] {
            cases.push(AuditEntry { details: RSome(details.into()), ..base.clone() });
        }
        for ip in ["2001:DB8::1", "::ffff:1.2.3.4", "garbage"] {
            cases.push(AuditEntry { ip_address: RSome(ip.into()), ..base.clone() });
        }
        for a in &cases {
            let mut reference = String::new();
            write_canonical(&audit_row(a), &mut reference);
            assert_eq!(audit_canonical(a), reference, "{a:?}");
        }
    }

    #[test]
    fn a_tally_is_order_independent_and_survives_json() {
        let (a, b) = (u128::MAX - 3, 7u128);
        let (mut x, mut y) = (Tally::default(), Tally::default());
        x.add(a);
        x.add(b);
        y.add(b);
        y.add(a);
        assert_eq!(x, y);
        let back: Tally = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
        assert_eq!(back, x);
        x.remove(b);
        let mut only_a = Tally::default();
        only_a.add(a);
        assert_eq!(x, only_a);
    }
}
