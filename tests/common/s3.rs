//! A real S3-compatible server for tests: `s3s-fs` 0.14.1 (an S3 API over a directory; it checks SigV4
//! signatures and payload checksums and refuses unknown keys and wrong secrets like S3 does), run as a child
//! process on a free port of 127.0.0.1 with its own temp root. Buckets are directories under the root; the
//! server keeps multipart parts (`.upload_id-<uuid>.part-<n>`) in the root itself, which makes an upload in
//! progress visible to a test ([`S3Server::upload_parts`]). Killed on drop.
//!
//! The independent client is `tests/common/s3_client.py` (boto3), called through [`S3Server::client`].

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::json;

/// The version the tests are written against (`s3s-fs --version`); test.sh installs it.
pub const S3S_FS_VERSION: &str = "0.14.1";
pub const INSTALL: &str = "cargo install s3s-fs --version =0.14.1 --features binary --locked";
/// The bucket every server starts with.
pub const BUCKET: &str = "archive";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    bin: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    /// Holds `root/` (the server's data) and `server.log` (its output, shown when it fails to start).
    tmp: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

/// `s3s-fs` from `PARALLAX_TEST_S3S_FS`, the `PATH`, `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn find_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PARALLAX_TEST_S3S_FS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join("s3s-fs")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the S3 tests need the s3s-fs test server {S3S_FS_VERSION}, found neither on the PATH nor in \
             ~/.cargo/bin: install it with `{INSTALL}` (./test.sh installs it), or set PARALLAX_TEST_S3S_FS to \
             the binary"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`] and waits until it answers.
    pub fn start() -> S3Server {
        let bin = find_binary();
        let tmp = tempfile::Builder::new().prefix("parallax-s3-").tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("root").join(BUCKET)).expect("create the bucket directory");
        let id = uuid::Uuid::now_v7().simple().to_string();
        let server = S3Server {
            bin,
            port: free_port(),
            // Distinctive, so a test can assert that neither ever appears in an error or an output.
            access_key: format!("AKPARALLAX{}", &id[20..]),
            secret_key: format!("parallax-secret-{id}"),
            tmp,
            child: Mutex::new(None),
        };
        server.spawn();
        server
    }

    fn spawn(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the s3s-fs log");
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(self.root())
            .env("RUST_LOG", "s3s_fs=info,s3s=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}. Reinstall it with `{INSTALL}`", self.bin.display())
            });
        *self.child.lock().unwrap() = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(child) = self.child.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "s3s-fs exited at start ({status}); its output:\n{}\n(is it version {S3S_FS_VERSION}? \
                         `{INSTALL}`)",
                        std::fs::read_to_string(self.log_path()).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not answer on {addr} within 30 s; its output:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("server.log")
    }

    /// The server's data directory: one directory per bucket, plus its own `.upload_id-*`/`.tmp.*` files.
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Creates another (empty) bucket and returns its name.
    pub fn bucket(&self, name: &str) -> String {
        std::fs::create_dir_all(self.root().join(name)).expect("create a bucket directory");
        name.to_string()
    }

    /// `s3://archive/<prefix>` (a trailing slash added when missing).
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{BUCKET}/")
        } else {
            format!("s3://{BUCKET}/{prefix}/")
        }
    }

    /// The `storage.archive` config section reaching this server, with one retry and short timeouts so a
    /// fault test fails in seconds.
    pub fn archive_config(&self) -> serde_json::Value {
        json!({
            "endpoint": self.endpoint(),
            "region": REGION,
            "accessKeyId": self.access_key,
            "secretAccessKey": self.secret_key,
            "allowHttp": true,
            "retries": 1,
            "timeout": 5000,
        })
    }

    /// `storage` config `base` with this server's `archive` section added.
    pub fn with_archive(&self, mut base: serde_json::Value) -> serde_json::Value {
        base["archive"] = self.archive_config();
        base
    }

    /// The standard AWS environment for a child process (`parallax`, the aws CLI, boto3): keys, region,
    /// endpoint, plain HTTP allowed, botocore's checksums only when required (s3s-fs does not speak its
    /// newer defaults everywhere), no shared config or credential files, no instance metadata.
    pub fn env(&self) -> Vec<(String, String)> {
        let nothing = self.tmp.path().join("no-aws-config").display().to_string();
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required".to_string()),
            ("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required".to_string()),
            ("AWS_CONFIG_FILE", nothing.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", nothing),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A command with [`S3Server::env`] set and every other `AWS_*` variable of this process removed.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env());
        cmd
    }

    /// Runs `python3 tests/common/s3_client.py <args>` against this server and parses its JSON output;
    /// panics with its stderr when it fails. See the script for the commands.
    pub fn client(&self, args: &[&str]) -> serde_json::Value {
        let out = self.try_client(args);
        match out {
            Ok(v) => v,
            Err(e) => panic!("s3_client.py {args:?} failed: {e}"),
        }
    }

    /// [`S3Server::client`], returning its stderr as the error.
    pub fn try_client(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/s3_client.py");
        let out = self.command("python3").arg(&script).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run python3 (needed for the S3 client; ./test.sh installs boto3): {e}")
        });
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!("s3_client.py printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Keys (and sizes) under `prefix` of `bucket`, through boto3 with pages of `page_size` keys.
    pub fn list(&self, bucket: &str, prefix: &str, page_size: u32) -> Vec<(String, u64)> {
        let v = self.client(&["list", bucket, prefix, "--page-size", &page_size.to_string()]);
        v["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| (o["key"].as_str().unwrap().to_string(), o["size"].as_u64().unwrap()))
            .collect()
    }

    /// The records of a gzip NDJSON object, downloaded through boto3.
    pub fn records(&self, bucket: &str, key: &str) -> Vec<serde_json::Value> {
        let v = self.client(&["records", bucket, key]);
        v["records"].as_array().expect("records").clone()
    }

    /// The multipart part files the server currently holds (uploads in progress or abandoned).
    pub fn upload_parts(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.root())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".upload_id-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// Files (not the server's own dot files) under `bucket`, relative to it, sorted: what is stored there
    /// as seen on disk.
    pub fn files(&self, bucket: &str) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let base = self.root().join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    /// Stops the server at once (SIGKILL), as a crash or a lost network would mid-request.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process is running.
    pub fn running(&self) -> bool {
        self.child.lock().unwrap().as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the server again on the same port and root (after [`S3Server::kill`]).
    pub fn restart(&self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
