//! `ferry server`'s wiring, also used in-process by `ferry demo`: open the store, build the URL
//! policies, the core stage registry and the engine, load (or create) the local admin token,
//! bind, serve, and shut down in order (stop taking requests, let them finish, stop the engine).
//!
//! Secrets never reach the log or the ready line: the token's file path is shown, never the
//! token; a PostgreSQL URL is shown with its password replaced by `***`.

use ferry_engine::expr::UrlFetcher;
use ferry_engine::{Engine, EngineConfig, EngineHandle};
use ferry_http::{GuardedClient, GuardedRequest, UrlPolicy};
use ferry_server::AppState;
use ferry_server::auth::{AdminOnly, LocalAdmin};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the engine may take to stop.
const ENGINE_STOP_GRACE: Duration = Duration::from_secs(10);
/// Default largest request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What `ferry server` is told.
#[derive(Clone)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port (the ready line says which).
    pub listen: String,
    /// Data directory: SQLite database, admin token, script work directories.
    pub data_dir: PathBuf,
    /// `postgres://…` (or `sqlite://path`) instead of `<data dir>/ferry.db`.
    pub database_url: Option<String>,
    /// Private networks webhooks and `#fromUrl` may reach (public internet is always allowed).
    pub allow_networks: Vec<IpNet>,
    /// Hosts `#fromUrl` may fetch from (none by default: `#fromUrl` is refused).
    pub allow_url_hosts: Vec<String>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// A Prometheus server for canary analysis (`query.type: prometheus`).
    pub prometheus_url: Option<String>,
    /// Where load balancer listeners without an address bind.
    pub lb_address: std::net::IpAddr,
    /// Load balancer worker threads (`None`: one per CPU).
    pub lb_workers: Option<usize>,
    /// Bind each load balancer worker to a CPU of its own.
    pub lb_pin_workers: bool,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(ferry_http::redact_url),
            )
            .field("allow_networks", &self.allow_networks)
            .field("allow_url_hosts", &self.allow_url_hosts)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("lb_address", &self.lb_address)
            .field("lb_workers", &self.lb_workers)
            .field("lb_pin_workers", &self.lb_pin_workers)
            .field(
                "prometheus_url",
                &self.prometheus_url.as_deref().map(ferry_http::redact_url),
            )
            .finish()
    }
}

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created.
    #[error("cannot create the data directory {}: {source}", .path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store cannot be configured or opened.
    #[error("cannot open the store: {0}")]
    Store(ferry_core::StoreError),
    /// A URL policy is invalid or the HTTP client cannot be built.
    #[error("invalid URL policy: {0}")]
    Policy(ferry_http::GuardError),
    /// The canary metric sources cannot be set up (a bad `--prometheus-url`).
    #[error("canary analysis: {0}")]
    Canary(String),
    /// The admin token file cannot be read or written.
    #[error("cannot read or create the admin token {}: {source}", .path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine could not recover the stored executions.
    #[error("the engine could not start: {0}")]
    Engine(ferry_core::StoreError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    /// The host provider could not start (its state directory is unreadable or locked by
    /// another Ferry).
    #[error("the host provider could not start: {0}")]
    Provider(ferry_provider::ProviderError),
}

/// A started server.
pub struct RunningServer {
    /// The address it listens on (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Where the local admin token is.
    pub token_file: PathBuf,
    /// The engine (stopped by [`RunningServer::stop`]).
    engine: EngineHandle,
    /// The engine's actor; ends after the engine is told to shut down.
    engine_task: JoinHandle<()>,
    /// The HTTP server; ends after `stop_tx` fires and requests finish (or the grace ends).
    serve_task: JoinHandle<std::io::Result<()>>,
    /// Fires the HTTP server's graceful shutdown.
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    /// The host provider: stopped after the engine; its instances keep running and are
    /// re-adopted at the next start.
    host: ferry_host::HostProvider,
}

impl RunningServer {
    /// The one line printed when the server is ready.
    pub fn ready_line(&self) -> String {
        format!(
            "ferry ready on {} (data: {}, store: {})",
            self.url(),
            self.data_dir.display(),
            self.backend
        )
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the HTTP server ends on its own (it only does on an error).
    pub async fn wait_for_failure(&mut self) -> ServerError {
        match (&mut self.serve_task).await {
            Ok(Ok(())) => {
                ServerError::Serve(std::io::Error::other("the server stopped unexpectedly"))
            }
            Ok(Err(e)) => ServerError::Serve(e),
            Err(e) => ServerError::Serve(std::io::Error::other(e.to_string())),
        }
    }

    /// Stops taking requests, lets in-flight ones finish, then stops the engine. Running
    /// executions stay RUNNING in the store and resume at the next start.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        let served = match (&mut self.serve_task).await {
            Ok(r) => r.map_err(ServerError::Serve),
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
        };
        self.engine.shutdown();
        if tokio::time::timeout(ENGINE_STOP_GRACE, &mut self.engine_task)
            .await
            .is_err()
        {
            tracing::warn!("the engine did not stop in time");
            self.engine_task.abort();
        }
        self.host.shutdown().await;
        tracing::info!("ferry stopped");
        served
    }
}

