//! The readiness probe: one HTTP/1.1 `GET <path>` to the instance's own port on 127.0.0.1 over a
//! plain TCP connection, closed after the status line. A 2xx or 3xx status within the timeout
//! passes (the same rule as the load balancer's active checks); anything else fails. Only the
//! loopback address is ever contacted.

use ferry_provider::HealthCheck;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line read.
const MAX_STATUS_LINE: usize = 1024;

/// Problems with a health check, each with its field path.
pub(crate) fn validate(check: &HealthCheck) -> Vec<String> {
    let mut problems = Vec::new();
    if !check.path.starts_with('/')
        || !check
            .path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'#')
    {
        problems.push(format!(
            "healthCheck.path: \"{}\" must start with '/' and hold only visible ASCII characters",
            check.path
        ));
    }
    if check.interval_ms == 0 {
        problems.push("healthCheck.intervalMs: must be at least 1".into());
    }
    if check.timeout_ms == 0 {
        problems.push("healthCheck.timeoutMs: must be at least 1".into());
    }
    if check.healthy_threshold == 0 {
        problems.push("healthCheck.healthyThreshold: must be at least 1".into());
    }
    if check.unhealthy_threshold == 0 {
        problems.push("healthCheck.unhealthyThreshold: must be at least 1".into());
    }
    problems
}

/// One probe of `127.0.0.1:<port><path>`: true for a 2xx or 3xx status within `timeout`.
pub(crate) async fn probe(port: u16, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, probe_inner(port, path))
        .await
        .unwrap_or(false)
}

async fn probe_inner(port: u16, path: &str) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ferry-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    status_passes(&head)
}

/// Whether a response head starts with a passing status line (`HTTP/1.x 2xx|3xx`).
fn status_passes(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = line.split_whitespace();
    let version_ok = parts.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    version_ok && status.is_some_and(|s| (200..400).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert!(status_passes(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_passes(b"HTTP/1.0 302 Found\r\nLocation: /"));
        assert!(!status_passes(b"HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(!status_passes(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!status_passes(b"SSH-2.0-OpenSSH\r\n"));
        assert!(!status_passes(b""));
    }

    #[test]
    fn checks_are_validated() {
        assert!(validate(&HealthCheck::default()).is_empty());
        let bad = HealthCheck {
            path: "health check".into(),
            interval_ms: 0,
            timeout_ms: 0,
            healthy_threshold: 0,
            unhealthy_threshold: 0,
        };
        assert_eq!(validate(&bad).len(), 5);
    }

    #[tokio::test]
    async fn probes_answer_by_status() {
        async fn serve(answer: &'static str) -> u16 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            });
            port
        }
        let ok = serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let bad = serve("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let t = Duration::from_secs(2);
        assert!(probe(ok, "/health", t).await);
        assert!(!probe(bad, "/health", t).await);
        // Nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!probe(port, "/health", t).await);
        // A server that never answers times out.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        assert!(!probe(port, "/health", Duration::from_millis(200)).await);
        drop(silent);
    }
}
