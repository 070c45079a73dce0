//! Archives on a real S3-compatible server (`s3s-fs`, started by `tests/common/s3.rs`): the harness itself,
//! and the faults an S3 destination must survive with a clear error and nothing deleted.

mod common;

use std::io::Write;

use common::s3::{S3Server, BUCKET};

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
