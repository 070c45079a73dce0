//! `parallax_storage_operation_duration_seconds`: per `(operation, table)`, atomic bucket counts that a call
//! adds to (one `fetch_add` on its bucket, its count and its sum: no lock, no allocation, no sample buffer to
//! drain), rendered as a summary (quantiles over the last `summaryWindow`) or, with `latencyBuckets`, as a
//! histogram.
//!
//! Why not metrics-exporter-prometheus's summary: its quantiles come from sketches-ddsketch 0.3, whose
//! collapsing store misplaces samples (1 ms … 100 ms uniformly gives a median of 82 ms; the same samples in
//! reverse order, 18 ms); the documented alert `{quantile="0.99"} > 1` must not depend on that.
//!
//! The summary's buckets are log-linear: 16 per power of two of nanoseconds from about 1 µs to about 37
//! minutes, so a quantile (the middle of its bucket) is within about 3 % of the true sample. Its window works
//! like Prometheus's `rate()`: the counts are cumulative, snapshots are kept every `summaryWindow / 3`, and a
//! scrape subtracts the oldest snapshot that is at most one window old.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

use super::calls;
use crate::config::MetricsConfig;

pub(super) const NAME: &str = "parallax_storage_operation_duration_seconds";
const HELP: &str =
    "Latency of storage calls by operation (read, list, count, search, write, delete) and table, \
                    as the plugin's ABI adapter sees them (validation included); a summary over the last \
                    storage.metrics.summaryWindow, or a histogram with storage.metrics.latencyBuckets.";

/// Sub-buckets per power of two (as bits): 16.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Below 2^10 ns (about 1 µs) everything is one bucket.
const MIN_EXP: u32 = 10;
/// From 2^41 ns (about 37 minutes) everything is one bucket.
const MAX_EXP: u32 = 40;
const LOG_BUCKETS: usize = 2 + (MAX_EXP - MIN_EXP + 1) as usize * SUB;
/// Snapshots per window.
const SLOTS: u32 = 3;

