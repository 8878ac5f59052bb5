//! Keep-alive HTTP/1.1 connections to backends, and one request's exchange on one of them.
//!
//! The exchange runs on the task of the client request that needs it: it writes the request head
//! (and streams the body), reads the response head into the connection's own buffer, and the
//! response body is read from that buffer and socket as the client side asks for it
//! ([`UpstreamBody`]). No task per backend connection, no channel between the two sides.
//!
//! Each thread keeps its own stack of idle connections per backend (no lock, no cross-thread
//! wake-up on the hot path): a request checks one out, and it goes back when the response body
//! has been read to the end. Connecting happens before the request is written, so a failed
//! connect never consumes the request and can be retried elsewhere.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Method;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::net::TcpStream;

use crate::h1::{self, ChunkedDecoder, Decoded, Framing, HeadError, ResponseHead};

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

/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// One backend connection with its buffers, which it keeps while pooled.
pub(crate) struct Upstream {
    stream: TcpStream,
    /// Bytes read and not consumed yet; response heads and bodies are split off it.
    read: BytesMut,
    /// The request head being written.
    write: Vec<u8>,
    /// Whether the connection carried a request before this one.
    reused: bool,
}

impl Upstream {
    fn new(stream: TcpStream) -> Self {
        Upstream {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
            reused: false,
        }
    }

    /// Whether a pooled connection can carry another request: nothing unread is buffered and
    /// the backend has not closed it (or sent something unasked) while it sat idle.
    fn is_reusable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Reads what the socket has into `read`; `Ok(0)` at end of stream.
fn poll_fill(
    stream: &TcpStream,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < READ_CHUNK / 4 {
        read.reserve(READ_CHUNK);
    }
    loop {
        match stream.try_read_buf(read) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(stream.poll_read_ready(cx))?;
            }
            result => return Poll::Ready(result),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Idle {
    conn: Upstream,
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
            stack.retain(|idle| idle.since.elapsed() <= idle_timeout && idle.conn.is_reusable());
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
    Io(io::Error),
    /// TCP connect took longer than the connect timeout.
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Timeout => write!(f, "connect timed out"),
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
    upstream: Upstream,
    key: u64,
    max_idle: usize,
    idle_timeout: Duration,
    max_head: usize,
}

/// Why an exchange failed, which decides whether the request may be sent again.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Writing the request head failed: the request body was not touched, and a backend that
    /// reset the connection did not read the request.
    Unsent(io::Error),
    /// The connection failed after the request (or part of it) was written and before a
    /// complete response head arrived.
    Transport(io::Error),
    /// The backend answered something that is not an HTTP/1.1 response head.
    BadResponse(HeadError),
    /// The client's request body failed (the client went away or sent a malformed body).
    ClientBody(hyper::Error),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Unsent(e) => write!(f, "request not sent: {e}"),
            ExchangeError::Transport(e) => write!(f, "connection failed: {e}"),
            ExchangeError::BadResponse(e) => write!(f, "bad response: {e}"),
            ExchangeError::ClientBody(e) => write!(f, "client request body failed: {e}"),
        }
    }
}

/// A request ready to be written: its head, and the client's body if it has one.
pub(crate) struct UpRequest<'a> {
    pub method: &'a Method,
    /// Writes the request head into the buffer.
    pub head: &'a (dyn Fn(&mut Vec<u8>) + Sync),
    /// Taken when the head has been written; left in place when the exchange fails before.
    pub body: &'a mut Option<Incoming>,
    /// Whether the body goes chunked (the client did not give a `Content-Length`).
    pub chunked: bool,
}

