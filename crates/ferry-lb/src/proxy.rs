//! The reverse-proxy path of one request: route, forward with streamed bodies and forwarding
//! headers, retry what is safe to retry, and count the answer.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

use crate::client::{Connector, ExchangeError, Exchanged, UpRequest, UpstreamBody};
use crate::h1;
use crate::metrics::Metrics;
use crate::pool::{BackendState, Clock, InFlight, ListenerTable, TableSlot, Unrouted};

/// What every request handler needs, shared by all listeners.
pub(crate) struct Shared {
    pub connector: Connector,
    pub metrics: Metrics,
    pub clock: Clock,
    pub response_timeout: Duration,
    pub ejection_ms: u64,
    /// Label value used where no pool or group applies.
    pub none: Arc<str>,
}

/// `now + by`, or about 30 years on when that overflows (a timeout meant as "never").
pub(crate) fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// Per client connection: the listener's routing table, the peer, and what the connection
/// needs for its timeouts.
pub(crate) struct ConnContext {
    pub shared: Arc<Shared>,
    /// The listener's current table.
    pub slot: Arc<TableSlot>,
    /// The table (and its version) this connection last routed with; it may keep a replaced
    /// table alive until the connection's next request.
    pub table: Mutex<(u64, Arc<ListenerTable>)>,
    pub peer: IpAddr,
    /// The peer's address as an `X-Forwarded-For` value, built once per connection.
    pub peer_header: HeaderValue,
    /// The response-timeout timer, reused by the connection's requests (they come one at a
    /// time): moving a registered timer's deadline later is an atomic store, where a new timer
    /// per request costs an insertion into and a removal from the timer wheel.
    pub response_timer: Mutex<Option<Pin<Box<Sleep>>>>,
    /// Requests whose head has arrived and whose response has not ended (see [`OpenRequest`]).
    pub open_requests: AtomicU64,
    /// When the connection last began waiting for a request head, in [`Clock::now_ms`]: its
    /// start, or the end of its last response. The listener's header read timeout counts from it.
    pub idle_since_ms: AtomicU64,
}

/// One request of a client connection, from its head to the end of its response (or until
/// hyper drops it): the connection is not waiting for a request head meanwhile.
pub(crate) struct OpenRequest(Arc<ConnContext>);

