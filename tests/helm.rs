//! The Helm chart `deploy/helm/parallax-persistence`, tested like code with no cluster and no `helm` binary.
//!
//! `deploy/helm/tests/helmcheck.py` renders it with helm-python-sdk (Helm v4's Go SDK, as `helm template`
//! renders: an install with `dry_run="client"` into an in-memory release store), alone and as the subchart of a
//! stand-in for Parallax's chart (`deploy/helm/tests/parent-chart`), with a stub for Bitnami's postgresql chart,
//! which cannot be fetched here. Every rendered manifest goes through `kubernetes-validate --strict` (1.30 and
//! 1.37), `yamllint`, `promtool check rules` (the PrometheusRule) and `helm lint --strict`; `check-jsonschema`
//! checks `values.schema.json` and every values file. The assertions here are on content: names, Secrets, env
//! names, the password never in a ConfigMap. And the backup CronJob's own shell command, taken from the
//! rendered manifest, runs against a throwaway PostgreSQL and the local S3 server; its dump restores with the
//! README's `gunzip | psql` and reads back through the plugin. The same rendered settings open the plugin as the
//! control plane would (ConfigMap file + env) and run the maintenance CronJob's `parallax` command.
//!
//! A missing tool fails the test with how to install it (`./test.sh` installs everything).

mod common;

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{archive, pg, s3::S3Server, *};
use parallax_storage_host::*;
use serde_json::{json, Value};

const INSTALL: &str = "run ./test.sh (it installs them), or: python3 -m pip install --require-hashes -r \
    deploy/helm/requirements.txt";
const RELEASE: &str = "rel";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm_dir() -> PathBuf {
    root().join("deploy/helm")
}

/// Runs `python3 deploy/helm/tests/helmcheck.py <command>` with `request` on stdin and returns its JSON answer.
fn helmcheck(command: &str, request: &Value) -> Value {
    let script = helm_dir().join("tests/helmcheck.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(command)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 for the Helm chart checks ({e}): {INSTALL}"));
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helmcheck.py {command} failed ({}): {stderr}", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("helmcheck.py {command} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// The chart rendered with `values` (as release `rel` in namespace `parallax`): its objects, or Helm's error.
fn try_render(values: &Value, parent: bool) -> Result<Vec<Value>, String> {
    let r = helmcheck("render", &json!({ "values": values, "release": RELEASE, "parent": parent }));
    if r["ok"] != json!(true) {
        return Err(r["error"].as_str().unwrap_or("no error text").to_string());
    }
    Ok(r["documents"].as_array().unwrap().iter().map(|d| d["object"].clone()).collect())
}

#[track_caller]
fn render(values: &Value) -> Vec<Value> {
    try_render(values, false).unwrap_or_else(|e| panic!("rendering {values} failed: {e}"))
}

/// Rendered through the test parent chart: this chart's objects plus the control plane's Deployment.
#[track_caller]
fn render_parent(values: &Value) -> Vec<Value> {
    try_render(values, true).unwrap_or_else(|e| panic!("rendering {values} through the parent failed: {e}"))
}

/// A values file as JSON.
fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if v.is_null() {
        json!({})
    } else {
        v
    }
}

fn case(name: &str) -> Value {
    yaml_file(&helm_dir().join(format!("tests/cases/{name}.yaml")))
}

/// `(file name, path)` of every values file of the tests (`cases/`) and of the chart's `examples/`.
fn values_files() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for dir in ["tests/cases", "parallax-persistence/examples"] {
        for entry in std::fs::read_dir(helm_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push((path.file_stem().unwrap().to_string_lossy().into_owned(), path));
            }
        }
    }
    files.sort();
    files
}

#[track_caller]
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| {
        let have: Vec<String> =
            docs.iter().map(|d| format!("{} {}", d["kind"], d["metadata"]["name"])).collect();
        panic!("no {kind} {name} among {have:?}")
    })
}

fn config_map_name() -> String {
    format!("{RELEASE}-parallax-persistence")
}

