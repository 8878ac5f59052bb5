//! Listening sockets: binding, the accept loop with its connection limit, serving HTTP/1.1 with
//! keep-alive, and the graceful close of a removed listener.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, Sleep};

use crate::config::LbSettings;
use crate::pool::{ListenerTable, TableSlot};
use crate::proxy::{ConnContext, Shared, later};
use crate::workers::{WorkerSet, Workers};

/// Binds `addr` with `SO_REUSEADDR` (so a restarted Ferry can rebind while old connections sit
/// in TIME_WAIT) and a deep accept backlog. A port in use by anyone fails here.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)?.into_std()
}

/// A running listener.
pub(crate) struct ListenerHandle {
    /// The address asked for (may have port 0).
    pub bind: SocketAddr,
    /// The address actually bound.
    pub local: SocketAddr,
    /// The routing table; replaced by every apply.
    pub table: Arc<TableSlot>,
    /// Free connection slots; `max - available` connections are open.
    pub slots: Arc<Semaphore>,
    pub max_connections: usize,
    /// Sending (or dropping) stops accepting and drains the connections.
    stop: watch::Sender<bool>,
    /// The accept loop; it ends once the listener is closed and drained.
    pub task: JoinHandle<()>,
}

impl ListenerHandle {
    /// Starts accepting on `socket` (from [`bind`]); connections are served by the workers.
    pub fn start(
        socket: std::net::TcpListener,
        bind: SocketAddr,
        table: Arc<ListenerTable>,
        shared: Arc<Shared>,
        settings: &LbSettings,
        workers: &Workers,
    ) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        let table = Arc::new(TableSlot::new(table));
        let max_connections = settings.max_connections_per_listener.max(1);
        let slots = Arc::new(Semaphore::new(max_connections));
        let (stop, stop_rx) = watch::channel(false);
        let mut http = hyper::server::conn::http1::Builder::new();
        // One `send` of a flattened buffer per response instead of `writev`: on Linux the vectored
        // path goes through the VFS layer and costs more per call. The header read timeout is
        // the connection task's (see `HeadTimeout`), not hyper's.
        http.keep_alive(true)
            .writev(false)
            .header_read_timeout(None)
            .max_header_size(settings.max_header_bytes.max(1024))
            .max_buf_size(settings.max_header_bytes.max(8192).saturating_add(8192));
        let accept = AcceptLoop {
            table: table.clone(),
            shared,
            slots: slots.clone(),
            stop: stop_rx,
            http,
            drain_timeout: settings.listener_drain_timeout,
            header_read_timeout: settings.header_read_timeout,
            workers: workers.set(),
        };
        let task = workers.spawn_one(async move {
            // Registering the socket needs the running runtime, so it happens here.
            match TcpListener::from_std(socket) {
                Ok(socket) => accept_loop(socket, accept).await,
                Err(error) => tracing::error!(%error, "cannot register listener socket"),
            }
        });
        Ok(ListenerHandle {
            bind,
            local,
            table,
            slots,
            max_connections,
            stop,
            task,
        })
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.slots.available_permits())
    }

    /// Stops accepting (the port is released at once) and lets open connections finish their
    /// current request, up to the drain timeout. Returns the task to await for completion.
    pub fn close(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

struct AcceptLoop {
    table: Arc<TableSlot>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    http: hyper::server::conn::http1::Builder,
    drain_timeout: Duration,
    header_read_timeout: Duration,
    workers: Arc<WorkerSet>,
}

/// The header read timeout of one client connection: how long it may wait for a complete
/// request head, counted from its start or from the end of its last response (which also closes
/// idle keep-alive connections). hyper's own makes a new timer per request (a timer-wheel
/// insertion and removal, and often a wake-up of the worker); this one timer per connection is
/// only ever moved later, which is an atomic store.
struct HeadTimeout {
    ctx: Arc<ConnContext>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// The `idle_since_ms` the timer is set for.
    armed_for: u64,
}

impl HeadTimeout {
    fn new(ctx: Arc<ConnContext>, timeout: Duration) -> Self {
        let armed_for = ctx.idle_since_ms.load(Ordering::Relaxed);
        let timer = Box::pin(tokio::time::sleep_until(Self::deadline(
            &ctx, timeout, armed_for,
        )));
        HeadTimeout {
            ctx,
            timeout,
            timer,
            armed_for,
        }
    }

    /// When a wait for a request head that began at `idle_since` (a
    /// [`crate::pool::Clock::now_ms`] reading) times out.
    fn deadline(ctx: &ConnContext, timeout: Duration, idle_since: u64) -> Instant {
        later(
            Instant::from_std(ctx.shared.clock.instant_at(idle_since)),
            timeout,
        )
    }

    /// Ready once the connection has waited longer than the timeout for a request head.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let idle_since = self.ctx.idle_since_ms.load(Ordering::Relaxed);
            if idle_since != self.armed_for {
                // A response ended: the wait starts again.
                self.armed_for = idle_since;
                let deadline = Self::deadline(&self.ctx, self.timeout, idle_since);
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.ctx.open_requests.load(Ordering::Relaxed) == 0 {
                return Poll::Ready(());
            }
            // A request is being served, which the timeout does not limit; its end moves the
            // deadline again.
            let deadline = later(Instant::now(), self.timeout);
            self.timer.as_mut().reset(deadline);
        }
    }
}

/// `changed()` errs when the sender is gone: that also means stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(socket: TcpListener, mut l: AcceptLoop) {
    let graceful = GracefulShutdown::new();
    // Connections still open after the drain timeout are aborted (which closes them). Finished
    // ones are pruned whenever the list has doubled.
    let mut connections: Vec<AbortHandle> = Vec::new();
    let mut prune_at = 64;
    loop {
        let permit = tokio::select! {
            permit = l.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut l.stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = stopped(&mut l.stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let peer_ip = peer.ip().to_canonical();
        let peer_header = HeaderValue::from_str(&peer_ip.to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        let ctx = Arc::new(ConnContext {
            shared: l.shared.clone(),
            table: Mutex::new(l.table.current()),
            slot: l.table.clone(),
            peer: peer_ip,
            peer_header,
            response_timer: Mutex::new(None),
            open_requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(l.shared.clock.now_ms()),
        });
        // The connection moves to the least busy worker's runtime and stays there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand over accepted connection");
                continue;
            }
        };
        let watcher = graceful.watcher();
        let http = l.http.clone();
        let header_read_timeout = l.header_read_timeout;
        let connection = l.workers.spawn_connection(move |load| async move {
            let _load = load;
            let _permit = permit;
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot register accepted connection");
                    return;
                }
            };
            let mut head_timeout = HeadTimeout::new(ctx.clone(), header_read_timeout);
            let service = service_fn(move |request| ctx.clone().handle(request));
            let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            let mut connection = std::pin::pin!(connection);
            let ended = poll_fn(|cx| {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                head_timeout.poll_expired(cx).map(|()| None)
            });
            match ended.await {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "client connection ended with an error")
                }
                // Dropping the connection closes it, as hyper does on its header timeout.
                None => tracing::debug!("no complete request head within the header read timeout"),
            }
        });
        connections.push(connection);
        if connections.len() >= prune_at {
            connections.retain(|c| !c.is_finished());
            prune_at = (connections.len() * 2).max(64);
        }
    }
    // Release the port now; then let open connections finish.
    drop(socket);
    if tokio::time::timeout(l.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("listener drain timed out; closing remaining connections");
    }
    for connection in connections {
        connection.abort();
    }
}
