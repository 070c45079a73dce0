//! Command line, the plugin library to load (and whether it is fresh), latency statistics and the report.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use parallax_storage_host::Plugin;

/// `cargo bench --bench storage [--quick] [FILTER]`.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Small row and operation counts: a smoke run for development.
    pub quick: bool,
    /// Run only the scenarios whose name contains one of these (none: every scenario).
    pub filters: Vec<String>,
}

impl Opts {
    pub fn parse() -> Opts {
        let mut opts = Opts::default();
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                // cargo passes `--bench` to every bench target.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench --bench storage -- [--quick] [FILTER...]\n  FILTER runs only scenarios \
                         whose name contains it (any of several; =NAME: exactly NAME), e.g. pg_, sqlite_, abi, page, =pg_lifecycle"
                    );
                    std::process::exit(0);
                }
                a if a.starts_with('-') => {
                    eprintln!("unknown flag {a}; try --help");
                    std::process::exit(2);
                }
                a => opts.filters.push(a.to_string()),
            }
        }
        opts
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| match f.strip_prefix('=') {
                Some(exact) => scenario == exact,
                None => scenario.contains(f.as_str()),
            })
    }

    /// `full` operations normally, `quick` with `--quick`.
    pub fn n(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// `target/release/`, found from this bench executable (`target/release/deps/storage-<hash>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("bench executable lives in target/<profile>/deps")
        .into()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest file under `dir` (recursively) and its modification time.
fn newest_under(dir: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            newest_under(&p, best);
        } else if let Some(t) = mtime(&p) {
            if best.as_ref().is_none_or(|(b, _)| t > *b) {
                *best = Some((t, p));
            }
        }
    }
}

/// The built plugin cdylib. `cargo bench` compiles it (the bench depends on the package's lib target, which
/// is both the cdylib and the rlib) into `target/release/deps/`; cargo copies it up to `target/release/` only
/// for `cargo build --release`. Take the newer of the two, and refuse one older than the plugin's sources
/// (unless `PARALLAX_BENCH_ALLOW_STALE` is set: profiling a build while others edit the sources).
/// `PARALLAX_BENCH_PLUGIN=<path>` loads that library instead.
pub fn plugin_library() -> PathBuf {
    // Another build of the plugin (e.g. an older commit's, for a before/after comparison in one session):
    // taken as given, no staleness check.
    if let Some(p) = std::env::var_os("PARALLAX_BENCH_PLUGIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            fail(&format!("PARALLAX_BENCH_PLUGIN={}: no such file", p.display()));
        }
        return p;
    }
    let name = format!("{}parallax_storage{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let dir = target_dir();
    let candidates = [dir.join(&name), dir.join("deps").join(&name)];
    let Some((built, lib)) =
        candidates.iter().filter_map(|p| mtime(p).map(|t| (t, p.clone()))).max_by_key(|(t, _)| *t)
    else {
        fail(&format!(
            "{} does not exist: build it with `cargo bench --bench storage` (or `cargo build --release`)",
            candidates[0].display()
        ));
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = None;
    for d in ["src", "plugin/abi/src", "migrations"] {
        newest_under(&root.join(d), &mut newest);
    }
    if let Some((changed, source)) = newest {
        if changed > built && std::env::var_os("PARALLAX_BENCH_ALLOW_STALE").is_none() {
            fail(&format!(
                "{} is older than {} (changed {:.0} s after the build): it would measure stale code. Rebuild \
                 with `cargo build --release -p parallax-storage` or re-run `cargo bench --bench storage` \
                 (PARALLAX_BENCH_ALLOW_STALE=1 skips this check)",
                lib.display(),
                source.strip_prefix(root).unwrap_or(&source).display(),
                changed.duration_since(built).unwrap_or_default().as_secs_f64()
            ));
        }
    }
    lib
}

pub fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let lib = plugin_library();
        eprintln!("# plugin: {}", lib.display());
        Plugin::load(&lib).unwrap_or_else(|e| fail(&e.to_string()))
    })
}

/// One line about this machine and how busy it is (the ratios are taken in one run, but absolute numbers
/// move with the load other processes put on the 2 cores and the disk).
pub fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores, {cpu}, {:.1} GiB memory, load average {}",
        mem_kib as f64 / 1_048_576.0,
        loadavg()
    )
}

pub fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// Per-operation latencies of one run.
#[derive(Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies(Vec::with_capacity(n))
    }
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }
    /// The `q` quantile (0..=1) in microseconds, nearest rank.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx].as_secs_f64() * 1e6
    }
    pub fn p50(&self) -> f64 {
        self.quantile_us(0.50)
    }
    pub fn p99(&self) -> f64 {
        self.quantile_us(0.99)
    }
}