/// The ConfigMap's parallax.config.yaml, parsed.
#[track_caller]
fn config_file(docs: &[Value]) -> Value {
    let text =
        object(docs, "ConfigMap", &config_map_name())["data"]["parallax.config.yaml"].as_str().unwrap();
    serde_yaml_ng::from_str(text).unwrap()
}

/// The control plane's container in the test parent's Deployment.
#[track_caller]
fn control_plane(docs: &[Value]) -> &Value {
    &object(docs, "Deployment", &format!("{RELEASE}-control-plane"))["spec"]["template"]["spec"]["containers"]
        [0]
}

/// `name -> value` of a container's env, or `name -> "secret:NAME/KEY"` for one read from a Secret.
fn env_refs(container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (&e["value"], &e["valueFrom"]["secretKeyRef"]) {
            (Value::String(v), Value::Null) => v.clone(),
            (Value::Null, Value::Object(r)) => {
                format!("secret:{}/{}", r["name"].as_str().unwrap(), r["key"].as_str().unwrap())
            }
            other => panic!("env {name}: neither a value nor a secretKeyRef: {other:?}"),
        };
        assert!(env.insert(name.clone(), value).is_none(), "env {name} is set twice");
    }
    env
}

/// Secrets the test plays the cluster's part for: `name -> key -> value`.
type Secrets = BTreeMap<&'static str, BTreeMap<&'static str, String>>;

/// A container's environment as the kubelet would give it: values, secretKeyRefs and envFrom Secrets resolved.
#[track_caller]
fn resolve_env(container: &Value, secrets: &Secrets) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let name = from["secretRef"]["name"].as_str().unwrap();
        let secret = secrets.get(name).unwrap_or_else(|| panic!("envFrom names Secret {name}, not provided"));
        env.extend(secret.iter().map(|(k, v)| (k.to_string(), v.clone())));
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => {
                let r = &e["valueFrom"]["secretKeyRef"];
                let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                secrets.get(secret).and_then(|s| s.get(key)).cloned().unwrap_or_else(|| {
                    panic!("env {name} reads Secret {secret} key {key}, which the test does not provide")
                })
            }
        };
        env.push((name, value));
    }
    env
}

/// The variables `parallax-storage-host` reads (`OVERRIDES` in plugin/host/src/config.rs), from the source.
fn host_env_names() -> Vec<String> {
    let source = std::fs::read_to_string(root().join("plugin/host/src/config.rs")).unwrap();
    let start = source.find("const OVERRIDES").expect("OVERRIDES in plugin/host/src/config.rs");
    let table = &source[start..start + source[start..].find("];").unwrap()];
    let names: Vec<String> =
        table.split('"').filter(|s| s.starts_with("PARALLAX_")).map(str::to_string).collect();
    assert!(names.len() >= 7, "OVERRIDES lists {names:?}");
    names
}

// ---- rendering, validation, schema ----------------------------------------------------------------------------

/// Every values file that must render (tests/cases without `fail-`, and the chart's examples/), alone and through
/// the parent chart, passes kubernetes-validate --strict (1.30 and 1.37), yamllint, promtool check rules and
/// helm lint --strict.
#[test]
fn every_case_renders_and_passes_every_validator() {
    let cases: serde_json::Map<String, Value> = values_files()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("fail-"))
        .map(|(name, path)| (name, yaml_file(&path)))
        .collect();
    assert!(cases.len() >= 8, "cases: {:?}", cases.keys());
    let promtool = exposition::promtool();
    // 1.30: the chart's kubeVersion floor (Chart.yaml); 1.37: the newest Kubernetes kubernetes-validate bundles.
    let request = json!({ "cases": cases, "kube_versions": ["1.30.0", "1.37.0"], "promtool": promtool });
    let r = helmcheck("validate", &request);
    let problems = r["problems"].as_array().unwrap();
    assert!(
        problems.is_empty(),
        "{}",
        problems.iter().map(|p| p.as_str().unwrap()).collect::<Vec<_>>().join("\n")
    );
    let checked = &r["checked"];
    println!("checked: {checked}");
    assert!(checked["manifests"].as_u64().unwrap() >= 20, "{checked}");
    assert!(checked["kubernetes_validate"].as_u64().unwrap() >= 30, "{checked}");
    assert!(checked["promtool"].as_u64().unwrap() >= 2, "{checked}");
    assert_eq!(checked["lint"].as_u64().unwrap(), cases.len() as u64, "{checked}");
}

