# The backup job of the parallax-persistence chart: the documentation's `pg_dump | gzip | aws s3 cp -`, made safe.
#
# - bash with pipefail (Debian's /bin/sh, dash 0.5.12, has no pipefail): a failed pg_dump, gzip or upload fails
#   the job, not only a failed last command of the pipe.
# - The stream is stored as <name>.partial and renamed to its final name only after every step succeeded. A
#   failed dump never leaves an object that looks like a backup: `aws s3 cp -` stores whatever reached it when
#   its input ends, and gzip closes a truncated dump as a perfectly valid .gz file.
# - On failure the .partial object is removed. A pod killed outright (SIGKILL, node loss) may leave a .partial
#   object, never a final name; an S3 lifecycle rule expiring "*.partial" objects and incomplete multipart
#   uploads after a few days cleans those up.
#
# Environment: PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE, BACKUP_DESTINATION (s3://bucket/prefix/), and the
# aws CLI's own (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ...).
set -euo pipefail
final="${BACKUP_DESTINATION%/}/parallax-$(date -u +%Y%m%dT%H%M%SZ).sql.gz"
partial="${final}.partial"
on_exit() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "backup FAILED (exit status $status); removing ${partial}" >&2
    aws s3 rm --only-show-errors "$partial" || echo "could not remove ${partial}: delete it by hand" >&2
  fi
  exit "$status"
}
trap on_exit EXIT
echo "backup: pg_dump of database ${PGDATABASE} on ${PGHOST}:${PGPORT} as ${PGUSER} to ${final}"
pg_dump --no-password --host="$PGHOST" --port="$PGPORT" --username="$PGUSER" --dbname="$PGDATABASE" |
  gzip |
  aws s3 cp --only-show-errors - "$partial"
aws s3 mv --only-show-errors "$partial" "$final"
echo "backup: stored ${final}"
