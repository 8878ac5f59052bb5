//! Keep-alive HTTP/1.1 connections to backends.
//!
//! Each thread keeps its own stack of idle connections per backend (no lock, no cross-thread
//! wake-up on the hot path): a request checks one out, and it goes back when the response body
//! has been read to the end. Connecting happens before the request is built, so a failed connect
//! never consumes the request and can be retried elsewhere.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::UpBody;

/// Hands out unique pool keys, one per backend state object.
static NEXT_POOL_KEY: AtomicU64 = AtomicU64::new(1);

pub(crate) fn new_pool_key() -> u64 {
    NEXT_POOL_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Pool keys are small unique integers: hashing them with SipHash would be wasted work.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

struct Idle {
    sender: SendRequest<UpBody>,
    since: Instant,
}

/// One thread's idle connections, by backend pool key.
#[derive(Default)]
struct IdlePool {
    stacks: HashMap<u64, Vec<Idle>, BuildHasherDefault<KeyHasher>>,
    /// Releases since the last sweep.
    releases: u32,
}

/// Every this many releases, idle connections that closed or expired are dropped, including
/// those of backends that are gone and so never checked out again.
const SWEEP_EVERY: u32 = 4096;

impl IdlePool {
    fn sweep(&mut self, idle_timeout: Duration) {
        self.releases = 0;
        self.stacks.retain(|_, stack| {
            stack.retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() <= idle_timeout);
            !stack.is_empty()
        });
    }
}

thread_local! {
    static IDLE: RefCell<IdlePool> = RefCell::default();
}

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// TCP connect refused, unreachable or failed.
    Io(std::io::Error),
    /// TCP connect took longer than the connect timeout.
    Timeout,
    /// The HTTP/1 handshake failed.
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Timeout => write!(f, "connect timed out"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

/// Opens and pools backend connections.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub max_response_head: usize,
}

/// A connection checked out for one request.
pub(crate) struct Conn {
    pub sender: SendRequest<UpBody>,
    key: u64,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Connector {
    /// An idle connection to the backend if one is alive, otherwise a new one.
    pub async fn checkout(&self, key: u64, addr: SocketAddr) -> Result<Conn, ConnectError> {
        while let Some(mut idle) = self.pop_idle(key) {
            if idle.sender.is_closed() || idle.since.elapsed() > self.idle_timeout {
                continue;
            }
            if idle.sender.is_ready() {
                return Ok(self.conn(idle.sender, key));
            }
            // A connection goes back to the pool as soon as its response body ended; its
            // dispatcher may need a moment to be ready for the next request. One that stays
            // unready is dropped rather than waited on.
            if let Ok(Ok(())) =
                tokio::time::timeout(self.connect_timeout, idle.sender.ready()).await
            {
                return Ok(self.conn(idle.sender, key));
            }
        }
        self.connect(key, addr).await
    }

    fn pop_idle(&self, key: u64) -> Option<Idle> {
        IDLE.try_with(|idle| {
            let mut idle = idle.try_borrow_mut().ok()?;
            let stack = idle.stacks.get_mut(&key)?;
            let conn = stack.pop();
            if stack.is_empty() {
                idle.stacks.remove(&key);
            }
            conn
        })
        .ok()
        .flatten()
    }

    /// A new connection, not pooled yet.
    pub async fn connect(&self, key: u64, addr: SocketAddr) -> Result<Conn, ConnectError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(ConnectError::Io(error)),
                Err(_) => return Err(ConnectError::Timeout),
            };
        let _ = stream.set_nodelay(true);
        let mut builder = Builder::new();
        // Flattened writes (`send`) rather than `writev`, as on the client side (see listener.rs).
        builder
            .writev(false)
            .max_buf_size(self.max_response_head.max(8192));
        let (sender, connection) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "backend connection ended with an error");
            }
        });
        Ok(self.conn(sender, key))
    }

    fn conn(&self, sender: SendRequest<UpBody>, key: u64) -> Conn {
        Conn {
            sender,
            key,
            max_idle: self.max_idle,
            idle_timeout: self.idle_timeout,
        }
    }
}

impl Conn {
    /// Puts the connection back in this thread's pool (its response has been read to the end).
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let Conn {
            sender,
            key,
            max_idle,
            idle_timeout,
        } = self;
        // Dropped instead of pooled when the pool is full or the thread is exiting.
        let _ = IDLE.try_with(|idle| {
            if let Ok(mut idle) = idle.try_borrow_mut() {
                idle.releases += 1;
                if idle.releases >= SWEEP_EVERY {
                    idle.sweep(idle_timeout);
                }
                let stack = idle.stacks.entry(key).or_default();
                if stack.len() < max_idle {
                    stack.push(Idle {
                        sender,
                        since: Instant::now(),
                    });
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;

    /// A keep-alive HTTP server counting the connections it accepted.
    async fn counting_server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }),
                ));
            }
        });
        (addr, accepted)
    }

    fn connector(idle_timeout: Duration) -> Connector {
        Connector {
            connect_timeout: Duration::from_secs(1),
            idle_timeout,
            max_idle: 4,
            max_response_head: 64 * 1024,
        }
    }

    async fn get_once(connector: &Connector, key: u64, addr: SocketAddr) {
        let mut conn = connector.checkout(key, addr).await.unwrap();
        let mut request = http::Request::new(UpBody::Empty);
        *request.uri_mut() = http::Uri::from_static("/");
        let response = conn.sender.send_request(request).await.unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "ok"
        );
        conn.release();
    }

    #[tokio::test]
    async fn released_connections_are_reused_and_expired_ones_are_not() {
        let (addr, accepted) = counting_server().await;
        let key = new_pool_key();
        let pooled = connector(Duration::from_secs(60));
        for _ in 0..3 {
            get_once(&pooled, key, addr).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        let expired = connector(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(5)).await;
        get_once(&expired, key, addr).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connect_is_reported_before_any_request_exists() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match connector(Duration::from_secs(60))
            .checkout(new_pool_key(), dead)
            .await
        {
            Err(ConnectError::Io(error)) => {
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