/// values.schema.json is a valid 2020-12 schema; values.yaml and every values file meant to render pass it;
/// the `fail-schema-*` files are refused by check-jsonschema too, naming the key.
#[test]
fn values_schema_accepts_every_good_file_and_refuses_the_bad_ones() {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (name, path) in values_files() {
        if name.starts_with("fail-schema-") {
            bad.push(path);
        } else if !name.starts_with("fail-") {
            good.push(path);
        }
    }
    assert!(bad.len() >= 3);
    let r = helmcheck("schema", &json!({ "good": good, "bad": bad }));
    let problems = r["problems"].as_array().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let refusals = r["refusals"].as_object().unwrap();
    for (file, needle) in [
        ("fail-schema-misspelt-key", "externalDatabse"),
        ("fail-schema-wrong-type", "port"),
        ("fail-schema-bad-destination", "destination"),
    ] {
        let (_, text) = refusals.iter().find(|(f, _)| f.contains(file)).unwrap();
        assert!(text.as_str().unwrap().contains(needle), "{file}: {text}");
    }
}

/// Every `fail-*` case is refused at render time with the message its first line (`# expect: …`) names.
#[test]
fn bad_values_fail_with_a_clear_message() {
    let mut seen = 0;
    for (name, path) in values_files().into_iter().filter(|(n, _)| n.starts_with("fail-")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| {
            panic!("{}: the first line must be `# expect: <part of the error>`", path.display())
        });
        let err = try_render(&yaml_file(&path), false).expect_err(&format!("{name} rendered"));
        assert!(err.contains(expect), "{name}: the error does not contain {expect:?}:\n{err}");
        assert!(err.len() < 700, "{name}: a long error is not a clear one:\n{err}");
        seen += 1;
    }
    assert!(seen >= 9, "only {seen} failing cases");
}

// ---- content ----------------------------------------------------------------------------------------------------

