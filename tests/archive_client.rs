//! An archive on S3 is ordinary S3 objects: an independent client (boto3 through `tests/common/s3_client.py`,
//! and the AWS CLI) lists and downloads what the plugin wrote to the local S3 server (`s3s-fs`, started by
//! `common::s3`), `zcat | python3 -m json.tool` reads the records, and the keys, sizes and SHA-256 match the
//! manifest.

mod common;

use std::collections::BTreeSet;

use common::{archive as ar, s3::S3Server, *};
use parallax_storage_host::{
    archive::{ArchiveParams, RestoreParams, VerifyParams},
    retention::CleanupTarget,
    *,
};
use serde_json::{json, Value};

const DAY: i64 = 86_400_000_000;

/// A SQLite storage whose `storage.archive` reaches `s3`, with `n` old completed executions spread over
/// several months (each with two events) and a recent one.
async fn storage_with_old_rows(
    s3: &S3Server,
    dir: &tempfile::TempDir,
    n: usize,
) -> (Storage, BTreeSet<String>) {
    let config = s3.with_archive(sqlite_config(dir));
    let s = plugin().open(&config).unwrap_or_else(|e| panic!("open: {e}"));
    let base = Timestamp::now().as_micros() - 200 * DAY;
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let mut e = new_execution("client", "1.0.0");
        e.started_at = Some(at(base + i as i64 * 11 * DAY));
        e.input = Some(json!({ "text": format!("row {i}"), "i": i }).into());
        let e = s.create_execution(e).await.unwrap();
        for k in 0..2 {
            s.append_event(e.id, NewEvent::new(EventKind::StepResult, json!({ "k": k }))).await.unwrap();
        }
        let done = ExecutionCompletion {
            status: ExecutionStatus::Completed,
            output: Some(json!({ "ok": i }).into()),
            error: None,
            completed_at: None,
        };
        s.complete_execution(e.id, done).await.unwrap();
        ids.insert(e.id.to_string());
    }
    s.create_execution(new_execution("recent", "1.0.0")).await.unwrap();
    (s, ids)
}

