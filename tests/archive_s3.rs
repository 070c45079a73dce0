//! Archives on a real S3-compatible server (`s3s-fs`, started by `tests/common/s3.rs`): the harness itself,
//! and the faults an S3 destination must survive with a clear error and nothing deleted.

mod common;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use common::{
    s3::{S3Server, BUCKET},
    *,
};
use parallax_storage_host::{
    archive::{ArchiveParams, ArchiveReport, RestoreParams},
    retention::CleanupTarget,
    *,
};
use serde_json::json;

fn gzip_lines(lines: &[serde_json::Value]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for l in lines {
        enc.write_all(l.to_string().as_bytes()).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    enc.finish().unwrap()
}

/// The harness works with independent clients: boto3 puts, lists across pages and reads back a gzip NDJSON
/// object; the aws CLI lists it; the data survives a kill and restart; a second bucket is empty.
#[test]
fn harness_serves_s3_to_boto3_and_the_aws_cli() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let records =
        vec![serde_json::json!({"recordSchema": 1, "id": "a"}), serde_json::json!({"id": "b", "n": 2})];
    let file = dir.path().join("obj.ndjson.gz");
    std::fs::write(&file, gzip_lines(&records)).unwrap();
    for i in 0..5 {
        s3.client(&["put", BUCKET, &format!("pre/x/{i:04}.ndjson.gz"), file.to_str().unwrap()]);
    }
    s3.client(&["put", BUCKET, "other/y.ndjson.gz", file.to_str().unwrap()]);

    // Pages of two keys: the client follows continuation tokens.
    let listed = s3.client(&["list", BUCKET, "pre/", "--page-size", "2"]);
    assert_eq!(listed["pages"], 3, "{listed}");
    let keys: Vec<_> = s3.list(BUCKET, "pre/", 2).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, (0..5).map(|i| format!("pre/x/{i:04}.ndjson.gz")).collect::<Vec<_>>());
    assert_eq!(s3.records(BUCKET, "pre/x/0003.ndjson.gz"), records);
    assert_eq!(s3.files(BUCKET).len(), 6);

    let out = s3.command("aws").args(["s3", "ls", &format!("s3://{BUCKET}/pre/"), "--recursive"]).output();
    let out = out.expect("the aws CLI (./test.sh installs awscli)");
    assert!(out.status.success(), "aws s3 ls: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.ends_with(".ndjson.gz")).count(), 5, "{text}");

    // Wrong secret: refused like S3 does.
    let mut bad = s3.command("python3");
    bad.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let err = bad
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/s3_client.py"))
        .args(["list", BUCKET, ""])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("SignatureDoesNotMatch"), "{err:?}");

    s3.kill();
    assert!(!s3.running());
    assert!(s3.try_client(&["list", BUCKET, "pre/"]).is_err(), "a killed server still answers");
    s3.restart();
    assert!(s3.running());
    assert_eq!(s3.list(BUCKET, "", 1000).len(), 6);
    let other = s3.bucket("second");
    assert!(s3.list(&other, "", 1000).is_empty());
    assert!(s3.try_client(&["list", "no-such-bucket", ""]).unwrap_err().contains("NoSuchBucket"));
}

// ------------------------------------------------------------------ faults, through the loaded plugin on SQLite

const DAY: i64 = 86_400_000_000;

fn days_ago(days: i64) -> i64 {
    Timestamp::now().as_micros() - days * DAY
}

/// A SQLite storage whose `storage.archive` section is `archive`.
fn open_sqlite(dir: &tempfile::TempDir, archive: serde_json::Value) -> Storage {
    let mut config = sqlite_config(dir);
    config["archive"] = archive;
    plugin().open(&config).unwrap_or_else(|e| panic!("open sqlite with storage.archive: {e}"))
}

/// Executions, their events and audit entries, as the storage lists them. (Not with a second SQLite library
/// beside the plugin's: closing its connection would drop the plugin's POSIX locks and checkpoint its WAL.)
async fn counts(s: &Storage) -> [usize; 3] {
    let executions = s.executions(ExecutionFilter::default(), 1000).collect().await.unwrap();
    let mut events = 0;
    for e in &executions {
        events += s.list_events(e.id).await.unwrap().len();
    }
    let audit = s.audit_entries(AuditQuery::default(), 1000).collect().await.unwrap();
    [executions.len(), events, audit.len()]
}