/// Host, port, database, user, Secret and replicas follow the values: the bundled PostgreSQL's Service names as
/// Bitnami's chart makes them, the external database's, and a replica host only when replicas are enabled.
#[test]
fn the_connection_follows_the_values() {
    struct Expect {
        case: &'static str,
        host: &'static str,
        secret: &'static str,
        replicas: Value,
        read_preference: Option<&'static str>,
    }
    let expectations = [
        Expect {
            case: "defaults",
            host: "rel-postgresql",
            secret: "secret:rel-postgresql/password",
            replicas: Value::Null,
            read_preference: None,
        },
        Expect {
            case: "read-replicas",
            host: "rel-postgresql-primary",
            secret: "secret:rel-postgresql/password",
            replicas: json!([
                { "host": "rel-postgresql-read-0.rel-postgresql-read-hl", "port": 5432 },
                { "host": "rel-postgresql-read-1.rel-postgresql-read-hl", "port": 5432 },
            ]),
            read_preference: Some("replica"),
        },
        Expect {
            case: "read-replicas-service",
            host: "rel-postgresql-primary",
            secret: "secret:parallax-db/user-password",
            replicas: json!([{ "host": "rel-postgresql-read", "port": 5432 }]),
            read_preference: Some("replica"),
        },
        Expect {
            case: "external-database-replicas",
            host: "postgres.example.com",
            secret: "secret:postgres-credentials/password",
            replicas: json!([{ "host": "postgres-replica.example.com", "port": 5432 }]),
            read_preference: Some("any"),
        },
    ];
    for x in expectations {
        let docs = render_parent(&case(x.case));
        let storage = &config_file(&docs)["storage"];
        let pg = &storage["postgresql"];
        assert_eq!(storage["type"], "postgresql", "{}", x.case);
        assert_eq!((&pg["host"], &pg["port"]), (&json!(x.host), &json!(5432)), "{}", x.case);
        assert_eq!(
            (&pg["database"], &pg["username"]),
            (&json!("parallax"), &json!("parallax")),
            "{}",
            x.case
        );
        assert_eq!(pg["replicas"], x.replicas, "{}", x.case);
        assert_eq!(pg["readPreference"], json!(x.read_preference), "{}", x.case);
        let env = env_refs(control_plane(&docs));
        let expected: BTreeMap<String, String> = [
            ("PARALLAX_CONFIG", "/etc/parallax/storage/parallax.config.yaml"),
            ("PARALLAX_STORAGE_TYPE", "postgresql"),
            ("PARALLAX_DATABASE_HOST", x.host),
            ("PARALLAX_DATABASE_PORT", "5432"),
            ("PARALLAX_DATABASE_NAME", "parallax"),
            ("PARALLAX_DATABASE_USER", "parallax"),
            ("PARALLAX_DATABASE_PASSWORD", x.secret),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected, "{}", x.case);
        // The replica host appears nowhere unless replicas are enabled.
        let all = serde_json::to_string(&docs).unwrap();
        assert_eq!(all.contains("-read") || all.contains("replica."), !x.replicas.is_null(), "{}", x.case);
    }

    // Bitnami's naming rules: a release name containing "postgresql" is the Service name itself; the admin
    // user's password is under `postgres-password`.
    let docs = try_render(&json!({ "postgresql": { "auth": { "username": "postgres" } } }), true).unwrap();
    let env = env_refs(control_plane(&docs));
    assert_eq!(env["PARALLAX_DATABASE_PASSWORD"], "secret:rel-postgresql/postgres-password");
    let r = helmcheck("render", &json!({ "values": {}, "release": "my-postgresql", "parent": false }));
    let docs: Vec<Value> = r["documents"].as_array().unwrap().iter().map(|d| d["object"].clone()).collect();
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert!(cm["data"]["parallax.config.yaml"].as_str().unwrap().contains("host: my-postgresql\n"), "{cm}");

    // persistence.enabled: false renders nothing of this chart, and the named templates give nothing.
    let docs = render_parent(&case("persistence-disabled"));
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let pod = &object(&docs, "Deployment", "rel-control-plane")["spec"]["template"];
    assert!(pod["spec"]["containers"][0]["env"].is_null() && pod["spec"]["volumes"].is_null(), "{pod}");
    assert!(pod["metadata"]["annotations"].is_null(), "{pod}");
}

/// The control plane's env names are exactly the ones the storage host reads (its OVERRIDES table) minus
/// PARALLAX_DATABASE_URL (it would carry the password), plus PARALLAX_CONFIG; the maintenance CronJobs get the
/// same env as the parent's Deployment, and both mount the ConfigMap where PARALLAX_CONFIG points.
#[test]
fn env_names_are_the_ones_the_host_reads() {
    let mut host = host_env_names();
    host.retain(|n| n != "PARALLAX_DATABASE_URL");
    host.push("PARALLAX_CONFIG".into());
    host.sort();
    let host_config = std::fs::read_to_string(root().join("plugin/host/src/config.rs")).unwrap();
    assert!(host_config.contains("env(\"PARALLAX_CONFIG\")"), "the host no longer reads PARALLAX_CONFIG");
    let docs = render_parent(&case("everything"));
    let cp = control_plane(&docs);
    let env = env_refs(cp);
    assert_eq!(env.keys().cloned().collect::<Vec<_>>(), host);
    let mount = &cp["volumeMounts"][0];
    assert_eq!(
        format!("{}/parallax.config.yaml", mount["mountPath"].as_str().unwrap()),
        env["PARALLAX_CONFIG"]
    );
    let volumes = &object(&docs, "Deployment", "rel-control-plane")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["configMap"]["name"], json!(config_map_name()));
    assert_eq!(volumes[0]["name"], mount["name"]);
    for job in ["rel-parallax-persistence-retention", "rel-parallax-persistence-archive"] {
        let pod = &object(&docs, "CronJob", job)["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(env_refs(&pod["containers"][0]), env, "{job}");
        assert_eq!(pod["containers"][0]["volumeMounts"][0], *mount, "{job}");
        assert_eq!(&pod["volumes"], volumes, "{job}");
    }
    // The checksum annotation follows the storage settings.
    let checksum = |docs: &[Value]| {
        object(docs, "Deployment", "rel-control-plane")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/storage"]
            .clone()
    };
    let a = checksum(&render_parent(&json!({})));
    let b = checksum(&render_parent(&json!({ "storage": { "postgresql": { "queryTimeout": 5000 } } })));
    assert!(a.is_string() && b.is_string() && a != b, "{a} {b}");
}

