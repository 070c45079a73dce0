//! PostgreSQL for tests: `PARALLAX_TEST_POSTGRES_URL` when set (a superuser URL on a server we may create
//! databases on), otherwise a throwaway cluster started from the installed server binaries (`initdb`,
//! `pg_ctl`; as the `postgres` user when running as root, which PostgreSQL requires), once per test process,
//! on a free port under a temp dir, stopped and deleted when the process exits. Each test gets a fresh database.
//!
//! [`replica`] adds a real streaming standby of that server (`pg_basebackup -R`, started on its own port), also
//! once per test process and only when a test asks for it; with `PARALLAX_TEST_POSTGRES_URL` set it comes from
//! `PARALLAX_TEST_POSTGRES_REPLICA_URL` instead.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use serde_json::json;

/// Connection facts for one server.
#[derive(Clone, Debug)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// The database to connect to for administration (`postgres`).
    pub admin_db: String,
}

impl Server {
    pub fn admin_url(&self) -> String {
        self.url(&self.admin_db)
    }

    pub fn url(&self, db: &str) -> String {
        match &self.password {
            Some(pw) => format!("postgresql://{}:{}@{}:{}/{}", self.user, pw, self.host, self.port, db),
            None => format!("postgresql://{}@{}:{}/{}", self.user, self.host, self.port, db),
        }
    }

    /// The plugin's `storage` config for database `db` on this server.
    pub fn storage_config(&self, db: &str) -> serde_json::Value {
        let mut pg = json!({ "host": self.host, "port": self.port, "database": db, "username": self.user });
        if let Some(pw) = &self.password {
            pg["password"] = json!(pw);
        }
        json!({ "type": "postgresql", "postgresql": pg })
    }

    /// `storage` settings with this server as the one read replica and `readPreference` set, to merge into
    /// another server's [`Server::storage_config`].
    pub fn as_replica(&self, read_preference: &str) -> serde_json::Value {
        json!({ "postgresql": {
            "replicas": [{ "host": self.host, "port": self.port }],
            "readPreference": read_preference,
        } })
    }

    pub async fn admin(&self) -> tokio_postgres::Client {
        self.client(&self.admin_db).await
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        self.try_client(db).await.unwrap_or_else(|e| {
            panic!("connecting to the test PostgreSQL server ({}:{}): {e}", self.host, self.port)
        })
    }

    /// A client of database `db`, or why the server refused (a stopped server: connection refused).
    pub async fn try_client(&self, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg: tokio_postgres::Config = self.url(db).parse()?;
        cfg.connect_timeout(Duration::from_secs(10));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Creates a new, empty database and returns its name.
    pub async fn fresh_database(&self) -> String {
        let name = format!("parallax_test_{}", uuid::Uuid::now_v7().simple());
        self.admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        name
    }

    pub async fn drop_database(&self, name: &str) {
        let _ =
            self.admin().await.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
}

const URL_VAR: &str = "PARALLAX_TEST_POSTGRES_URL";
const REPLICA_URL_VAR: &str = "PARALLAX_TEST_POSTGRES_REPLICA_URL";

fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

/// The shared server of this test process, and its cluster when the harness started one.
struct Shared {
    server: Server,
    cluster: Option<Cluster>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| match env_url(URL_VAR) {
        Some(url) => Shared { server: from_url(&url, URL_VAR), cluster: None },
        // Lives until the process exits (statics are never dropped); the watchdog stops it then.
        None => {
            let cluster = Cluster::start(ClusterOptions::default());
            Shared { server: cluster.server.clone(), cluster: Some(cluster) }
        }
    })
}

/// The shared server of this test process.
pub fn server() -> &'static Server {
    &shared().server
}