impl Connector {
    /// An idle connection to the backend if one is alive, otherwise a new one.
    pub async fn checkout(&self, key: u64, addr: SocketAddr) -> Result<Conn, ConnectError> {
        while let Some(idle) = self.pop_idle(key) {
            if idle.since.elapsed() <= self.idle_timeout && idle.conn.is_reusable() {
                let mut conn = self.conn(idle.conn, key);
                conn.upstream.reused = true;
                return Ok(conn);
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
        Ok(self.conn(Upstream::new(stream), key))
    }

    fn conn(&self, upstream: Upstream, key: u64) -> Conn {
        Conn {
            upstream,
            key,
            max_idle: self.max_idle,
            idle_timeout: self.idle_timeout,
            max_head: self.max_response_head,
        }
    }
}

impl Conn {
    /// Whether the connection carried a request before this one (a failure on it may be a
    /// keep-alive connection the backend closed just as it was reused).
    pub fn reused(&self) -> bool {
        self.upstream.reused
    }

    /// Sends the request and reads the response head. A request body is streamed while the
    /// head is awaited; a response that starts before the body has all been sent (an echo, or an
    /// early 413) leaves the rest of the body to be sent while the response body is read.
    pub async fn exchange(&mut self, request: UpRequest<'_>) -> Result<Exchanged, ExchangeError> {
        let Upstream {
            stream,
            read,
            write,
            ..
        } = &mut self.upstream;
        let stream = &*stream;
        write.clear();
        (request.head)(write);
        write_all(stream, write)
            .await
            .map_err(ExchangeError::Unsent)?;
        let method = request.method;
        let max_head = self.max_head;
        let mut sending = request
            .body
            .take()
            .map(|body| SendBody::new(body, request.chunked));
        let mut backend_stopped_reading = false;
        let mut head = poll_fn(|cx| {
            if let Some(send) = sending.as_mut() {
                match send.poll_send(stream, cx) {
                    Poll::Ready(Ok(())) => sending = None,
                    Poll::Ready(Err(SendError::Client(error))) => {
                        return Poll::Ready(Err(ExchangeError::ClientBody(error)));
                    }
                    // The backend stopped reading: it may still answer (with an error status);
                    // if it does not, reading the head fails.
                    Poll::Ready(Err(SendError::Backend(error))) => {
                        tracing::debug!(%error, "backend stopped reading the request body");
                        sending = None;
                        backend_stopped_reading = true;
                    }
                    Poll::Pending => {}
                }
            }
            poll_head(stream, read, method, max_head, cx)
        })
        .await?;
        if backend_stopped_reading {
            head.keep_alive = false;
        }
        Ok(Exchanged { head, sending })
    }

    /// The response body, read from this connection, which goes back to the pool at its end;
    /// it also sends what is left of the request body.
    pub fn into_body(self, head: &ResponseHead, sending: Option<SendBody>) -> UpstreamBody {
        UpstreamBody {
            sending,
            state: match head.framing {
                Framing::Empty => BodyState::Length(0),
                Framing::Length(n) => BodyState::Length(n),
                Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
                Framing::UntilClose => BodyState::UntilClose,
            },
            keep_alive: head.keep_alive,
            conn: Some(self),
        }
    }

    /// Puts the connection back in this thread's pool (its response has been read to the end).
    fn release(self) {
        let Conn {
            mut upstream,
            key,
            max_idle,
            idle_timeout,
            ..
        } = self;
        upstream.reused = false;
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
                        conn: upstream,
                        since: Instant::now(),
                    });
                }
            }
        });
    }
}

/// A response head, and the rest of the request body if the response started before it was
/// all sent.
pub(crate) struct Exchanged {
    pub head: ResponseHead,
    pub sending: Option<SendBody>,
}

enum SendError {
    Client(hyper::Error),
    Backend(io::Error),
}

/// The client's request body on its way to the backend, chunk-framed when `chunked`.
pub(crate) struct SendBody {
    body: Incoming,
    chunked: bool,
    /// Bytes taken from the body (framed) and not all written yet.
    out: Bytes,
    /// The body has ended and its last bytes are in `out`.
    ended: bool,
}

impl SendBody {
    fn new(body: Incoming, chunked: bool) -> Self {
        SendBody {
            body,
            chunked,
            out: Bytes::new(),
            ended: false,
        }
    }

    /// Writes what the client has sent so far; ready once the whole body has been written.
    fn poll_send(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            if !self.out.is_empty() {
                match stream.try_write(&self.out) {
                    Ok(n) => {
                        let _ = self.out.split_to(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(stream.poll_write_ready(cx)).map_err(SendError::Backend)?;
                    }
                    Err(e) => return Poll::Ready(Err(SendError::Backend(e))),
                }
                continue;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.out = Bytes::from_static(h1::LAST_CHUNK);
                    }
                }
                Some(Err(error)) => return Poll::Ready(Err(SendError::Client(error))),
                Some(Ok(frame)) => {
                    // Trailers are not forwarded.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.out = if self.chunked {
                            let mut framed = Vec::with_capacity(data.len() + 20);
                            h1::encode_chunk(&mut framed, &data);
                            framed.into()
                        } else {
                            data
                        };
                    }
                }
            }
        }
    }
}

