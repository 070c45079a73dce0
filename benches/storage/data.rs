//! Synthetic data: a deterministic execution history (patterns, status mix, months of `started_at`, UUIDv7
//! ids carrying that time), and the PostgreSQL binary encodings the raw baselines need (COPY rows and query
//! parameters) without turning on extra tokio-postgres features, which would rebuild the plugin differently.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use uuid::Uuid;

pub const PATTERNS: [&str; 20] = [
    "summarize",
    "translate",
    "classify-ticket",
    "extract-invoice",
    "code-review",
    "triage-alert",
    "draft-reply",
    "research-topic",
    "plan-trip",
    "qa-check",
    "sentiment",
    "route-lead",
    "write-tests",
    "refactor",
    "incident-report",
    "meeting-notes",
    "data-cleanup",
    "price-quote",
    "onboarding",
    "compliance-scan",
];

/// Status mix of a mature installation: most runs finished, a few still going.
pub const STATUSES: [(&str, u32); 5] =
    [("completed", 70), ("failed", 12), ("cancelled", 5), ("running", 8), ("pending", 5)];

pub const DAY_US: i64 = 86_400_000_000;
/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// splitmix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A UUIDv7 whose embedded time is `at_us` (milliseconds precision), as the plugin generates.
pub fn v7_at(at_us: i64, rng: &mut Rng) -> Uuid {
    let mut rand = [0u8; 10];
    rand[..8].copy_from_slice(&rng.next().to_le_bytes());
    rand[8..].copy_from_slice(&rng.next().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis((at_us / 1000) as u64, &rand).into_uuid()
}

/// One execution of the loaded history.
pub struct ExecRow {
    pub id: Uuid,
    pub pattern: &'static str,
    pub version: &'static str,
    pub status: &'static str,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_us: i64,
    pub completed_us: Option<i64>,
    pub duration_ms: Option<i64>,
    pub metadata: Option<&'static str>,
    pub tags: &'static str,
}

/// `n` executions started over the `days` days before `now`, oldest first (as they would have been written),
/// a little jitter on each start.
pub struct History {
    rng: Rng,
    now: i64,
    days: i64,
    n: usize,
}

impl History {
    pub fn new(seed: u64, now: i64, days: i64, n: usize) -> History {
        History { rng: Rng::new(seed), now, days, n }
    }

    /// Row `k` of `n`.
    pub fn row(&mut self, k: usize) -> ExecRow {
        let span = self.days * DAY_US;
        let at = span - (span as i128 * k as i128 / self.n as i128) as i64;
        let r = &mut self.rng;
        let i = r.next();
        let pattern = PATTERNS[(i % PATTERNS.len() as u64) as usize];
        let version = ["1.0.0", "1.1.0", "2.0.0"][(i >> 8) as usize % 3];
        let mut pick = r.below(100) as u32;
        let mut status = STATUSES[0].0;
        for (s, w) in STATUSES {
            if pick < w {
                status = s;
                break;
            }
            pick -= w;
        }
        // Leave the last minute free so "now" rows of the write scenarios never collide in time.
        let started_us = self.now - 60_000_000 - at + r.below(1_000_000) as i64;
        let id = v7_at(started_us, r);
        let n = r.below(1_000_000);
        let input = format!(r#"{{"q":"{pattern} request {n}","user":"u{}"}}"#, n % 997);
        let finished = matches!(status, "completed" | "failed" | "cancelled");
        let duration_ms = finished.then(|| 500 + r.below(600_000) as i64);
        ExecRow {
            id,
            pattern,
            version,
            status,
            input,
            output: (status == "completed")
                .then(|| format!(r#"{{"result":"done {n}","tokens":{}}}"#, n % 4096)),
            error: (status == "failed").then(|| r#"{"message":"agent timed out after 30s"}"#.to_string()),
            started_us,
            completed_us: duration_ms.map(|d| started_us + d * 1000),
            duration_ms,
            metadata: (n % 4 == 0).then_some(r#"{"source":"api"}"#),
            tags: if n % 10 == 0 { r#"["nightly"]"# } else { "[]" },
        }
    }
}

// ---------------------------------------------------------------- PostgreSQL binary COPY

/// `COPY … FROM STDIN (FORMAT binary)` stream writer.
pub struct BinaryCopy {
    pub buf: BytesMut,
}

impl BinaryCopy {
    pub fn new() -> BinaryCopy {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        BinaryCopy { buf }
    }
    pub fn row(&mut self, fields: i16) {
        self.buf.put_i16(fields);
    }
    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.put_i32(b.len() as i32);
        self.buf.put_slice(b);
    }
    pub fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn uuid(&mut self, u: &Uuid) {
        self.bytes(u.as_bytes());
    }
    pub fn jsonb(&mut self, s: &str) {
        self.buf.put_i32(s.len() as i32 + 1);
        self.buf.put_u8(1);
        self.buf.put_slice(s.as_bytes());
    }
    pub fn opt_jsonb(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.jsonb(s),
            None => self.null(),
        }
    }
    pub fn timestamptz(&mut self, unix_us: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(unix_us - PG_EPOCH_US);
    }
    pub fn opt_timestamptz(&mut self, unix_us: Option<i64>) {
        match unix_us {
            Some(t) => self.timestamptz(t),
            None => self.null(),
        }
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.buf.put_i32(8);
                self.buf.put_i64(v);
            }
            None => self.null(),
        }
    }
    /// An IPv4 `inet` host address.
    pub fn inet4(&mut self, ip: [u8; 4]) {
        self.buf.put_i32(8);
        self.buf.put_slice(&[2, 32, 0, 4]);
        self.buf.put_slice(&ip);
    }
    /// Ends the stream and hands the buffer over.
    pub fn finish(mut self) -> bytes::Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
    /// Takes what is buffered so far (to stream a large COPY in chunks).
    pub fn take(&mut self) -> bytes::Bytes {
        self.buf.split().freeze()
    }
}

/// The real (non-generated) columns of `executions`, in [`copy_execution`] order.
pub const EXECUTION_COPY_COLUMNS: &str = "id, pattern_name, pattern_version, status, input, output, error, \
    started_at, completed_at, duration_ms, metadata, tags";

pub fn copy_execution(c: &mut BinaryCopy, r: &ExecRow) {
    c.row(12);
    c.uuid(&r.id);
    c.text(r.pattern);
    c.text(r.version);
    c.text(r.status);
    c.jsonb(&r.input);
    c.opt_jsonb(r.output.as_deref());
    c.opt_jsonb(r.error.as_deref());
    c.timestamptz(r.started_us);
    c.opt_timestamptz(r.completed_us);
    c.opt_i64(r.duration_ms);
    c.opt_jsonb(r.metadata);
    c.jsonb(r.tags);
}

// ---------------------------------------------------------------- query parameters

/// A `uuid` parameter.
#[derive(Debug)]
pub struct PgUuid(pub Uuid);

/// A `jsonb` parameter from JSON text.
#[derive(Debug)]
pub struct PgJson<'a>(pub &'a str);

/// A `timestamptz` parameter from Unix microseconds.
#[derive(Debug)]
pub struct PgTs(pub i64);

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for PgUuid {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
    to_sql_checked!();
}

impl ToSql for PgJson<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
    to_sql_checked!();
}

impl ToSql for PgTs {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.0 - PG_EPOCH_US);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
    to_sql_checked!();
}
