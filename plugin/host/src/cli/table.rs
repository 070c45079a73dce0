//! Plain-text output: aligned tables for lists and `key: value` lines for single records.

use serde_json::Value as Json;

/// Columns with a header; every cell is one line.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| cell(&c)).collect());
    }

    /// The rendered table, every line ending in a newline; `(none)` when there are no rows.
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return "(none)\n".to_string();
        }
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate().take(n) {
                if i + 1 < n {
                    line.push_str(c);
                    line.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                } else {
                    line.push_str(c);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One-line cell text: control characters (newlines, tabs) become spaces.
fn cell(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `key: value` lines, values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = " ".repeat(width - k.chars().count());
        out.push_str(format!("{k}:{pad} {}", cell(v)).trim_end());
        out.push('\n');
    }
    out
}

/// A JSON value as one line of table text: `-` for null, strings bare, lists of strings comma-separated,
/// anything else as compact JSON.
pub fn text(v: &Json) -> String {
    match v {
        Json::Null => "-".to_string(),
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        Json::Array(items) if items.iter().all(Json::is_string) => {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.iter().filter_map(Json::as_str).collect::<Vec<_>>().join(", ")
            }
        }
        other => other.to_string(),
    }
}

/// A JSON document as YAML, every line indented by `indent` spaces.
pub fn yaml_block(v: &Json, indent: usize) -> String {
    let yaml =
        serde_yaml_ng::to_string(v).unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default());
    let pad = " ".repeat(indent);
    yaml.lines().map(|l| format!("{pad}{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        t.row(vec!["q".into(), "two\nlines".into()]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\nq    two lines\n");
        assert_eq!(Table::new(&["A"]).render(), "(none)\n");
        assert_eq!(key_values(&[("id", "1".into()), ("status", "ok".into())]), "id:     1\nstatus: ok\n");
        assert_eq!(text(&serde_json::json!(["a", "b"])), "a, b");
        assert_eq!(text(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    }
}