/// `n` completed executions started 60 days ago, with two events each, and 5 audit entries as old.
async fn seed(s: &Storage, n: usize) {
    for i in 0..n {
        let mut e = new_execution("archived", "1.0.0");
        e.started_at = Some(at(days_ago(60) + i as i64));
        let e = s.create_execution(e).await.unwrap();
        for step in 0..2 {
            s.append_event(e.id, NewEvent::new(EventKind::StepResult, json!({ "step": step })))
                .await
                .unwrap();
        }
        let done = ExecutionCompletion {
            status: ExecutionStatus::Completed,
            output: Some(json!({ "ok": i }).into()),
            error: None,
            completed_at: None,
        };
        s.complete_execution(e.id, done).await.unwrap();
    }
    let entries = (0..5)
        .map(|i| {
            let mut a = audit("archive.test", "tester");
            a.timestamp = Some(at(days_ago(120) + i));
            a
        })
        .collect();
    s.append_audit(entries).await.unwrap();
}

fn archive_params(target: CleanupTarget, destination: &str) -> ArchiveParams {
    ArchiveParams {
        target,
        older_than: Some("30d".into()),
        max_count: None,
        destination: destination.into(),
        dry_run: false,
        keep: false,
        confirm_all: true,
    }
}

/// The error names the destination as given and the endpoint, says `needle`, and shows no credential.
#[track_caller]
fn check_fault(
    r: Result<ArchiveReport, Error>,
    kind: ErrorKind,
    s3: &S3Server,
    destination: &str,
    needle: &str,
) {
    let e = match r {
        Ok(report) => panic!("expected a {kind:?} error, got {report:?}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(e.kind, kind, "{msg}");
    assert!(msg.contains(destination), "{msg:?} does not name the destination {destination}");
    assert!(msg.contains(&s3.endpoint()), "{msg:?} does not name the endpoint {}", s3.endpoint());
    assert!(msg.contains(needle), "{msg:?} does not say {needle:?}");
    for secret in [s3.secret_key(), s3.access_key(), WRONG_SECRET, UNKNOWN_KEY] {
        assert!(!msg.contains(secret), "{msg:?} shows a credential");
    }
}

const WRONG_SECRET: &str = "wrong-secret-7f3e9a";
const UNKNOWN_KEY: &str = "AKUNKNOWN7F3E9A";

/// A run refused by the server (the bad `storage.archive` section made by `bad` from the server's good one):
/// a clear error for a run and a dry run of either table, nothing written, no row deleted; the same data
/// archives once the settings are right.
async fn refused_then_fixed(bad: impl Fn(&S3Server) -> serde_json::Value, needle: &str, kind: ErrorKind) {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sqlite(&dir, s3.archive_config());
    seed(&s, 6).await;
    s.shutdown().await.unwrap();

    let refused = open_sqlite(&dir, bad(&s3));
    let before = counts(&refused).await;
    assert_eq!(before, [6, 12, 5]);
    let dest = s3.url("parallax/executions");
    for target in [CleanupTarget::Executions, CleanupTarget::AuditLogs] {
        check_fault(refused.archive(&archive_params(target, &dest)).await, kind, &s3, &dest, needle);
        let dry = ArchiveParams { dry_run: true, ..archive_params(target, &dest) };
        check_fault(refused.archive(&dry).await, kind, &s3, &dest, needle);
    }
    assert_eq!(counts(&refused).await, before, "rows were deleted");
    refused.shutdown().await.unwrap();
    assert_eq!(s3.files(BUCKET), Vec::<String>::new(), "objects were written");
    assert_eq!(s3.upload_parts(), Vec::<std::path::PathBuf>::new());

    let good = open_sqlite(&dir, s3.archive_config());
    let r = good.archive(&archive_params(CleanupTarget::Executions, &dest)).await.unwrap();
    assert_eq!(r.rows.get("executions"), Some(&6), "{r:?}");
    assert_eq!(counts(&good).await, [0, 0, 5]);
    good.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused_and_nothing_is_deleted() {
    let bad = |s3: &S3Server| {
        let mut a = s3.archive_config();
        a["secretAccessKey"] = json!(WRONG_SECRET);
        a
    };
    refused_then_fixed(bad, "secret access key is wrong", ErrorKind::InvalidInput).await;
}

#[tokio::test]
async fn an_unknown_access_key_is_refused_and_nothing_is_deleted() {
    let bad = |s3: &S3Server| {
        let mut a = s3.archive_config();
        a["accessKeyId"] = json!(UNKNOWN_KEY);
        a
    };
    refused_then_fixed(bad, "does not know the access key id", ErrorKind::InvalidInput).await;
}

/// A missing bucket is found before anything is written (s3s-fs, unlike S3, would create the bucket on the
/// first PutObject, so a run that wrote before probing would "succeed" into a new bucket).
#[tokio::test]
async fn a_missing_bucket_is_refused_before_writing_and_nothing_is_deleted() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sqlite(&dir, s3.archive_config());
    seed(&s, 4).await;
    let before = counts(&s).await;
    let dest = "s3://no-such-bucket/parallax/";
    for target in [CleanupTarget::Executions, CleanupTarget::AuditLogs] {
        let r = s.archive(&archive_params(target, dest)).await;
        check_fault(r, ErrorKind::NotFound, &s3, dest, "bucket does not exist");
    }
    // A dry run probes the same way; a 404 is not retried, so it answers at once even with the default
    // retries and timeout (the bound only tells a retry loop from none).
    let mut defaults = s3.archive_config();
    defaults.as_object_mut().unwrap().retain(|k, _| !["retries", "timeout"].contains(&k.as_str()));
    let d = open_sqlite(&dir, defaults);
    let started = Instant::now();
    let dry = ArchiveParams { dry_run: true, ..archive_params(CleanupTarget::Executions, dest) };
    check_fault(d.archive(&dry).await, ErrorKind::NotFound, &s3, dest, "bucket does not exist");
    assert!(started.elapsed() < Duration::from_secs(20), "a missing bucket took {:?}", started.elapsed());
    d.shutdown().await.unwrap();
    assert_eq!(counts(&s).await, before, "rows were deleted");
    s.shutdown().await.unwrap();
    assert!(!s3.root().join("no-such-bucket").exists(), "the run created the bucket by writing to it");
    assert_eq!(s3.files(BUCKET), Vec::<String>::new());
}

/// Deterministic text that gzip cannot shrink much (62 symbols, xorshift): enough of it makes the archive
/// larger than one part, so it is uploaded in parts.
fn noise(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 62) as usize] as char
        })
        .collect()
}

