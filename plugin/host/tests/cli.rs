//! End-to-end tests of the `parallax` binary against the real plugin and a SQLite file in a temp dir.
//!
//! The plugin must be built first; the README's test command (`cargo build --workspace && cargo test
//! --workspace`) builds it.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::Value;

/// `target/debug/libparallax_storage.so`, found from this test executable (`target/debug/deps/cli-…`).
fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let name = format!("{}parallax_storage{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join(&name);
    assert!(
        path.is_file(),
        "{} is missing: build the plugin first with `cargo build -p parallax-storage` (the README's test \
         command, `cargo build --workspace && cargo test --workspace`, does)",
        path.display()
    );
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

struct Env {
    dir: tempfile::TempDir,
}

const CONFIG: &str = "storage:\n  type: sqlite\n  sqlite:\n    path: ./parallax.db\n";

impl Env {
    fn new() -> Env {
        Env::with_config(CONFIG)
    }

    fn with_config(yaml: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("parallax.config.yaml"), yaml).expect("write config");
        Env { dir }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("write file");
    }

    /// `parallax ARGS` in the temp dir, with the test plugin and none of this process's settings.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_parallax"));
        cmd.args(args).current_dir(self.dir.path());
        if !args.contains(&"--plugin") {
            cmd.arg("--plugin").arg(plugin_path());
        }
        for var in ["PARALLAX_CONFIG", "PARALLAX_STORAGE_PLUGIN", "PARALLAX_STORAGE_TYPE", "RUST_LOG"] {
            cmd.env_remove(var);
        }
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(var);
            }
        }
        cmd
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.run_cmd(self.command(args), stdin)
    }

    fn run_cmd(&self, mut cmd: Command, stdin: Option<&str>) -> Run {
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn parallax");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().expect("wait");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "parallax {args:?} failed: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// Runs with `--output json`, asserts success and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("parallax {args:?}: not JSON ({e}): {out}"))
    }

    /// Runs, asserts exit `code` and exactly one `error:` line on stderr; returns the message.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let r = self.run(args);
        assert_eq!(r.code, code, "parallax {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "parallax {args:?}: expected one stderr line, got {:?}", r.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        lines[0].to_string()
    }
}

const PATTERN_YAML: &str = "name: code-review\nversion: 1.0.0\ndescription: Review a pull request\n\
steps:\n  - agent: reviewer\n    prompt: \"look for bugs\"\n    retries: 2\n";

#[test]
fn help_mentions_the_commands() {
    let env = Env::new();
    let top = env.ok(&["--help"]);
    for word in ["storage", "patterns", "executions", "audit", "--output", "--config", "--plugin"] {
        assert!(top.contains(word), "--help lacks {word}: {top}");
    }
    let storage = env.ok(&["storage", "--help"]);
    for word in ["info", "test-connection", "migrate"] {
        assert!(storage.contains(word), "storage --help lacks {word}: {storage}");
    }
    let migrate = env.ok(&["storage", "migrate", "--help"]);
    for word in ["status", "up", "down", "to"] {
        assert!(migrate.contains(word), "{migrate}");
    }
    assert!(env.ok(&["executions", "list", "--help"]).contains("--since"));
    assert!(env.ok(&["--version"]).starts_with("parallax "));
}

#[test]
fn storage_info_and_test_connection() {
    let env = Env::with_config(&format!(
        "{CONFIG}  retention:\n    executions:\n      enabled: true\n      maxAge: 30d\n"
    ));
    let info = env.ok(&["storage", "info"]);
    assert!(info.contains("plugin version:") && info.contains("sqlite"), "{info}");
    assert!(info.contains("parallax.config.yaml"), "{info}");
    // Retention rules without a schedule: enforced only by hand, and info says so.
    assert!(
        info.contains("storage.retention rules are set but") && info.contains("cleanupSchedule"),
        "{info}"
    );
    assert!(info.contains("last retention run: none (no storage at"), "{info}");
    assert!(!env.dir.path().join("parallax.db").exists(), "info must not create the database");

    let doc = env.json(&["storage", "info"]);
    let backends = doc["plugin"]["backends"].as_array().unwrap();
    let sqlite = backends.iter().find(|b| b["name"] == "sqlite").unwrap();
    assert_eq!(sqlite["available"], true);
    assert!(!sqlite["migrations"].as_array().unwrap().is_empty());
    assert_eq!(doc["config"]["backend"], "sqlite");
    assert_eq!(doc["config"]["effective"]["sqlite"]["path"], "./parallax.db");
    assert!(doc["config_source"].as_str().unwrap().ends_with("parallax.config.yaml"));
    assert!(!doc["config"]["warnings"].as_array().unwrap().is_empty());

    // Without a config file: defaults.
    std::fs::remove_file(env.dir.path().join("parallax.config.yaml")).unwrap();
    assert!(env.ok(&["storage", "info"]).contains("defaults"));
    assert_eq!(env.json(&["storage", "info"])["config_source"], Value::Null);

    let env = Env::new();
    let text = env.ok(&["storage", "test-connection"]);
    assert!(text.contains("reachable") && text.contains("SQLite"), "{text}");
    assert!(text.contains("latency:") && text.contains("migrate up"), "{text}");
    let h = env.json(&["storage", "test-connection"]);
    assert_eq!(h["backend"], "sqlite");
    assert!(h["latency_us"].as_i64().unwrap() >= 0);
    assert!(h["pending_migrations"].as_u64().unwrap() > 0, "maintenance mode runs no migration: {h}");
    env.ok(&["storage", "migrate", "up"]);
    let h = env.json(&["storage", "test-connection"]);
    assert_eq!(h["pending_migrations"], 0);
    assert!(h["schema_version"].is_string());
}

fn statuses(doc: &Value) -> Vec<String> {
    doc["migrations"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap().to_string()).collect()
}

#[test]
fn migrate_status_up_down_to() {
    let env = Env::new();
    let status = env.json(&["storage", "migrate", "status"]);
    let n = statuses(&status).len();
    assert!(n >= 2);
    assert!(statuses(&status).iter().all(|s| s == "pending"), "{status}");
    let table = env.ok(&["storage", "migrate", "status"]);
    assert!(table.starts_with("VERSION") && table.contains("APPLIED_AT") && table.contains("pending"));

    let up = env.json(&["storage", "migrate", "up"]);
    assert_eq!(up["applied"].as_array().unwrap().len(), n);
    let status = env.json(&["storage", "migrate", "status"]);
    assert!(statuses(&status).iter().all(|s| s == "applied"));
    let applied_at = status["migrations"][0]["applied_at"].as_str().unwrap();
    assert!(applied_at.ends_with('Z') && applied_at.contains('T'), "{applied_at}");

    let down = env.ok(&["storage", "migrate", "down"]);
    let last = status["migrations"][n - 1]["version"].as_str().unwrap().to_string();
    assert!(down.contains(&format!("reverted: {last}")), "{down}");

    env.ok(&["storage", "migrate", "to", "0"]);
    let status = env.json(&["storage", "migrate", "status"]);
    assert!(statuses(&status).iter().all(|s| s == "pending"), "{status}");

    let first = status["migrations"][0]["version"].as_str().unwrap().to_string();
    let to = env.json(&["storage", "migrate", "to", &first]);
    assert_eq!(to["applied"], serde_json::json!([first]));
    env.fails(&["storage", "migrate", "to", "19990101"], 2);
    env.ok(&["storage", "migrate", "up"]);
    assert!(statuses(&env.json(&["storage", "migrate", "status"])).iter().all(|s| s == "applied"));
}

#[test]
fn pending_migrations_without_auto_run() {
    let env = Env::with_config(&format!("{CONFIG}  migrations:\n    autoRun: false\n"));
    let msg = env.fails(&["patterns", "list"], 5);
    assert!(msg.contains("migrate up"), "{msg}");
    assert!(env.ok(&["storage", "migrate", "status"]).contains("pending"));
    env.ok(&["storage", "migrate", "up"]);
    assert_eq!(env.json(&["patterns", "list"])["items"], serde_json::json!([]));
}

