//! The reverse-proxy path of one request: route, forward with streamed bodies and forwarding
//! headers, retry what is safe to retry, and count the answer.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use parking_lot::RwLock;

use crate::client::{Conn, Connector};
use crate::metrics::Metrics;
use crate::pool::{BackendState, Clock, InFlight, ListenerTable, Routed};

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

/// Per client connection: the listener's table slot and the peer.
pub(crate) struct ConnContext {
    pub shared: Arc<Shared>,
    pub table: Arc<RwLock<Arc<ListenerTable>>>,
    pub peer: IpAddr,
    /// The peer's address as an `X-Forwarded-For` value, built once per connection.
    pub peer_header: HeaderValue,
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
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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

/// Request body sent to a backend.
pub(crate) enum UpBody {
    /// No body (most GETs, health checks).
    Empty,
    /// The client's body, streamed.
    Stream(Incoming),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Stream(body) => body.size_hint(),
        }
    }
}

/// Response body sent to the client.
pub(crate) struct LbBody(BodyKind);

enum BodyKind {
    /// A short answer made by the load balancer itself.
    Local(Option<Bytes>),
    /// The backend's body, streamed. The request stays in flight on the backend until it ends;
    /// then the connection goes back to the pool.
    Proxied {
        inner: Incoming,
        conn: Option<Conn>,
        _flight: InFlight,
    },
}

impl LbBody {
    fn local(text: &'static str) -> Self {
        LbBody(BodyKind::Local(Some(Bytes::from_static(text.as_bytes()))))
    }
}

impl Body for LbBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.0 {
            BodyKind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyKind::Proxied { inner, conn, .. } => {
                let polled = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(None) = polled
                    && let Some(conn) = conn.take()
                {
                    conn.release();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Local(data) => data.is_none(),
            BodyKind::Proxied { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Proxied { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for LbBody {
    fn drop(&mut self) {
        // A body known to be empty (or fully read) is never polled to its end by the server.
        if let BodyKind::Proxied { inner, conn, .. } = &mut self.0
            && inner.is_end_stream()
            && let Some(conn) = conn.take()
        {
            conn.release();
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
    /// The connection closed before the request was written; it was handed back intact.
    Unsent,
}

impl ConnContext {
    fn route(&self, path: &str, exclude: Option<&BackendState>) -> (Arc<str>, Routed) {
        let table = self.table.read();
        (
            table.name.clone(),
            table.route(&self.shared.clock, self.peer, path, exclude),
        )
    }

    fn answer(
        &self,
        listener: &Arc<str>,
        pool: &Arc<str>,
        group: &Arc<str>,
        response: Response<LbBody>,
    ) -> Response<LbBody> {
        self.shared
            .metrics
            .count(listener, pool, group, response.status().as_u16());
        response
    }

    /// Handles one client request; never fails (errors become 4xx/5xx answers).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<LbBody>, Infallible> {
        let none = &self.shared.none;
        let (listener, routed) = self.route(request.uri().path(), None);
        let mut flight = match routed {
            Routed::Backend(flight) => flight,
            Routed::Forbidden => {
                return Ok(self.answer(
                    &listener,
                    none,
                    none,
                    local(StatusCode::FORBIDDEN, "forbidden\n", true),
                ));
            }
            Routed::NoRoute => {
                return Ok(self.answer(
                    &listener,
                    none,
                    none,
                    local(StatusCode::NOT_FOUND, "no route\n", false),
                ));
            }
            Routed::NoBackend(pool) => {
                return Ok(self.answer(
                    &listener,
                    &pool,
                    none,
                    local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy backend\n",
                        false,
                    ),
                ));
            }
        };

        let (mut parts, body) = request.into_parts();
        let had_body = !body.is_end_stream();
        // Only these may be sent again after the backend may have seen them.
        let replayable =
            !had_body && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        self.forwarding_headers(&mut parts.headers);
        let path_and_query = parts.uri.path_and_query().cloned();
        let uri = path_and_query
            .clone()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        let mut body = had_body.then_some(body);
        // A request handed back by a connection that closed before sending it.
        let mut unsent: Option<Request<UpBody>> = None;
        let mut attempts = 0;
        let mut unsent_retries = 0;
        loop {
            let backend = flight.backend.clone();
            let (pool, group) = (&backend.group.pool, &backend.group.group);
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
                    let up = match unsent.take() {
                        Some(up) => up,
                        None => {
                            let mut up = Request::new(match body.take() {
                                Some(body) => UpBody::Stream(body),
                                None => UpBody::Empty,
                            });
                            *up.method_mut() = parts.method.clone();
                            *up.uri_mut() = uri.clone();
                            *up.headers_mut() = if replayable {
                                parts.headers.clone()
                            } else {
                                std::mem::take(&mut parts.headers)
                            };
                            if !up.headers().contains_key(header::HOST)
                                && let Ok(host) = HeaderValue::from_str(backend.authority.as_str())
                            {
                                up.headers_mut().insert(header::HOST, host);
                            }
                            up
                        }
                    };
                    let sent = tokio::time::timeout(
                        self.shared.response_timeout,
                        conn.sender.try_send_request(up),
                    )
                    .await;
                    match sent {
                        Ok(Ok(mut response)) => {
                            flight.answered();
                            strip_hop_by_hop(response.headers_mut());
                            let (rparts, rbody) = response.into_parts();
                            let body = LbBody(BodyKind::Proxied {
                                inner: rbody,
                                conn: Some(conn),
                                _flight: flight,
                            });
                            return Ok(self.answer(
                                &listener,
                                pool,
                                group,
                                Response::from_parts(rparts, body),
                            ));
                        }
                        Ok(Err(mut error)) => match error.take_message() {
                            Some(up) => {
                                unsent = Some(up);
                                Failure::Unsent
                            }
                            None => {
                                backend.failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(backend = %backend.addr, error = %error.into_error(), "backend failed before its response");
                                Failure::Transport
                            }
                        },
                        Err(_elapsed) => {
                            backend.failures.fetch_add(1, Ordering::Relaxed);
                            drop(flight);
                            let answer =
                                local(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n", false);
                            return Ok(self.answer(&listener, pool, group, answer));
                        }
                    }
                }
            };

            let next = match failure {
                // The connection closed before the request left: send it on another connection.
                Failure::Unsent if unsent_retries < 2 => {
                    unsent_retries += 1;
                    continue;
                }
                Failure::Unsent => None,
                Failure::Connect | Failure::Transport => {
                    attempts += 1;
                    let resendable = match failure {
                        Failure::Transport => replayable,
                        _ => body.is_some() || !had_body || unsent.is_some(),
                    };
                    if attempts < 2 && resendable {
                        let path = path_and_query.as_ref().map_or("/", |p| p.path());
                        match self.route(path, Some(&backend)).1 {
                            Routed::Backend(next) => Some(next),
                            // A broken keep-alive connection is worth one more try on the same backend.
                            _ if matches!(failure, Failure::Transport)
                                && backend.eligible(&self.shared.clock) =>
                            {
                                Some(backend.begin())
                            }
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
            };
            drop(flight);
            match next {
                Some(next) => flight = next,
                None => {
                    let answer = local(StatusCode::BAD_GATEWAY, "bad gateway\n", false);
                    return Ok(self.answer(&listener, pool, group, answer));
                }
            }
        }
    }

    /// Strips hop-by-hop headers and sets `X-Forwarded-For`, `-Proto` and `-Host`.
    fn forwarding_headers(&self, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers);
        headers.remove(header::EXPECT);
        let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
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
