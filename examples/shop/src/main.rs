//! `shop-service`: one section of the example shopping app.
//!
//! Configured by environment (the host provider sets `PORT`):
//! - `PORT` (required): where to listen, on 127.0.0.1 unless `BIND` says otherwise;
//! - `SECTION`: `home`, `kids` or `mens` (default `home`);
//! - `VERSION`: reported by `/version` and in a header (default `1.0.0`);
//! - `FAILURE_RATE`: share of requests (0.0–1.0) answered with 500, to deploy a bad version on
//!   purpose; `LATENCY_MS`: delay added to every request; `FERRY_INSTANCE`: the instance name.
//!
//! `shop-service --self-test` runs its own checks and prints `key=value` lines.
//!
//! `GET /health` answers 200 `ok` (it does not fail or slow down, so a bad version still passes
//! readiness and only its metrics give it away); every other path answers
//! `Welcome to shoppingapp — Kids section — <instance>`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Config {
    health_fails: bool,
    section: String,
    version: String,
    instance: String,
    failure_rate: f64,
    latency: Duration,
}

fn title(section: &str) -> String {
    let mut c = section.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A deterministic spread of failures: request n fails when the fractional part of
/// n × rate crosses an integer, so 10 % means exactly one request in ten.
fn fails(n: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let a = (n as f64 * rate).floor();
    let b = ((n + 1) as f64 * rate).floor();
    b > a
}

async fn handle(
    req: Request<Incoming>,
    cfg: Arc<Config>,
    counter: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let mut res = if path == "/health" && cfg.health_fails {
        let mut r = Response::new(Full::new(Bytes::from_static(b"unhealthy on purpose")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else if path == "/health" {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    } else if path == "/version" {
        Response::new(Full::new(Bytes::from(cfg.version.clone())))
    } else {
        if !cfg.latency.is_zero() {
            tokio::time::sleep(cfg.latency).await;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if fails(n, cfg.failure_rate) {
            let mut r = Response::new(Full::new(Bytes::from("injected failure\n")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        } else {
            let body = format!(
                "Welcome to shoppingapp — {} section — {}\n",
                title(&cfg.section),
                cfg.instance
            );
            Response::new(Full::new(Bytes::from(body)))
        }
    };
    if let Ok(v) = cfg.version.parse() {
        res.headers_mut().insert("x-shop-version", v);
    }
    Ok(res)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `--self-test`: checks the pieces that do not need a socket and prints `key=value` lines.
fn self_test() -> bool {
    let ok = (0..1000).filter(|&n| fails(n, 0.1)).count() == 100 && title("kids") == "Kids";
    println!("selfTest={}", if ok { "passed" } else { "failed" });
    println!("sections=home,kids,mens");
    println!("binaryVersion={}", env!("CARGO_PKG_VERSION"));
    ok
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--self-test") {
        std::process::exit(if self_test() { 0 } else { 1 });
    }
    let port: u16 = match env("PORT").and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("shop-service: set PORT to the port to listen on");
            std::process::exit(2);
        }
    };
    let section = env("SECTION").unwrap_or_else(|| "home".into());
    let cfg = Arc::new(Config {
        health_fails: env("HEALTH_FAIL").is_some_and(|v| v == "1" || v == "true"),
        instance: env("FERRY_INSTANCE").unwrap_or_else(|| format!("{section}-{port}")),
        section,
        version: env("VERSION").unwrap_or_else(|| "1.0.0".into()),
        failure_rate: env("FAILURE_RATE")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0_f64)
            .clamp(0.0, 1.0),
        latency: Duration::from_millis(env("LATENCY_MS").and_then(|v| v.parse().ok()).unwrap_or(0)),
    });
    let bind = env("BIND").unwrap_or_else(|| "127.0.0.1".into());
    let addr: SocketAddr = match format!("{bind}:{port}").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shop-service: bad BIND/PORT: {e}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shop-service: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "shop-service {} {} listening on {addr}",
        cfg.section, cfg.version
    );
    let counter = Arc::new(AtomicU64::new(0));
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shop-service: cannot watch SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                println!("shop-service: SIGTERM, stopping");
                return;
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let cfg = cfg.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, cfg.clone(), counter.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate_is_exact_over_a_window() {
        let failed = (0..1000).filter(|&n| fails(n, 0.1)).count();
        assert_eq!(failed, 100);
        assert_eq!((0..1000).filter(|&n| fails(n, 0.0)).count(), 0);
        assert_eq!((0..1000).filter(|&n| fails(n, 1.0)).count(), 1000);
    }

    #[test]
    fn titles() {
        assert_eq!(title("kids"), "Kids");
        assert_eq!(title(""), "");
    }
}