/// Times `f` once and returns operations per second for `ops` operations.
pub async fn throughput<F: std::future::Future<Output = ()>>(ops: usize, f: F) -> f64 {
    let t = Instant::now();
    f.await;
    ops as f64 / t.elapsed().as_secs_f64()
}

/// Runs `phase(side, ops)` for `rounds` rounds in ABBA order (side 0 = ours, 1 = the baseline) and returns each side's
/// operations per second over its total time.
pub async fn abba<F, Fut>(rounds: usize, ops_per_phase: usize, mut phase: F) -> [f64; 2]
where
    F: FnMut(usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut time = [Duration::ZERO; 2];
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let t = Instant::now();
            phase(side, ops_per_phase).await;
            time[side] += t.elapsed();
        }
    }
    time.map(|t| (rounds * ops_per_phase) as f64 / t.as_secs_f64())
}

/// CPU time (user + system) this process has used so far, in seconds: the client's share of a scenario, whose
/// server runs in other processes. From `/proc/self/stat` (clock ticks, 10 ms resolution: measure seconds).
pub fn process_cpu_secs() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the whole line.
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?)
    });
    ticks.unwrap_or(f64::NAN) / 100.0
}

/// CPU time (user + system, seconds) used so far by every running process whose command name is `comm`
/// (e.g. `postgres`: the server's share of a scenario). Processes that exit in between are not counted.
pub fn processes_cpu_secs(comm: &str) -> f64 {
    let mut ticks = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if head.split_once('(').map(|(_, name)| name) != Some(comm) {
            continue;
        }
        let rest: Vec<&str> = rest.split_whitespace().collect();
        ticks += rest.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + rest.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    }
    ticks / 100.0
}

/// Machine-wide CPU counters from `/proc/stat`: (busy, idle) clock ticks summed over all cores. The
/// difference of two readings tells whether a scenario left cores idle (waiting on latency) or was CPU bound.
pub fn machine_cpu_ticks() -> (f64, f64) {
    let line = std::fs::read_to_string("/proc/stat").ok().and_then(|s| s.lines().next().map(str::to_string));
    let fields: Vec<f64> =
        line.as_deref().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 5 {
        return (f64::NAN, f64::NAN);
    }
    // user nice system idle iowait irq softirq steal …: idle + iowait are idle time.
    let idle = fields[3] + fields[4];
    (fields.iter().take(8).sum::<f64>() - idle, idle)
}

/// Share of the machine's CPU time that was busy between two [`machine_cpu_ticks`] readings, in percent.
pub fn busy_percent(before: (f64, f64), after: (f64, f64)) -> f64 {
    let (busy, idle) = (after.0 - before.0, after.1 - before.1);
    100.0 * busy / (busy + idle)
}

/// One line of the final table.
pub struct Outcome {
    pub scenario: String,
    pub ours: String,
    pub baseline: String,
    pub ratio: f64,
    pub target: String,
    pub met: bool,
}

static OUTCOMES: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());

fn record(o: Outcome, line: String) {
    println!("{line}");
    OUTCOMES.lock().unwrap().push(o);
}

/// A throughput scenario: `ratio = ours / baseline`, met when `ratio >= min_ratio`. `unit` names the rate,
/// e.g. `rows/s`.
pub fn report_throughput(scenario: &str, ours: f64, baseline: f64, unit: &str, min_ratio: f64, note: &str) {
    report_throughput_if(scenario, ours, baseline, unit, min_ratio, None, note);
}

/// [`report_throughput`] for a run that may not have measured what the scenario is about: `invalid` says why
/// (e.g. the feature under test was not active), and then the scenario is not met whatever the ratio.
pub fn report_throughput_if(
    scenario: &str,
    ours: f64,
    baseline: f64,
    unit: &str,
    min_ratio: f64,
    invalid: Option<&str>,
    note: &str,
) {
    let ratio = ours / baseline;
    let met = ratio >= min_ratio && invalid.is_none();
    let line = format!(
        "{scenario} ours={ours:.0}/s baseline={baseline:.0}/s ratio={ratio:.2} target=ratio>={min_ratio} met={} \
         # {unit}; {note}{}",
        yes(met),
        invalid_note(invalid)
    );
    let o = Outcome {
        scenario: scenario.into(),
        ours: format!("{ours:.0} {unit}"),
        baseline: format!("{baseline:.0} {unit}"),
        ratio,
        target: format!("≥ {min_ratio}×{}", invalid_note(invalid)),
        met,
    };
    record(o, line);
}

fn invalid_note(invalid: Option<&str>) -> String {
    invalid.map(|why| format!(" (INVALID RUN: {why})")).unwrap_or_default()
}

