//! [`super::tamper::tamper`] on this backend: the `sqlite3` command-line shell on the harness's database file,
//! as an operator with access to the file would change it (the storage is shut down; the shell reads the WAL).

use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{tamper::Tamper, Harness};

/// `s` as an SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `sql` with `sqlite3 -bail` on the file and returns what it printed.
fn sqlite3(path: &str, sql: &str) -> String {
    let mut child = Command::new("sqlite3")
        .arg("-bail")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("the sqlite3 command-line shell is needed to tamper with {path}: {e}"));
    child.stdin.take().expect("stdin").write_all(sql.as_bytes()).expect("writing to sqlite3");
    let out = child.wait_with_output().expect("sqlite3");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "sqlite3 {path} failed ({}): {}\n{sql}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn apply(h: &Harness, t: Tamper<'_>) {
    let path = h.config["sqlite"]["path"].as_str().expect("the harness config names the SQLite file");
    // Each change is one transaction; the last line prints how many entries it touched.
    let (sql, touched) = match t {
        Tamper::Alter(id) => (
            format!("UPDATE audit_logs SET actor = 'mallory' WHERE id = {};\nSELECT changes();", quote(id)),
            1,
        ),
        Tamper::Delete(id) => {
            (format!("DELETE FROM audit_logs WHERE id = {};\nSELECT changes();", quote(id)), 1)
        }
        Tamper::Forge(id) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
            (
                format!(
                    "INSERT INTO audit_logs (id, timestamp, action) VALUES ({}, {now}, 'forged');\nSELECT changes();",
                    quote(id)
                ),
                1,
            )
        }
        Tamper::Swap(a, b) => {
            let (a, b) = (quote(a), quote(b));
            // Through a temporary value: the sequence index is unique (NULLs may repeat).
            (
                format!(
                    "BEGIN;
                     CREATE TEMP TABLE swap AS SELECT id, chain_seq FROM audit_logs WHERE id IN ({a}, {b});
                     UPDATE audit_logs SET chain_seq = NULL WHERE id = {a};
                     UPDATE audit_logs SET chain_seq = (SELECT chain_seq FROM swap WHERE id = {a}) WHERE id = {b};
                     UPDATE audit_logs SET chain_seq = (SELECT chain_seq FROM swap WHERE id = {b}) WHERE id = {a};
                     SELECT count(*) FROM swap WHERE chain_seq IS NOT NULL;
                     COMMIT;"
                ),
                2,
            )
        }
    };
    let printed = sqlite3(path, &format!("{sql}\n"));
    assert_eq!(
        printed,
        touched.to_string(),
        "{t:?} touched {printed} audit entries of {path}, not {touched}"
    );
}
