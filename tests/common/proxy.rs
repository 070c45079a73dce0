//! A TCP proxy on 127.0.0.1 in front of a server, for network fault tests. Plain threads (no runtime of its
//! own), so it keeps working whatever the test's runtime does. Faults:
//! - [`Proxy::refuse`]: stops listening (new connections are refused) and closes every open one;
//! - [`Proxy::reset`]: resets every open connection at once (`SO_LINGER` 0: the peers get an RST mid-stream);
//!   new connections are forwarded;
//! - [`Proxy::blackhole`]: open and new connections are kept and read, but nothing is forwarded either way
//!   (the classic hang: TCP acknowledges everything, no answer ever comes);
//! - [`Proxy::heal`]: forwarding again; connections that were blackholed are closed (their streams lost data).

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;

struct Conn {
    client: TcpStream,
    upstream: Option<TcpStream>,
    closed: AtomicBool,
}

impl Conn {
    fn close(&self, rst: bool) {
        self.closed.store(true, Ordering::SeqCst);
        for s in std::iter::once(&self.client).chain(self.upstream.as_ref()) {
            if rst {
                linger_zero(s);
            }
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// `SO_LINGER` with a zero timeout: closing the socket sends an RST.
fn linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a properly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

struct Shared {
    mode: AtomicU8,
    conns: Mutex<Vec<Arc<Conn>>>,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy to `host:upstream`, forwarding.
    pub fn start(host: &str, upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(FORWARD),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let upstream = (host.to_string(), upstream);
        std::thread::spawn(move || accept_loop(Some(listener), port, upstream, s));
        Proxy { port, shared }
    }

    fn close_all(&self, rst: bool) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.close(rst);
        }
    }

    pub fn refuse(&self) {
        self.shared.mode.store(REFUSE, Ordering::SeqCst);
        self.close_all(false);
        // The accept loop drops its listener within a few milliseconds.
        std::thread::sleep(Duration::from_millis(50));
    }

    pub fn reset(&self) {
        self.close_all(true);
    }

    pub fn blackhole(&self) {
        self.shared.mode.store(BLACKHOLE, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        if self.shared.mode.swap(FORWARD, Ordering::SeqCst) == BLACKHOLE {
            self.close_all(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.close_all(false);
    }
}

fn accept_loop(mut listener: Option<TcpListener>, port: u16, upstream: (String, u16), s: Arc<Shared>) {
    while !s.stop.load(Ordering::SeqCst) {
        let mode = s.mode.load(Ordering::SeqCst);
        if mode == REFUSE {
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let l = listener.as_ref().unwrap();
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((client, _)) => {
                client.set_nonblocking(false).unwrap();
                let up = if mode == FORWARD {
                    TcpStream::connect((upstream.0.as_str(), upstream.1)).ok()
                } else {
                    None
                };
                if mode == FORWARD && up.is_none() {
                    continue; // the upstream refused: so does the proxy (the client sees the close)
                }
                let conn = Arc::new(Conn { client, upstream: up, closed: AtomicBool::new(false) });
                s.conns.lock().unwrap().push(conn.clone());
                spawn_pumps(conn, s.clone());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn spawn_pumps(conn: Arc<Conn>, s: Arc<Shared>) {
    let pairs: Vec<(TcpStream, Option<TcpStream>)> = match &conn.upstream {
        Some(up) => vec![
            (conn.client.try_clone().unwrap(), Some(up.try_clone().unwrap())),
            (up.try_clone().unwrap(), Some(conn.client.try_clone().unwrap())),
        ],
        // Accepted while blackholed: only read (and drop) what the client sends.
        None => vec![(conn.client.try_clone().unwrap(), None)],
    };
    for (mut from, mut to) in pairs {
        let (conn, s) = (conn.clone(), s.clone());
        std::thread::spawn(move || {
            from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 16 * 1024];
            while !conn.closed.load(Ordering::SeqCst) {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if s.mode.load(Ordering::SeqCst) == BLACKHOLE {
                            continue; // swallowed
                        }
                        let Some(to) = to.as_mut() else { break };
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            // One side ended: end the other (unless blackholed, where the client must see nothing).
            if s.mode.load(Ordering::SeqCst) != BLACKHOLE {
                conn.close(false);
            }
        });
    }
}