/// The summary bucket of `nanos`.
fn log_index(nanos: u64) -> usize {
    if nanos < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - nanos.leading_zeros();
    if exp > MAX_EXP {
        return LOG_BUCKETS - 1;
    }
    let sub = ((nanos >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    1 + (exp - MIN_EXP) as usize * SUB + sub
}

/// The value (seconds) a summary bucket stands for: its middle (its lower bound for the last, open one).
fn log_value(index: usize) -> f64 {
    let nanos = if index == 0 {
        (1u64 << MIN_EXP) as f64 / 2.0
    } else if index == LOG_BUCKETS - 1 {
        (1u64 << (MAX_EXP + 1)) as f64
    } else {
        let exp = MIN_EXP + ((index - 1) / SUB) as u32;
        let width = 1u64 << (exp - SUB_BITS);
        let lower = (1u64 << exp) + ((index - 1) % SUB) as u64 * width;
        lower as f64 + width as f64 / 2.0
    };
    nanos / 1e9
}

enum Mode {
    Summary {
        quantiles: Vec<f64>,
        window: Duration,
        ring: Mutex<Vec<Snapshot>>,
    },
    /// Upper bounds in seconds, strictly increasing; a last count for `+Inf`.
    Histogram {
        bounds: Vec<f64>,
    },
}

struct Snapshot {
    at: Instant,
    /// By series, by bucket.
    counts: Vec<Vec<u64>>,
}

struct Series {
    operation: &'static str,
    table: &'static str,
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

pub(super) struct Latency {
    mode: Mode,
    series: Vec<Series>,
    /// Series index by call index ([`calls::CALLS`]); `usize::MAX` for calls that are not data operations.
    by_call: Vec<usize>,
}

impl Latency {
    pub fn new(cfg: &MetricsConfig) -> Latency {
        let mode = match &cfg.latency_buckets {
            Some(bounds) => Mode::Histogram { bounds: bounds.clone() },
            None => Mode::Summary {
                quantiles: cfg.quantiles.clone(),
                window: Duration::from_millis(cfg.summary_window_ms.max(1)),
                ring: Mutex::new(Vec::new()),
            },
        };
        let width = match &mode {
            Mode::Histogram { bounds } => bounds.len() + 1,
            Mode::Summary { .. } => LOG_BUCKETS,
        };
        let mut series: Vec<Series> = Vec::new();
        let by_call = calls::CALLS
            .iter()
            .map(|(_, labels)| {
                let Some((operation, table)) = *labels else { return usize::MAX };
                if let Some(i) = series.iter().position(|s| s.operation == operation && s.table == table) {
                    return i;
                }
                series.push(Series {
                    operation,
                    table,
                    buckets: (0..width).map(|_| AtomicU64::new(0)).collect(),
                    count: AtomicU64::new(0),
                    sum_nanos: AtomicU64::new(0),
                });
                series.len() - 1
            })
            .collect();
        Latency { mode, series, by_call }
    }

    /// The hot path: three relaxed atomic adds (and, for a histogram, a binary search of a few bounds).
    #[inline]
    pub fn record(&self, call_index: usize, elapsed: Duration) {
        let Some(s) = self.by_call.get(call_index).and_then(|i| self.series.get(*i)) else { return };
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = match &self.mode {
            Mode::Summary { .. } => log_index(nanos),
            Mode::Histogram { bounds } => bounds.partition_point(|b| *b < elapsed.as_secs_f64()),
        };
        s.buckets[bucket].fetch_add(1, Relaxed);
        s.count.fetch_add(1, Relaxed);
        s.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn counts(&self) -> Vec<Vec<u64>> {
        self.series.iter().map(|s| s.buckets.iter().map(|b| b.load(Relaxed)).collect()).collect()
    }

    /// How often [`Latency::upkeep`] should run: a third of the summary's window (`None` for a histogram).
    pub fn upkeep_every(&self) -> Option<Duration> {
        match &self.mode {
            Mode::Summary { window, .. } => Some(*window / SLOTS),
            Mode::Histogram { .. } => None,
        }
    }

    /// Keeps a snapshot every `window / 3` (called by the refresher every few seconds, and by each scrape);
    /// drops those older than the window but the newest.
    pub fn upkeep(&self, now: Instant) {
        let Mode::Summary { window, ring, .. } = &self.mode else { return };
        let mut ring = ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.last().is_none_or(|s| now.saturating_duration_since(s.at) >= *window / SLOTS) {
            ring.push(Snapshot { at: now, counts: self.counts() });
        }
        while ring.len() > 1 && now.saturating_duration_since(ring[0].at) > *window {
            ring.remove(0);
        }
    }

    /// Appends the metric family.
    pub fn render(&self, out: &mut String, now: Instant) {
        let counts = self.counts();
        let kind = if matches!(self.mode, Mode::Histogram { .. }) { "histogram" } else { "summary" };
        let _ = writeln!(out, "# HELP {NAME} {HELP}\n# TYPE {NAME} {kind}");
        match &self.mode {
            Mode::Summary { quantiles, window, ring } => {
                {
                    let ring = ring.lock().unwrap_or_else(|p| p.into_inner());
                    // The oldest snapshot at most a window old; else the newest (older: the window is then
                    // wider than configured, but holds the latest calls); else everything since the start.
                    let base = ring
                        .iter()
                        .find(|s| now.saturating_duration_since(s.at) <= *window)
                        .or(ring.last())
                        .map(|s| &s.counts);
                    for (i, s) in self.series.iter().enumerate() {
                        let in_window: Vec<u64> = match base {
                            Some(base) => {
                                counts[i].iter().zip(&base[i]).map(|(c, b)| c.saturating_sub(*b)).collect()
                            }
                            None => counts[i].clone(),
                        };
                        for q in quantiles {
                            let v = quantile(&in_window, *q);
                            let _ = writeln!(
                                out,
                                "{NAME}{{operation=\"{}\",table=\"{}\",quantile=\"{q}\"}} {}",
                                s.operation,
                                s.table,
                                number(v)
                            );
                        }
                        totals(out, s);
                    }
                }
                self.upkeep(now);
            }
            Mode::Histogram { bounds } => {
                for (i, s) in self.series.iter().enumerate() {
                    let mut cumulative = 0;
                    for (bound, n) in bounds.iter().zip(&counts[i]) {
                        cumulative += n;
                        let _ = writeln!(
                            out,
                            "{NAME}_bucket{{operation=\"{}\",table=\"{}\",le=\"{bound}\"}} {cumulative}",
                            s.operation, s.table
                        );
                    }
                    cumulative += counts[i].last().copied().unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "{NAME}_bucket{{operation=\"{}\",table=\"{}\",le=\"+Inf\"}} {cumulative}",
                        s.operation, s.table
                    );
                    totals(out, s);
                }
            }
        }
    }
}

/// `_sum` and `_count` (since the start, as Prometheus expects of both summaries and histograms).
fn totals(out: &mut String, s: &Series) {
    let _ = writeln!(
        out,
        "{NAME}_sum{{operation=\"{}\",table=\"{}\"}} {}\n{NAME}_count{{operation=\"{}\",table=\"{}\"}} {}",
        s.operation,
        s.table,
        number(s.sum_nanos.load(Relaxed) as f64 / 1e9),
        s.operation,
        s.table,
        s.count.load(Relaxed)
    );
}

/// The `q` quantile of the samples counted in `buckets` (the value of the bucket holding the sample of rank
/// ⌈q·n⌉); NaN without samples, as Prometheus clients write it.
fn quantile(buckets: &[u64], q: f64) -> f64 {
    let n: u64 = buckets.iter().sum();
    if n == 0 {
        return f64::NAN;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (i, c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return log_value(i);
        }
    }
    log_value(buckets.len() - 1)
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_hold_their_values_within_three_percent() {
        assert_eq!(log_index(0), 0);
        assert_eq!(log_index(1023), 0);
        assert_eq!(log_index(1024), 1);
        assert_eq!(log_index(u64::MAX), LOG_BUCKETS - 1);
        let mut last = 0;
        for nanos in (10..43).flat_map(|e| [1u64 << e, (1u64 << e) + (1 << (e - 1)), (1u64 << (e + 1)) - 1]) {
            let i = log_index(nanos);
            assert!(i >= last, "monotonic at {nanos}");
            last = i;
            if i < LOG_BUCKETS - 1 {
                let v = log_value(i) * 1e9;
                assert!((v - nanos as f64).abs() / nanos as f64 <= 1.0 / 32.0 + 1e-9, "{nanos} → {v}");
            }
        }
    }

    #[test]
    fn quantiles_are_those_of_the_samples() {
        let mut b = vec![0u64; LOG_BUCKETS];
        // 1 ms … 100 ms, in any order.
        for ms in (1..=100u64).rev() {
            b[log_index(ms * 1_000_000)] += 1;
        }
        let near = |q: f64, want: f64| {
            let got = quantile(&b, q);
            assert!((got - want).abs() / want < 0.035, "q{q}: {got} vs {want}");
        };
        near(0.5, 0.050);
        near(0.9, 0.090);
        near(0.99, 0.099);
        near(0.0, 0.001);
        near(1.0, 0.100);
        assert!(quantile(&vec![0; LOG_BUCKETS], 0.5).is_nan());
        // 1 % of calls over a second: the alert's p99 says so.
        let mut b = vec![0u64; LOG_BUCKETS];
        b[log_index(10_000_000)] += 98;
        b[log_index(2_000_000_000)] += 2;
        assert!(quantile(&b, 0.99) > 1.0 && quantile(&b, 0.95) < 0.011);
    }

    #[test]
    fn the_window_forgets_old_calls() {
        let cfg = MetricsConfig { summary_window_ms: 3_000, ..MetricsConfig::default() };
        let l = Latency::new(&cfg);
        let get = calls::index("get_execution").unwrap();
        let t0 = Instant::now();
        l.upkeep(t0);
        l.record(get, Duration::from_secs(2));
        let p99 = |l: &Latency, at: Instant| {
            let mut out = String::new();
            l.render(&mut out, at);
            let line = out
                .lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "{NAME}{{operation=\"read\",table=\"executions\",quantile=\"0.99\"}}"
                    ))
                })
                .unwrap()
                .to_string();
            line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap()
        };
        assert!((p99(&l, t0 + Duration::from_millis(500)) - 2.0).abs() < 0.07);
        // Snapshots every second (a third of the window), as the refresher takes them.
        for s in 1..=4 {
            l.upkeep(t0 + Duration::from_secs(s));
        }
        l.record(get, Duration::from_millis(10));
        let later = p99(&l, t0 + Duration::from_millis(4500));
        assert!((later - 0.010).abs() < 0.001, "the 2 s call left the window: {later}");
        let mut out = String::new();
        l.render(&mut out, t0 + Duration::from_secs(5));
        assert!(out.contains(&format!("{NAME}_count{{operation=\"read\",table=\"executions\"}} 2")), "{out}");
    }
}
