//! Writes many executions (with events) straight into a file store in its own format (JSON, uncompressed),
//! far faster than through the plugin: for cleanup tests and the file retention benchmark. The store must
//! exist (opened once) and be closed while this runs; the next open indexes the files.

use std::path::{Path, PathBuf};

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian, UTC).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 UTC with microseconds, and the file-name parts: `YYYY/MM/DD` and `HHMMSS.ffffff`.
fn times(micros: i64) -> (String, String, String) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (s / 3600, s / 60 % 60, s % 60);
    (
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:06}Z"),
        format!("{y:04}/{m:02}/{d:02}"),
        format!("{hh:02}{mm:02}{ss:02}.{frac:06}"),
    )
}

/// The id of generated execution `i` (a valid lower-case UUID), and of its event `seq`.
pub fn execution_id(i: usize) -> String {
    format!("01900000-0000-7000-8000-{i:012x}")
}

fn event_id(i: usize, seq: usize) -> String {
    format!("01900000-0000-7000-9{seq:03x}-{i:012x}")
}

/// Writes `n` completed executions, the `i`-th started at `from + i * step` µs, each with `events` events.
/// Returns the paths of the execution files.
pub fn write_executions(base: &Path, n: usize, events: usize, from: i64, step: i64) -> Vec<PathBuf> {
    write_executions_from(base, 0, n, events, from, step)
}

/// [`write_executions`] for executions `first..first + n` (ids and start times follow the index).
pub fn write_executions_from(
    base: &Path,
    first: usize,
    n: usize,
    events: usize,
    from: i64,
    step: i64,
) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(n);
    let mut made = std::collections::HashSet::new();
    for i in first..first + n {
        let started = from + i as i64 * step;
        let (ts, day, stamp) = times(started);
        let (done_ts, _, _) = times(started + 1_000_000);
        let id = execution_id(i);
        let dir = base.join("executions").join(&day);
        if made.insert(dir.clone()) {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let doc = serde_json::json!({
            "id": id, "pattern_name": "generated", "pattern_version": "1.0.0", "status": "completed",
            "started_at": ts, "completed_at": done_ts, "duration_ms": 1000,
            "input": { "w": "generated execution", "i": i }, "output": { "ok": true },
        });
        let file = dir.join(format!("{stamp}_{id}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        if events > 0 {
            let ev_dir = dir.join(format!("{stamp}_{id}.events"));
            std::fs::create_dir(&ev_dir).unwrap();
            for seq in 1..=events {
                let ev = serde_json::json!({
                    "id": event_id(i, seq), "execution_id": id, "seq": seq, "kind": "step_result",
                    "recorded_at": ts, "payload": { "step": seq },
                });
                std::fs::write(
                    ev_dir.join(format!("{seq:06}.json")),
                    serde_json::to_vec_pretty(&ev).unwrap(),
                )
                .unwrap();
            }
        }
        out.push(file);
    }
    out
}

#[test]
fn generated_times_are_utc() {
    assert_eq!(times(1_705_314_615_123_456).0, "2024-01-15T10:30:15.123456Z");
    assert_eq!(times(951_868_799_999_999).1, "2000/02/29");
    assert_eq!(times(0).2, "000000.000000");
}
