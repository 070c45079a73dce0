#!/usr/bin/env python3
"""Proves every down.sql exact: for each migration, in order, the schema before `up.sql` equals the schema
after `up.sql` + `down.sql`, and running `up.sql` again gives the same schema as the first time.

The schema is everything the database would dump, not only what Diesel's schema.rs shows: tables, columns,
defaults, constraints, indexes, partitions, functions (parallax_move_strays), generated columns, triggers,
FTS5 virtual tables and their shadow tables.

  PostgreSQL: `pg_dump --schema-only` of a throwaway database, without comments, SET lines and ownership.
  SQLite:     `SELECT type, name, tbl_name, sql FROM sqlite_master` of a throwaway file, sorted.

Usage:
  scripts/check-down-migrations.py --sqlite
  scripts/check-down-migrations.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
  (both flags together check both). The PostgreSQL URL must let us create and drop a database; a database
  named parallax_down_check is created next to the one in the URL and dropped afterwards.

Exit status 1 names every migration whose down.sql does not restore the schema, with a unified diff.
"""

import argparse
import difflib
import glob
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_DB = "parallax_down_check"


def migrations(backend):
    """(name, up.sql text, down.sql text) of every migration of one backend, oldest first."""
    base = os.path.join(ROOT, "migrations", backend)
    out = []
    for name in sorted(os.listdir(base)):
        d = os.path.join(base, name)
        if not os.path.isdir(d):
            continue
        texts = []
        for f in ("up.sql", "down.sql"):
            path = os.path.join(d, f)
            if not os.path.exists(path):
                sys.exit(f"error: migrations/{backend}/{name}/{f} is missing; every migration needs both files")
            with open(path, encoding="utf-8") as fh:
                texts.append(fh.read())
        out.append((name, texts[0], texts[1]))
    if not out:
        sys.exit(f"error: no migrations found under {base}")
    return out


def diff(before, after, name):
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"schema before {name}/up.sql",
            tofile=f"schema after {name}/up.sql + down.sql",
        )
    )


def check(backend, dump, apply):
    """Walks the migrations of `backend`; returns a list of failure messages."""
    failures = []
    for name, up, down in migrations(backend):
        where = f"migrations/{backend}/{name}"
        before = dump()
        for label, sql in (("up.sql", up), ("down.sql", down), ("up.sql (again, after down.sql)", up)):
            try:
                apply(sql)
            except RuntimeError as e:
                failures.append(f"{where}/{label} failed:\n{e}")
                return failures  # the schema is now unknown: later migrations cannot be checked
            if label == "up.sql":
                after_up = dump()
            elif label == "down.sql":
                restored = dump()
                if restored != before:
                    failures.append(
                        f"{where}/down.sql does not undo up.sql exactly (- before up, + after up and down):\n"
                        + diff(before, restored, where)
                    )
        again = dump()
        if again != after_up:
            failures.append(
                f"{where}/up.sql gives a different schema when run again after down.sql "
                "(- first up, + up after down):\n" + diff(after_up, again, where)
            )
        print(f"  ok  {where}")
    return failures


def check_sqlite():
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "check.db"), isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")

        def dump():
            rows = conn.execute(
                "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name, tbl_name"
            ).fetchall()
            return "".join(f"{t} {n} on {tb}:\n  {s}\n" for t, n, tb, s in rows)

        def apply(sql):
            # One transaction per file, as Diesel runs a migration.
            try:
                conn.executescript("BEGIN;\n" + sql + "\nCOMMIT;")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise RuntimeError(str(e)) from None

        print(f"SQLite {sqlite3.sqlite_version} (python3 sqlite3 module):")
        failures = check("sqlite", dump, apply)
        conn.close()
        return failures


def pg_bin():
    """The newest installed PostgreSQL client binaries (pg_dump must not be older than the server)."""
    dirs = glob.glob("/usr/lib/postgresql/*/bin")
    dirs.sort(key=lambda d: int(re.sub(r"\D", "", d.split("/")[4]) or 0))
    for d in reversed(dirs):
        if os.path.exists(os.path.join(d, "pg_dump")):
            return d
    if shutil.which("pg_dump") and shutil.which("psql"):
        return os.path.dirname(shutil.which("pg_dump"))
    sys.exit("error: pg_dump and psql not found; install the Debian package postgresql (or postgresql-client)")


def with_database(url, db):
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


def run(cmd, stdin=None):
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError((p.stderr or p.stdout).strip())
    return p.stdout


# pg_dump lines that say nothing about the schema: comments, session settings, and the random
# \restrict/\unrestrict keys of recent pg_dump releases.
PG_NOISE = re.compile(r"^(--.*|SET .*|SELECT pg_catalog\.set_config\(.*|\\(un)?restrict .*|)$")


def check_postgres(admin_url):
    bin_dir = pg_bin()
    psql = [os.path.join(bin_dir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    url = with_database(admin_url, CHECK_DB)

    def admin(sql):
        run(psql + ["-d", admin_url, "-c", sql])

    def dump():
        out = run([os.path.join(bin_dir, "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", "-d", url])
        return "".join(line + "\n" for line in out.splitlines() if not PG_NOISE.match(line))

    def apply(sql):
        # One transaction per file, as Diesel runs a migration.
        run(psql + ["--single-transaction", "-d", url, "-f", "-"], stdin=sql)

    try:
        admin(f"DROP DATABASE IF EXISTS {CHECK_DB}")
        admin(f"CREATE DATABASE {CHECK_DB}")
    except RuntimeError as e:
        sys.exit(f"error: cannot create the throwaway database {CHECK_DB} through {redact(admin_url)}: {e}")
    print(f"PostgreSQL ({run(psql + ['-d', url, '-tAc', 'SHOW server_version']).strip()}, pg_dump from {bin_dir}):")
    try:
        return check("postgres", dump, apply)
    finally:
        admin(f"DROP DATABASE IF EXISTS {CHECK_DB}")


def redact(url):
    u = urllib.parse.urlsplit(url)
    netloc = u.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        netloc = creds.split(":", 1)[0] + (":***" if ":" in creds else "") + "@" + host
    query = re.sub(r"(password=)[^&]*", r"\1***", u.query)
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sqlite", action="store_true", help="check migrations/sqlite")
    ap.add_argument("--postgres", metavar="URL", help="check migrations/postgres on this server")
    args = ap.parse_args()
    if not args.sqlite and not args.postgres:
        ap.error("give --sqlite, --postgres URL, or both")
    failures = []
    if args.sqlite:
        failures += check_sqlite()
    if args.postgres:
        failures += check_postgres(args.postgres)
    if failures:
        print(file=sys.stderr)
        for f in failures:
            print(f"FAILED: {f}\n", file=sys.stderr)
        print(f"{len(failures)} down.sql check(s) failed; fix the down.sql named above", file=sys.stderr)
        sys.exit(1)
    print("every down.sql restores the schema exactly")


if __name__ == "__main__":
    main()
