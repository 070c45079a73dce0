//! [`super::tamper::tamper`] on this backend: `psql` against the harness's database, as an operator with
//! access to the server would do it.

use std::process::Command;

use super::{pg, tamper::Tamper, Harness};

pub fn apply(h: &Harness, t: Tamper<'_>) {
    let q = |id: &str| format!("'{}'", id.replace('\'', "''"));
    match t {
        Tamper::Alter(id) => {
            psql(h, &format!("UPDATE audit_logs SET actor = 'mallory' WHERE id = {}", q(id)), "UPDATE 1")
        }
        Tamper::Delete(id) => psql(h, &format!("DELETE FROM audit_logs WHERE id = {}", q(id)), "DELETE 1"),
        Tamper::Forge(id) => psql(
            h,
            &format!("INSERT INTO audit_logs (id, timestamp, action) VALUES ({}, now(), 'forged')", q(id)),
            "INSERT 0 1",
        ),
        // Through a temporary value: the sequence number's index is unique (NULLs excepted).
        Tamper::Swap(a, b) => psql(
            h,
            &format!(
                "CREATE TEMP TABLE swap AS SELECT id, chain_seq FROM audit_logs WHERE id IN ({a}, {b}) \
                 AND chain_seq IS NOT NULL;
                 DO $$ BEGIN IF (SELECT count(*) FROM swap) <> 2 THEN
                     RAISE EXCEPTION 'swap: both entries must be present and chained';
                 END IF; END $$;
                 UPDATE audit_logs SET chain_seq = NULL WHERE id IN ({a}, {b});
                 UPDATE audit_logs l SET chain_seq = s.chain_seq FROM swap s WHERE l.id IN ({a}, {b}) AND s.id <> l.id;",
                a = q(a),
                b = q(b)
            ),
            "UPDATE 2",
        ),
    }
}

/// Runs `sql` in one transaction with `psql` on the harness's database; its output must end with `tag`.
fn psql(h: &Harness, sql: &str, tag: &str) {
    let db = h.pg_db.as_deref().expect("a PostgreSQL harness names its database");
    let out = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d"])
        .arg(pg::server().url(db))
        .args(["-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("running psql (is the PostgreSQL client installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with(tag),
        "psql {sql:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