/// Runs `sh -c script` with the server's AWS environment; its stdout, or a panic with its stderr.
fn sh(s3: &S3Server, script: &str) -> String {
    let out = s3.command("sh").arg("-c").arg(script).output().expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_the_aws_cli_read_what_the_plugin_wrote() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (s, ids) = storage_with_old_rows(&s3, &dir, 12).await;
    let dest = s3.url("backups/parallax");
    let r = s
        .archive(&ArchiveParams {
            target: CleanupTarget::Executions,
            older_than: Some("30d".into()),
            max_count: None,
            destination: dest.clone(),
            dry_run: false,
            keep: false,
            confirm_all: false,
        })
        .await
        .unwrap_or_else(|e| panic!("archive to {dest}: {e}"));
    assert_eq!(r.rows.get("executions"), Some(&12), "{r:?}");
    assert!(r.objects.len() >= 4, "a dozen rows 11 days apart span several months: {r:?}");
    let manifest_key = r.manifest.clone().expect("a manifest");

    // boto3 lists (in pages of 2 keys, so the listing really pages) exactly the objects and the manifest.
    let listed = s3.list(common::s3::BUCKET, "backups/parallax/", 2);
    let listed_keys: BTreeSet<String> = listed
        .iter()
        .map(|(k, _)| k.strip_prefix("backups/parallax/").expect("under the prefix").to_string())
        .collect();
    let expected: BTreeSet<String> =
        r.objects.iter().map(|o| o.key.clone()).chain([manifest_key.clone()]).collect();
    assert_eq!(listed_keys, expected, "what boto3 lists is what the plugin reported");
    for (key, size) in &listed {
        if let Some(o) = r.objects.iter().find(|o| key.ends_with(&o.key)) {
            assert_eq!(*size, o.size, "{key}");
        }
    }

    // The manifest, downloaded by boto3, names every object with the size and SHA-256 of the downloaded bytes.
    let work = tempfile::tempdir().unwrap();
    let mpath = work.path().join("manifest.json");
    s3.client(&[
        "get",
        common::s3::BUCKET,
        &format!("backups/parallax/{manifest_key}"),
        mpath.to_str().unwrap(),
    ]);
    let manifest: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    assert_eq!(ar::manifest_keys(&manifest), r.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>());
    let mut seen = BTreeSet::new();
    for (i, o) in manifest["objects"].as_array().unwrap().iter().enumerate() {
        let key = o["key"].as_str().unwrap();
        let file = work.path().join(format!("o{i}.ndjson.gz"));
        s3.client(&["get", common::s3::BUCKET, &format!("backups/parallax/{key}"), file.to_str().unwrap()]);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(Some(bytes.len() as u64), o["size"].as_u64(), "{key}");
        assert_eq!(Some(ar::sha256_hex(&bytes).as_str()), o["sha256"].as_str(), "{key}");
        // zcat | python3 -m json.tool reads every line.
        let text =
            sh(&s3, &format!("zcat '{}' | python3 -m json.tool --json-lines --compact", file.display()));
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(Some(lines.len() as u64), o["rows"].as_u64(), "{key}");
        // boto3's own gunzip + parse agrees.
        let records = s3.records(common::s3::BUCKET, &format!("backups/parallax/{key}"));
        assert_eq!(records, lines, "{key}");
        for rec in &records {
            assert_eq!(rec["recordSchema"], 1);
            assert_eq!(rec["events"].as_array().map(Vec::len), Some(2), "{rec}");
            seen.insert(rec["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, ids, "the objects hold exactly the archived executions");

    // The AWS CLI: `aws s3 ls` and `aws s3 cp … - | zcat | python3 -m json.tool`.
    let ls = sh(&s3, "aws s3 ls --recursive s3://archive/backups/parallax/");
    for k in &expected {
        assert!(ls.contains(k.as_str()), "aws s3 ls lists {k}:\n{ls}");
    }
    let first = &r.objects[0].key;
    let one = sh(
        &s3,
        &format!(
            "aws s3 cp s3://archive/backups/parallax/{first} - | zcat | head -n 1 | python3 -m json.tool"
        ),
    );
    let rec: Value = serde_json::from_str(&one).unwrap();
    assert!(ids.contains(rec["id"].as_str().unwrap()), "{one}");
    assert!(rec["input"].is_object() && rec["startedAt"].is_string(), "{one}");

    // The plugin agrees with itself: verify ok, and a restore into a fresh SQLite database brings them back.
    let v = s.archive_verify(&VerifyParams { source: dest.clone() }).await.unwrap();
    assert!(v.ok && v.orphans.is_empty(), "{v:?}");
    let dir2 = tempfile::tempdir().unwrap();
    let t = plugin().open(&s3.with_archive(sqlite_config(&dir2))).unwrap();
    let rr = t.restore(&RestoreParams { source: dest, dry_run: false }).await.unwrap();
    assert_eq!(rr.inserted.get("executions"), Some(&12), "{rr:?}");
    // A key written by another client next to the archive is an orphan for verify, not an error, and verify
    // names it relative to the source.
    let stray = work.path().join("stray");
    std::fs::write(&stray, b"not ours").unwrap();
    s3.client(&[
        "put",
        common::s3::BUCKET,
        "backups/parallax/executions/1999/01/stray-0001.ndjson.gz",
        stray.to_str().unwrap(),
    ]);
    let v = s.archive_verify(&VerifyParams { source: s3.url("backups/parallax") }).await.unwrap();
    assert_eq!(v.orphans, ["executions/1999/01/stray-0001.ndjson.gz"], "{v:?}");
    s.shutdown().await.unwrap();
    t.shutdown().await.unwrap();
}