/// Reads until a whole response head is in `read`, and parses it.
fn poll_head(
    stream: &TcpStream,
    read: &mut BytesMut,
    method: &Method,
    max_head: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, ExchangeError>> {
    loop {
        if !read.is_empty()
            && let Some(head) = h1::parse_response_head(read, method, max_head)
                .map_err(ExchangeError::BadResponse)?
        {
            return Poll::Ready(Ok(head));
        }
        let n = ready!(poll_fill(stream, read, cx)).map_err(ExchangeError::Transport)?;
        if n == 0 {
            return Poll::Ready(Err(ExchangeError::Transport(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if read.is_empty() {
                    "closed before responding"
                } else {
                    "closed in the middle of the response head"
                },
            ))));
        }
    }
}

enum BodyState {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// A backend response body, read straight from the backend connection.
pub(crate) struct UpstreamBody {
    /// What is left of the request body to send, if the response started before it was sent.
    sending: Option<SendBody>,
    state: BodyState,
    keep_alive: bool,
    /// `None` once the body has ended (the connection went back to the pool or was closed).
    conn: Option<Conn>,
}

impl UpstreamBody {
    fn complete(&self) -> bool {
        match &self.state {
            BodyState::Length(n) => *n == 0,
            BodyState::Chunked(decoder) => decoder.is_done(),
            BodyState::UntilClose => false,
        }
    }

    /// The body ended: the connection goes back to the pool if it can carry another request.
    fn finish(&mut self) {
        // A request body not sent whole leaves the connection in the middle of a request.
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.sending.is_none()
            && conn.upstream.read.is_empty()
        {
            conn.release();
        }
    }