impl OpenRequest {
    fn begin(ctx: Arc<ConnContext>) -> Self {
        ctx.open_requests.fetch_add(1, Ordering::Relaxed);
        OpenRequest(ctx)
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let ctx = &self.0;
        ctx.idle_since_ms
            .store(ctx.shared.clock.now_ms(), Ordering::Relaxed);
        ctx.open_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1, including those named by `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names present instead of a lookup per hop-by-hop name.
    if headers.keys().any(is_hop_by_hop) {
        remove_hop_by_hop(headers);
    }
}

/// [`strip_hop_by_hop`] once some hop-by-hop header is known to be present.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
    ] {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Response body sent to the client.
pub(crate) struct LbBody {
    kind: BodyKind,
    /// Ends the request for the connection's header read timeout once the body is done.
    _request: Option<OpenRequest>,
}

// Nearly every response is proxied, so the size is the proxied one anyway; boxing it would cost
// an allocation per request.
#[allow(clippy::large_enum_variant)]
enum BodyKind {
    /// A short answer made by the load balancer itself.
    Local(Option<Bytes>),
    /// The backend's body, streamed. The request stays in flight on the backend until it ends;
    /// then the connection goes back to the pool.
    Proxied {
        inner: UpstreamBody,
        _flight: InFlight,
    },
}

impl LbBody {
    fn new(kind: BodyKind) -> Self {
        LbBody {
            kind,
            _request: None,
        }
    }

    fn local(text: &'static str) -> Self {
        LbBody::new(BodyKind::Local(Some(Bytes::from_static(text.as_bytes()))))
    }
}

impl Body for LbBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.kind {
            BodyKind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyKind::Proxied { inner, .. } => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Local(data) => data.is_none(),
            BodyKind::Proxied { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Proxied { inner, .. } => inner.size_hint(),
        }
    }
}

fn local(status: StatusCode, text: &'static str, close: bool) -> Response<LbBody> {
    let mut response = Response::new(LbBody::local(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What went wrong with one attempt, and so whether it may be retried.
enum Failure {
    /// The TCP connect failed: nothing was sent.
    Connect,
    /// The connection failed before any response byte (for example a stale keep-alive).
    Transport,
    /// Writing the request failed before the backend could read it; the body is intact.
    Unsent,
    /// The backend answered nonsense: not retried.
    Final,
}

impl ConnContext {
    /// Awaits `future`, or gives up with `None` once the response timeout has passed.
    async fn within_response_timeout<F: Future>(&self, future: F) -> Option<F::Output> {
        let deadline = later(Instant::now(), self.shared.response_timeout);
        let mut timer = match self.response_timer.lock().take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let output = tokio::select! {
            biased;
            output = future => Some(output),
            () = timer.as_mut() => None,
        };
        *self.response_timer.lock() = Some(timer);
        output
    }

    /// Routes on the listener's current table (see [`TableSlot`] for the version checks).
    fn route(&self, path: &str, exclude: Option<&BackendState>) -> Result<InFlight, Unrouted> {
        let mut cached = self.table.lock();
        loop {
            if cached.0 != self.slot.version() {
                *cached = self.slot.current();
            }
            let routed = cached.1.route(&self.shared.clock, self.peer, path, exclude);
            if cached.0 == self.slot.version() {
                return routed;
            }
            // Replaced meanwhile: dropping `routed` ends its in-flight count; route again.
        }
    }

    /// Counts and makes the answer to a request that found no backend.
    fn unrouted(&self, unrouted: Unrouted) -> Response<LbBody> {
        let none = &self.shared.none;
        let (listener, pool, response) = match unrouted {
            Unrouted::Forbidden { listener } => (
                listener,
                none.clone(),
                local(StatusCode::FORBIDDEN, "forbidden\n", true),
            ),
            Unrouted::NoRoute { listener } => (
                listener,
                none.clone(),
                local(StatusCode::NOT_FOUND, "no route\n", false),
            ),
            Unrouted::NoBackend { listener, pool } => (
                listener,
                pool,
                local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy backend\n",
                    false,
                ),
            ),
        };
        self.shared
            .metrics
            .count(&listener, &pool, none, response.status().as_u16());
        response
    }

    /// Handles one client request; never fails (errors become 4xx/5xx answers).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<LbBody>, Infallible> {
        let open = OpenRequest::begin(self);
        let mut response = open.0.proxy(request).await;
        response.body_mut()._request = Some(open);
        Ok(response)
    }

    /// Routes and forwards one request, retrying what is safe to retry.
    async fn proxy(&self, request: Request<Incoming>) -> Response<LbBody> {
        let mut flight = match self.route(request.uri().path(), None) {
            Ok(flight) => flight,
            Err(unrouted) => return self.unrouted(unrouted),
        };

        let (mut parts, body) = request.into_parts();
        let had_body = !body.is_end_stream();
        // Only these may be sent again after the backend may have seen them.
        let replayable =
            !had_body && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        self.forwarding_headers(&mut parts.headers);
        // A body of unknown length (the client sent it chunked) goes on chunked.
        let chunked = had_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut body = had_body.then_some(body);
        let mut attempts = 0;
        let mut unsent_retries = 0;
        loop {
            let backend = &flight.backend;
            let failure = match self
                .shared
                .connector
                .checkout(backend.pool_key, backend.addr)
                .await
            {
                Err(error) => {
                    backend.mark_connect_failure(&self.shared.clock, self.shared.ejection_ms);
                    tracing::debug!(backend = %backend.addr, %error, "connect to backend failed");
                    Failure::Connect
                }
                Ok(mut conn) => {
                    let head = |out: &mut Vec<u8>| {
                        h1::encode_request_head(
                            out,
                            &parts.method,
                            target,
                            &parts.headers,
                            Some(backend.authority.as_str()),
                            chunked,
                        )
                    };
                    let exchange = conn.exchange(UpRequest {
                        method: &parts.method,
                        head: &head,
                        body: &mut body,
                        chunked,
                    });
                    match self.within_response_timeout(exchange).await {
                        Some(Ok(Exchanged { mut head, sending })) => {
                            flight.answered(head.status);
                            strip_hop_by_hop(&mut head.headers);
                            let inner = conn.into_body(&head, sending);
                            let mut response = Response::new(LbBody::new(BodyKind::Proxied {
                                inner,
                                _flight: flight,
                            }));
                            *response.status_mut() = head.status;
                            *response.headers_mut() = head.headers;
                            return response;
                        }
                        // The connection was already closed by the backend when it was reused.
                        Some(Err(ExchangeError::Unsent(error))) => {
                            tracing::debug!(backend = %backend.addr, %error, "request not sent");
                            Failure::Unsent
                        }
                        Some(Err(ExchangeError::Transport(error))) => {
                            backend.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(backend = %backend.addr, %error, reused = conn.reused(), "backend failed before its response");
                            Failure::Transport
                        }
                        Some(Err(ExchangeError::BadResponse(error))) => {
                            backend.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(backend = %backend.addr, %error, "backend sent an invalid response");
                            Failure::Final
                        }
                        Some(Err(ExchangeError::ClientBody(error))) => {
                            tracing::debug!(%error, "client request body failed");
                            flight.answered_locally(StatusCode::BAD_REQUEST);
                            drop(flight);
                            return local(StatusCode::BAD_REQUEST, "bad request body\n", true);
                        }
                        None => {
                            backend.failures.fetch_add(1, Ordering::Relaxed);
                            flight.answered_locally(StatusCode::GATEWAY_TIMEOUT);
                            drop(flight);
                            return local(
                                StatusCode::GATEWAY_TIMEOUT,
                                "backend timed out\n",
                                false,
                            );
                        }
                    }
                }
            };

            let next = match failure {
                // Nothing reached the backend: send it on another connection.
                Failure::Unsent if unsent_retries < 2 => {
                    unsent_retries += 1;
                    continue;
                }
                Failure::Unsent | Failure::Final => None,
                Failure::Connect | Failure::Transport => {
                    attempts += 1;
                    let resendable = match failure {
                        Failure::Transport => replayable,
                        _ => body.is_some() || !had_body,
                    };
                    if attempts < 2 && resendable {
                        match self.route(parts.uri.path(), Some(&**backend)) {
                            Ok(next) => Some(next),
                            // A broken keep-alive connection is worth one more try on the same backend.
                            _ if matches!(failure, Failure::Transport)
                                && backend.eligible(&self.shared.clock) =>
                            {
                                Some(backend.begin(flight.counters.clone()))
                            }
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
            };
            match next {
                // The failed attempt ends (recording nothing) as the next one starts.
                Some(next) => flight = next,
                None => {
                    flight.answered_locally(StatusCode::BAD_GATEWAY);
                    drop(flight);
                    return local(StatusCode::BAD_GATEWAY, "bad gateway\n", false);
                }
            }
        }
    }

    /// Strips hop-by-hop headers and sets `X-Forwarded-For`, `-Proto` and `-Host`.
    fn forwarding_headers(&self, headers: &mut HeaderMap) {
        // One pass over the (few) names present; a lookup only for those that are there.
        let (mut hop_by_hop, mut expect, mut forwarded) = (false, false, false);
        for name in headers.keys() {
            hop_by_hop |= is_hop_by_hop(name);
            expect |= name == header::EXPECT;
            forwarded |= name == X_FORWARDED_FOR;
        }
        if hop_by_hop {
            remove_hop_by_hop(headers);
        }
        if expect {
            headers.remove(header::EXPECT);
        }
        let previous = if forwarded {
            headers.get(&X_FORWARDED_FOR)
        } else {
            None
        };
        let forwarded_for = match previous {
            None => self.peer_header.clone(),
            Some(previous) => {
                let mut joined = Vec::with_capacity(previous.len() + 2 + self.peer_header.len());
                joined.extend_from_slice(previous.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(self.peer_header.as_bytes());
                HeaderValue::from_bytes(&joined).unwrap_or_else(|_| self.peer_header.clone())
            }
        };
        headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-kept"]);
    }
}