#[test]
fn patterns_end_to_end() {
    let env = Env::new();
    env.write("review.yaml", PATTERN_YAML);
    let put = env.ok(&["patterns", "put", "review.yaml", "--created-by", "alice"]);
    assert!(put.contains("code-review") && put.contains("1.0.0"), "{put}");

    env.write("review.json", r#"{"name": "code-review", "version": "1.1.0", "steps": [{"agent": "a"}]}"#);
    let p = env.json(&["patterns", "put", "review.json", "--description", "second"]);
    assert_eq!((p["version"].as_str(), p["description"].as_str()), (Some("1.1.0"), Some("second")));

    // From stdin, name and version from flags; JSON sniffed.
    let r = env
        .run_with(&["patterns", "put", "-", "--name", "triage", "--version", "0.1.0"], Some(r#"{"k": 1}"#));
    assert_eq!(r.code, 0, "{}", r.stderr);

    let latest = env.json(&["patterns", "get", "code-review"]);
    assert_eq!(latest["version"], "1.1.0");
    assert_eq!(latest["definition"]["steps"][0]["agent"], "a");
    assert!(latest["created_at"].as_str().unwrap().ends_with('Z'));
    let v1 = env.json(&["patterns", "get", "code-review", "1.0.0"]);
    assert_eq!(v1["definition"]["steps"][0]["retries"], 2);
    assert_eq!(v1["created_by"], "alice");
    let text = env.ok(&["patterns", "get", "code-review", "1.0.0"]);
    assert!(text.starts_with("id:"), "{text}");
    assert!(text.contains("definition:\n") && text.contains("prompt: look for bugs"), "{text}");

    let versions = env.json(&["patterns", "versions", "code-review"]);
    let vs: Vec<&str> =
        versions["items"].as_array().unwrap().iter().map(|p| p["version"].as_str().unwrap()).collect();
    assert_eq!(vs, ["1.1.0", "1.0.0"]);
    assert!(env.ok(&["patterns", "versions", "code-review"]).starts_with("VERSION"));

    let list = env.json(&["patterns", "list"]);
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["code-review", "triage"]);
    assert_eq!(list["next_cursor"], Value::Null);
    let page = env.ok(&["patterns", "list", "--limit", "1"]);
    assert!(page.starts_with("NAME") && page.contains("next page: --cursor"), "{page}");
    let first = env.json(&["patterns", "list", "--limit", "1"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = env.json(&["patterns", "list", "--limit", "1", "--cursor", cursor]);
    assert_eq!(second["items"][0]["name"], "triage");
    assert_eq!(
        env.json(&["patterns", "list", "--limit", "1", "--all"])["items"].as_array().unwrap().len(),
        2
    );

    env.ok(&["patterns", "delete", "triage", "0.1.0"]);
    env.fails(&["patterns", "get", "triage"], 3);
}

#[test]
fn executions_and_audit_end_to_end() {
    let env = Env::new();
    env.write("review.yaml", PATTERN_YAML);
    env.ok(&["patterns", "put", "review.yaml"]);
    env.write("input.json", r#"{"pr": 42}"#);

    let text =
        env.ok(&["executions", "start", "--pattern", "code-review", "--input", "@input.json", "--tag", "ci"]);
    assert!(text.starts_with("id:"), "{text}");
    let id = text.lines().next().unwrap().trim_start_matches("id:").trim().to_string();
    let e = env.json(&["executions", "get", &id]);
    assert_eq!((e["pattern_version"].as_str(), e["status"].as_str()), (Some("1.0.0"), Some("running")));
    assert_eq!(e["input"]["pr"], 42);
    assert_eq!(e["tags"], serde_json::json!(["ci"]));

    let other = env.json(&[
        "executions",
        "start",
        "--pattern",
        "code-review",
        "--pattern-version",
        "1.0.0",
        "--status",
        "pending",
        "--metadata",
        r#"{"node": 3}"#,
    ]);
    assert_eq!(other["status"], "pending");
    assert_eq!(other["metadata"]["node"], 3);

    let ev = env.json(&["executions", "event", &id, "--kind", "step-result", "--payload", r#"{"step": 1}"#]);
    assert_eq!((ev["seq"].as_i64(), ev["kind"].as_str()), (Some(1), Some("step_result")));
    env.ok(&["executions", "event", &id, "--kind", "agent-assignment", "--payload", r#""agent-7""#]);

    // `--result` is the execution's output document; `--output` stays the print format everywhere.
    let done = env.run(&[
        "executions",
        "finish",
        &id,
        "--status",
        "completed",
        "--result",
        r#"{"ok": true}"#,
        "--output",
        "json",
    ]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let done: Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!((done["status"].as_str(), done["output"]["ok"].as_bool()), (Some("completed"), Some(true)));
    assert!(done["duration_ms"].is_i64() && done["completed_at"].is_string());

    let updated = env.json(&["executions", "update", other["id"].as_str().unwrap(), "--status", "running"]);
    assert_eq!(updated["status"], "running");

    let full = env.json(&["executions", "get", &id, "--events"]);
    let kinds: Vec<&str> =
        full["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["step_result", "agent_assignment"]);
    assert_eq!(full["events"][1]["payload"], "agent-7");
    let text = env.ok(&["executions", "get", &id, "--events"]);
    assert!(text.contains("events:\nSEQ") && text.contains("step_result"), "{text}");
    assert_eq!(env.json(&["executions", "events", &id])["items"].as_array().unwrap().len(), 2);

    let ids = |doc: Value| -> Vec<String> {
        doc["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    let just_id = std::slice::from_ref(&id);
    assert_eq!(ids(env.json(&["executions", "list", "--status", "completed"])), just_id);
    assert_eq!(
        ids(env.json(&["executions", "list", "--status", "failed,completed", "--tag", "ci"])),
        just_id
    );
    assert_eq!(ids(env.json(&["executions", "list", "--pattern", "code-review"])).len(), 2);
    assert!(ids(env.json(&["executions", "list", "--pattern", "other"])).is_empty());
    assert_eq!(
        ids(env.json(&["executions", "list", "--since", "1h", "--until", "2999-01-01T00:00:00Z"])).len(),
        2
    );
    assert!(ids(env.json(&["executions", "list", "--since", "2999-01-01T00:00:00Z"])).is_empty());
    assert_eq!(env.ok(&["executions", "list", "--count"]).trim(), "2");
    assert_eq!(env.json(&["executions", "list", "--count", "--status", "running"])["count"], 1);
    let table = env.ok(&["executions", "list", "--limit", "1"]);
    assert!(table.starts_with("ID") && table.contains("next page: --cursor"), "{table}");

    let appended = env.json(&[
        "audit",
        "append",
        "--action",
        "pattern.update",
        "--actor",
        "alice",
        "--resource-type",
        "pattern",
        "--resource-id",
        "code-review",
        "--details",
        r#"{"version": "1.0.0"}"#,
        "--ip",
        "10.0.0.1",
        "--user-agent",
        "curl/8",
    ]);
    assert!(appended["id"].is_string());
    env.ok(&["audit", "append", "--action", "login", "--actor", "bob"]);
    let mine = env.json(&["audit", "list", "--actor", "alice"]);
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["details"]["version"], "1.0.0");
    assert_eq!(mine["items"][0]["ip_address"], "10.0.0.1");
    let all = env.ok(&["audit", "list", "--since", "1d"]);
    assert!(all.starts_with("TIMESTAMP") && all.contains("login") && all.contains("pattern.update"), "{all}");
}

#[test]
fn config_and_plugin_errors() {
    let env = Env::with_config("storage:\n  sqlite:\n    busyTimout: 100\n");
    let msg = env.fails(&["patterns", "list"], 2);
    assert!(msg.contains("busyTimout") && msg.contains("busyTimeout"), "{msg}");
    let msg = env.fails(&["storage", "info"], 2);
    assert!(msg.contains("busyTimeout"), "{msg}");

    let env = Env::with_config("storage:\n  sqlite:\n    path: ${PARALLAX_CLI_TEST_UNSET_DIR}/db\n");
    let msg = env.fails(&["storage", "test-connection"], 2);
    assert!(msg.contains("PARALLAX_CLI_TEST_UNSET_DIR") && msg.contains("storage.sqlite.path"), "{msg}");

    let env = Env::new();
    let missing = env.dir.path().join("nope").join("libparallax_storage.so");
    let msg = env.fails(&["storage", "info", "--plugin", missing.to_str().unwrap()], 2);
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

#[test]
fn input_errors() {
    let env = Env::new();
    env.write("bad.yaml", "name: x\nsteps: [unclosed\n");
    let msg = env.fails(&["patterns", "put", "bad.yaml"], 2);
    assert!(msg.contains("bad.yaml") && msg.contains("invalid YAML"), "{msg}");
    env.write("list.yaml", "- a\n- b\n");
    let msg = env.fails(&["patterns", "put", "list.yaml", "--name", "x", "--version", "1.0.0"], 2);
    assert!(msg.contains("list.yaml") && msg.contains("must be a mapping"), "{msg}");
    env.write("noname.yml", "version: 1.0.0\nsteps: []\n");
    let msg = env.fails(&["patterns", "put", "noname.yml"], 2);
    assert!(msg.contains("name") && msg.contains("--name"), "{msg}");
    env.write("nan.yaml", "name: x\nversion: 1.0.0\nweights: [.nan]\n");
    let msg = env.fails(&["patterns", "put", "nan.yaml"], 2);
    assert!(msg.contains("nan.yaml") && msg.contains("weights[0]"), "{msg}");
    env.write("keys.yaml", "name: x\nversion: 1.0.0\nmap: {1: a}\n");
    assert!(env.fails(&["patterns", "put", "keys.yaml"], 2).contains("keys must be strings"));
    env.write("bad.json", "{\"name\": ");
    assert!(env.fails(&["patterns", "put", "bad.json"], 2).contains("invalid JSON"));
    env.fails(&["patterns", "put", "missing.yaml"], 2);

    env.write("p.yaml", PATTERN_YAML);
    env.ok(&["patterns", "put", "p.yaml"]);
    // The same content again is fine (re-run deploys); different content under the same version is not.
    assert!(env.ok(&["patterns", "put", "p.yaml"]).contains("unchanged"));
    env.write("p2.yaml", &PATTERN_YAML.replace("look for bugs", "look for typos"));
    let msg = env.fails(&["patterns", "put", "p2.yaml"], 4);
    assert!(msg.contains("1.0.0") && msg.contains("different content"), "{msg}");

    let msg = env.fails(&["executions", "start", "--pattern", "code-review", "--input", "{not json"], 2);
    assert!(msg.contains("--input") && msg.contains("invalid JSON"), "{msg}");
    let msg = env.fails(&["executions", "start", "--pattern", "no-such-pattern"], 3);
    assert!(msg.contains("no-such-pattern"), "{msg}");
    let msg = env.fails(&["executions", "get", "01890a5d-ac96-774b-bcce-b302099a8057"], 3);
    assert!(msg.contains("01890a5d-ac96-774b-bcce-b302099a8057"), "{msg}");
    env.fails(&["executions", "finish", "01890a5d-ac96-774b-bcce-b302099a8057", "--status", "failed"], 3);
    let msg = env.fails(&["executions", "list", "--status", "bogus"], 2);
    assert!(msg.contains("bogus") && msg.contains("pending"), "{msg}");
    let msg = env.fails(&["executions", "start", "--pattern", "code-review", "--status", "completed"], 2);
    assert!(msg.contains("completed"), "{msg}");
    let msg = env.fails(&["executions", "list", "--since", "last tuesday"], 2);
    assert!(msg.contains("--since") && msg.contains("RFC3339"), "{msg}");
    env.fails(&["audit", "list", "--until", "2024-13-45T00:00:00Z"], 2);
    env.fails(&["patterns", "list", "--limit", "0"], 2);
    env.fails(&["patterns", "frobnicate"], 2);
}

#[test]
fn search_and_mark_applied() {
    let env = Env::new();
    env.write("p.yaml", PATTERN_YAML);
    env.ok(&["patterns", "put", "p.yaml"]);
    let id = env.json(&[
        "executions",
        "start",
        "--pattern",
        "code-review",
        "--input",
        r#"{"text": "flaky build on arm64"}"#,
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["executions", "start", "--pattern", "code-review", "--input", r#"{"text": "green build"}"#]);

    let hits = env.json(&["executions", "search", "FLAKY", "build"]);
    let items = hits["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{hits}");
    assert_eq!(items[0]["id"], id.as_str());
    assert!(items[0]["rank"].is_number());
    assert_eq!(env.json(&["executions", "search", "build"])["items"].as_array().unwrap().len(), 2);
    let text = env.ok(&["executions", "search", "flaky"]);
    assert!(text.contains(&id), "{text}");
    assert!(env.fails(&["executions", "search", "?!"], 2).contains("no words"));

    let hits = env.json(&["patterns", "search", "bugs"]);
    assert_eq!(hits["items"][0]["name"], "code-review");
    assert!(env.json(&["patterns", "search", "nothing-like-this"])["items"].as_array().unwrap().is_empty());

    let status = env.json(&["storage", "migrate", "status"]);
    let last =
        status["migrations"].as_array().unwrap().last().unwrap()["version"].as_str().unwrap().to_string();
    assert!(env.fails(&["storage", "migrate", "mark-applied", &last], 4).contains("already applied"));
    env.ok(&["storage", "migrate", "down"]);
    let out = env.ok(&["storage", "migrate", "mark-applied", &last]);
    assert!(out.contains(&last), "{out}");
    let health = env.json(&["storage", "test-connection"]);
    assert_eq!(health["pending_migrations"], 0, "{health}");
}

#[test]
fn the_binary_does_not_link_the_plugin() {
    // The host loads the plugin at run time; linking it would defeat swapping backends by config.
    let out =
        Command::new("ldd").arg(env!("CARGO_BIN_EXE_parallax")).output().expect("ldd (Debian: libc-bin)");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!libs.contains("parallax_storage"), "the parallax binary links the plugin:\n{libs}");
}

/// `parallax storage test-connection` against a port where nothing listens, with the password in every form
/// the configuration takes: neither stdout nor stderr (at -vvv, with the plugin's debug logs) contains it.
#[test]
fn test_connection_never_prints_a_password() {
    const PW: &str = "Cli5pw-Vq73";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port() // nothing listens once `l` is dropped
    };
    let base = "storage:\n  type: postgresql\n";
    let keys = format!(
        "{base}  postgresql:\n    host: 127.0.0.1\n    port: {port}\n    database: db\n    username: u\n"
    );
    let url_file = |url: &str| format!("{base}  postgresql:\n    url: \"{url}\"\n");
    /// A case: its name, the config file, and environment variables.
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        ("url user info", url_file(&format!("postgresql://u:{PW}@127.0.0.1:{port}/db")), vec![]),
        ("url ?password=", url_file(&format!("postgresql://u@127.0.0.1:{port}/db?password={PW}")), vec![]),
        ("url encoded key", url_file(&format!("postgres://u@127.0.0.1:{port}/db?pass%77ord={PW}")), vec![]),
        ("password key", format!("{keys}    password: {PW}\n"), vec![]),
        (
            "PARALLAX_DATABASE_URL",
            base.to_string(),
            vec![("PARALLAX_DATABASE_URL", format!("postgresql://u@127.0.0.1:{port}/db?password={PW}"))],
        ),
        ("PARALLAX_DATABASE_PASSWORD", keys.clone(), vec![("PARALLAX_DATABASE_PASSWORD", PW.to_string())]),
        (
            "conninfo string",
            base.to_string(),
            vec![("PARALLAX_DATABASE_URL", format!("host=127.0.0.1 port={port} password={PW}"))],
        ),
    ];
    for (name, yaml, vars) in cases {
        let env = Env::with_config(&yaml);
        for args in [&["storage", "test-connection", "-vvv"][..], &["storage", "info"][..]] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_parallax"));
            cmd.args(args).arg("--plugin").arg(plugin_path()).current_dir(env.dir.path());
            for var in ["PARALLAX_CONFIG", "PARALLAX_STORAGE_PLUGIN", "PARALLAX_STORAGE_TYPE", "RUST_LOG"] {
                cmd.env_remove(var);
            }
            for var in ["URL", "HOST", "PORT", "NAME", "USER", "PASSWORD"] {
                cmd.env_remove(format!("PARALLAX_DATABASE_{var}"));
            }
            cmd.envs(vars.iter().map(|(k, v)| (k, v)));
            let out = cmd.output().expect("run parallax");
            let (stdout, stderr) =
                (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if args[1] == "test-connection" {
                assert_ne!(out.status.code(), Some(0), "{name}: nothing listens, yet: {stdout}");
                if name != "conninfo string" {
                    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{name}: {stderr}");
                }
            }
            assert!(!stdout.contains(PW) && !stderr.contains(PW), "{name} {args:?} leaked: {stdout}{stderr}");
        }
    }
}

#[test]
fn cleanup_and_retention_commands() {
    let env = Env::new();
    env.ok(&["storage", "migrate", "up"]);
    let start = || {
        env.json(&["executions", "start", "--pattern", "p", "--pattern-version", "1.0.0"])["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (start(), start());
    for id in [&a, &b] {
        env.ok(&["executions", "finish", id, "--status", "completed"]);
    }
    let running = start();

    // Bad values are refused naming the value and the accepted form; nothing is removed.
    let msg = env.fails(&["storage", "cleanup", "executions", "--older-than", "banana"], 2);
    assert!(msg.contains("\"banana\"") && msg.contains("30d"), "{msg}");
    let msg = env.fails(&["storage", "cleanup", "executions", "--older-than", "-5d"], 2);
    assert!(msg.contains("\"-5d\""), "{msg}");
    let msg = env.fails(&["storage", "cleanup", "executions", "--max-count", "-1"], 2);
    assert!(msg.contains("--max-count -1") && msg.contains("at least 1"), "{msg}");
    let msg = env.fails(&["storage", "cleanup", "audit-logs"], 2);
    assert!(msg.contains("--older-than"), "{msg}");

    // A dry run reports and changes nothing; the newest execution (running) is kept by --max-count 1.
    let dry = env.json(&["storage", "cleanup", "executions", "--max-count", "1", "--dry-run"]);
    assert_eq!(dry["dryRun"], true, "{dry}");
    assert_eq!(dry["tables"][0]["table"], "executions", "{dry}");
    assert_eq!(dry["tables"][0]["rows"], 2, "{dry}");
    assert_eq!(dry["rowsLeft"], 1, "{dry}");
    let text = env.ok(&["storage", "cleanup", "executions", "--max-count", "1", "--dry-run"]);
    assert!(text.contains("dry run: nothing was changed") && text.contains("WOULD GO"), "{text}");
    assert_eq!(env.json(&["executions", "list", "--count"])["count"], 3);

    let done = env.json(&["storage", "cleanup", "executions", "--max-count", "1"]);
    assert_eq!(done["tables"][0]["rows"], 2, "{done}");
    assert!(done["runId"].is_string(), "{done}");
    env.fails(&["executions", "get", &a], 3);
    env.ok(&["executions", "get", &running]);

    // Emptying the table needs --yes.
    env.ok(&["executions", "finish", &running, "--status", "failed"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let msg = env.fails(&["storage", "cleanup", "executions", "--older-than", "1s"], 2);
    assert!(msg.contains("every execution") && msg.contains("--yes"), "{msg}");
    env.ok(&["executions", "get", &running]);
    env.ok(&["storage", "cleanup", "executions", "--older-than", "1s", "--yes"]);
    env.fails(&["executions", "get", &running], 3);

    // Both runs are recorded, newest first; info shows the last one.
    let status = env.json(&["storage", "retention", "status"]);
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{status}");
    assert!(runs.iter().all(|r| r["trigger"] == "manual" && r["status"] == "succeeded"), "{status}");
    assert_eq!(runs[1]["rows"]["executions"], 2, "{status}");
    let text = env.ok(&["storage", "retention", "status"]);
    assert!(text.contains("not set") && text.contains("manual"), "{text}");
    let info = env.ok(&["storage", "info"]);
    assert!(info.contains("last retention run:") && info.contains("manual succeeded"), "{info}");

    // Without rules, a policy run is skipped and there is nothing to serve.
    let r = env.json(&["storage", "retention", "run"]);
    assert_eq!(r["ran"], false, "{r}");
    assert!(r["skipped"].as_str().unwrap().contains("no retention rule"), "{r}");
    let msg = env.fails(&["storage", "retention", "serve"], 2);
    assert!(msg.contains("nothing to serve"), "{msg}");
    assert!(env.ok(&["storage", "cleanup", "executions", "--help"]).contains("--include-unfinished"));
}

#[test]
fn archive_and_restore_refuse_bad_arguments_by_name() {
    let env = Env::new();
    fn archive<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["storage", "archive"];
        args.extend_from_slice(extra);
        args
    }
    // Checked by the CLI before the storage is opened: no database file appears.
    let msg = env.fails(&archive(&["executions", "--older-than", "30d"]), 2);
    assert!(msg.contains("--destination"), "{msg}");
    let msg = env.fails(&archive(&["executions", "--destination", "/tmp/x/"]), 2);
    assert!(msg.contains("--older-than") && msg.contains("--max-count"), "{msg}");
    let msg = env.fails(&archive(&["audit-logs", "--destination", "/tmp/x/"]), 2);
    assert!(msg.contains("--older-than"), "{msg}");
    let msg = env.fails(
        &archive(&["audit-logs", "--older-than", "90d", "--max-count", "5", "--destination", "/x/"]),
        2,
    );
    assert!(msg.contains("--max-count 5") && msg.contains("executions only"), "{msg}");
    let msg =
        env.fails(&archive(&["executions", "--older-than", "30d", "--destination", "file://backups/x/"]), 2);
    assert!(msg.contains("\"file://backups/x/\"") && msg.contains("file:///"), "{msg}");
    let msg = env.fails(&archive(&["executions", "--older-than", "30d", "--destination", "gs://b/p/"]), 2);
    assert!(msg.contains("\"gs://b/p/\"") && msg.contains("s3://bucket/prefix/"), "{msg}");
    let msg = env.fails(&archive(&["executions", "--older-than", "30d", "--destination", "s3:///p/"]), 2);
    assert!(msg.contains("needs a bucket"), "{msg}");
    let msg = env.fails(&archive(&["executions", "--older-than", "30d", "--destination", " "]), 2);
    assert!(msg.contains("--destination is empty"), "{msg}");
    let msg = env.fails(&archive(&["verify", "--source", "file://rel/"]), 2);
    assert!(msg.contains("--source") && msg.contains("\"file://rel/\""), "{msg}");
    let msg = env.fails(&archive(&["verify"]), 2);
    assert!(msg.contains("--source"), "{msg}");
    let msg = env.fails(&["storage", "restore", "--source", "ftp://h/p/"], 2);
    assert!(msg.contains("--source") && msg.contains("unsupported scheme"), "{msg}");
    let msg = env.fails(&["storage", "restore"], 2);
    assert!(msg.contains("--source"), "{msg}");
    assert!(!env.dir.path().join("parallax.db").exists(), "a refused command opened the storage");

    // Help explains destinations, the S3 settings, --keep, --dry-run, progress and the verify-first rule.
    for cmd in
        [&["storage", "archive", "executions", "--help"][..], &["storage", "archive", "audit-logs", "--help"]]
    {
        // Wrapped to the terminal: compare with the lines joined.
        let help = env.ok(cmd).split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        for word in [
            "s3://bucket/prefix/",
            "file:///",
            "storage.archive",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_region",
            "aws_endpoint_url",
            "aws_allow_http",
            "--keep",
            "--dry-run",
            "nothing is deleted before the archive is stored and verified",
            "terminal",
        ] {
            assert!(help.contains(word), "{cmd:?} lacks {word:?}: {help}");
        }
    }
    for cmd in [&["storage", "archive", "verify", "--help"][..], &["storage", "restore", "--help"]] {
        let help = env.ok(cmd);
        for word in ["--source", "manifest", "AWS_ENDPOINT_URL", "storage.archive"] {
            assert!(help.contains(word), "{cmd:?} lacks {word:?}: {help}");
        }
    }
    let storage = env.ok(&["storage", "--help"]);
    assert!(storage.contains("archive") && storage.contains("restore"), "{storage}");
}

/// Every `*.ndjson.gz` object under `dir`, sorted.
fn archive_objects(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".ndjson.gz") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// The records of one object, read with the standard `gzip` tool (what an operator would do).
fn read_with_gzip(object: &std::path::Path) -> Vec<Value> {
    let out = Command::new("gzip").arg("-dc").arg(object).output().expect("run gzip");
    assert!(out.status.success(), "gzip -dc {}: {}", object.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: a line is not JSON ({e}): {l}", object.display()))
        })
        .collect()
}

#[test]
fn archive_verify_and_restore_round_trip_through_the_cli() {
    let env = Env::new();
    env.ok(&["storage", "migrate", "up"]);
    let mut ids = Vec::new();
    for n in 0..3 {
        let input = format!(r#"{{"pr": {n}, "text": "quokka number {n}"}}"#);
        let id = env.json(&[
            "executions",
            "start",
            "--pattern",
            "p",
            "--pattern-version",
            "1.0.0",
            "--input",
            &input,
            "--tag",
            "t",
        ])["id"]
            .as_str()
            .unwrap()
            .to_string();
        env.ok(&["executions", "event", &id, "--kind", "step-result", "--payload", r#"{"step": 1}"#]);
        env.ok(&["executions", "event", &id, "--kind", "agent-assignment", "--payload", r#""agent-7""#]);
        env.ok(&["executions", "finish", &id, "--status", "completed", "--result", r#"{"ok": true}"#]);
        ids.push(id);
    }
    let running = env.json(&["executions", "start", "--pattern", "p", "--pattern-version", "1.0.0"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["audit", "append", "--action", "login", "--actor", "alice", "--details", r#"{"k": [1, 2]}"#]);
    env.ok(&["audit", "append", "--action", "logout", "--actor", "bob", "--ip", "10.0.0.1"]);
    let before: Vec<Value> = ids.iter().map(|id| env.json(&["executions", "get", id, "--events"])).collect();
    let audit_before = env.json(&["audit", "list"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let dest = env.dir.path().join("archive");
    std::fs::create_dir(&dest).unwrap();
    let url = format!("file://{}/", dest.display());

    // A dry run changes nothing and writes nothing.
    let dry = env.json(&[
        "storage",
        "archive",
        "executions",
        "--older-than",
        "1s",
        "--destination",
        &url,
        "--dry-run",
    ]);
    assert_eq!((dry["dryRun"].as_bool(), dry["rows"]["executions"].as_u64()), (Some(true), Some(3)), "{dry}");
    assert!(dry["manifest"].is_null(), "{dry}");
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "a dry run wrote into the destination");
    assert_eq!(env.json(&["executions", "list", "--count"])["count"], 4);
    let text = env.ok(&[
        "storage",
        "archive",
        "executions",
        "--older-than",
        "1s",
        "--destination",
        &url,
        "--dry-run",
    ]);
    assert!(
        text.contains("dry run: nothing was changed or written") && text.contains("WOULD ARCHIVE"),
        "{text}"
    );

    // --keep archives and deletes nothing.
    let kept_dir = env.dir.path().join("kept");
    let kept = env.json(&[
        "storage",
        "archive",
        "audit-logs",
        "--older-than",
        "1s",
        "--keep",
        "--destination",
        "kept/",
    ]);
    assert_eq!(
        (kept["deleted"].as_bool(), kept["rows"]["audit_logs"].as_u64()),
        (Some(false), Some(2)),
        "{kept}"
    );
    assert_eq!(kept["destination"].as_str(), Some(format!("{}/", kept_dir.display()).as_str()), "{kept}");
    assert_eq!(env.json(&["audit", "list"])["items"].as_array().unwrap().len(), 2);
    assert_eq!(archive_objects(&kept_dir).len(), 1, "{kept}");

    // The archive: executions with their events, then the audit log (every entry: needs --yes).
    let a = env.json(&["storage", "archive", "executions", "--older-than", "1s", "--destination", &url]);
    assert_eq!(a["rows"]["executions"].as_u64(), Some(3), "{a}");
    assert_eq!(a["rows"]["execution_events"].as_u64(), Some(6), "{a}");
    assert_eq!(a["deleted"].as_bool(), Some(true), "{a}");
    let manifest = a["manifest"].as_str().expect("manifest").to_string();
    assert!(manifest.starts_with("executions/manifests/") && dest.join(&manifest).is_file(), "{a}");
    assert_eq!(env.json(&["executions", "list", "--count"])["count"], 1);
    env.ok(&["executions", "get", &running]);
    let msg =
        env.fails(&["storage", "archive", "audit-logs", "--older-than", "1s", "--destination", &url], 2);
    assert!(msg.contains("--yes"), "{msg}");
    let text =
        env.ok(&["storage", "archive", "audit-logs", "--older-than", "1s", "--destination", &url, "--yes"]);
    for word in [
        "archive of audit logs",
        "ARCHIVED",
        "audit_logs",
        "manifest:",
        "audit_logs/manifests/",
        "deleted:",
        "duration:",
    ] {
        assert!(text.contains(word), "lacks {word:?}: {text}");
    }
    assert!(env.json(&["audit", "list"])["items"].as_array().unwrap().is_empty());

    // The objects are ordinary gzip'd NDJSON, one record per line, schema version 1, events embedded.
    let objects = archive_objects(&dest);
    assert_eq!(objects.len(), 2, "{objects:?}");
    let records: Vec<Value> = objects.iter().flat_map(|o| read_with_gzip(o)).collect();
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r["recordSchema"] == 1), "{records:?}");
    let exec = records.iter().find(|r| r["id"] == ids[0].as_str()).expect("execution record");
    assert_eq!(
        (exec["input"]["pr"].as_i64(), exec["events"].as_array().map(Vec::len)),
        (Some(0), Some(2)),
        "{exec}"
    );

    // Verify: ok, in JSON and in text.
    let v = env.json(&["storage", "archive", "verify", "--source", &url]);
    assert_eq!((v["ok"].as_bool(), v["manifests"].as_array().map(Vec::len)), (Some(true), Some(2)), "{v}");
    let one = env.json(&["storage", "archive", "verify", "--source", &format!("{url}{manifest}")]);
    assert_eq!(
        (one["ok"].as_bool(), one["manifests"].as_array().map(Vec::len)),
        (Some(true), Some(1)),
        "{one}"
    );
    let text = env.ok(&["storage", "archive", "verify", "--source", &url]);
    assert!(text.starts_with(&format!("verify of {url}: ok")), "{text}");

    // Restore into a fresh SQLite database: a dry run writes nothing; then everything comes back equal,
    // search included; a second restore skips every row.
    let fresh = Env::new();
    fresh.ok(&["storage", "migrate", "up"]);
    let dr = fresh.json(&["storage", "restore", "--source", &url, "--dry-run"]);
    assert_eq!(
        (dr["dryRun"].as_bool(), dr["inserted"]["executions"].as_u64()),
        (Some(true), Some(3)),
        "{dr}"
    );
    assert_eq!(fresh.json(&["executions", "list", "--count"])["count"], 0);
    let r = fresh.json(&["storage", "restore", "--source", &url]);
    assert_eq!(r["inserted"]["executions"].as_u64(), Some(3), "{r}");
    assert_eq!(r["inserted"]["execution_events"].as_u64(), Some(6), "{r}");
    assert_eq!(r["inserted"]["audit_logs"].as_u64(), Some(2), "{r}");
    for (id, b) in ids.iter().zip(&before) {
        assert_eq!(&fresh.json(&["executions", "get", id, "--events"]), b, "execution {id} after restore");
    }
    assert_eq!(fresh.json(&["audit", "list"]), audit_before);
    let hits = fresh.json(&["executions", "search", "quokka"]);
    assert_eq!(hits["items"].as_array().unwrap().len(), 3, "{hits}");
    let again = fresh.json(&["storage", "restore", "--source", &url]);
    assert_eq!(again["skipped"]["executions"].as_u64(), Some(3), "{again}");
    assert_eq!(again["inserted"]["executions"].as_u64().unwrap_or(0), 0, "{again}");
    let text = fresh.ok(&["storage", "restore", "--source", &url]);
    assert!(text.contains("INSERTED") && text.contains("SKIPPED") && text.contains(&manifest), "{text}");

    // A damaged object: verify exits non-zero naming it, and restore refuses it with nothing written.
    let victim = objects.iter().find(|o| o.to_string_lossy().contains("/executions/")).unwrap();
    let key = victim.strip_prefix(&dest).unwrap().to_string_lossy().to_string();
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    let bad = env.run(&["--output", "json", "storage", "archive", "verify", "--source", &url]);
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    let doc: Value = serde_json::from_str(&bad.stdout).expect("the verify report");
    assert_eq!(doc["ok"].as_bool(), Some(false), "{doc}");
    assert!(bad.stderr.starts_with("error: ") && bad.stderr.contains(&key), "{}", bad.stderr);
    let msg = env.fails(&["storage", "archive", "verify", "--source", &url], 1);
    assert!(msg.contains(&key), "{msg}");
    let text = env.run(&["storage", "archive", "verify", "--source", &url]).stdout;
    assert!(text.contains("FAILED") && text.contains(&format!("  {key}: ")), "{text}");
    let empty = Env::new();
    empty.ok(&["storage", "migrate", "up"]);
    let r = empty.run(&["storage", "restore", "--source", &url]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains(&key), "{}", r.stderr);
    assert_eq!(empty.json(&["executions", "list", "--count"])["count"], 0);
    assert!(empty.json(&["audit", "list"])["items"].as_array().unwrap().is_empty());
}

/// The workspace's S3 test server harness (`s3s-fs` on 127.0.0.1); only the server and its AWS environment
/// are used here.
#[allow(dead_code)]
#[path = "../../../tests/common/s3.rs"]
mod s3;

#[test]
fn archive_to_s3_with_the_aws_environment() {
    let server = s3::S3Server::start();
    // No storage.archive section: every S3 setting comes from the AWS_* variables of the child.
    let env = Env::new();
    env.ok(&["storage", "migrate", "up"]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = env.json(&["executions", "start", "--pattern", "p", "--pattern-version", "1.0.0"])["id"]
            .as_str()
            .unwrap()
            .to_string();
        env.ok(&["executions", "event", &id, "--kind", "step-result", "--payload", r#"{"s3": true}"#]);
        env.ok(&["executions", "finish", &id, "--status", "failed", "--error", r#"{"why": "quota"}"#]);
        ids.push(id);
    }
    let before: Vec<Value> = ids.iter().map(|id| env.json(&["executions", "get", id, "--events"])).collect();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let url = server.url("cli");
    let with_aws = |env: &Env, args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.envs(server.env());
        let r = env.run_cmd(cmd, None);
        for secret in [server.secret_key(), server.access_key()] {
            assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "{args:?} printed a key");
        }
        r
    };
    let json = |r: Run| -> Value {
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        serde_json::from_str(&r.stdout).expect("JSON")
    };

    // Without the environment the destination is refused naming what is missing, and nothing is deleted.
    let msg =
        env.fails(&["storage", "archive", "executions", "--older-than", "1s", "--destination", &url], 2);
    assert!(msg.contains("AWS_ACCESS_KEY_ID") && msg.contains(&url), "{msg}");
    assert_eq!(env.json(&["executions", "list", "--count"])["count"], 2);

    let dry = json(with_aws(
        &env,
        &[
            "--output",
            "json",
            "storage",
            "archive",
            "executions",
            "--older-than",
            "1s",
            "--destination",
            &url,
            "--dry-run",
        ],
    ));
    assert_eq!(dry["rows"]["executions"].as_u64(), Some(2), "{dry}");
    assert!(server.files(s3::BUCKET).is_empty(), "a dry run wrote {:?}", server.files(s3::BUCKET));

    let a = json(with_aws(
        &env,
        &[
            "--output",
            "json",
            "storage",
            "archive",
            "executions",
            "--older-than",
            "1s",
            "--destination",
            &url,
            "--yes",
        ],
    ));
    assert_eq!((a["rows"]["executions"].as_u64(), a["deleted"].as_bool()), (Some(2), Some(true)), "{a}");
    assert_eq!(env.json(&["executions", "list", "--count"])["count"], 0);
    let manifest = a["manifest"].as_str().expect("manifest");
    let files = server.files(s3::BUCKET);
    assert!(files.contains(&format!("cli/{manifest}")), "{files:?}");

    // The object is ordinary: the aws CLI downloads it and gzip reads it (the README's recipe).
    let key = a["objects"][0]["key"].as_str().expect("an object");
    let aws = server
        .command("aws")
        .args(["s3", "cp", &format!("{url}{key}"), "-"])
        .output()
        .expect("run the aws CLI (installed by ./test.sh)");
    assert!(aws.status.success(), "aws s3 cp: {}", String::from_utf8_lossy(&aws.stderr));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("object.ndjson.gz");
    std::fs::write(&local, &aws.stdout).unwrap();
    let records = read_with_gzip(&local);
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["recordSchema"] == 1 && r["error"]["why"] == "quota"), "{records:?}");

    let v = json(with_aws(&env, &["--output", "json", "storage", "archive", "verify", "--source", &url]));
    assert_eq!(v["ok"].as_bool(), Some(true), "{v}");
    let text = with_aws(&env, &["storage", "archive", "verify", "--source", &url]);
    assert!(text.code == 0 && text.stdout.contains(": ok"), "{}{}", text.stdout, text.stderr);

    let fresh = Env::new();
    fresh.ok(&["storage", "migrate", "up"]);
    let r = json(with_aws(&fresh, &["--output", "json", "storage", "restore", "--source", &url]));
    assert_eq!(r["inserted"]["executions"].as_u64(), Some(2), "{r}");
    for (id, b) in ids.iter().zip(&before) {
        assert_eq!(&fresh.json(&["executions", "get", id, "--events"]), b, "execution {id} after restore");
    }
}

#[test]
fn archive_dry_runs_and_verify_never_migrate() {
    let env = Env::new();
    std::fs::create_dir(env.dir.path().join("d")).unwrap();
    let pending = |env: &Env| env.json(&["storage", "migrate", "status"])["pending"].as_u64().unwrap();
    let before = pending(&env);
    assert!(before > 0);
    // Opened in maintenance mode: the schema stays as it is, so a dry run on an unmigrated database says so.
    let msg = env.fails(
        &["storage", "archive", "executions", "--older-than", "1s", "--destination", "d", "--dry-run"],
        5,
    );
    assert!(msg.contains("migrate up"), "{msg}");
    let msg = env.fails(&["storage", "archive", "verify", "--source", "d"], 3);
    assert!(msg.contains("no archive manifest"), "{msg}");
    env.fails(&["storage", "restore", "--source", "d", "--dry-run"], 3);
    assert_eq!(pending(&env), before, "a dry run or verify ran migrations");
}

// ------------------------------------------------------------------ metrics (issue 14)

/// The samples of a Prometheus text exposition: `(name, labels, value)`, comments skipped.
fn samples(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Default::default()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) =
                            pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The value of the one sample `name` with at least `labels`; panics naming the text when there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "expected one sample {name}{labels:?} in:\n{text}");
    found[0]
}

/// The metric families every exposition carries on SQLite (the operator documentation's names and ours).
const DOCUMENTED_ON_SQLITE: &[&str] = &[
    "parallax_storage_operation_duration_seconds",
    "parallax_storage_pool_connections_active",
    "parallax_storage_pool_connections_idle",
    "parallax_storage_pool_waiting_requests",
    "parallax_storage_table_rows",
    "parallax_storage_table_size_bytes",
    "parallax_storage_disk_free_bytes",
    "parallax_storage_build_info",
];

/// Checks an exposition taken through the CLI from a migrated SQLite store holding executions.
fn check_sqlite_exposition(env: &Env, text: &str) {
    for name in DOCUMENTED_ON_SQLITE {
        assert!(text.contains(&format!("# TYPE {name} ")), "no {name} family in:\n{text}");
    }
    let info = env.json(&["storage", "info"]);
    let (plugin, abi) =
        (info["plugin"]["plugin_version"].as_str().unwrap(), info["plugin"]["abi_version"].as_str().unwrap());
    let build = [("plugin_version", plugin), ("abi_version", abi), ("backend", "sqlite")];
    assert_eq!(sample(text, "parallax_storage_build_info", &build), 1.0);
    // The summary's quantiles, as the documented alert expects them.
    assert!(
        text.contains("parallax_storage_operation_duration_seconds{") && text.contains("quantile=\"0.99\""),
        "{text}"
    );
    for table in ["patterns", "executions", "execution_events", "audit_logs"] {
        sample(text, "parallax_storage_table_rows", &[("table", table)]);
        sample(text, "parallax_storage_table_size_bytes", &[("table", table)]);
    }
    assert!(sample(text, "parallax_storage_table_size_bytes", &[("table", "executions")]) > 0.0, "{text}");
    assert!(sample(text, "parallax_storage_disk_free_bytes", &[]) > 0.0, "{text}");
}

#[test]
fn metrics_prints_the_exposition() {
    let env = Env::new();
    env.write("review.yaml", PATTERN_YAML);
    env.ok(&["patterns", "put", "review.yaml"]);
    for _ in 0..3 {
        env.ok(&["executions", "start", "--pattern", "code-review"]);
    }
    let text = env.ok(&["storage", "metrics"]);
    assert!(text.ends_with('\n') && !text.starts_with('\n'), "{text:?}");
    check_sqlite_exposition(&env, &text);

    let doc = env.json(&["storage", "metrics"]);
    assert_eq!(doc["contentType"], "text/plain; version=0.0.4; charset=utf-8");
    check_sqlite_exposition(&env, doc["text"].as_str().unwrap());

    // Metrics switched off: refused by the key's name, in both modes.
    let off = Env::with_config(&format!("{CONFIG}  metrics:\n    enabled: false\n"));
    for args in [&["storage", "metrics"][..], &["storage", "metrics", "--listen", "127.0.0.1:0"]] {
        let msg = off.fails(args, 2);
        assert!(msg.contains("storage.metrics.enabled"), "{msg}");
    }

    let help = env.ok(&["storage", "metrics", "--help"]);
    for word in ["--listen", "textfile", "mv ", "file store", "SQLite", "SIGTERM", "404"] {
        assert!(help.contains(word), "storage metrics --help lacks {word}: {help}");
    }
}

/// A GET (or another method) against `addr`, HTTP/1.0: the status, the headers (lowercase names), the body.
fn http(addr: &str, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers: {raw:?}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status.unwrap_or_else(|| panic!("no status line: {raw:?}")), headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `parallax storage metrics --listen 127.0.0.1:0` running in `env`: the child and the address it announced.
fn spawn_exporter(env: &Env) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let mut cmd = env.command(&["storage", "metrics", "--listen", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn parallax storage metrics --listen");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("read stderr") == 0 {
            let _ = child.kill();
            panic!("the exporter exited without announcing its address; stderr: {seen}");
        }
        if let Some((addr, _)) =
            line.strip_prefix("serving metrics on http://").and_then(|rest| rest.split_once("/metrics"))
        {
            break addr.to_string();
        }
        seen.push_str(&line);
    };
    // The rest of stderr, read until the process exits.
    let rest = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut all);
        all
    });
    (child, addr, rest)
}

#[test]
fn metrics_listen_serves_until_sigterm() {
    let env = Env::new();
    env.write("review.yaml", PATTERN_YAML);
    env.ok(&["patterns", "put", "review.yaml"]);
    env.ok(&["executions", "start", "--pattern", "code-review"]);
    let (child, addr, stderr) = spawn_exporter(&env);

    for _ in 0..2 {
        let (status, headers, body) = http(&addr, "GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        check_sqlite_exposition(&env, &body);
    }
    let (status, _, body) = http(&addr, "GET", "/");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/metrics"), "{body}");
    let (status, headers, _) = http(&addr, "POST", "/metrics");
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET"));

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait for the exporter");
    let stderr = stderr.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "stdout {} stderr {stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("stopped after 2 scrapes (0 failed)"), "{stderr}");
    // The address is free again, and the storage was closed cleanly: the next command opens it.
    assert!(std::net::TcpListener::bind(&addr).is_ok(), "{addr} still bound");
    assert_eq!(env.json(&["executions", "list", "--count"])["count"], 1);
}

#[test]
fn metrics_listen_on_a_file_store_holds_it_open() {
    // The file store's single-writer lock is why the README says not to run the exporter next to Parallax:
    // while the exporter runs, no other process opens the store.
    let env = Env::with_config("storage:\n  type: file\n  file:\n    basePath: ./store\n");
    env.ok(&["patterns", "list"]);
    let (mut child, addr, stderr) = spawn_exporter(&env);
    let (status, _, body) = http(&addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    let build = [("backend", "file")];
    assert_eq!(sample(&body, "parallax_storage_build_info", &build), 1.0, "{body}");
    let msg = env.fails(&["patterns", "list"], 1);
    assert!(msg.contains("unavailable") && msg.contains(&child.id().to_string()), "{msg}");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("run kill");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", stderr.join().unwrap());
    env.ok(&["patterns", "list"]);
}

#[test]
fn metrics_listen_refuses_a_bad_or_busy_address_by_name() {
    let env = Env::new();
    let msg = env.fails(&["storage", "metrics", "--listen", "no-such-address"], 2);
    assert!(msg.contains("\"no-such-address\"") && msg.contains("HOST:PORT"), "{msg}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let msg = env.fails(&["storage", "metrics", "--listen", &addr], 1);
    assert!(msg.contains(&format!("cannot listen on {addr}")), "{msg}");
    assert!(!env.dir.path().join("parallax.db").exists(), "a refused address must not open the storage");
}

/// The ABI 2.0.0 fixtures (an old plugin, before the `maintenance` call), built as the workspace's tests build
/// them.
#[path = "../../../tests/common/compat.rs"]
mod compat;

fn old_plugin() -> PathBuf {
    compat::fixtures().old_plugin.clone()
}

#[test]
fn metrics_from_a_plugin_older_than_the_op_names_both_versions() {
    let env = Env::with_config("storage: {}\n");
    let old = old_plugin();
    let old = old.to_str().unwrap();
    for args in [&["storage", "metrics"][..], &["storage", "metrics", "--listen", "127.0.0.1:0"]] {
        let all: Vec<&str> = ["--plugin", old].iter().chain(args).copied().collect();
        let msg = env.fails(&all, 1);
        for part in ["unsupported", "parallax storage metrics", "2.0.0", "upgrade the plugin"] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        let this = env.json(&["storage", "info"]);
        let abi = this["plugin"]["abi_version"].as_str().unwrap();
        assert!(msg.contains(&format!("storage ABI {abi}")), "{msg}");
    }
}

#[test]
fn test_connection_lists_the_one_local_host_on_sqlite() {
    let env = Env::new();
    let text = env.ok(&["storage", "test-connection"]);
    assert!(text.contains("status:") && text.contains("reachable"), "{text}");
    let table: Vec<&str> = text.lines().skip_while(|l| *l != "hosts:").collect();
    assert!(table.len() >= 3, "no host table: {text}");
    for column in
        ["ROLE", "ADDRESS", "REACHABLE", "SERVER ROLE", "LATENCY", "REPLAY LAG", "STATE", "RECEIVES READS"]
    {
        assert!(table[1].contains(column), "{column}: {text}");
    }
    let row: Vec<&str> = table[2].split_whitespace().collect();
    assert_eq!(row[0], "local", "{text}");
    assert!(row[1].ends_with("parallax.db"), "{text}");
    assert_eq!(&row[2..4], ["yes", "-"], "{text}");
    assert_eq!(&row[row.len() - 3..], ["-", "up", "yes"], "{text}");
    // One host: no replica line.
    assert!(!text.contains("readPreference"), "{text}");

    let doc = env.json(&["storage", "test-connection"]);
    assert_eq!(doc["backend"], "sqlite", "{doc}");
    assert_eq!(doc["read_preference"], "primary", "{doc}");
    assert_eq!(doc["max_replica_lag_ms"], Value::Null, "{doc}");
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1, "{doc}");
    let h = &hosts[0];
    assert_eq!((h["role"].as_str(), h["state"].as_str()), (Some("local"), Some("up")), "{doc}");
    assert_eq!((h["reachable"].as_bool(), h["receives_reads"].as_bool()), (Some(true), Some(true)), "{doc}");
    assert!(h["address"].as_str().unwrap().ends_with("parallax.db"), "{doc}");
    assert!(h["latency_us"].as_i64().unwrap() >= 0, "{doc}");
    assert_eq!(
        (&h["server_role"], &h["replay_lag_ms"], &h["error"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
}

#[test]
fn test_connection_with_a_plugin_older_than_the_hosts_op_prints_todays_output() {
    let env = Env::with_config("storage: {}\n");
    let old = old_plugin();
    let text = env.ok(&["--plugin", old.to_str().unwrap(), "storage", "test-connection"]);
    assert!(text.contains("status:") && text.contains("latency:"), "{text}");
    assert!(!text.contains("hosts") && !text.contains("ROLE"), "{text}");
    let doc = env.json(&["--plugin", old.to_str().unwrap(), "storage", "test-connection"]);
    assert!(doc.get("hosts").is_none() && doc.get("hosts_error").is_none(), "{doc}");
    assert!(doc["latency_us"].is_i64(), "{doc}");
}

/// A port where nothing listens (connections are refused at once).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn storage_info_shows_the_routing_without_connecting() {
    let port = closed_port();
    let pg = |extra: &str| {
        format!(
            "storage:\n  type: postgresql\n  postgresql:\n    database: db\n    username: u\n    password: \
             Info5pw\n    pool:\n      acquireTimeout: 1000\n{extra}"
        )
    };
    let replicas = format!(
        "    primary:\n      host: 127.0.0.1\n      port: {port}\n    replicas:\n      - host: r1.example\n      \
         - host: \"::1\"\n        port: 6432\n"
    );
    let env = Env::with_config(&pg(&format!("{replicas}    readPreference: replica\n")));
    let text = env.ok(&["storage", "info"]);
    let line = format!(
        "routing: writes → primary 127.0.0.1:{port}; reads → replica (2 replicas, maxReplicaLag 10000 ms, falls \
         back to the primary)"
    );
    assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    assert!(text.contains("maxReplicaLag: 10000"), "the effective config shows the default: {text}");
    assert!(text.contains("warnings: none"), "{text}");
    assert!(!text.contains("Info5pw"), "{text}");
    let doc = env.json(&["storage", "info"]);
    let r = &doc["routing"];
    assert_eq!(r["writes"], format!("127.0.0.1:{port}"), "{doc}");
    assert_eq!((r["reads"].as_str(), r["read_preference"].as_str()), (Some("replica"), Some("replica")));
    assert_eq!(r["replicas"], serde_json::json!(["r1.example:5432", "[::1]:6432"]), "{doc}");
    assert_eq!((r["max_replica_lag_ms"].as_u64(), r["fallback"].as_str()), (Some(10_000), Some("primary")));
    assert_eq!(r["text"], line.trim_start_matches("routing: "), "{doc}");
    assert_eq!(doc["config"]["effective"]["postgresql"]["maxReplicaLag"], 10_000, "{doc}");

    let env = Env::with_config(&pg(&format!("{replicas}    readPreference: any\n    maxReplicaLag: 2500\n")));
    let text = env.ok(&["storage", "info"]);
    assert!(
        text.contains(&format!(
            "routing: writes → primary 127.0.0.1:{port}; reads → any healthy host: the primary and 2 replicas, \
             maxReplicaLag 2500 ms; a lagging or down replica gets none"
        )),
        "{text}"
    );
    // Replicas that receive no reads, and a preference without replicas: said in the routing and the warnings.
    let env = Env::with_config(&pg(&replicas));
    let text = env.ok(&["storage", "info"]);
    assert!(
        text.contains("reads → primary (2 replicas configured but unused: readPreference primary)"),
        "{text}"
    );
    assert!(text.contains("receive no reads"), "{text}");
    let env =
        Env::with_config(&pg(&format!("    host: 127.0.0.1\n    port: {port}\n    readPreference: any\n")));
    let text = env.ok(&["storage", "info"]);
    assert!(
        text.contains(&format!(
            "routing: writes → primary 127.0.0.1:{port}; reads → primary (readPreference any has no effect: no \
             replicas configured)"
        )),
        "{text}"
    );
    assert!(text.contains("no replicas configured"), "{text}");
    // SQLite: no routing line.
    let env = Env::new();
    assert!(!env.ok(&["storage", "info"]).contains("routing:"));
    assert!(env.json(&["storage", "info"]).get("routing").is_none());
    // primary and host naming different servers: refused by name.
    let env = Env::with_config(&pg(&format!("    host: 127.0.0.2\n{replicas}")));
    let msg = env.fails(&["storage", "info"], 2);
    assert!(msg.contains("storage.postgresql.primary") && msg.contains("127.0.0.2:5432"), "{msg}");
}

/// The PostgreSQL harness (a throwaway server and its streaming replica), as the workspace's tests use it.
#[allow(dead_code)]
#[path = "../../../tests/common/pg.rs"]
mod pg;

/// `test-connection` against a real primary and its streaming standby: two hosts, the replica's server role
/// `standby`; with the standby stopped it is shown down and the command still succeeds.
#[test]
fn test_connection_shows_the_primary_and_its_streaming_replica() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let replica = pg::replica();
    let _turn = rt.block_on(replica.shared());
    let primary = pg::server();
    let db = rt.block_on(primary.fresh_database());
    rt.block_on(replica.wait_caught_up(std::time::Duration::from_secs(60)));
    let standby = replica.server();
    let password = primary.password.as_ref().map_or(String::new(), |p| format!("    password: \"{p}\"\n"));
    let env = Env::with_config(&format!(
        "storage:\n  type: postgresql\n  postgresql:\n    primary:\n      host: {}\n      port: {}\n    \
         database: {db}\n    username: {}\n{password}    replicas:\n      - host: {}\n        port: {}\n    \
         readPreference: replica\n    maxReplicaLag: 5000\n    pool:\n      acquireTimeout: 5000\n",
        primary.host, primary.port, primary.user, standby.host, standby.port
    ));
    let (paddr, raddr) =
        (format!("{}:{}", primary.host, primary.port), format!("{}:{}", standby.host, standby.port));

    let doc = env.json(&["storage", "test-connection"]);
    assert_eq!(doc["read_preference"], "replica", "{doc}");
    assert_eq!(doc["max_replica_lag_ms"], 5000, "{doc}");
    let hosts = doc["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 2, "{doc}");
    let (p, r) = (&hosts[0], &hosts[1]);
    assert_eq!((p["role"].as_str(), p["server_role"].as_str()), (Some("primary"), Some("primary")), "{doc}");
    assert_eq!((r["role"].as_str(), r["server_role"].as_str()), (Some("replica"), Some("standby")), "{doc}");
    assert!(p["address"].as_str().unwrap().contains(&paddr), "{doc}");
    assert!(r["address"].as_str().unwrap().contains(&raddr), "{doc}");
    for h in hosts {
        assert_eq!(h["reachable"], true, "{doc}");
        assert!(h["latency_us"].as_i64().is_some_and(|us| us >= 0), "{doc}");
    }
    // Probed now: the caught-up standby is up, with a replay lag well under maxReplicaLag. Whether it receives
    // reads yet is the router's call (its first health check may not have run in a process this short).
    assert!(r["replay_lag_ms"].as_u64().is_some_and(|ms| ms < 5000), "{doc}");
    assert!(r["replay_lag_bytes"].is_u64(), "{doc}");
    assert_eq!(r["state"], "up", "{doc}");
    assert!(r["receives_reads"].is_boolean(), "{doc}");
    assert_eq!(p["state"], "up", "{doc}");
    if let Some(pw) = &primary.password {
        assert!(!doc.to_string().contains(pw.as_str()), "{doc}");
    }

    let text = env.ok(&["storage", "test-connection"]);
    let rows: Vec<&str> = text.lines().skip_while(|l| *l != "hosts:").skip(2).take(2).collect();
    assert!(rows[0].starts_with("primary ") && rows[0].contains(&paddr), "{text}");
    assert!(
        rows[1].starts_with("replica ") && rows[1].contains(&raddr) && rows[1].contains(" standby "),
        "{text}"
    );
    assert!(text.contains("reads: readPreference replica, maxReplicaLag 5000 ms"), "{text}");
    drop(_turn);

    // The standby down: shown as such (with why), and the command still succeeds (the primary answers).
    let turn = rt.block_on(replica.exclusive());
    replica.stop_immediate();
    let run = env.run(&["--output", "json", "storage", "test-connection"]);
    rt.block_on(replica.start());
    drop(turn);
    assert_eq!(run.code, 0, "a replica down is no failure: {}{}", run.stdout, run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let r = &doc["hosts"][1];
    assert_eq!((r["reachable"].as_bool(), r["state"].as_str()), (Some(false), Some("down")), "{doc}");
    assert_eq!((r["receives_reads"].as_bool(), &r["server_role"]), (Some(false), &Value::Null), "{doc}");
    assert!(r["error"].is_string(), "{doc}");
    assert_eq!(doc["hosts"][0]["reachable"], true, "{doc}");
    rt.block_on(primary.drop_database(&db));
}

// ------------------------------------------------------------------ copy, export, import, backup (issue 16)

/// The tables of a transfer report, in order (`parallax_storage_abi::transfer::TABLES`).
const TRANSFER_TABLES: [&str; 4] = ["patterns", "executions", "execution_events", "audit_logs"];

/// A second SQLite storage in the same directory, as a config file the tests pass to `--to-config`.
fn sqlite_target(env: &Env, file: &str, db: &str) {
    env.write(file, &format!("storage:\n  type: sqlite\n  sqlite:\n    path: ./{db}\n"));
}

/// Migrates the storage and fills it with something of everything: two versions of a pattern (one with
/// `created_by`, one with a unicode description), executions in every status with events, tags, metadata,
/// output and error documents, and audit entries with and without an IP. Returns the rows per table.
fn populate(env: &Env) -> std::collections::BTreeMap<&'static str, u64> {
    env.ok(&["storage", "migrate", "up"]);
    env.write("review.yaml", PATTERN_YAML);
    env.ok(&["patterns", "put", "review.yaml", "--created-by", "alice"]);
    env.ok(&["patterns", "put", "review.yaml", "--version", "1.1.0", "--description", "Revue — ünïcode ✓"]);
    let start = |status: &str, input: &str| -> String {
        env.json(&[
            "executions",
            "start",
            "--pattern",
            "code-review",
            "--pattern-version",
            "1.1.0",
            "--input",
            input,
            "--metadata",
            r#"{"node": 3, "nested": {"b": [1, 2], "a": null}}"#,
            "--tag",
            "ci",
            "--tag",
            "é-tag",
            "--status",
            status,
        ])["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut events = 0;
    for (n, end) in ["completed", "failed", "cancelled"].into_iter().enumerate() {
        let id = start("running", &format!(r#"{{"pr": {n}, "text": "quokka número {n}"}}"#));
        env.ok(&["executions", "event", &id, "--kind", "agent-assignment", "--payload", r#""agent-7""#]);
        env.ok(&[
            "executions",
            "event",
            &id,
            "--kind",
            "step-result",
            "--payload",
            r#"{"step": 1, "ok": true}"#,
        ]);
        events += 2;
        let mut args = vec!["executions", "finish", &id, "--status", end, "--result", r#"{"ok": true}"#];
        if end == "failed" {
            args.extend(["--error", r#"{"message": "quota exhausted"}"#]);
        }
        env.ok(&args);
    }
    start("pending", r#"{"waiting": "yes"}"#);
    let running = start("running", r#"{"long": "still going"}"#);
    env.ok(&["executions", "event", &running, "--kind", "step-result", "--payload", r#"{"step": 1}"#]);
    events += 1;
    env.ok(&["audit", "append", "--action", "login", "--actor", "alice", "--details", r#"{"k": [1, 2]}"#]);
    env.ok(&["audit", "append", "--action", "logout", "--actor", "bøb", "--ip", "10.0.0.1"]);
    env.ok(&["audit", "append", "--action", "pattern.update", "--ip", "2001:db8::1", "--resource-id", "x"]);
    [("patterns", 2), ("executions", 5), ("execution_events", events), ("audit_logs", 3)]
        .into_iter()
        .collect()
}

/// Everything a storage holds, read through the CLI with `--config config`: every execution with its events
/// (by id), every audit entry (by id), every version of every pattern.
fn everything(env: &Env, config: &str) -> Value {
    let read = |args: &[&str]| -> Value {
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        env.json(&all)
    };
    let list = read(&["executions", "list", "--limit", "1000"]);
    let mut executions: Vec<Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| read(&["executions", "get", e["id"].as_str().unwrap(), "--events"]))
        .collect();
    executions.sort_by_key(|e| e["id"].as_str().unwrap().to_string());
    let mut audit: Vec<Value> =
        read(&["audit", "list", "--limit", "1000"])["items"].as_array().unwrap().clone();
    audit.sort_by_key(|e| e["id"].as_str().unwrap().to_string());
    let names: Vec<String> = read(&["patterns", "list", "--all"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let patterns: Vec<Value> = names.iter().map(|n| read(&["patterns", "versions", n])).collect();
    serde_json::json!({ "executions": executions, "audit": audit, "patterns": patterns })
}

/// Rows per table in a SQLite file, with the `sqlite3` tool (test.sh installs it).
fn sqlite_count(db: &std::path::Path, table: &str) -> u64 {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(format!("SELECT count(*) FROM {table}"))
        .output()
        .expect("run sqlite3 (test.sh installs it)");
    assert!(out.status.success(), "sqlite3 {}: {}", db.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Checks a copy or import report against the rows per table: every table verified, in order, with full
/// equal checksums; `copied` is what this run inserted.
fn check_report(doc: &Value, counts: &std::collections::BTreeMap<&str, u64>, copied: bool) {
    assert_eq!(doc["verified"], true, "{doc}");
    assert_eq!(doc["checksumVersion"], 1, "{doc}");
    assert_eq!(doc["conflictCount"], 0, "{doc}");
    let tables = doc["tables"].as_array().unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert_eq!(names, TRANSFER_TABLES, "{doc}");
    for t in tables {
        let n = counts[t["table"].as_str().unwrap()];
        assert_eq!((t["sourceRows"].as_u64(), t["targetRows"].as_u64()), (Some(n), Some(n)), "{t}");
        if copied {
            assert_eq!(t["copied"].as_u64(), Some(n), "{t}");
        }
        let (s, d) = (t["sourceChecksum"].as_str().unwrap(), t["targetChecksum"].as_str().unwrap());
        assert_eq!(s.len(), 32, "{t}");
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
        assert_eq!((s, t["ok"].as_bool()), (d, Some(true)), "{t}");
    }
}

#[test]
fn copy_sqlite_to_sqlite_is_verified_in_text_and_json() {
    let env = Env::new();
    let counts = populate(&env);
    let source = everything(&env, "parallax.config.yaml");
    sqlite_target(&env, "prod.yaml", "prod.db");
    env.ok(&["--config", "prod.yaml", "storage", "migrate", "up"]);

    // A dry run counts and writes nothing on either side.
    let dry = env.json(&["storage", "copy", "--to-config", "prod.yaml", "--dry-run"]);
    assert_eq!(dry["dryRun"], true, "{dry}");
    let execs = dry["tables"].as_array().unwrap().iter().find(|t| t["table"] == "executions").unwrap();
    assert_eq!(execs["sourceRows"].as_u64(), Some(counts["executions"]), "{dry}");
    let text = env.ok(&["storage", "copy", "--to-config", "prod.yaml", "--dry-run"]);
    assert!(text.contains("dry run: nothing was written"), "{text}");
    let prod = env.dir.path().join("prod.db");
    for table in ["executions", "execution_events", "patterns", "audit_logs", "transfer_runs"] {
        assert_eq!(sqlite_count(&prod, table), 0, "a dry run wrote to {table}");
    }

    // The copy: one row per table, the snapshot lines, the verification line.
    let text = env.ok(&["storage", "copy", "--to-config", "prod.yaml"]);
    assert!(text.starts_with("copy from sqlite "), "{text}");
    assert!(text.contains("prod.yaml"), "the target is named by its config file: {text}");
    assert!(text.contains("SOURCE ROWS") && text.contains("TARGET CHECKSUM"), "{text}");
    for (table, n) in &counts {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(table)).unwrap_or_else(|| {
            panic!("no {table} row in {text}");
        });
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], n.to_string(), "{line}");
        assert_eq!(cells[2], n.to_string(), "{line}");
        assert_eq!(cells[5], n.to_string(), "{line}");
        assert_eq!(cells[6], cells[7], "{line}");
    }
    assert!(text.contains("after the snapshot (newer than "), "{text}");
    assert!(text.contains("changed after the snapshot: none"), "{text}");
    assert!(text.contains("verified: counts and checksums equal"), "{text}");
    assert_eq!(everything(&env, "prod.yaml"), source);
    assert_eq!(sqlite_count(&prod, "transfer_runs"), 1);

    // --output json on a second, fresh target: the report document.
    sqlite_target(&env, "prod2.yaml", "prod2.db");
    env.ok(&["--config", "prod2.yaml", "storage", "migrate", "up"]);
    let doc = env.json(&["storage", "copy", "--to-config", "prod2.yaml"]);
    check_report(&doc, &counts, true);
    assert_eq!((doc["mode"].as_str(), doc["dryRun"].as_bool()), (Some("fresh"), Some(false)), "{doc}");
    assert!(doc["target"].as_str().unwrap().contains("prod2.yaml"), "{doc}");
    assert!(doc["snapshot"].as_str().unwrap().ends_with('Z'), "{doc}");
    assert_eq!(everything(&env, "prod2.yaml"), source);

    // Run again: a catch-up with nothing new; nothing is duplicated.
    let again = env.json(&["storage", "copy", "--to-config", "prod2.yaml"]);
    check_report(&again, &counts, false);
    assert_eq!(again["mode"], "catch-up", "{again}");
    assert_eq!(everything(&env, "prod2.yaml"), source);
}

#[test]
fn copy_into_a_non_empty_target_needs_merge_and_never_overwrites_a_conflict() {
    let env = Env::new();
    let mut counts = populate(&env);
    sqlite_target(&env, "prod.yaml", "prod.db");
    env.ok(&["--config", "prod.yaml", "storage", "migrate", "up"]);
    // One execution id on both sides, with different outcomes.
    const ID: &str = "0190d5e2-0000-7000-8000-00000000c0f1";
    for (config, status) in [("parallax.config.yaml", "completed"), ("prod.yaml", "failed")] {
        let start =
            ["--config", config, "executions", "start", "--pattern", "p", "--pattern-version", "1.0.0"];
        let mut args = start.to_vec();
        args.extend(["--id", ID]);
        env.ok(&args);
        env.ok(&["--config", config, "executions", "finish", ID, "--status", status]);
    }
    *counts.get_mut("executions").unwrap() += 1;

    let msg = env.fails(&["storage", "copy", "--to-config", "prod.yaml"], 4);
    assert!(msg.contains("--merge"), "{msg}");
    let target_before = everything(&env, "prod.yaml");
    assert_eq!(target_before["executions"].as_array().unwrap().len(), 1);

    let r = env.run(&["--output", "json", "storage", "copy", "--to-config", "prod.yaml", "--merge"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((doc["mode"].as_str(), doc["merge"].as_bool()), (Some("merge"), Some(true)), "{doc}");
    assert_eq!(doc["conflictCount"], 1, "{doc}");
    assert_eq!(
        (doc["conflicts"][0]["table"].as_str(), doc["conflicts"][0]["id"].as_str()),
        (Some("executions"), Some(ID))
    );
    assert!(r.stderr.starts_with("error: 1 conflict:") && r.stderr.contains(ID), "{}", r.stderr);
    let execs = doc["tables"].as_array().unwrap().iter().find(|t| t["table"] == "executions").unwrap();
    assert_eq!((execs["conflicts"].as_u64(), execs["copied"].as_u64()), (Some(1), Some(5)), "{doc}");
    // Not overwritten.
    let kept = env.json(&["--config", "prod.yaml", "executions", "get", ID]);
    assert_eq!(kept["status"], "failed", "{kept}");

    // The text lists the conflict and ends with exit 4.
    let r = env.run(&["storage", "copy", "--to-config", "prod.yaml", "--merge"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("conflicts: 1") && r.stdout.contains(&format!("executions {ID}:")),
        "{}",
        r.stdout
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(env.json(&["--config", "prod.yaml", "executions", "list", "--count"])["count"], 6);
}

#[test]
fn copy_refuses_a_bad_target_config_by_name_before_opening_anything() {
    let env = Env::new();
    env.write("bad.yaml", "storage: [unclosed\n");
    env.write("wrong.yaml", "storage:\n  type: mongodb\n");
    env.write(
        "unset.yaml",
        "storage:\n  type: postgresql\n  postgresql:\n    password: ${PROD_PW_NEVER_SET_16}\n",
    );
    for (file, says) in [
        ("missing.yaml", "does not exist"),
        ("bad.yaml", "invalid YAML"),
        ("wrong.yaml", "mongodb"),
        ("unset.yaml", "${PROD_PW_NEVER_SET_16}"),
    ] {
        let msg = env.fails(&["storage", "copy", "--to-config", file], 2);
        assert!(msg.contains(file) && msg.contains(says), "{file}: {msg}");
    }
    let msg = env.fails(&["storage", "copy"], 2);
    assert!(msg.contains("--to-config"), "{msg}");
    assert!(!env.dir.path().join("parallax.db").exists(), "a refused copy opened the source");
}

/// A PostgreSQL target that cannot be reached, with its password in every form the configuration takes:
/// whatever the copy prints (text, json, -vvv logs, dry run or not), the password is not in it.
#[test]
fn copy_never_prints_the_target_password() {
    const PW: &str = "Copy16pw-Zx81";
    let env = Env::new();
    populate(&env);
    let port = closed_port();
    let base = "storage:\n  type: postgresql\n  postgresql:\n    pool:\n      acquireTimeout: 1000\n";
    let files = [
        format!("{base}    host: 127.0.0.1\n    port: {port}\n    database: db\n    username: u\n    password: {PW}\n"),
        format!("{base}    url: \"postgresql://u:{PW}@127.0.0.1:{port}/db\"\n"),
        format!("{base}    url: \"postgresql://u@127.0.0.1:{port}/db?password={PW}\"\n"),
    ];
    for (n, yaml) in files.iter().enumerate() {
        let file = format!("prod{n}.yaml");
        env.write(&file, yaml);
        for extra in [&[][..], &["--dry-run"], &["-vvv"], &["--output", "json"]] {
            let mut args = vec!["storage", "copy", "--to-config", &file];
            args.extend_from_slice(extra);
            let r = env.run(&args);
            assert_ne!(r.code, 0, "{file} {extra:?}: nothing listens, yet: {}", r.stdout);
            assert!(
                !r.stdout.contains(PW) && !r.stderr.contains(PW),
                "{file} {extra:?} leaked: {}{}",
                r.stdout,
                r.stderr
            );
            assert!(r.stderr.contains("error: "), "{}", r.stderr);
        }
    }
}

/// The README's path: SQLite → PostgreSQL. `PARALLAX_DATABASE_*` set in the environment (for the source)
/// point nowhere: the target is what prod.yaml says, and the copy verifies.
#[test]
fn copy_sqlite_to_postgresql_ignores_the_parallax_database_overrides() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = pg::server();
    let db = rt.block_on(server.fresh_database());
    let env = Env::new();
    let counts = populate(&env);
    let source = everything(&env, "parallax.config.yaml");
    let password = server.password.as_ref().map_or(String::new(), |p| format!("    password: \"{p}\"\n"));
    env.write(
        "prod.yaml",
        &format!(
            "storage:\n  type: postgresql\n  postgresql:\n    host: {}\n    port: {}\n    database: {db}\n    \
             username: {}\n{password}",
            server.host, server.port, server.user
        ),
    );
    env.ok(&["--config", "prod.yaml", "storage", "migrate", "up"]);
    let port = closed_port();
    // (The source's config must stay valid with them: a url, and the password beside it.)
    let overrides = [
        ("PARALLAX_DATABASE_URL", format!("postgresql://nobody@127.0.0.1:{port}/nowhere")),
        ("PARALLAX_DATABASE_PASSWORD", "nopw".to_string()),
    ];
    let mut cmd = env.command(&["--output", "json", "storage", "copy", "--to-config", "prod.yaml"]);
    cmd.envs(overrides.iter().map(|(k, v)| (k, v)));
    let r = env.run_cmd(cmd, None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    check_report(&doc, &counts, true);
    let target = doc["target"].as_str().unwrap();
    assert!(target.contains("postgresql") && target.contains(&format!(":{}/{db}", server.port)), "{doc}");
    assert!(!target.contains(&port.to_string()), "{doc}");
    if let Some(pw) = &server.password {
        assert!(!r.stdout.contains(pw.as_str()) && !r.stderr.contains(pw.as_str()));
    }
    assert_eq!(everything(&env, "prod.yaml"), source);
    rt.block_on(server.drop_database(&db));
}

#[test]
fn export_then_import_round_trip_through_a_directory() {
    let env = Env::new();
    let counts = populate(&env);
    let source = everything(&env, "parallax.config.yaml");

    let dry = env.json(&["storage", "export", "--destination", "exp", "--dry-run"]);
    assert_eq!(dry["dryRun"], true, "{dry}");
    let exp = env.dir.path().join("exp");
    assert!(!exp.exists() || std::fs::read_dir(&exp).unwrap().next().is_none(), "a dry run wrote");

    let doc = env.json(&["storage", "export", "--destination", "exp"]);
    let tables = doc["tables"].as_array().unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert_eq!(names, TRANSFER_TABLES, "{doc}");
    for t in tables {
        assert_eq!(t["sourceRows"].as_u64(), Some(counts[t["table"].as_str().unwrap()]), "{t}");
    }
    assert!(exp.join("export.json").is_file(), "export.json is written last");
    assert_eq!(doc["manifests"].as_array().unwrap().last().unwrap(), "export.json", "{doc}");
    // A finished export is never overwritten.
    let r = env.run(&["storage", "export", "--destination", "exp"]);
    assert_ne!(r.code, 0, "{}", r.stdout);

    sqlite_target(&env, "prod.yaml", "prod.db");
    env.ok(&["--config", "prod.yaml", "storage", "migrate", "up"]);
    let dry = env.json(&["--config", "prod.yaml", "storage", "import", "--source", "exp", "--dry-run"]);
    assert_eq!(dry["dryRun"], true, "{dry}");
    assert_eq!(env.json(&["--config", "prod.yaml", "executions", "list", "--count"])["count"], 0);

    let text = env.ok(&["--config", "prod.yaml", "storage", "import", "--source", "exp"]);
    assert!(text.starts_with("import from "), "{text}");
    assert!(text.contains("verified: counts and checksums equal"), "{text}");
    assert_eq!(everything(&env, "prod.yaml"), source);

    // Into a storage that holds rows: refused without --merge.
    sqlite_target(&env, "other.yaml", "other.db");
    env.ok(&["--config", "other.yaml", "audit", "append", "--action", "already-here"]);
    let msg = env.fails(&["--config", "other.yaml", "storage", "import", "--source", "exp"], 4);
    assert!(msg.contains("--merge"), "{msg}");
    let doc = env.json(&["--config", "other.yaml", "storage", "import", "--source", "exp", "--merge"]);
    assert_eq!((doc["verified"].as_bool(), doc["conflictCount"].as_u64()), (Some(true), Some(0)), "{doc}");
    assert_eq!(env.json(&["--config", "other.yaml", "executions", "list", "--count"])["count"], 5);
}

#[test]
fn backup_of_sqlite_passes_integrity_check_and_opens() {
    let env = Env::new();
    let counts = populate(&env);
    let source = everything(&env, "parallax.config.yaml");
    std::fs::create_dir(env.dir.path().join("backups")).unwrap();

    let doc = env.json(&["storage", "backup", "--destination", "backups/copy.db"]);
    let dest = env.dir.path().join("backups/copy.db");
    assert_eq!(doc["backend"], "sqlite", "{doc}");
    assert_eq!(doc["destination"].as_str(), Some(dest.to_str().unwrap()), "relative paths are made absolute");
    assert_eq!(doc["integrity"], "ok", "{doc}");
    assert_eq!(doc["files"], 1, "{doc}");
    for table in TRANSFER_TABLES {
        assert_eq!(doc["rows"][table].as_u64(), Some(counts[table]), "{doc}");
    }
    let out = Command::new("sqlite3").arg(&dest).arg("PRAGMA integrity_check").output().expect("run sqlite3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    sqlite_target(&env, "restored.yaml", "backups/copy.db");
    assert_eq!(everything(&env, "restored.yaml"), source);

    // Text output; an existing destination is refused before the storage is opened.
    let text = env.ok(&["storage", "backup", "--destination", "backups/copy2.db"]);
    assert!(
        text.starts_with("backup of the sqlite storage to ") && text.contains("integrity check"),
        "{text}"
    );
    assert!(text.contains("ok"), "{text}");
    let msg = env.fails(&["storage", "backup", "--destination", "backups/copy.db"], 2);
    assert!(msg.contains("copy.db") && msg.contains("already exists"), "{msg}");
    let msg = env.fails(&["storage", "backup", "--destination", "nodir/x.db"], 2);
    assert!(msg.contains("nodir") && msg.contains("does not exist"), "{msg}");
}

#[test]
fn backup_of_postgresql_points_to_pg_dump_without_connecting() {
    let env = Env::with_config(&format!(
        "storage:\n  type: postgresql\n  postgresql:\n    host: 127.0.0.1\n    port: {}\n    database: db\n    \
         username: u\n    password: Backup16pw\n",
        closed_port()
    ));
    let msg = env.fails(&["storage", "backup", "--destination", "/tmp/never-written-16.dump"], 1);
    assert!(msg.contains("pg_dump") && msg.contains("pg_restore"), "{msg}");
    assert!(!msg.contains("Backup16pw"), "{msg}");
    assert!(!std::path::Path::new("/tmp/never-written-16.dump").exists());
}

#[test]
fn transfer_commands_explain_themselves() {
    let env = Env::new();
    let storage = env.ok(&["storage", "--help"]);
    for word in ["copy", "export", "import", "backup"] {
        assert!(storage.contains(word), "storage --help lacks {word}: {storage}");
    }
    let joined = |args: &[&str]| env.ok(args).split_whitespace().collect::<Vec<_>>().join(" ");
    let copy = joined(&["storage", "copy", "--help"]);
    for word in [
        "--to-config",
        "--dry-run",
        "--merge",
        "The snapshot cut: the copying process's clock when the run started",
        "createdAt <= cut",
        "startedAt <= cut",
        "timestamp <= cut",
        "\"after the snapshot\"",
        "\"changed after the snapshot\"",
        "PARALLAX_* environment overrides",
        "NOT applied",
        "Resumable",
        "running the same command again",
        "Exit codes: 0",
        "1 verification mismatch",
        "2 bad input",
        "4 the target is not empty",
        "verified: counts and checksums equal",
        "storage migrate up",
    ] {
        assert!(copy.contains(word), "copy --help lacks {word:?}: {copy}");
    }
    let export = joined(&["storage", "export", "--help"]);
    for word in ["--destination", "export.json", "patterns", "s3://bucket/prefix/", "storage import"] {
        assert!(export.contains(word), "export --help lacks {word:?}: {export}");
    }
    let import = joined(&["storage", "import", "--help"]);
    for word in ["--source", "--merge", "--dry-run", "export.json", "Exit codes"] {
        assert!(import.contains(word), "import --help lacks {word:?}: {import}");
    }
    let backup = joined(&["storage", "backup", "--help"]);
    for word in ["--destination", "VACUUM INTO", "integrity_check", "pg_dump", "file store"] {
        assert!(backup.contains(word), "backup --help lacks {word:?}: {backup}");
    }
}

/// A copy's dry run, an export, an import's dry run and a backup open the configured storage without running
/// its migrations (whatever they answer on an unmigrated database).
#[test]
fn transfer_commands_that_change_nothing_never_migrate() {
    let env = Env::new();
    sqlite_target(&env, "prod.yaml", "prod.db");
    std::fs::create_dir(env.dir.path().join("exp")).unwrap();
    let pending = |config: &str| {
        env.json(&["--config", config, "storage", "migrate", "status"])["pending"].as_u64().unwrap()
    };
    let (before, target_before) = (pending("parallax.config.yaml"), pending("prod.yaml"));
    assert!(before > 0);
    for args in [
        &["storage", "copy", "--to-config", "prod.yaml", "--dry-run"][..],
        &["storage", "export", "--destination", "exp2", "--dry-run"],
        &["storage", "export", "--destination", "exp3"],
        &["storage", "import", "--source", "exp", "--dry-run"],
        &["storage", "backup", "--destination", "b.db"],
    ] {
        env.run(args);
        assert_eq!(pending("parallax.config.yaml"), before, "{args:?} ran migrations");
        assert_eq!(pending("prod.yaml"), target_before, "{args:?} ran the target's migrations");
    }
}
