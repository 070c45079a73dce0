#!/usr/bin/env python3
"""An independent S3 client for the tests (boto3, nothing of ours): proves that an archive is ordinary S3 objects
that standard tools list, download and read.

Settings come from the standard AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION); path-style addressing; botocore's checksums only when required. Every command prints one JSON
document on stdout; a failure exits non-zero with the error on stderr.

    s3_client.py list BUCKET PREFIX [--page-size N]   {"objects": [{"key", "size", "etag"}], "pages": n}
    s3_client.py get BUCKET KEY FILE                  downloads to FILE: {"size": n}
    s3_client.py records BUCKET KEY                   gunzips, parses every line: {"records": [...]}
    s3_client.py put BUCKET KEY FILE                  uploads FILE: {"etag": "..."}
    s3_client.py delete BUCKET KEY                    {"deleted": "KEY"}
"""

import argparse
import gzip
import json
import os
import sys

import boto3
from botocore.config import Config


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )


def cmd_list(s3, a):
    objects, pages = [], 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=a.bucket, Prefix=a.prefix, PaginationConfig={"PageSize": a.page_size}):
        pages += 1
        for o in page.get("Contents", []):
            objects.append({"key": o["Key"], "size": o["Size"], "etag": o.get("ETag")})
    return {"objects": objects, "pages": pages}


def cmd_get(s3, a):
    s3.download_file(a.bucket, a.key, a.file)
    return {"size": os.path.getsize(a.file)}


def cmd_records(s3, a):
    body = s3.get_object(Bucket=a.bucket, Key=a.key)["Body"].read()
    text = gzip.decompress(body).decode("utf-8")
    return {"records": [json.loads(line) for line in text.splitlines() if line.strip()]}


def cmd_put(s3, a):
    with open(a.file, "rb") as f:
        r = s3.put_object(Bucket=a.bucket, Key=a.key, Body=f.read())
    return {"etag": r.get("ETag")}


def cmd_delete(s3, a):
    s3.delete_object(Bucket=a.bucket, Key=a.key)
    return {"deleted": a.key}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("list")
    s.add_argument("bucket")
    s.add_argument("prefix", nargs="?", default="")
    s.add_argument("--page-size", type=int, default=1000)
    s.set_defaults(run=cmd_list)
    for name, run, extra in [
        ("get", cmd_get, ["file"]),
        ("records", cmd_records, []),
        ("put", cmd_put, ["file"]),
        ("delete", cmd_delete, []),
    ]:
        s = sub.add_parser(name)
        s.add_argument("bucket")
        s.add_argument("key")
        for e in extra:
            s.add_argument(e)
        s.set_defaults(run=run)
    a = p.parse_args()
    try:
        out = a.run(client(), a)
    except Exception as e:  # one line on stderr, exit 1: the Rust side shows it
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