fn from_url(url: &str, var: &str) -> Server {
    let cfg: tokio_postgres::Config =
        url.parse().unwrap_or_else(|e| panic!("{var} is not a PostgreSQL URL: {e}"));
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => panic!("{var} must name a TCP host"),
    };
    Server {
        host,
        port: cfg.get_ports().first().copied().unwrap_or(5432),
        user: cfg.get_user().unwrap_or("postgres").to_string(),
        password: cfg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
        admin_db: cfg.get_dbname().unwrap_or("postgres").to_string(),
    }
}

#[derive(Default)]
pub struct ClusterOptions {
    /// `(cert, key)` PEM files to serve TLS with; the cluster also listens on 127.0.0.2.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Roles other than `postgres` must give their password over TCP (scram-sha-256), so a wrong one is refused.
    pub password_auth: bool,
    /// Commits wait for their WAL to be written (`synchronous_commit = on`): an acknowledged commit survives a
    /// server crash. The harness's other clusters run with it off (a crash may lose the last commits).
    pub durable: bool,
}

/// A throwaway PostgreSQL cluster of this test process. Stopped on drop (and by a watchdog if the process dies).
pub struct Cluster {
    pub server: Server,
    pub dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    _tmp: tempfile::TempDir,
}

const INSTALL_HINT: &str = "PostgreSQL tests need a server: install the server binaries (Debian: \
    `apt-get install postgresql`; .ci/run does this) or set PARALLAX_TEST_POSTGRES_URL to a superuser URL \
    such as postgresql://postgres:secret@127.0.0.1:5432/postgres";

pub fn server_bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    if let Some(dir) = found.pop() {
        return dir;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    panic!("no PostgreSQL server binaries (initdb, pg_ctl) found under /usr/lib/postgresql or via pg_config. {INSTALL_HINT}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    pub fn start(opts: ClusterOptions) -> Cluster {
        let bin = server_bin_dir();
        let as_postgres = is_root();
        let tmp = tempfile::Builder::new().prefix("parallax-pg-").tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        if as_postgres {
            let ok = Command::new("chown").arg("-R").arg("postgres").arg(&dir).status().map(|s| s.success());
            assert!(
                matches!(ok, Ok(true)),
                "running as root, but cannot hand {} to the `postgres` user (does it exist?). {INSTALL_HINT}",
                dir.display()
            );
        }
        let port = free_port();
        let cluster = Cluster {
            server: Server {
                host: "127.0.0.1".into(),
                port,
                user: "postgres".into(),
                password: None,
                admin_db: "postgres".into(),
            },
            dir,
            bin,
            as_postgres,
            _tmp: tmp,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        );
        let mut conf = format!(
            "port = {port}\nunix_socket_directories = '{}'\nlisten_addresses = '127.0.0.1'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\nshared_buffers = 64MB\n\
             checkpoint_timeout = 30s\nmax_wal_size = 256MB\n",
            cluster.dir.display()
        );
        if opts.durable {
            conf.push_str("synchronous_commit = on\n");
        }
        if let Some((cert, key)) = &opts.tls {
            let (c, k) = (cluster.dir.join("server.crt"), cluster.dir.join("server.key"));
            std::fs::copy(cert, &c).unwrap();
            std::fs::copy(key, &k).unwrap();
            if as_postgres {
                Command::new("chown").arg("postgres").arg(&c).arg(&k).status().unwrap();
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nlisten_addresses = '127.0.0.1,127.0.0.2'\n",
                c.display(),
                k.display()
            ));
            // Only TLS connections from the network, so a client that skips TLS fails visibly.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.0/8 trust\nhostssl replication all 127.0.0.0/8 trust\n\
                 hostnossl all all 127.0.0.0/8 reject\n",
            )
            .unwrap();
        }
        if opts.password_auth && opts.tls.is_none() {
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\n\
                 host all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .expect("write postgresql.conf");
        cluster.start_server();
        cluster.watchdog();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server tool of the cluster's installation, run as the `postgres` user when this process is root.
    fn tool(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .tool(tool)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}. {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_server(&self) {
        self.pg_ctl_start(&["-w", "-t", "60"]);
    }

    /// Starts the server without waiting for it to accept connections (the caller polls).
    fn start_server_nowait(&self) {
        self.pg_ctl_start(&["-W"]);
    }

    fn pg_ctl_start(&self, wait: &[&str]) {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let mut args = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()];
        args.extend_from_slice(wait);
        args.push("start");
        self.run("pg_ctl", &args);
    }

    /// A clean ("fast") shutdown: clients are disconnected, committed data is kept.
    pub fn stop_server(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    /// Crashes the server: `pg_ctl stop -m immediate` (every server process quits at once, no checkpoint; the
    /// next start runs crash recovery).
    pub fn crash(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }

    /// SIGKILL of the postmaster alone (its backends notice and exit); waits until the port refuses connections.
    pub fn kill_postmaster(&self) {
        let pid_file =
            std::fs::read_to_string(self.data_dir().join("postmaster.pid")).expect("postmaster.pid");
        let pid = pid_file.lines().next().unwrap().trim().to_string();
        let ok = Command::new("kill").args(["-KILL", &pid]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "kill -KILL {pid} (the postmaster) failed");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.server.port)).is_ok() {
            assert!(started.elapsed() < Duration::from_secs(10), "port {} still accepts", self.server.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server after [`Cluster::crash`] or [`Cluster::kill_postmaster`]: retried for a while, since
    /// the killed postmaster's backends may still hold its shared memory for a moment.
    pub fn start_server_after_crash(&self) {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let started = std::time::Instant::now();
        loop {
            let out = self
                .tool("pg_ctl")
                .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"])
                .current_dir(&self.dir)
                .output()
                .expect("pg_ctl");
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "pg_ctl start after a crash failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server when this process dies, even by a signal.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {} -D {} -m immediate stop", pg_ctl.display(), data.display())
        } else {
            format!("{} -D {} -m immediate stop", pg_ctl.display(), data.display())
        };
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
            std::process::id(),
            self.dir.display()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        if data.join("postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop_server()));
        }
    }
}

/// Runs `openssl` with `args` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}; install the Debian package openssl (.ci/run does)"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<name>.crt`/`.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    dir.join(crt)
}

