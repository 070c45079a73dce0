//! PostgreSQL for tests: `PARALLAX_TEST_POSTGRES_URL` when set (a superuser URL on a server we may create
//! databases on), otherwise a throwaway cluster started from the installed server binaries (`initdb`,
//! `pg_ctl`; as the `postgres` user when running as root, which PostgreSQL requires), once per test process,
//! on a free port under a temp dir, stopped and deleted when the process exits. Each test gets a fresh database.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
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

    pub async fn admin(&self) -> tokio_postgres::Client {
        self.client(&self.admin_db).await
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await.unwrap_or_else(|e| {
                panic!("connecting to the test PostgreSQL server ({}:{}): {e}", self.host, self.port)
            });
        tokio::spawn(conn);
        client
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

/// The shared server of this test process.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("PARALLAX_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => from_url(&url),
        _ => {
            let cluster = Cluster::start(ClusterOptions::default());
            let server = cluster.server.clone();
            // Lives until the process exits; the watchdog stops it then.
            std::mem::forget(cluster);
            server
        }
    })
}

fn from_url(url: &str) -> Server {
    let cfg: tokio_postgres::Config =
        url.parse().unwrap_or_else(|e| panic!("PARALLAX_TEST_POSTGRES_URL is not a PostgreSQL URL: {e}"));
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => panic!("PARALLAX_TEST_POSTGRES_URL must name a TCP host"),
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

fn server_bin_dir() -> PathBuf {
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

fn is_root() -> bool {
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
             synchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\nshared_buffers = 64MB\n",
            cluster.dir.display()
        );
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
                "local all all trust\nhostssl all all 127.0.0.0/8 trust\nhostnossl all all 127.0.0.0/8 reject\n",
            )
            .unwrap();
        }
        if opts.password_auth && opts.tls.is_none() {
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
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

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
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
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
        );
    }

    /// A clean ("fast") shutdown: clients are disconnected, committed data is kept.
    pub fn stop_server(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
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