/// A password given in values never appears in any rendered object (the ConfigMaps least of all): every
/// container gets it from a Secret.
#[test]
fn the_password_never_reaches_a_config_map() {
    let secret = format!("Pw-{}", uuid::Uuid::now_v7().simple());
    let mut values = case("everything");
    values["postgresql"]["auth"] = json!({ "password": secret, "username": "parallax" });
    for parent in [false, true] {
        let docs = try_render(&values, parent).unwrap();
        let text = serde_json::to_string(&docs).unwrap();
        assert!(!text.contains(&secret), "the password appears in the rendered objects");
        let config_maps: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
        assert_eq!(config_maps.len(), 1);
        let file = config_maps[0]["data"]["parallax.config.yaml"].as_str().unwrap();
        assert!(!file.contains("password") && !file.contains("url"), "{file}");
        let containers: Vec<&Value> = docs
            .iter()
            .flat_map(|d| {
                let pod = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"];
                let pod = if pod.is_null() { &d["spec"]["template"]["spec"] } else { pod };
                pod["containers"].as_array().into_iter().flatten()
            })
            .collect();
        assert_eq!(containers.len(), if parent { 4 } else { 3 });
        for c in containers {
            let env = env_refs(c);
            for (k, v) in env.iter().filter(|(k, _)| k.contains("PASSWORD") || k.contains("SECRET")) {
                assert!(v.starts_with("secret:"), "{} env {k} is not read from a Secret: {v}", c["name"]);
            }
        }
    }
}

/// The PrometheusRule's groups are deploy/prometheus/parallax-storage.rules.yml's, read through the chart's
/// files/ symlink (one source; Helm follows the link), also from the chart packaged as a .tgz (which stores the
/// file's content).
#[test]
fn the_prometheus_rule_is_the_rules_file() {
    let link = helm_dir().join("parallax-persistence/files/parallax-storage.rules.yml");
    let target = std::fs::read_link(&link).expect("files/parallax-storage.rules.yml must be a symlink");
    assert_eq!(
        std::fs::canonicalize(link.parent().unwrap().join(target)).unwrap(),
        std::fs::canonicalize(root().join("deploy/prometheus/parallax-storage.rules.yml")).unwrap()
    );
    let source = yaml_file(&root().join("deploy/prometheus/parallax-storage.rules.yml"));
    let docs =
        render(&json!({ "metrics": { "rules": { "enabled": true, "labels": { "release": "kps" } } } }));
    let rule = object(&docs, "PrometheusRule", &config_map_name());
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    assert_eq!(rule["spec"], json!({ "groups": source["groups"] }));
    // Packaged (as `helm package` writes the .tgz: the link replaced by the file's content), then rendered.
    let values = json!({ "metrics": { "rules": { "enabled": true } } });
    let r = helmcheck("render", &json!({ "values": values, "release": RELEASE, "packaged": true }));
    assert_eq!(r["ok"], json!(true), "{r}");
    let packaged =
        r["documents"].as_array().unwrap().iter().find(|d| d["object"]["kind"] == "PrometheusRule");
    assert_eq!(packaged.unwrap()["object"]["spec"], json!({ "groups": source["groups"] }));
    assert!(render(&json!({})).iter().all(|d| d["kind"] != "PrometheusRule"), "rules are off by default");
}

/// The backup CronJob is the documentation's, made safe.
#[test]
fn the_backup_cronjob_is_safe() {
    let docs = render(&case("everything"));
    let cron = object(&docs, "CronJob", "rel-parallax-persistence-backup");
    let spec = &cron["spec"];
    assert_eq!(spec["schedule"], "0 3 * * *");
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert_eq!(
        (&spec["successfulJobsHistoryLimit"], &spec["failedJobsHistoryLimit"]),
        (&json!(3), &json!(3))
    );
    let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["command"][0], "/bin/bash", "dash (Debian's /bin/sh) has no pipefail");
    let script = c["command"][2].as_str().unwrap();
    assert!(script.contains("set -euo pipefail") && script.contains("pg_dump"), "{script}");
    let env = env_refs(c);
    assert_eq!(env["PGPASSWORD"], "secret:rel-postgresql/password");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "secret:backup-s3/AWS_SECRET_ACCESS_KEY");
    assert_eq!(env["BACKUP_DESTINATION"], "s3://backups/parallax/");
}