/// The server is SIGKILLed while a multipart upload is in flight: the run fails naming the destination and
/// the endpoint, no row is deleted, no object is visible; once the server is back, a new run archives
/// everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_mid_upload_deletes_nothing_and_a_rerun_finishes() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut archive = s3.archive_config();
    archive["partSize"] = json!(5 << 20);
    archive["maxObjectSize"] = json!(256 << 20);
    let s = open_sqlite(&dir, archive.clone());
    // 1,600 audit entries of 12 KiB of noise: about 15 MiB compressed, three parts or more.
    const N: i64 = 1600;
    for batch in 0..(N / 400) {
        let entries = (0..400)
            .map(|i| {
                let n = batch * 400 + i;
                let mut a = audit("archive.big", "tester");
                a.timestamp = Some(at(days_ago(100) + n));
                a.details = Some(json!({ "n": n, "noise": noise(n as u64, 12 << 10) }).into());
                a
            })
            .collect();
        s.append_audit(entries).await.unwrap();
    }
    let before = counts(&s).await;
    assert_eq!(before[2], N as usize);
    let dest = s3.url("killed");
    let params = archive_params(CleanupTarget::AuditLogs, &dest);

    let run = {
        let s = s.clone();
        let params = params.clone();
        tokio::spawn(async move { s.archive(&params).await })
    };
    // Kill as soon as the first part is stored and the upload is not complete.
    let deadline = Instant::now() + Duration::from_secs(300);
    while s3.upload_parts().is_empty() {
        assert!(!run.is_finished(), "the run ended before any part was uploaded: {:?}", run.await);
        assert!(Instant::now() < deadline, "no multipart upload started within 300 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s3.kill();
    let r = run.await.unwrap();
    check_fault(r, ErrorKind::Unavailable, &s3, &dest, "");
    assert_eq!(counts(&s).await, before, "rows were deleted");
    assert!(s3.files(BUCKET).is_empty(), "an object became visible: {:?}", s3.files(BUCKET));
    assert!(!s3.upload_parts().is_empty(), "the parts of the killed upload should still be on the server");

    s3.restart();
    let r = s.archive(&params).await.unwrap_or_else(|e| panic!("re-run after restart: {e}"));
    assert_eq!(r.rows.get("audit_logs"), Some(&(N as u64)), "{r:?}");
    assert_eq!(counts(&s).await[2], 0);
    // Each archived entry exactly once, as an independent client reads them.
    let mut seen = std::collections::BTreeSet::new();
    for (key, _) in s3.list(BUCKET, "killed/audit_logs/", 1000) {
        if key.ends_with(".ndjson.gz") {
            for rec in s3.records(BUCKET, &key) {
                assert!(seen.insert(rec["id"].as_str().unwrap().to_string()), "{} twice", rec["id"]);
            }
        }
    }
    assert_eq!(seen.len() as i64, N);
    s.shutdown().await.unwrap();
}

/// Set in the child process that [`no_credentials_anywhere_are_refused_naming_the_keys`] runs with no `AWS_*`
/// variable at all (the test cannot unset them in its own process: other tests run beside it).
const NO_AWS_CHILD: &str = "PARALLAX_TEST_NO_AWS_CHILD";

/// No credentials in `storage.archive` nor in the environment: refused before any request, naming both
/// missing keys in both spellings (object_store would otherwise ask the EC2 instance metadata endpoint).
#[test]
fn no_credentials_anywhere_are_refused_naming_the_keys() {
    if std::env::var_os(NO_AWS_CHILD).is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        return rt.block_on(no_credentials_body());
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            child.env_remove(k);
        }
    }
    let out = child
        .env(NO_AWS_CHILD, "1")
        .args([
            "--exact",
            "no_credentials_anywhere_are_refused_naming_the_keys",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn no_credentials_body() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sqlite(&dir, s3.archive_config());
    seed(&s, 3).await;
    let before = counts(&s).await;
    s.shutdown().await.unwrap();
    let local = json!({ "endpoint": s3.endpoint(), "allowHttp": true, "retries": 0 });
    // A local endpoint, and AWS itself (no endpoint): neither may fall back to instance metadata.
    for archive in [local, json!({ "region": "eu-west-1" })] {
        let s = open_sqlite(&dir, archive.clone());
        let dest = "s3://archive/parallax/";
        for dry_run in [false, true] {
            let params = ArchiveParams { dry_run, ..archive_params(CleanupTarget::Executions, dest) };
            let started = Instant::now();
            let e = s.archive(&params).await.expect_err("archived without credentials");
            let msg = e.to_string();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{archive}: {msg}");
            for needle in
                [dest, "AWS_ACCESS_KEY_ID", "accessKeyId", "AWS_SECRET_ACCESS_KEY", "secretAccessKey"]
            {
                assert!(msg.contains(needle), "{archive}: {msg:?} does not name {needle}");
            }
            // Refused before any request: no metadata endpoint was tried (its timeouts take seconds).
            assert!(started.elapsed() < Duration::from_secs(5), "{archive}: took {:?}", started.elapsed());
        }
        assert_eq!(counts(&s).await, before);
        s.shutdown().await.unwrap();
    }
    assert!(s3.files(BUCKET).is_empty());
}

/// A restore imports far more slowly than it downloads. Reading an S3 object while importing it kept one GET
/// open past the request timeout (`storage.archive.timeout` covers the body), and the retry of the rest
/// failed: the whole restore failed on any object that took longer to import than the timeout. A remote
/// object is now copied locally first; with a timeout far below the import time the restore still works.
#[tokio::test]
async fn a_restore_slower_than_the_request_timeout_still_completes() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sqlite(&dir, s3.archive_config());
    let n = 20_000usize;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let entries = chunk
            .iter()
            .map(|i| {
                let mut a = audit("archive.slow-restore", "tester");
                a.timestamp = Some(at(days_ago(120) + *i as i64));
                a
            })
            .collect();
        s.append_audit(entries).await.unwrap();
    }
    let dest = s3.url("slow-restore/");
    let mut p = archive_params(CleanupTarget::AuditLogs, &dest);
    p.keep = true;
    let report: ArchiveReport = s.archive(&p).await.unwrap();
    assert_eq!(report.rows.get("audit_logs"), Some(&(n as u64)), "{report:?}");
    s.shutdown().await.unwrap();

    let mut short = s3.archive_config();
    short["timeout"] = json!(200);
    let target_dir = tempfile::tempdir().unwrap();
    let t = open_sqlite(&target_dir, short);
    let started = Instant::now();
    let restored = t
        .restore(&RestoreParams { source: dest.clone(), dry_run: false })
        .await
        .unwrap_or_else(|e| panic!("restore with a 200 ms request timeout: {e}"));
    assert!(started.elapsed() > Duration::from_millis(200), "the import was not slower than the timeout");
    assert_eq!(restored.inserted.get("audit_logs"), Some(&(n as u64)), "{restored:?}");
    let back = t.audit_entries(AuditQuery::default(), 1000).collect().await.unwrap();
    assert_eq!(back.len(), n);
    t.shutdown().await.unwrap();
}