/// A latency scenario: `ours`/`baseline` are medians, `ratio = ours p50 / baseline p50`; met when our p99 is
/// at most `max_p99_us`.
pub fn report_latency(scenario: &str, ours: &Latencies, baseline: &Latencies, max_p99_us: f64, note: &str) {
    let (op50, op99, bp50, bp99) = (ours.p50(), ours.p99(), baseline.p50(), baseline.p99());
    let ratio = op50 / bp50;
    let met = op99 <= max_p99_us;
    let line = format!(
        "{scenario} ours={op50:.0}µs baseline={bp50:.0}µs ratio={ratio:.2} ours_p50={op50:.0}µs \
         ours_p99={op99:.0}µs baseline_p50={bp50:.0}µs baseline_p99={bp99:.0}µs target=p99<={max_p99_us:.0}µs \
         met={} # {note}",
        yes(met)
    );
    let o = Outcome {
        scenario: scenario.into(),
        ours: format!("p50 {op50:.0} µs, p99 {op99:.0} µs"),
        baseline: format!("p50 {bp50:.0} µs, p99 {bp99:.0} µs"),
        ratio,
        target: format!("p99 ≤ {} ms", max_p99_us / 1000.0),
        met,
    };
    record(o, line);
}

/// A relative latency scenario (the same work by two configurations of the plugin): `ratio = ours p50 /
/// baseline p50`; met when both the p50 and the p99 ratio are at most `max_ratio`, and the run measured what
/// the scenario is about (`invalid` is `None`; else it says why not).
pub fn report_latency_ratio(
    scenario: &str,
    ours: &Latencies,
    baseline: &Latencies,
    max_ratio: f64,
    invalid: Option<&str>,
    note: &str,
) {
    let (op50, op99, bp50, bp99) = (ours.p50(), ours.p99(), baseline.p50(), baseline.p99());
    let (r50, r99) = (op50 / bp50, op99 / bp99);
    let met = r50 <= max_ratio && r99 <= max_ratio && invalid.is_none();
    let line = format!(
        "{scenario} ours={op50:.0}µs baseline={bp50:.0}µs ratio={r50:.2} p99_ratio={r99:.2} ours_p50={op50:.0}µs \
         ours_p99={op99:.0}µs baseline_p50={bp50:.0}µs baseline_p99={bp99:.0}µs target=p50,p99 ratio<={max_ratio} \
         met={} # {note}{}",
        yes(met),
        invalid_note(invalid)
    );
    let o = Outcome {
        scenario: scenario.into(),
        ours: format!("p50 {op50:.0} µs, p99 {op99:.0} µs"),
        baseline: format!("p50 {bp50:.0} µs, p99 {bp99:.0} µs"),
        ratio: r50,
        target: format!("p50 and p99 ≤ {max_ratio}× (p99 {r99:.2}×){}", invalid_note(invalid)),
        met,
    };
    record(o, line);
}

/// The ABI scenario: medians of both, met when the difference is at most `max_extra_us`.
pub fn report_overhead(
    scenario: &str,
    ours: &Latencies,
    baseline: &Latencies,
    max_extra_us: f64,
    note: &str,
) {
    let (op50, bp50) = (ours.p50(), baseline.p50());
    let extra = op50 - bp50;
    let ratio = op50 / bp50;
    let met = extra <= max_extra_us;
    let line = format!(
        "{scenario} ours={op50:.1}µs baseline={bp50:.1}µs ratio={ratio:.2} extra={extra:.1}µs ours_p99={:.1}µs \
         baseline_p99={:.1}µs target=extra<={max_extra_us}µs met={} # {note}",
        ours.p99(),
        baseline.p99(),
        yes(met)
    );
    let o = Outcome {
        scenario: scenario.into(),
        ours: format!("p50 {op50:.1} µs"),
        baseline: format!("p50 {bp50:.1} µs"),
        ratio,
        target: format!("extra ≤ {max_extra_us} µs (got {extra:.1} µs)"),
        met,
    };
    record(o, line);
}

fn yes(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "NO"
    }
}

/// Prints every recorded outcome as a Markdown table (for BENCHMARKS.md).
pub fn print_table() {
    let outcomes = OUTCOMES.lock().unwrap();
    if outcomes.is_empty() {
        return;
    }
    println!("\n| scenario | ours | baseline | ratio | target | met |\n|---|---|---|---|---|---|");
    for o in outcomes.iter() {
        println!(
            "| {} | {} | {} | {:.2} | {} | {} |",
            o.scenario,
            o.ours,
            o.baseline,
            o.ratio,
            o.target,
            if o.met { "yes" } else { "**no**" }
        );
    }
}