// ---- the jobs, run for real ----------------------------------------------------------------------------------

const DAY: i64 = 86_400_000_000;

/// `container`'s command with its environment resolved from `secrets`, plus `extra` (PATH, HOME, the test
/// server's AWS settings), and nothing else of this process's environment.
fn job_command(
    program: &Path,
    args: &[&str],
    env: &[(String, String)],
    extra: &[(String, String)],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(extra.iter().cloned()).envs(env.iter().cloned());
    cmd
}

fn run(mut cmd: Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The objects under `s3://backups/parallax/`, by name.
fn backups(s3: &S3Server) -> Vec<String> {
    s3.list("backups", "parallax/", 100).into_iter().map(|(k, _)| k).collect()
}

/// Every pattern version, execution with its events, and audit entry.
async fn everything(s: &Storage) -> (Vec<Pattern>, BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut patterns = Vec::new();
    for p in s.patterns(100).collect().await.unwrap() {
        patterns.extend(s.list_pattern_versions(&p.name).await.unwrap());
    }
    patterns.sort_by_key(|p| p.id);
    patterns.dedup_by_key(|p| p.id);
    let (executions, audit) = archive::snapshot(s).await;
    (patterns, executions, audit)
}

/// The chart configured for an external database (this test's PostgreSQL, with password authentication) and
/// the local S3 server: the control plane opens the plugin from the rendered ConfigMap file and env; the backup
/// CronJob's own command dumps to S3; the chart README's restore (`gunzip | psql`) brings the dump back into an
/// empty database, which reads back through the plugin equal to the original; a failing pg_dump (a wrong
/// password, or a connection lost mid-dump) fails the job and leaves no object, while the documentation's
/// original command in the same situation exits 0 with a truncated dump stored under a backup's name; the
/// maintenance CronJob's `parallax storage retention run` applies the rendered retention policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_jobs_back_up_restore_and_clean_up() {
    let password = format!("Pw-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let cluster = pg::Cluster::start(pg::ClusterOptions { password_auth: true, ..Default::default() });
    let server = &cluster.server;
    let admin = server.admin().await;
    admin.batch_execute(&format!("CREATE ROLE parallax LOGIN CREATEDB PASSWORD '{password}'")).await.unwrap();
    admin.batch_execute("CREATE DATABASE parallax OWNER parallax").await.unwrap();
    let aws = Command::new("aws").arg("--version").output();
    assert!(
        aws.is_ok_and(|o| o.status.success()),
        "the AWS CLI (`aws`) is missing: ./test.sh installs it (python3 -m pip install awscli)"
    );
    let s3 = S3Server::start();
    s3.bucket("backups");
    let values = json!({
        "postgresql": { "enabled": false },
        "externalDatabase": {
            "host": server.host, "port": server.port, "existingSecret": "parallax-db",
        },
        "storage": { "retention": { "executions": { "enabled": true, "maxAge": "30d" } } },
        "backup": {
            "enabled": true,
            "image": { "repository": "example/pg-backup", "tag": "15" },
            "s3": { "existingSecret": "backup-s3", "region": "us-east-1", "endpoint": s3.endpoint() },
        },
        "maintenance": { "enabled": true, "image": { "repository": "example/parallax", "tag": "test" } },
    });
    let docs = render_parent(&values);
    let mut secrets: Secrets = BTreeMap::new();
    secrets.insert("parallax-db", [("password", password.clone())].into());
    secrets.insert(
        "backup-s3",
        [
            ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
        ]
        .into(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("parallax.config.yaml");
    let config_text = object(&docs, "ConfigMap", &config_map_name())["data"]["parallax.config.yaml"].clone();
    std::fs::write(&config_path, config_text.as_str().unwrap()).unwrap();
    // The pod's environment, with the ConfigMap mounted here instead of /etc/parallax/storage.
    let pod_env = |container: &Value, secrets: &Secrets| -> Vec<(String, String)> {
        let mut env = resolve_env(container, secrets);
        for (k, v) in env.iter_mut() {
            if k == "PARALLAX_CONFIG" {
                assert_eq!(v, "/etc/parallax/storage/parallax.config.yaml");
                *v = config_path.display().to_string();
            }
        }
        env
    };

    // The control plane, configured exactly as the chart configures it.
    let cp_env: BTreeMap<String, String> = pod_env(control_plane(&docs), &secrets).into_iter().collect();
    let resolved = parallax_storage_host::config::resolve(None, &|k| cp_env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.storage["postgresql"]["password"], json!(password));
    let s =
        plugin().open(&resolved.storage).unwrap_or_else(|e| panic!("open with the chart's settings: {e}"));
    for (name, versions) in [("helm-a", 2), ("helm-b", 1)] {
        for v in 0..versions {
            s.put_pattern(new_pattern(name, &format!("1.{v}.0"))).await.unwrap();
        }
    }
    let now = Timestamp::now().as_micros();
    for i in 0..8i64 {
        let mut e = new_execution("helm-a", "1.0.0");
        // Half of them 60 days old: the retention policy's (maxAge 30d) to remove at the end.
        e.started_at = Some(at(if i % 2 == 0 { now - 60 * DAY - i } else { now - i }));
        e.input = Some(json!({ "text": format!("row {i} ünïcode"), "n": i }).into());
        let e = s.create_execution(e).await.unwrap();
        s.append_event(e.id, NewEvent::new(EventKind::StepResult, json!({ "step": i }))).await.unwrap();
        let done = ExecutionCompletion {
            status: ExecutionStatus::Completed,
            output: Some(json!({ "ok": i }).into()),
            error: None,
            completed_at: None,
        };
        s.complete_execution(e.id, done).await.unwrap();
    }
    s.append_audit((0..3).map(|i| audit("helm.test", &format!("actor{i}"))).collect()).await.unwrap();
    let before = everything(&s).await;
    assert_eq!((before.0.len(), before.1.len(), before.2.len()), (3, 8, 3));
    s.shutdown().await.unwrap();

    // The backup CronJob's command, as rendered.
    let cron = object(&docs, "CronJob", "rel-parallax-persistence-backup");
    let backup = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].clone();
    let command: Vec<String> =
        backup["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(command[..2], ["/bin/bash", "-c"]);
    let path = format!("{}:{}", pg::server_bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let extra = |path: &str| -> Vec<(String, String)> {
        let mut e = s3.env(); // the test server's quirks: no shared config files, checksums when required
        e.push(("PATH".into(), path.to_string()));
        e.push(("HOME".into(), dir.path().display().to_string()));
        e
    };
    let job = |secrets: &Secrets, path: &str| {
        let env = resolve_env(&backup, secrets);
        run(job_command(Path::new(&command[0]), &[&command[1], &command[2]], &env, &extra(path)))
    };
    let (ok, stdout, stderr) = job(&secrets, &path);
    assert!(ok, "the backup job failed:\n{stdout}\n{stderr}");
    let stored = backups(&s3);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let key = &stored[0];
    assert!(key.starts_with("parallax/parallax-") && key.ends_with(".sql.gz"), "{key}");
    assert!(stdout.contains(&format!("backup: stored s3://backups/{key}")), "{stdout}");
    println!("the backup job stored s3://backups/{key}");

    // Restore as the chart README says, into an empty database, and read it back through the plugin.
    let restore = tested_block("deploy/helm/parallax-persistence/README.md", "restore");
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &restore]).current_dir(dir.path());
    cmd.env_clear().envs(extra(&path)).envs([
        ("BACKUP", format!("s3://backups/{key}")),
        ("PGHOST", server.host.clone()),
        ("PGPORT", server.port.to_string()),
        ("PGUSER", "parallax".to_string()),
        ("PGPASSWORD", password.clone()),
    ]);
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "the README's restore failed:\n{restore}\n{stdout}\n{stderr}");
    let mut restored_config = resolved.storage.clone();
    restored_config["postgresql"]["database"] = json!("parallax_restored");
    restored_config["migrations"] = json!({ "autoRun": false });
    let r = plugin().open(&restored_config).unwrap_or_else(|e| panic!("open the restored database: {e}"));
    assert_eq!(everything(&r).await, before, "the restored database differs from the original");
    r.shutdown().await.unwrap();

    // A wrong password: the job fails, and no object is left.
    let mut wrong = secrets.clone();
    wrong.insert("parallax-db", [("password", "not-the-password".to_string())].into());
    let (ok, _, stderr) = job(&wrong, &path);
    assert!(!ok, "the backup job succeeded with a wrong password");
    assert!(
        stderr.contains("password authentication failed") && stderr.contains("backup FAILED"),
        "{stderr}"
    );
    assert_eq!(backups(&s3), stored, "a failed backup left an object");

    // pg_dump losing its connection mid-dump (the real pg_dump's first 4 KiB, then exit 1).
    let fake = dir.path().join("fake-bin");
    std::fs::create_dir(&fake).unwrap();
    let real = pg::server_bin_dir().join("pg_dump");
    std::fs::write(
        fake.join("pg_dump"),
        format!("#!/bin/sh\n\"{}\" \"$@\" | head -c 4096\nexit 1\n", real.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fake.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake_path = format!("{}:{path}", fake.display());
    let (ok, _, stderr) = job(&secrets, &fake_path);
    assert!(!ok, "the backup job succeeded although pg_dump failed");
    assert!(stderr.contains("backup FAILED (exit status 1)"), "{stderr}");
    assert_eq!(backups(&s3), stored, "a dump cut short left an object");
    // The documentation's command, as written (sh -c, no pipefail), in the same situation: exit status 0, and a
    // truncated dump stored under a backup's name.
    let documented = "pg_dump -h $PGHOST -U $PGUSER -d $PGDATABASE | \\\ngzip | \\\n\
                      aws s3 cp - s3://backups/parallax/$(date +%Y%m%d).sql.gz";
    let env = resolve_env(&backup, &secrets);
    let (ok, stdout, stderr) =
        run(job_command(Path::new("/bin/sh"), &["-c", documented], &env, &extra(&fake_path)));
    assert!(ok, "the documented command failed: {stdout}{stderr}");
    let after = backups(&s3);
    assert_eq!(after.len(), 2, "{after:?}");
    let truncated = after.iter().find(|k| !stored.contains(k)).unwrap();
    let local = dir.path().join("truncated.sql.gz");
    let out = s3.command("aws").args(["s3", "cp", &format!("s3://backups/{truncated}")]).arg(&local).output();
    assert!(out.unwrap().status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&local).unwrap()),
        &mut text,
    )
    .expect("the truncated dump is a valid gzip file");
    assert!(text.len() <= 4096 && !text.contains("PostgreSQL database dump complete"), "{}", text.len());
    println!(
        "the documentation's command with pg_dump failing mid-dump: exit 0, stored s3://backups/{truncated} \
         ({} bytes of dump, no end-of-dump trailer); the chart's job: exit 1, no object",
        text.len()
    );

    // The maintenance CronJob: `parallax storage retention run` with the rendered config and env removes the
    // executions older than 30 days (the values' retention policy).
    let cron = object(&docs, "CronJob", "rel-parallax-persistence-retention");
    let c = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["parallax"]));
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["storage", "retention", "run"]);
    let cli = target_dir().join("parallax");
    let env = pod_env(c, &secrets);
    let (ok, stdout, stderr) = run(job_command(&cli, &args, &env, &extra(&path)));
    assert!(ok, "parallax storage retention run failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password), "the CLI printed the password");
    let s = plugin().open(&resolved.storage).unwrap();
    let left = archive::snapshot(&s).await.0;
    assert_eq!(left.len(), 4, "{stdout}");
    assert!(left.values().all(|e| e["input"]["n"].as_i64().unwrap() % 2 == 1), "{left:#?}");
    s.shutdown().await.unwrap();
}
