//! `parallax storage metrics [--listen ADDR]`: the plugin's metrics in the Prometheus text format, printed once
//! or served over HTTP at `/metrics` until SIGINT or SIGTERM.
//!
//! The HTTP side is `tiny_http`: one thread takes the requests and answers each on a short-lived thread; a
//! scrape is handed to the command's async loop, which asks the one storage object opened for the whole run
//! (a scrape never opens anything) and hands the text back. Only that loop touches the storage, so a signal
//! stops it and the storage shuts down cleanly whatever the HTTP threads are doing.

use std::{
    net::{SocketAddr, TcpListener, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{CliError, Output, EXIT_OTHER};
use crate::{
    metrics::{MetricsText, PROMETHEUS_TEXT_CONTENT_TYPE},
    Error, ErrorKind, Storage,
};

/// The one path served.
pub const PATH: &str = "/metrics";

/// The `--listen` address, checked and bound before the storage is opened: a bad or busy address fails at
/// once, naming it.
pub fn bind(listen: &str) -> Result<TcpListener, CliError> {
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| {
            CliError::usage(format!(
                "--listen {listen:?}: not an address to listen on ({e}); expected HOST:PORT, e.g. \
                 127.0.0.1:9187 (port 0 picks a free port)"
            ))
        })?
        .collect();
    TcpListener::bind(&addrs[..]).map_err(|e| {
        CliError::new(
            EXIT_OTHER,
            format!(
                "cannot listen on {listen}: {e}; stop what uses that address or pass another --listen \
                 HOST:PORT"
            ),
        )
    })
}

/// `parallax storage metrics`: the exposition as is (table output), or `{contentType, text}` (JSON output).
pub async fn print(store: &Storage, plugin_version: &str) -> Result<Output, CliError> {
    let m = fetch(store, plugin_version).await?;
    let json = serde_json::to_value(&m).unwrap_or_default();
    Ok(Output::new(json, m.text))
}

/// The metrics, with an `Unsupported` answer (a plugin older than the `metrics` op) explained for the CLI.
async fn fetch(store: &Storage, plugin_version: &str) -> Result<MetricsText, CliError> {
    store.metrics().await.map_err(|e| unsupported(e, plugin_version, store.plugin_abi_version()).into())
}

/// An `Unsupported` error of the `metrics` op, naming this CLI's and the plugin's versions and the fix; other
/// errors unchanged.
pub fn unsupported(e: Error, plugin_version: &str, plugin_abi: &str) -> Error {
    if e.kind != ErrorKind::Unsupported {
        return e;
    }
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "`parallax storage metrics` needs a plugin with the `metrics` maintenance op: this parallax is {} \
             (storage ABI {}), the plugin is {plugin_version} (storage ABI {plugin_abi}); upgrade the plugin \
             to this parallax's release ({})",
            env!("CARGO_PKG_VERSION"),
            parallax_storage_abi::ABI_VERSION,
            e.message
        ),
    )
}

type Scrape = oneshot::Sender<Result<String, String>>;

/// `parallax storage metrics --listen ADDR`: serves `GET /metrics` until SIGINT or SIGTERM.
pub async fn serve(store: &Storage, listener: TcpListener, plugin_version: &str) -> Result<Output, CliError> {
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(EXIT_OTHER, format!("cannot read the address listened on: {e}")))?;
    // Before serving: an old plugin or `storage.metrics.enabled: false` fails the command, not every scrape.
    fetch(store, plugin_version).await?;
    // Watch the signals before announcing the address: a signal sent right after it stops the server cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::new(EXIT_OTHER, format!("cannot watch SIGTERM: {e}")))?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map(Arc::new)
        .map_err(|e| CliError::new(EXIT_OTHER, format!("cannot serve HTTP on {addr}: {e}")))?;
    let (tx, mut scrapes) = mpsc::channel::<Scrape>(8);
    let stopping = Arc::new(AtomicBool::new(false));
    let http = {
        let (server, stopping) = (server.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || http_loop(&server, &stopping, &tx))
            .map_err(|e| CliError::new(EXIT_OTHER, format!("cannot start the HTTP thread: {e}")))?
    };
    eprintln!("serving metrics on http://{addr}{PATH}; stop with Ctrl-C or SIGTERM");
    tracing::info!(%addr, "metrics exporter listening");

    let mut served = 0u64;
    let mut failed = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            Some(reply) = scrapes.recv() => {
                let answer = match store.metrics().await {
                    Ok(m) => Ok(m.text),
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(error = %e, "a scrape failed");
                        Err(e.to_string())
                    }
                };
                served += 1;
                // The client may have gone; nothing to do then.
                let _ = reply.send(answer);
            }
        }
    }
    // Stop the HTTP thread: wake it, refuse what is queued (dropping the receiver answers 503), and give it a
    // moment to finish a response it is writing. The storage is not used after this loop.
    stopping.store(true, Ordering::SeqCst);
    server.unblock();
    drop(scrapes);
    for _ in 0..40 {
        if http.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("stopped after {served} scrapes ({failed} failed)");
    Ok(Output::new(
        json!({ "stopped": true, "listen": addr.to_string(), "scrapes": served, "failedScrapes": failed }),
        "",
    ))
}

