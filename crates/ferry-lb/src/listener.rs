//! Listening sockets: binding, the accept loop with its connection limit, serving HTTP/1.1 with
//! keep-alive, and the graceful close of a removed listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::LbSettings;
use crate::pool::ListenerTable;
use crate::proxy::{ConnContext, Shared};
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
    /// The routing table; replaced (under the write lock) by every apply.
    pub table: Arc<RwLock<Arc<ListenerTable>>>,
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
        let table = Arc::new(RwLock::new(table));
        let max_connections = settings.max_connections_per_listener.max(1);
        let slots = Arc::new(Semaphore::new(max_connections));
        let (stop, stop_rx) = watch::channel(false);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_header_size(settings.max_header_bytes.max(1024))
            .max_buf_size(settings.max_header_bytes.max(8192).saturating_add(8192));
        let accept = AcceptLoop {
            table: table.clone(),
            shared,
            slots: slots.clone(),
            stop: stop_rx,
            http,
            drain_timeout: settings.listener_drain_timeout,
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
    table: Arc<RwLock<Arc<ListenerTable>>>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    http: hyper::server::conn::http1::Builder,
    drain_timeout: Duration,
    workers: Arc<WorkerSet>,
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
    // Connections still open after the drain timeout are closed by this signal.
    let (force, force_rx) = watch::channel(false);
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
            table: l.table.clone(),
            peer: peer_ip,
            peer_header,
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
        let mut force_rx = force_rx.clone();
        l.workers.spawn_connection(move |load| async move {
            let _load = load;
            let _permit = permit;
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot register accepted connection");
                    return;
                }
            };
            let service = service_fn(move |request| ctx.clone().handle(request));
            let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "client connection ended with an error");
                    }
                }
                () = stopped(&mut force_rx) => {}
            }
        });
    }
    // Release the port now; then let open connections finish.
    drop(socket);
    if tokio::time::timeout(l.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("listener drain timed out; closing remaining connections");
    }
    let _ = force.send(true);
}