/// `#fromUrl` through the URL guard. Expression evaluation runs on a blocking thread, so the
/// fetch is handed to the runtime and waited for with a plain channel (which, unlike
/// `Handle::block_on`, cannot panic if it were ever called from an async context).
struct GuardedFetcher {
    client: GuardedClient,
    runtime: tokio::runtime::Handle,
}

impl UrlFetcher for GuardedFetcher {
    fn fetch(&self, url: &str) -> Result<String, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let client = self.client.clone();
        let request = GuardedRequest::get(url);
        self.runtime.spawn(async move {
            let _ = tx.send(client.send(request).await);
        });
        let response = rx
            .recv()
            .map_err(|_| "the fetch was interrupted".to_string())?
            .map_err(|e| e.to_string())?;
        if !response.is_success() {
            return Err(format!(
                "{} answered HTTP {}",
                ferry_http::redact_url(url),
                response.status
            ));
        }
        String::from_utf8(response.body.to_vec())
            .map_err(|_| "the response is not UTF-8 text".to_string())
    }
}

/// The policy for webhooks: the public internet, plus the allowed private networks.
pub fn webhook_policy(options: &ServerOptions) -> UrlPolicy {
    UrlPolicy {
        allowed_networks: options.allow_networks.clone(),
        ..UrlPolicy::public_internet()
    }
}

/// The policy for `#fromUrl`, or `None` (every URL refused) when no host is allow-listed.
pub fn from_url_policy(options: &ServerOptions) -> Option<UrlPolicy> {
    if options.allow_url_hosts.is_empty() {
        return None;
    }
    Some(UrlPolicy {
        allowed_hosts: Some(options.allow_url_hosts.clone()),
        allowed_networks: options.allow_networks.clone(),
        ..UrlPolicy::public_internet()
    })
}