/// A server certificate for `localhost` and 127.0.0.1, signed by CA `ca` (files from [`make_ca`]).
pub fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    (dir.join("server.crt"), dir.join("server.key"))
}

// ---- The streaming replica ----

/// A WAL position (`pg_lsn`), ordered as PostgreSQL orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form, two hex numbers such as `0/16B3748`.
    pub fn parse(text: &str) -> Lsn {
        let half =
            |h: &str| u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("not an LSN: {text:?}: {e}"));
        let (hi, lo) = text.split_once('/').unwrap_or_else(|| panic!("not an LSN: {text:?}"));
        Lsn((half(hi) << 32) | half(lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a test did to the shared replica that the next test must not inherit.
#[derive(Clone, Copy, Default)]
struct Disturbed {
    paused: bool,
    stopped: bool,
}

/// A hot standby streaming from a primary: the shared one from [`replica`], or a private one from
/// [`Replica::standby_of`] (for a test that also stops its primary).
///
/// Tests in one process share [`replica`]. One that only reads through it holds [`Replica::shared`] while it
/// does; one that pauses replay or stops the standby holds [`Replica::exclusive`], so readers never see its
/// disturbance. Whoever takes the replica next finds it running and replaying again, even after a test that
/// panicked halfway.
pub struct Replica {
    server: Server,
    primary: Server,
    /// The standby's cluster when the harness started it; `None` for one given by URL.
    cluster: Option<Cluster>,
    turns: tokio::sync::RwLock<()>,
    disturbed: Mutex<Disturbed>,
}

/// The shared streaming replica of [`server`], started on first use (a base backup of the primary as it is
/// then). With `PARALLAX_TEST_POSTGRES_URL` set it is `PARALLAX_TEST_POSTGRES_REPLICA_URL` (a superuser URL of
/// a hot standby streaming from that server), and a test asking for it fails when that is not set.
pub fn replica() -> &'static Replica {
    static REPLICA: OnceLock<Replica> = OnceLock::new();
    REPLICA.get_or_init(|| match (env_url(URL_VAR), env_url(REPLICA_URL_VAR)) {
        (Some(_), Some(url)) => Replica {
            server: from_url(&url, REPLICA_URL_VAR),
            primary: server().clone(),
            cluster: None,
            turns: Default::default(),
            disturbed: Default::default(),
        },
        (Some(_), None) => panic!(
            "this test needs a streaming replica, and {URL_VAR} names an external server, so the harness cannot \
             make one: set {REPLICA_URL_VAR} to a superuser URL of a hot standby streaming from that server \
             (or unset {URL_VAR} to let the harness start both)"
        ),
        (None, Some(_)) => panic!(
            "{REPLICA_URL_VAR} is set but {URL_VAR} is not: the harness would start its own primary, which that \
             replica does not follow. Set both, or neither"
        ),
        (None, None) => {
            let primary = shared().cluster.as_ref().expect("the harness started the shared server");
            Replica::standby_of(primary)
        }
    })
}

impl Replica {
    /// Starts a new hot standby of `primary`: `pg_basebackup -R -X stream` into its own data directory,
    /// with a physical replication slot on the primary (so it keeps the WAL a stopped standby still needs),
    /// started on its own port and socket directory. Stopped on drop, and by a watchdog if the process dies.
    pub fn standby_of(primary: &Cluster) -> Replica {
        let tmp = tempfile::Builder::new().prefix("parallax-pg-replica-").tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        if primary.as_postgres {
            let ok = Command::new("chown").arg("-R").arg("postgres").arg(&dir).status().map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "cannot hand {} to the `postgres` user", dir.display());
        }
        let port = free_port();
        let standby = Cluster {
            server: Server { port, ..primary.server.clone() },
            dir,
            bin: primary.bin.clone(),
            as_postgres: primary.as_postgres,
            _tmp: tmp,
        };
        let data = standby.data_dir();
        let slot = format!("parallax_standby_{port}");
        let primary_port = primary.server.port.to_string();
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                data.to_str().unwrap(),
                "-h",
                &primary.server.host,
                "-p",
                &primary_port,
                "-U",
                &primary.server.user,
                "-X",
                "stream",
                "-R",
                "-C",
                "-S",
                &slot,
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        // The copied postgresql.conf is the primary's; later lines win. Feedback keeps the primary's vacuum from
        // removing rows a standby query still reads (as read replicas are usually run); a short retry interval
        // reconnects soon after the primary comes back.
        let conf = format!(
            "\n# standby\nport = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n\
             hot_standby_feedback = on\nwal_retrieve_retry_interval = 200ms\n",
            standby.dir.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .expect("write the standby's postgresql.conf");
        assert!(data.join("standby.signal").is_file(), "pg_basebackup -R wrote no standby.signal");
        standby.watchdog();
        standby.start_server();
        Replica {
            server: standby.server.clone(),
            primary: primary.server.clone(),
            cluster: Some(standby),
            turns: Default::default(),
            disturbed: Default::default(),
        }
    }

    /// The standby's connection facts (the same user and password as the primary's).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The primary it streams from.
    pub fn primary(&self) -> &Server {
        &self.primary
    }

    /// A turn for a test that reads through the replica without disturbing it; other readers may hold one
    /// at the same time, a test holding [`Replica::exclusive`] may not.
    pub async fn shared(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        let turn = self.turns.write().await;
        self.restore().await;
        turn.downgrade()
    }

    /// The only turn, for a test that pauses replay or stops the standby.
    pub async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        let turn = self.turns.write().await;
        self.restore().await;
        turn
    }

    /// Undoes what a previous holder left behind (its test may have panicked while replay was paused or the
    /// standby stopped).
    async fn restore(&self) {
        let d = *self.disturbed.lock().unwrap();
        if d.stopped {
            self.start().await;
        }
        if d.paused {
            self.resume_replay().await;
        }
    }

    async fn standby_admin(&self) -> tokio_postgres::Client {
        self.server.admin().await
    }

    /// Pauses WAL replay (`pg_wal_replay_pause()`) and waits until the standby reports it paused: from then
    /// on it still receives WAL but applies none of it.
    pub async fn pause_replay(&self) {
        self.disturbed.lock().unwrap().paused = true;
        let admin = self.standby_admin().await;
        admin.batch_execute("SELECT pg_wal_replay_pause()").await.expect("pg_wal_replay_pause()");
        let started = Instant::now();
        loop {
            let state: String =
                admin.query_one("SELECT pg_get_wal_replay_pause_state()", &[]).await.unwrap().get(0);
            if state == "paused" {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replay still {state:?} 10 s after pg_wal_replay_pause(){}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resumes WAL replay (`pg_wal_replay_resume()`).
    pub async fn resume_replay(&self) {
        self.standby_admin().await.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap_or_else(|e| {
            panic!(
                "pg_wal_replay_resume() on the standby at port {}: {e}{}",
                self.server.port,
                self.log_tail()
            )
        });
        self.disturbed.lock().unwrap().paused = false;
    }

    /// The end of the last WAL record the standby applied (`pg_last_wal_replay_lsn()`).
    pub async fn replay_lsn(&self) -> Lsn {
        self.standby_lsn("pg_last_wal_replay_lsn()").await
    }

    /// How far the standby has received (and flushed) the primary's WAL (`pg_last_wal_receive_lsn()`); ahead
    /// of [`Replica::replay_lsn`] while replay is paused.
    pub async fn receive_lsn(&self) -> Lsn {
        self.standby_lsn("pg_last_wal_receive_lsn()").await
    }

    async fn standby_lsn(&self, function: &str) -> Lsn {
        let row =
            self.standby_admin().await.query_one(&format!("SELECT {function}::text"), &[]).await.unwrap();
        row.get::<_, Option<String>>(0).map_or(Lsn(0), |t| Lsn::parse(&t))
    }

    /// The primary's `pg_current_wal_lsn()`: how far it has written its WAL.
    pub async fn primary_lsn(&self) -> Lsn {
        let row =
            self.primary.admin().await.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap();
        Lsn::parse(row.get(0))
    }

    /// A position in the primary's WAL at or after every commit that returned before this call, which the
    /// standby can receive now: the end of a WAL record written here and flushed by a synchronous commit
    /// (the harness's primary runs with `synchronous_commit = off`, whose commits the standby sees only
    /// after the WAL writer's next flush; and the primary's current position may fall inside a record that
    /// another session is still writing).
    pub async fn primary_mark(&self) -> Lsn {
        let admin = self.primary.admin().await;
        admin.batch_execute("SET synchronous_commit = on").await.unwrap();
        let row = admin
            .query_one("SELECT pg_logical_emit_message(true, 'parallax-test', 'mark')::text", &[])
            .await
            .unwrap_or_else(|e| panic!("marking the primary's WAL (needs a superuser): {e}"));
        Lsn::parse(row.get(0))
    }

    /// Waits until the standby has applied everything the primary committed before this call, for at most
    /// `timeout`, and returns how long that took; panics (with the standby's positions and log) otherwise.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Duration {
        self.caught_up_within(timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Replica::wait_caught_up`] without the panic.
    pub async fn caught_up_within(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mark = self.primary_mark().await;
        self.reached(mark, "pg_last_wal_replay_lsn()", "replayed", timeout).await.map(|()| started.elapsed())
    }

    /// Waits until the standby has received (not necessarily applied) the primary's WAL up to `mark` (from
    /// [`Replica::primary_mark`]).
    pub async fn wait_received(&self, mark: Lsn, timeout: Duration) {
        self.reached(mark, "pg_last_wal_receive_lsn()", "received", timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls the standby's `function` until it is at or past `mark`, connecting again whenever it cannot
    /// (a standby that is starting).
    async fn reached(&self, mark: Lsn, function: &str, what: &str, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        let query = format!(
            "SELECT {function}::text, pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
             pg_get_wal_replay_pause_state()"
        );
        let mut client = None;
        let mut last = String::from("no answer yet");
        loop {
            if client.is_none() {
                match self.server.try_client(&self.server.admin_db).await {
                    Ok(c) => client = Some(c),
                    Err(e) => last = format!("connecting: {e}"),
                }
            }
            if let Some(c) = &client {
                match c.query_one(&query, &[]).await {
                    Ok(row) => {
                        let at =
                            |i: usize| row.get::<_, Option<String>>(i).map_or(Lsn(0), |t| Lsn::parse(&t));
                        if at(0) >= mark {
                            return Ok(());
                        }
                        let pause: String = row.get(3);
                        last = format!("received {}, replayed {}, replay {pause}", at(1), at(2));
                    }
                    Err(e) => {
                        last = format!("querying: {e}");
                        client = None;
                    }
                }
            }
            if started.elapsed() >= timeout {
                return Err(format!(
                    "the standby at {}:{} has not {what} the primary's WAL up to {mark} after {timeout:?} ({last}){}",
                    self.server.host,
                    self.server.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cluster(&self, what: &str) -> &Cluster {
        self.cluster.as_ref().unwrap_or_else(|| {
            panic!(
                "{what} needs the harness's own standby, but this one comes from {REPLICA_URL_VAR}: unset \
                 {URL_VAR} and {REPLICA_URL_VAR} to run this test"
            )
        })
    }

    /// Stops the standby like a crash (`pg_ctl stop -m immediate`): connections drop, new ones are refused.
    ///
    /// A running standby makes a restartpoint first (`CHECKPOINT`), so that its crash recovery on the next
    /// start replays seconds of WAL, not everything since its last timed restartpoint (which on a loaded CI
    /// machine took over a minute).
    pub fn stop_immediate(&self) {
        let cluster = self.cluster("stopping the standby");
        let paused = self.disturbed.lock().unwrap().paused;
        if !paused {
            let _ = Command::new(cluster.bin.join("psql"))
                .arg(self.server.admin_url())
                .args(["-X", "-q", "-c", "CHECKPOINT"])
                .env("PGCONNECT_TIMEOUT", "5")
                .output();
        }
        self.disturbed.lock().unwrap().stopped = true;
        let data = cluster.data_dir();
        cluster.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the standby again on the same port and waits until it accepts connections and is in recovery.
    pub async fn start(&self) {
        let cluster = self.cluster("starting the standby");
        if !cluster.data_dir().join("postmaster.pid").exists() {
            cluster.start_server_nowait();
        }
        let started = Instant::now();
        loop {
            let why = match self.server.try_client(&self.server.admin_db).await {
                Ok(c) => match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    Ok(row) if row.get::<_, bool>(0) => break,
                    Ok(_) => "it is not in recovery (promoted?)".to_string(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            // Crash recovery replays the WAL since the last restartpoint before a hot standby accepts
            // connections; generous, since a loaded 2-core CI machine is slow at it.
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the standby at port {} did not come back within 180 s: {why}{}",
                self.server.port,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.disturbed.lock().unwrap().stopped = false;
    }

    /// The end of the standby's server log, for failure messages (empty for one given by URL).
    pub fn log_tail(&self) -> String {
        let Some(cluster) = &self.cluster else { return String::new() };
        let log = std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("\nstandby log (last lines):\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
    }
}