/// The HTTP thread: takes each request and answers it on a thread of its own, so a client that stops reading
/// its response never holds up the next scrape; `GET /metrics` asks the async loop for the text.
fn http_loop(server: &tiny_http::Server, stopping: &AtomicBool, scrapes: &mpsc::Sender<Scrape>) {
    loop {
        let request = match server.recv() {
            Ok(r) => r,
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                continue;
            }
        };
        let scrapes = scrapes.clone();
        let answer = move || {
            let response = route(request.method(), request.url(), || {
                let (reply, answer) = oneshot::channel();
                scrapes.blocking_send(reply).map_err(|_| "the exporter is stopping".to_string())?;
                answer.blocking_recv().map_err(|_| "the exporter is stopping".to_string())?
            });
            if let Err(e) = request.respond(response) {
                tracing::debug!(error = %e, "writing an HTTP response failed (the client left?)");
            }
        };
        if let Err(e) = std::thread::Builder::new().name("metrics-response".into()).spawn(answer) {
            tracing::warn!(error = %e, "cannot start a thread to answer an HTTP request");
        }
    }
}

type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

/// What one request gets: 200 with the exposition, 503 with the error when the scrape failed, 404 for another
/// path, 405 for another method.
fn route(method: &tiny_http::Method, url: &str, scrape: impl FnOnce() -> Result<String, String>) -> Response {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    if path != PATH {
        return text(404, format!("not found: only {PATH} is served here\n"), "text/plain; charset=utf-8");
    }
    if *method != tiny_http::Method::Get {
        return text(
            405,
            format!("method {method} not allowed: use GET {PATH}\n"),
            "text/plain; charset=utf-8",
        )
        .with_header(header("Allow", "GET"));
    }
    match scrape() {
        Ok(body) => text(200, body, PROMETHEUS_TEXT_CONTENT_TYPE),
        Err(e) => text(503, format!("error: {e}\n"), "text/plain; charset=utf-8"),
    }
}

fn text(status: u16, body: String, content_type: &str) -> Response {
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Response) -> (u16, String, Vec<(String, String)>) {
        let status = r.status_code().0;
        let headers = r.headers().iter().map(|h| (h.field.to_string(), h.value.to_string())).collect();
        let mut data = String::new();
        std::io::Read::read_to_string(&mut r.into_reader(), &mut data).unwrap();
        (status, data, headers)
    }

    fn content_type(headers: &[(String, String)]) -> &str {
        &headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).expect("a content type").1
    }

    #[test]
    fn routes_answer_by_path_and_method() {
        let get = tiny_http::Method::Get;
        let (status, text, headers) = body(route(&get, "/metrics", || Ok("up 1\n".into())));
        assert_eq!((status, text.as_str()), (200, "up 1\n"));
        assert_eq!(content_type(&headers), PROMETHEUS_TEXT_CONTENT_TYPE);
        // A query string is not part of the path.
        assert_eq!(body(route(&get, "/metrics?x=1", || Ok(String::new()))).0, 200);

        let never = || -> Result<String, String> { panic!("no scrape for this request") };
        let (status, text, _) = body(route(&get, "/", never));
        assert_eq!(status, 404);
        assert!(text.contains("/metrics"), "{text}");
        assert_eq!(body(route(&get, "/metrics/x", never)).0, 404);
        let (status, text, headers) = body(route(&tiny_http::Method::Post, "/metrics", never));
        assert_eq!(status, 405);
        assert!(text.contains("POST"), "{text}");
        assert!(headers.iter().any(|(k, v)| k == "Allow" && v == "GET"), "{headers:?}");

        let (status, text, _) =
            body(route(&get, "/metrics", || Err("unavailable: the database is gone".into())));
        assert_eq!(status, 503);
        assert_eq!(text, "error: unavailable: the database is gone\n");
    }

    #[test]
    fn an_unsupported_answer_names_both_versions() {
        let e = Error::new(
            ErrorKind::Unsupported,
            "this plugin (ABI 2.1.0) does not support maintenance op \"metrics\"",
        );
        let e = unsupported(e, "0.0.9", "2.1.0");
        assert_eq!(e.kind, ErrorKind::Unsupported);
        for part in [
            env!("CARGO_PKG_VERSION"),
            parallax_storage_abi::ABI_VERSION,
            "0.0.9",
            "2.1.0",
            "upgrade the plugin",
            "\"metrics\"",
        ] {
            assert!(e.message.contains(part), "{part}: {e}");
        }
        let other = Error::new(ErrorKind::Unavailable, "gone");
        assert_eq!(unsupported(other.clone(), "0.0.9", "2.1.0"), other);
    }

    #[test]
    fn bad_and_busy_addresses_are_named() {
        let e = bind("not-an-address").unwrap_err();
        assert_eq!(e.code, super::super::EXIT_USAGE);
        assert!(e.message.contains("\"not-an-address\"") && e.message.contains("HOST:PORT"), "{}", e.message);
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind(&addr).unwrap_err();
        assert_eq!(e.code, EXIT_OTHER);
        assert!(e.message.contains(&addr), "{}", e.message);
        assert!(bind("127.0.0.1:0").is_ok());
    }
}