/// Creates the data directory (mode 0700 when it is new).
fn ensure_data_dir(path: &Path) -> Result<(), ServerError> {
    if path.is_dir() {
        return Ok(());
    }
    let err = |source| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Starts everything and binds; the server is serving when this returns.
pub async fn start(options: &ServerOptions) -> Result<RunningServer, ServerError> {
    ensure_data_dir(&options.data_dir)?;
    let store_config = ferry_store::StoreConfig::from_url_or_dir(
        options.database_url.as_deref(),
        &options.data_dir,
    )
    .map_err(ServerError::Store)?;
    let store = ferry_store::open(&store_config)
        .await
        .map_err(ServerError::Store)?;

    let work_dir = options.data_dir.join("work");
    std::fs::create_dir_all(&work_dir).map_err(|source| ServerError::DataDir {
        path: work_dir.clone(),
        source,
    })?;
    let services = ferry_stages::StageServices {
        http: GuardedClient::new(webhook_policy(options)).map_err(ServerError::Policy)?,
        notifier: Arc::new(ferry_stages::LogNotifier),
        work_dir,
    };
    let mut registry = ferry_stages::core_registry(&services);
    let mut host_config = ferry_host::HostConfig::new(options.data_dir.join("host"));
    host_config.listen_address = options.lb_address;
    if let Some(workers) = options.lb_workers {
        host_config.lb.worker_threads = workers;
    }
    host_config.lb.pin_workers = options.lb_pin_workers;
    let host = ferry_host::HostProvider::start(host_config)
        .await
        .map_err(ServerError::Provider)?;
    let host_provider: Arc<dyn ferry_provider::Provider> = Arc::new(host.clone());
    ferry_deploy::register(
        &mut registry,
        ferry_deploy::Providers::new().with(host_provider.clone()),
    );
    let mut canary_sources = ferry_canary::Sources::new()
        .with(Arc::new(ferry_canary::lb::LbSource::new(host.lb().clone())));
    let prometheus = match &options.prometheus_url {
        Some(url) => match ferry_canary::prometheus::PrometheusSource::new(url) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                host.shutdown().await;
                return Err(ServerError::Canary(e.to_string()));
            }
        },
        None => None,
    };
    if let Some(p) = &prometheus {
        canary_sources = canary_sources.with(p.clone());
    }
    let canary = ferry_canary::CanaryServices {
        store: store.clone(),
        sources: canary_sources.clone(),
    };
    ferry_canary::register(&mut registry, canary.clone());
    ferry_rollout::register(
        &mut registry,
        ferry_rollout::RolloutServices {
            providers: ferry_deploy::Providers::new().with(host_provider.clone()),
            store: store.clone(),
            http: services.http.clone(),
            prometheus,
            canary: Some(canary),
        },
    );

    let url_fetcher: Option<Arc<dyn UrlFetcher>> = match from_url_policy(options) {
        Some(policy) => Some(Arc::new(GuardedFetcher {
            client: GuardedClient::new(policy).map_err(ServerError::Policy)?,
            runtime: tokio::runtime::Handle::current(),
        })),
        None => None,
    };
    let config = EngineConfig {
        url_fetcher,
        ..EngineConfig::default()
    };
    let (engine, engine_task) = match Engine::start(store.clone(), registry, config).await {
        Ok(e) => e,
        Err(e) => {
            host.shutdown().await;
            return Err(ServerError::Engine(e));
        }
    };

    let (admin, token_file) = match LocalAdmin::load_or_create(&options.data_dir) {
        Ok(t) => t,
        Err(source) => {
            engine.shutdown();
            host.shutdown().await;
            return Err(ServerError::Token {
                path: options.data_dir.join(ferry_server::auth::TOKEN_FILE),
                source,
            });
        }
    };
    tracing::info!(token_file = %token_file.display(), "local admin token (the CLI on this machine reads it)");

    let listener = match tokio::net::TcpListener::bind(&options.listen).await {
        Ok(l) => l,
        Err(source) => {
            engine.shutdown();
            host.shutdown().await;
            return Err(ServerError::Bind {
                addr: options.listen.clone(),
                source,
            });
        }
    };
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let state = AppState {
        engine: engine.clone(),
        store,
        auth: Arc::new(admin),
        authz: Arc::new(AdminOnly),
        metrics: Arc::new(ferry_server::metrics::Metrics::new(|r| {
            host.lb().register_metrics(r)
        })),
        max_body_bytes: options.max_body_bytes,
        providers: vec![host_provider],
        canary_sources,
        shutdown: Default::default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let serve_task = tokio::spawn(ferry_server::serve(
        listener,
        state,
        shutdown,
        SHUTDOWN_GRACE,
    ));
    tracing::info!(%addr, store = %store_config.redacted(), "serving");
    Ok(RunningServer {
        addr,
        data_dir: options.data_dir.clone(),
        backend: store_config.backend(),
        token_file,
        engine,
        engine_task,
        serve_task,
        stop_tx: Some(stop_tx),
        host,
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        () = terminate => {}
    }
}

/// `ferry server`: start, print the ready line, serve until a signal, stop.
pub async fn run(options: &ServerOptions) -> Result<(), ServerError> {
    let mut server = start(options).await?;
    println!("{}", server.ready_line());
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            server.stop().await
        }
        e = server.wait_for_failure() => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> ServerOptions {
        ServerOptions {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.to_path_buf(),
            database_url: None,
            allow_networks: vec![],
            allow_url_hosts: vec![],
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            prometheus_url: None,
            lb_address: std::net::IpAddr::from([127, 0, 0, 1]),
            lb_workers: None,
            lb_pin_workers: false,
        }
    }

    #[test]
    fn policies() {
        let mut o = options(Path::new("/tmp/x"));
        assert!(from_url_policy(&o).is_none());
        let w = webhook_policy(&o);
        assert!(w.check("http://127.0.0.1:1/").is_err());
        o.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(webhook_policy(&o).check("http://127.0.0.1:1/").is_ok());
        o.allow_url_hosts = vec!["config.example.com".into()];
        let p = from_url_policy(&o).unwrap();
        assert!(p.check("https://config.example.com/a.json").is_ok());
        assert!(p.check("https://other.example.com/a.json").is_err());
    }

    #[test]
    fn debug_redacts_the_database_password() {
        let mut o = options(Path::new("/tmp/x"));
        o.database_url = Some("postgres://ferry:hunter2@db:5432/ferry".into());
        let d = format!("{o:?}");
        assert!(!d.contains("hunter2"), "{d}");
    }

    #[tokio::test]
    async fn starts_serves_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = start(&options(&data)).await.unwrap();
        assert_ne!(server.addr.port(), 0);
        let line = server.ready_line();
        assert!(
            line.starts_with("ferry ready on http://127.0.0.1:"),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("(data: {}, store: sqlite)", data.display())),
            "{line}"
        );
        assert!(server.token_file.exists());
        assert!(data.join("work").is_dir());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut o = options(dir.path());
        o.listen = taken.local_addr().unwrap().to_string();
        let err = start(&o).await.err().unwrap();
        assert!(
            err.to_string().starts_with("cannot listen on 127.0.0.1:"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn from_url_fetches_through_the_guard_from_a_blocking_thread() {
        use axum::routing::get;
        let app = axum::Router::new().route("/cfg.json", get(|| async { "{\"a\":1}" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut o = options(Path::new("/tmp/x"));
        o.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        o.allow_url_hosts = vec!["127.0.0.1".into()];
        let fetcher = Arc::new(GuardedFetcher {
            client: GuardedClient::new(from_url_policy(&o).unwrap()).unwrap(),
            runtime: tokio::runtime::Handle::current(),
        });
        let fetch = |url: String| {
            let f = fetcher.clone();
            tokio::task::spawn_blocking(move || f.fetch(&url))
        };
        let ok = fetch(format!("http://127.0.0.1:{port}/cfg.json"))
            .await
            .unwrap();
        assert_eq!(ok.unwrap(), "{\"a\":1}");
        let missing = fetch(format!("http://127.0.0.1:{port}/nope"))
            .await
            .unwrap();
        assert!(missing.unwrap_err().contains("answered HTTP 404"));
        let off_list = fetch(format!("http://localhost:{port}/cfg.json"))
            .await
            .unwrap();
        assert!(off_list.is_err());
        served.abort();
    }
}