    /// The next piece of the body, `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let (Some(send), Some(conn)) = (self.sending.as_mut(), self.conn.as_ref()) {
            match send.poll_send(&conn.upstream.stream, cx) {
                Poll::Ready(Ok(())) => self.sending = None,
                Poll::Ready(Err(SendError::Client(error))) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(io::Error::other(error))));
                }
                Poll::Ready(Err(SendError::Backend(error))) => {
                    tracing::debug!(%error, "backend stopped reading the request body");
                    self.sending = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let read = &mut conn.upstream.read;
            match &mut self.state {
                BodyState::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                BodyState::Length(remaining) if !read.is_empty() => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(read.len());
                    let data = read.split_to(n).freeze();
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        // Back to the pool at once, not when the client side polls again.
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::Chunked(decoder) if !read.is_empty() => match decoder.decode(read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::Done) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            error,
                        ))));
                    }
                },
                BodyState::UntilClose if !read.is_empty() => {
                    let data = read.split().freeze();
                    return Poll::Ready(Some(Ok(data)));
                }
                _ => {}
            }
            let conn = self.conn.as_mut().map(|c| &mut c.upstream);
            let Some(Upstream { stream, read, .. }) = conn else {
                return Poll::Ready(None);
            };
            match ready!(poll_fill(stream, read, cx)) {
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(match self.state {
                        BodyState::UntilClose => None,
                        _ => Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "backend closed the connection in the middle of the body",
                        ))),
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.poll_data(cx)
            .map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.complete()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.state, &self.conn) {
            (_, None) => SizeHint::with_exact(0),
            (BodyState::Length(n), _) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body known to be empty (or fully read) may never be polled to its end; one dropped
        // half-read leaves its connection mid-response, so it closes.
        if self.complete() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
                            Bytes::from_static(b"ok"),
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

    fn get_head(out: &mut Vec<u8>) {
        out.extend_from_slice(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n");
    }

    /// Sends `GET /` on `conn` and reads the response head.
    async fn exchange_get(conn: &mut Conn) -> Exchanged {
        conn.exchange(UpRequest {
            method: &Method::GET,
            head: &get_head,
            body: &mut None,
            chunked: false,
        })
        .await
        .unwrap()
    }

    async fn get(connector: &Connector, key: u64, addr: SocketAddr) -> (bool, Vec<u8>) {
        let mut conn = connector.checkout(key, addr).await.unwrap();
        let reused = conn.reused();
        let Exchanged { head, sending } = exchange_get(&mut conn).await;
        assert_eq!(head.status, http::StatusCode::OK);
        let body = conn
            .into_body(&head, sending)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        (reused, body.to_vec())
    }

    #[tokio::test]
    async fn released_connections_are_reused_and_expired_ones_are_not() {
        let (addr, accepted) = counting_server().await;
        let key = new_pool_key();
        let pooled = connector(Duration::from_secs(60));
        let mut reuses = Vec::new();
        for _ in 0..3 {
            let (reused, body) = get(&pooled, key, addr).await;
            assert_eq!(body, b"ok");
            reuses.push(reused);
        }
        assert_eq!(reuses, [false, true, true]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        let expired = connector(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (reused, _) = get(&expired, key, addr).await;
        assert!(!reused);
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
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused)
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }

    /// A backend that answers each connection's requests with the scripted bytes, one script
    /// per request, then closes when the scripts run out.
    async fn scripted(scripts: Vec<&'static [u8]>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            for script in scripts {
                let _ = stream.read(&mut buf).await.unwrap();
                stream.write_all(script).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_connection_that_the_backend_closed_while_idle_is_not_reused() {
        let addr = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]).await;
        let pooled = connector(Duration::from_secs(60));
        let key = new_pool_key();
        let (reused, body) = get(&pooled, key, addr).await;
        assert_eq!((reused, body.as_slice()), (false, &b"ok"[..]));
        // The script ran out: the backend closed. The pooled connection is seen to be closed
        // at checkout, so a new one is opened (and refused, as the listener is gone).
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            pooled.checkout(key, addr).await,
            Err(ConnectError::Io(_))
        ));
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_bodies_are_read_whole() {
        let addr = scripted(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ])
        .await;
        let pooled = connector(Duration::from_secs(60));
        let key = new_pool_key();
        let (reused, body) = get(&pooled, key, addr).await;
        assert_eq!((reused, body.as_slice()), (false, &b"abcde"[..]));
        let (reused, body) = get(&pooled, key, addr).await;
        assert_eq!((reused, body.as_slice()), (true, &b"until the end"[..]));
    }

    /// Answers the first request on a connection with its own body, starting the response as
    /// soon as the request head is in, before reading the body (as an echo server does).
    async fn early_echo(len: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                reader.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            writer
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            tokio::io::copy(&mut reader.take(len as u64), &mut writer)
                .await
                .unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn a_request_body_keeps_flowing_while_an_early_response_streams_back() {
        // Far more than the socket buffers hold: the response must start before the request
        // body has been sent, and finish only if the body keeps being sent meanwhile.
        const LEN: usize = 16 * 1024 * 1024;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        let backend = early_echo(LEN).await;
        // A real client body (`Incoming`) only comes from a hyper server: relay one.
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service =
                hyper::service::service_fn(move |request: hyper::Request<Incoming>| async move {
                    let connector = connector(Duration::from_secs(60));
                    let mut conn = connector.checkout(new_pool_key(), backend).await.unwrap();
                    let mut body = Some(request.into_body());
                    // Sent as is (not chunked): the backend echoes the bytes it reads.
                    let mut headers = http::HeaderMap::new();
                    headers.insert(http::header::CONTENT_LENGTH, LEN.into());
                    let head = |out: &mut Vec<u8>| {
                        h1::encode_request_head(
                            out,
                            &Method::POST,
                            "/",
                            &headers,
                            Some("test"),
                            false,
                        )
                    };
                    let Exchanged { head, sending } = conn
                        .exchange(UpRequest {
                            method: &Method::POST,
                            head: &head,
                            body: &mut body,
                            chunked: false,
                        })
                        .await
                        .unwrap();
                    assert!(
                        sending.is_some(),
                        "the response started after the whole body was sent"
                    );
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        conn.into_body(&head, sending),
                    ))
                });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .unwrap();
        });
        let sent: Bytes = (0..LEN)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>()
            .into();
        let stream = TcpStream::connect(front).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post("/")
            .body(Full::new(sent.clone()))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), async {
            let response = sender.send_request(request).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        })
        .await
        .expect("deadlocked: the request body stopped when the response began");
        assert_eq!(response.len(), LEN);
        assert!(response == sent);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let addr = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
        let pooled = connector(Duration::from_secs(60));
        let mut conn = pooled.checkout(new_pool_key(), addr).await.unwrap();
        let Exchanged { head, sending } = exchange_get(&mut conn).await;
        let error = conn.into_body(&head, sending).collect().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
