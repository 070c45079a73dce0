//! The built `parallax` CLI as a child process (`target/<profile>/parallax`, with the freshly built plugin):
//! a command builder with a clean environment, and [`Running`], a spawned CLI whose stderr lines arrive on a
//! channel, to wait for a line (a pause point) and kill it with SIGKILL.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{fresh_plugin_library, target_dir};

/// `parallax --output json <args…> --config <config_file> --plugin <built plugin>`, run in `cwd`, without the
/// environment variables that would change what it opens (`PARALLAX_CONFIG`, `PARALLAX_STORAGE_*`,
/// `PARALLAX_DATABASE_URL`, `RUST_LOG`) or pause it.
pub fn parallax(args: &[&str], config_file: &Path, cwd: &Path) -> Command {
    let cli = target_dir().join(format!("parallax{}", std::env::consts::EXE_SUFFIX));
    assert!(cli.is_file(), "{} is missing: run `cargo build --workspace`", cli.display());
    let mut c = Command::new(cli);
    c.args(["--output", "json"])
        .args(args)
        .arg("--config")
        .arg(config_file)
        .arg("--plugin")
        .arg(fresh_plugin_library())
        .current_dir(cwd);
    for var in [
        "PARALLAX_CONFIG",
        "PARALLAX_STORAGE_PLUGIN",
        "PARALLAX_STORAGE_TYPE",
        "PARALLAX_DATABASE_URL",
        "RUST_LOG",
        "PARALLAX_ARCHIVE_PAUSE_AT",
        "PARALLAX_TRANSFER_PAUSE_AT",
    ] {
        c.env_remove(var);
    }
    c
}

/// Writes `{"storage": config}` to `path` (JSON is YAML) and returns the path.
pub fn write_config(path: &Path, config: &serde_json::Value) -> std::path::PathBuf {
    std::fs::write(path, serde_json::json!({ "storage": config }).to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}

/// A spawned CLI whose stderr lines arrive on a channel; SIGKILLed on drop.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn parallax");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle`; panics with everything the child said if it exits first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!(
                        "the CLI exited ({status}) before printing {needle:?}; stderr:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}; stderr so far:\n{}",
                self.seen.join("\n")
            );
        }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
