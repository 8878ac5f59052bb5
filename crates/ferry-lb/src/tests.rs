//! End-to-end tests of the load balancer with real backends and clients on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::*;

// ---------------------------------------------------------------------------------------------
// Test backends

/// A hyper backend answering with its id. Paths: `/health` (200 or 503 per `healthy`),
/// `/slow` (waits 600 ms), `/echo` (streams the request body back), `/headers` (the
/// forwarding headers it received), `/fail` (500 with its id), anything else: its id.
struct TestBackend {
    id: String,
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    kill: watch::Sender<bool>,
}

impl TestBackend {
    async fn start(id: &str) -> TestBackend {
        Self::start_at(id, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_at(id: &str, addr: SocketAddr) -> TestBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let hits = Arc::new(AtomicU64::new(0));
        let (kill, kill_rx) = watch::channel(false);
        tokio::spawn(serve_backend(
            listener,
            id.into(),
            healthy.clone(),
            hits.clone(),
            kill_rx,
        ));
        TestBackend {
            id: id.into(),
            addr,
            healthy,
            hits,
            kill,
        }
    }

    /// Closes the listening socket and every connection at once.
    fn kill(&self) {
        let _ = self.kill.send(true);
    }

    fn config(&self) -> BackendConfig {
        BackendConfig {
            id: self.id.clone(),
            addr: self.addr,
        }
    }
}

async fn until_killed(kill: &mut watch::Receiver<bool>) {
    while !*kill.borrow_and_update() {
        if kill.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_backend(
    listener: TcpListener,
    id: Arc<str>,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    mut kill: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            () = until_killed(&mut kill) => return,
        };
        let (id, healthy, hits, mut kill) =
            (id.clone(), healthy.clone(), hits.clone(), kill.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                backend_answer(req, id.clone(), healthy.clone(), hits.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = until_killed(&mut kill) => {}
            }
        });
    }
}

type TestBody = BoxBody<Bytes, hyper::Error>;

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn backend_answer(
    req: Request<Incoming>,
    id: Arc<str>,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        let status = if healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut response = Response::new(full("health"));
        *response.status_mut() = status;
        return Ok(response);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let body = match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(600)).await;
            full(id.to_string())
        }
        "/echo" => req.into_body().boxed(),
        "/headers" => {
            let h = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .unwrap_or_default()
            };
            full(format!(
                "xff={};proto={};host={};xhost={};conn={};te={}",
                h("x-forwarded-for"),
                h("x-forwarded-proto"),
                h("host"),
                h("x-forwarded-host"),
                h("connection"),
                h("x-hop")
            ))
        }
        _ => full(id.to_string()),
    };
    let mut response = Response::new(body);
    if path == "/fail" {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    response
        .headers_mut()
        .insert("x-backend", id.parse().unwrap());
    response
        .headers_mut()
        .insert("keep-alive", "timeout=99".parse().unwrap());
    Ok(response)
}

/// Accepts connections, reads a request and closes without answering.
async fn start_closer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

/// An address where nothing listens.
fn dead_addr() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Configuration helpers

fn listener(name: &str, routes: &[(&str, &str)], default: Option<&str>) -> ListenerConfig {
    ListenerConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        routes: routes
            .iter()
            .map(|(prefix, pool)| RouteConfig {
                path_prefix: (*prefix).into(),
                pool: (*pool).into(),
            })
            .collect(),
        default_pool: default.map(Into::into),
        allow: vec![],
        deny: vec![],
    }
}

fn group(name: &str, weight: u32, enabled: bool, backends: &[&TestBackend]) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        weight,
        enabled,
        backends: backends.iter().map(|b| b.config()).collect(),
    }
}

fn pool(name: &str, groups: Vec<GroupConfig>) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        health_check: None,
        groups,
    }
}

/// One listener "web" with default pool "app".
fn app(groups: Vec<GroupConfig>) -> LbConfig {
    LbConfig {
        listeners: vec![listener("web", &[], Some("app"))],
        pools: vec![pool("app", groups)],
    }
}

fn fast_check() -> HealthCheckConfig {
    HealthCheckConfig {
        path: "/health".into(),
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    }
}

fn addr_of(lb: &Lb, name: &str) -> SocketAddr {
    lb.bound().into_iter().find(|(n, _)| n == name).unwrap().1
}

// ---------------------------------------------------------------------------------------------
// Test client

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    client: &TestClient,
    method: Method,
    url: &str,
    body: Bytes,
) -> Result<(StatusCode, String), String> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get(client: &TestClient, url: &str) -> (StatusCode, String) {
    send(client, Method::GET, url, Bytes::new()).await.unwrap()
}

/// Several keep-alive clients sending GETs in a loop until stopped (bounded in time and count).
struct Load {
    stop: Arc<AtomicBool>,
    /// Successful requests so far, over all tasks.
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failures: Vec<String>,
    by_body: HashMap<String, u64>,
}

fn start_load(url: String, concurrency: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks = (0..concurrency)
        .map(|_| {
            let (url, stop, done) = (url.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let client = client();
                let mut tally = Tally::default();
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst)
                    && started.elapsed() < Duration::from_secs(60)
                    && tally.ok < 500_000
                {
                    match send(&client, Method::GET, &url, Bytes::new()).await {
                        Ok((StatusCode::OK, body)) => {
                            tally.ok += 1;
                            done.fetch_add(1, Ordering::SeqCst);
                            *tally.by_body.entry(body).or_default() += 1;
                        }
                        Ok((status, body)) => tally.failures.push(format!("{status}: {body}")),
                        Err(error) => tally.failures.push(error),
                    }
                }
                tally
            })
        })
        .collect();
    Load { stop, done, tasks }
}

impl Load {
    /// Lets the load run for at least `min` and at least `requests` more successful requests, so
    /// every phase of a test sees traffic however slow the machine is.
    async fn run_for(&self, min: Duration, requests: u64) {
        let target = self.done.load(Ordering::SeqCst) + requests;
        tokio::time::sleep(min).await;
        let started = Instant::now();
        while self.done.load(Ordering::SeqCst) < target
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for task in self.tasks {
            let tally = task.await.unwrap();
            total.ok += tally.ok;
            total.failures.extend(tally.failures);
            for (body, n) in tally.by_body {
                *total.by_body.entry(body).or_default() += n;
            }
        }
        total
    }
}

fn hits(tally: &Tally, id: &str) -> u64 {
    tally.by_body.get(id).copied().unwrap_or(0)
}

async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and balancing

#[tokio::test]
async fn routes_by_longest_prefix_with_default_pool_and_404() {
    let (home, kids, special) = (
        TestBackend::start("home-1").await,
        TestBackend::start("kids-1").await,
        TestBackend::start("special-1").await,
    );
    let lb = Lb::new();
    lb.apply(LbConfig {
        listeners: vec![
            listener(
                "web",
                &[("/kids", "kids"), ("/kids/special", "special")],
                Some("home"),
            ),
            listener("strict", &[("/kids", "kids")], None),
        ],
        pools: vec![
            pool("home", vec![group("home-v001", 1, true, &[&home])]),
            pool("kids", vec![group("kids-v001", 1, true, &[&kids])]),
            pool("special", vec![group("special-v001", 1, true, &[&special])]),
        ],
    })
    .await
    .unwrap();
    let (web, strict) = (addr_of(&lb, "web"), addr_of(&lb, "strict"));
    let c = client();
    for (path, want) in [
        ("/kids", "kids-1"),
        ("/kids/", "kids-1"),
        ("/kids/shoes?size=3", "kids-1"),
        ("/kids/special", "special-1"),
        ("/kids/special/offer", "special-1"),
        ("/kids/specialx", "kids-1"),
        ("/kidsfoo", "home-1"),
        ("/", "home-1"),
        ("/mens", "home-1"),
    ] {
        assert_eq!(
            get(&c, &format!("http://{web}{path}")).await,
            (StatusCode::OK, want.to_string()),
            "{path}"
        );
    }
    assert_eq!(
        get(&c, &format!("http://{strict}/kids/x")).await.1,
        "kids-1"
    );
    let (status, body) = get(&c, &format!("http://{strict}/mens")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no route\n")
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn weights_90_10_split_1000_requests_within_3_percent() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let lb = Lb::new();
    lb.apply(app(vec![
        group("app-v001", 90, true, &[&a]),
        group("app-v002", 10, true, &[&b]),
    ]))
    .await
    .unwrap();
    let url = format!("http://{}/", addr_of(&lb, "web"));
    let c = client();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for i in 0..1000 {
        let (status, body) = get(&c, &url).await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(body).or_default() += 1;
        if i == 9 {
            // Smooth weighting: the split holds within the first ten requests.
            assert_eq!(counts.get("b"), Some(&1), "{counts:?}");
        }
    }
    let a_share = f64::from(counts["a"]) / 1000.0;
    assert!((a_share - 0.9).abs() <= 0.03, "{counts:?}");
    lb.shutdown().await;
}

#[tokio::test]
async fn weight_zero_and_disabled_groups_get_no_requests() {
    let (a, b, c_backend) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    );
    let lb = Lb::new();
    lb.apply(app(vec![
        group("zero", 0, true, &[&a]),
        group("off", 100, false, &[&b]),
        group("on", 1, true, &[&c_backend]),
    ]))
    .await
    .unwrap();
    let url = format!("http://{}/", addr_of(&lb, "web"));
    let c = client();
    for _ in 0..100 {
        assert_eq!(get(&c, &url).await, (StatusCode::OK, "c".to_string()));
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);

    // Nothing takes traffic: 503 with a short body.
    lb.apply(app(vec![
        group("zero", 0, true, &[&a]),
        group("off", 100, false, &[&b]),
    ]))
    .await
    .unwrap();
    let (status, body) = get(&c, &url).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend\n")
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn firewall_deny_wins_and_allow_lists_sources() {
    let a = TestBackend::start("a").await;
    let lb = Lb::new();
    let mut config = app(vec![group("g", 1, true, &[&a])]);
    lb.apply(config.clone()).await.unwrap();
    let url = format!("http://{}/", addr_of(&lb, "web"));
    let c = client();
    assert_eq!(get(&c, &url).await.0, StatusCode::OK);

    config.listeners[0].allow = vec!["127.0.0.0/8".parse().unwrap()];
    lb.apply(config.clone()).await.unwrap();
    assert_eq!(get(&c, &url).await.0, StatusCode::OK);

    config.listeners[0].deny = vec!["127.0.0.1/32".parse().unwrap()];
    lb.apply(config.clone()).await.unwrap();
    let (status, body) = get(&c, &url).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "forbidden\n")
    );

    config.listeners[0].deny = vec![];
    config.listeners[0].allow = vec!["10.0.0.0/8".parse().unwrap()];
    lb.apply(config.clone()).await.unwrap();
    assert_eq!(get(&c, &url).await.0, StatusCode::FORBIDDEN);
    assert_eq!(a.hits.load(Ordering::SeqCst), 2);
    lb.shutdown().await;
}

#[tokio::test]
async fn forwards_headers_and_streams_bodies_both_ways() {
    let a = TestBackend::start("a").await;
    let lb = Lb::new();
    lb.apply(app(vec![group("g", 1, true, &[&a])]))
        .await
        .unwrap();
    let web = addr_of(&lb, "web");
    let c = client();

    let request = Request::builder()
        .uri(format!("http://{web}/headers"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = c.request(request).await.unwrap();
    assert!(
        response.headers().get("keep-alive").is_none(),
        "hop-by-hop response header leaked"
    );
    assert_eq!(response.headers().get("x-backend").unwrap(), "a");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("xff=203.0.113.9, 127.0.0.1;proto=http;host={web};xhost={web};conn=;te=")
    );

    let big: Bytes = (0..2_000_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{web}/echo"))
        .body(Full::new(big.clone()))
        .unwrap();
    let response = c.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        big
    );
    lb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Health and retries

#[tokio::test]
async fn health_checks_take_a_dead_backend_out_and_bring_it_back() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let lb = Lb::new();
    let mut config = app(vec![group("g", 1, true, &[&a, &b])]);
    config.pools[0].health_check = Some(fast_check());
    lb.apply(config).await.unwrap();
    let healthy = |id: &str| lb.status().backend("app", id).unwrap().healthy;
    assert!(healthy("a") && healthy("b"), "backends start healthy");

    // A failing check takes it out; passing again brings it back.
    a.healthy.store(false, Ordering::SeqCst);
    wait_for("a marked down", Duration::from_secs(5), || !healthy("a")).await;
    let url = format!("http://{}/", addr_of(&lb, "web"));
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &url).await.1, "b");
    }
    a.healthy.store(true, Ordering::SeqCst);
    wait_for("a marked up", Duration::from_secs(5), || healthy("a")).await;

    // A dead process: down; restarted on the same port: up.
    let b_addr = b.addr;
    b.kill();
    wait_for("b marked down", Duration::from_secs(5), || !healthy("b")).await;
    for _ in 0..10 {
        assert_eq!(get(&c, &url).await, (StatusCode::OK, "a".to_string()));
    }
    let _b_again = TestBackend::start_at("b", b_addr).await;
    wait_for("b marked up", Duration::from_secs(5), || healthy("b")).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(get(&c, &url).await.1);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_costs_no_request_thanks_to_retry() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let lb = Lb::new();
    lb.apply(app(vec![group(
        "g",
        1,
        true,
        &[&backends[0], &backends[1], &backends[2]],
    )]))
    .await
    .unwrap();
    let load = start_load(format!("http://{}/", addr_of(&lb, "web")), 4);
    load.run_for(Duration::from_millis(300), 100).await;
    backends[1].kill();
    load.run_for(Duration::from_millis(700), 200).await;
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "{} failures: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(tally.ok >= 300, "{tally:?}");
    assert!(lb.status().backend("app", "b").unwrap().failures > 0);
    lb.shutdown().await;
}

#[tokio::test]
async fn connect_failure_resends_an_unread_request_body_elsewhere() {
    let live = TestBackend::start("live").await;
    let lb = Lb::new();
    let dead = BackendConfig {
        id: "dead".into(),
        addr: dead_addr(),
    };
    let mut config = app(vec![group("g", 1, true, &[&live])]);
    config.pools[0].groups[0].backends.insert(0, dead);
    lb.apply(config).await.unwrap();
    let url = format!("http://{}/echo", addr_of(&lb, "web"));
    let c = client();
    let (status, body) = send(&c, Method::POST, &url, Bytes::from_static(b"payload"))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "payload"));
    let status = lb.status();
    assert!(
        !status.backend("app", "dead").unwrap().healthy,
        "passively ejected"
    );
    assert_eq!(status.backend("app", "dead").unwrap().failures, 1);
    lb.shutdown().await;
}

#[tokio::test]
async fn broken_connection_retries_gets_but_not_posts() {
    let live = TestBackend::start("live").await;
    let closer = BackendConfig {
        id: "closer".into(),
        addr: start_closer().await,
    };
    let lb = Lb::new();
    let mut config = app(vec![group("g", 1, true, &[&live])]);
    config.pools[0].groups[0].backends.push(closer);
    lb.apply(config).await.unwrap();
    let url = format!("http://{}/", addr_of(&lb, "web"));
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &url).await, (StatusCode::OK, "live".to_string()));
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send(&c, Method::POST, &url, Bytes::from_static(b"x"))
                .await
                .unwrap()
                .0,
        );
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    lb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Zero failed requests while configurations change

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_failures_while_swapping_traffic_from_group_a_to_b() {
    let a = [
        TestBackend::start("a1").await,
        TestBackend::start("a2").await,
    ];
    let b = [
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
    ];
    let lb = Lb::new();
    let with = |a_on: bool, b_on: bool| {
        app(vec![
            group("app-v001", 100, a_on, &[&a[0], &a[1]]),
            group("app-v002", 100, b_on, &[&b[0], &b[1]]),
        ])
    };
    lb.apply(with(true, false)).await.unwrap();
    let load = start_load(format!("http://{}/", addr_of(&lb, "web")), 4);
    load.run_for(Duration::from_millis(300), 100).await;
    lb.apply(with(true, true)).await.unwrap();
    load.run_for(Duration::from_millis(300), 100).await;
    lb.apply(with(false, true)).await.unwrap();
    lb.drain("app", "app-v001", Duration::from_secs(5))
        .await
        .unwrap();
    let a_hits = a[0].hits.load(Ordering::SeqCst) + a[1].hits.load(Ordering::SeqCst);
    a[0].kill();
    a[1].kill();
    load.run_for(Duration::from_millis(300), 100).await;
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "{} failures: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert_eq!(
        a[0].hits.load(Ordering::SeqCst) + a[1].hits.load(Ordering::SeqCst),
        a_hits,
        "a got traffic after drain"
    );
    assert!(
        hits(&tally, "a1") > 0 && hits(&tally, "b1") > 0,
        "{:?}",
        tally.by_body
    );
    assert_eq!(tally.ok, tally.by_body.values().sum::<u64>());
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_failures_while_stepping_weights_0_25_50_100() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = Lb::new();
    let weights = |wb: u32| {
        app(vec![
            group("app-v001", 100 - wb, true, &[&a]),
            group("app-v002", wb, true, &[&b]),
        ])
    };
    lb.apply(weights(0)).await.unwrap();
    let load = start_load(format!("http://{}/", addr_of(&lb, "web")), 4);
    for wb in [0, 25, 50, 100] {
        lb.apply(weights(wb)).await.unwrap();
        load.run_for(Duration::from_millis(250), 100).await;
    }
    lb.drain("app", "app-v001", Duration::from_secs(5))
        .await
        .unwrap();
    let a_after = a.hits.load(Ordering::SeqCst);
    load.run_for(Duration::from_millis(200), 100).await;
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "{} failures: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        a_after,
        "weight 0 still got requests"
    );
    assert!(
        hits(&tally, "a") > 0 && hits(&tally, "b") > 0,
        "{:?}",
        tally.by_body
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_failures_while_adding_and_removing_backends() {
    let backends = [
        TestBackend::start("i1").await,
        TestBackend::start("i2").await,
        TestBackend::start("i3").await,
        TestBackend::start("i4").await,
    ];
    let lb = Lb::new();
    let members = |ids: &[usize]| {
        app(vec![group(
            "g",
            1,
            true,
            &ids.iter().map(|i| &backends[*i]).collect::<Vec<_>>(),
        )])
    };
    lb.apply(members(&[0])).await.unwrap();
    let load = start_load(format!("http://{}/", addr_of(&lb, "web")), 4);
    for step in [&[0, 1][..], &[0, 1, 2], &[1, 2], &[1, 2, 3], &[3]] {
        load.run_for(Duration::from_millis(200), 100).await;
        lb.apply(members(step)).await.unwrap();
    }
    // Removed instances go away; whatever was still in flight on them is retried.
    backends[0].kill();
    backends[1].kill();
    load.run_for(Duration::from_millis(300), 100).await;
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "{} failures: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    for id in ["i1", "i2", "i3", "i4"] {
        assert!(hits(&tally, id) > 0, "{id}: {:?}", tally.by_body);
    }
    lb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Apply errors, metrics, draining, listeners

#[tokio::test]
async fn apply_with_a_taken_port_or_unknown_pool_changes_nothing_and_lists_every_problem() {
    let a = TestBackend::start("a").await;
    let lb = Lb::new();
    let good = app(vec![group("g", 1, true, &[&a])]);
    lb.apply(good.clone()).await.unwrap();
    let before = lb.bound();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();

    let mut bad = good.clone();
    bad.pools[0].groups[0].weight = 5;
    let mut extra = listener("extra", &[("/x", "nope")], None);
    extra.bind = taken_addr;
    bad.listeners.push(extra);
    let Err(LbError::Invalid(problems)) = lb.apply(bad).await else {
        panic!("expected Invalid")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p == "listeners[1].routes[0].pool: unknown pool \"nope\""),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("listeners[1].bind: cannot bind {taken_addr}"))),
        "{problems:?}"
    );

    let mut only_port = good.clone();
    let mut extra = listener("extra", &[], Some("app"));
    extra.bind = taken_addr;
    only_port.listeners.push(extra);
    match lb.apply(only_port).await {
        Err(LbError::Bind { listener, addr, .. }) => {
            assert_eq!((listener.as_str(), addr), ("extra", taken_addr))
        }
        other => panic!("expected Bind, got {other:?}"),
    }

    assert_eq!(lb.bound(), before);
    assert_eq!(lb.status().group("app", "g").unwrap().weight, 1);
    assert_eq!(
        get(&client(), &format!("http://{}/", before[0].1)).await.1,
        "a"
    );
    drop(taken);
    lb.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_per_group_and_code() {
    let a = TestBackend::start("a").await;
    let lb = Lb::new();
    let mut registry = prometheus_client::registry::Registry::default();
    lb.register_metrics(&mut registry);
    let mut config = app(vec![
        group("app-v001", 1, true, &[&a]),
        group("app-v002", 0, true, &[]),
    ]);
    config.listeners[0].routes.push(RouteConfig {
        path_prefix: "/empty".into(),
        pool: "empty".into(),
    });
    config.pools.push(pool("empty", vec![]));
    lb.apply(config).await.unwrap();
    let web = addr_of(&lb, "web");
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &format!("http://{web}/")).await.0, StatusCode::OK);
    }
    assert_eq!(
        get(&c, &format!("http://{web}/empty")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"lb_requests_total{listener="web",pool="app",group="app-v001",code="200"} 3"#,
        r#"lb_requests_total{listener="web",pool="empty",group="",code="503"} 1"#,
        r#"lb_request_duration_seconds_count{pool="app",group="app-v001"} 3"#,
        r#"lb_backend_healthy{pool="app",group="app-v001",backend="a"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(
        text.contains("# TYPE lb_request_duration_seconds histogram"),
        "{text}"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_a_slow_in_flight_request() {
    let slow = TestBackend::start("slow").await;
    let other = TestBackend::start("other").await;
    let lb = Lb::new();
    lb.apply(app(vec![
        group("old", 1, true, &[&slow]),
        group("new", 1, false, &[&other]),
    ]))
    .await
    .unwrap();
    let url = format!("http://{}/slow", addr_of(&lb, "web"));
    let request = tokio::spawn(async move { get(&client(), &url).await });
    wait_for("request in flight", Duration::from_secs(5), || {
        lb.status().group("app", "old").unwrap().in_flight == 1
    })
    .await;
    lb.apply(app(vec![
        group("old", 1, false, &[&slow]),
        group("new", 1, true, &[&other]),
    ]))
    .await
    .unwrap();
    match lb.drain("app", "old", Duration::from_millis(50)).await {
        Err(LbError::DrainTimeout { in_flight: 1, .. }) => {}
        other => panic!("expected a drain timeout, got {other:?}"),
    }
    lb.drain("app", "old", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(lb.status().group("app", "old").unwrap().in_flight, 0);
    assert_eq!(request.await.unwrap(), (StatusCode::OK, "slow".to_string()));
    // Unknown groups have nothing in flight.
    lb.drain("app", "never", Duration::from_millis(1))
        .await
        .unwrap();
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backends_drain_while_the_rest_of_the_group_keeps_serving() {
    let slow = TestBackend::start("slow").await;
    let stays = TestBackend::start("stays").await;
    let lb = Lb::new();
    lb.apply(app(vec![group("g", 1, true, &[&slow])]))
        .await
        .unwrap();
    let url = format!("http://{}/slow", addr_of(&lb, "web"));
    let request = tokio::spawn({
        let url = url.clone();
        async move { get(&client(), &url).await }
    });
    wait_for("request in flight", Duration::from_secs(5), || {
        lb.status().group("app", "g").unwrap().in_flight == 1
    })
    .await;
    // Resize down: `slow` leaves the group, `stays` stays (and keeps serving).
    let slow_id = slow.config().id.to_string();
    let watch = lb.watch_backends("g", &[slow_id, "unknown".into()]);
    assert_eq!(watch.in_flight(), 1);
    lb.apply(app(vec![group("g", 1, true, &[&stays])]))
        .await
        .unwrap();
    match watch.drain(Duration::from_millis(50)).await {
        Err(LbError::BackendDrainTimeout { in_flight: 1, .. }) => {}
        other => panic!("expected a drain timeout, got {other:?}"),
    }
    // Meanwhile the group answers from the backend that stays.
    let fast = format!("http://{}/", addr_of(&lb, "web"));
    assert_eq!(
        get(&client(), &fast).await,
        (StatusCode::OK, "stays".to_string())
    );
    let started = std::time::Instant::now();
    watch.drain(Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(request.await.unwrap(), (StatusCode::OK, "slow".to_string()));
    assert_eq!(watch.in_flight(), 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_group_can_still_be_drained() {
    let slow = TestBackend::start("slow").await;
    let lb = Lb::new();
    lb.apply(app(vec![group("old", 1, true, &[&slow])]))
        .await
        .unwrap();
    let url = format!("http://{}/slow", addr_of(&lb, "web"));
    let request = tokio::spawn(async move { get(&client(), &url).await });
    wait_for("request in flight", Duration::from_secs(5), || {
        lb.status().group("app", "old").unwrap().in_flight == 1
    })
    .await;
    lb.apply(app(vec![])).await.unwrap();
    assert!(matches!(
        lb.drain("app", "old", Duration::from_millis(20)).await,
        Err(LbError::DrainTimeout { .. })
    ));
    lb.drain("app", "old", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(request.await.unwrap(), (StatusCode::OK, "slow".to_string()));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_listener_frees_its_port_and_finishes_in_flight_requests() {
    let slow = TestBackend::start("slow").await;
    let lb = Lb::new();
    let mut config = app(vec![group("g", 1, true, &[&slow])]);
    config.listeners.push(listener("admin", &[], Some("app")));
    lb.apply(config.clone()).await.unwrap();
    let admin = addr_of(&lb, "admin");
    let url = format!("http://{admin}/slow");
    let request = tokio::spawn(async move { get(&client(), &url).await });
    wait_for("request in flight", Duration::from_secs(5), || {
        lb.status().group("app", "g").unwrap().in_flight == 1
    })
    .await;
    config.listeners.pop();
    lb.apply(config.clone()).await.unwrap();
    assert_eq!(lb.bound().len(), 1);
    assert_eq!(request.await.unwrap(), (StatusCode::OK, "slow".to_string()));
    // The port is free again, so a listener can take it.
    let mut back = listener("admin2", &[], Some("app"));
    back.bind = admin;
    config.listeners.push(back);
    lb.apply(config).await.unwrap();
    assert_eq!(addr_of(&lb, "admin2"), admin);
    lb.shutdown().await;
}

#[tokio::test]
async fn renamed_listener_on_the_same_port_keeps_its_socket() {
    let a = TestBackend::start("a").await;
    let lb = Lb::new();
    let port = dead_addr();
    let mut config = app(vec![group("g", 1, true, &[&a])]);
    config.listeners[0].bind = port;
    lb.apply(config.clone()).await.unwrap();
    config.listeners[0].name = "web-renamed".into();
    lb.apply(config).await.unwrap();
    assert_eq!(lb.bound(), vec![("web-renamed".to_string(), port)]);
    assert_eq!(get(&client(), &format!("http://{port}/")).await.1, "a");
    let status = lb.status();
    assert_eq!(status.listeners[0].name, "web-renamed");
    lb.shutdown().await;
    assert!(matches!(
        lb.apply(LbConfig::default()).await,
        Err(LbError::ShutDown)
    ));
    assert!(
        std::net::TcpListener::bind(port).is_ok(),
        "shutdown released the port"
    );
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let a = TestBackend::start("a").await;
    let lb = Lb::with_settings(LbSettings {
        max_header_bytes: 4096,
        ..LbSettings::default()
    });
    lb.apply(app(vec![group("g", 1, true, &[&a])]))
        .await
        .unwrap();
    let request = Request::builder()
        .uri(format!("http://{}/", addr_of(&lb, "web")))
        .header("x-big", "y".repeat(8000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
    lb.shutdown().await;
}

#[tokio::test]
async fn slow_backend_times_out_with_504() {
    let slow = TestBackend::start("slow").await;
    let lb = Lb::with_settings(LbSettings {
        response_timeout: Duration::from_millis(100),
        ..LbSettings::default()
    });
    lb.apply(app(vec![group("g", 1, true, &[&slow])]))
        .await
        .unwrap();
    let (status, _) = get(&client(), &format!("http://{}/slow", addr_of(&lb, "web"))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    lb.shutdown().await;
}

/// A load balancer with `settings` in front of one backend, checked to serve 50 requests or
/// more from two clients without a failure.
async fn serving_with(settings: LbSettings) -> (Lb, TestBackend) {
    let a = TestBackend::start("a").await;
    let lb = Lb::with_settings(settings);
    lb.apply(app(vec![group("g", 1, true, &[&a])]))
        .await
        .unwrap();
    let load = start_load(format!("http://{}/", addr_of(&lb, "web")), 2);
    load.run_for(Duration::from_millis(200), 50).await;
    let tally = load.finish().await;
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(tally.ok >= 50);
    (lb, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_worker_threads_listeners_run_on_the_callers_runtime() {
    let (lb, _backend) = serving_with(LbSettings {
        worker_threads: 0,
        ..LbSettings::default()
    })
    .await;
    lb.shutdown().await;
}

/// The CPUs each thread named `name` of this process may run on, from `/proc`.
fn cpus_of_threads(name: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(|cpus| cpus.trim().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn pinned_workers_each_run_on_one_cpu_and_still_serve() {
    let (lb, _backend) = serving_with(LbSettings {
        worker_threads: 1,
        pin_workers: true,
        ..LbSettings::default()
    })
    .await;
    // The first CPU the process may use, as a single-CPU list ("3", not "0-3").
    let allowed = std::fs::read_to_string("/proc/self/status").unwrap();
    let first = allowed
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .split([',', '-'])
        .next()
        .unwrap()
        .to_owned();
    // Other tests' (unpinned) workers share the name: one of them must be bound to `first`.
    wait_for("the worker to be pinned", Duration::from_secs(5), || {
        cpus_of_threads("ferry-lb-0").contains(&first)
    })
    .await;
    assert!(
        allowed.contains("Cpus_allowed_list:\t0-") || allowed.contains(','),
        "needs two CPUs or more to tell a pinned worker from an unpinned one"
    );
    lb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Per-second samples

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sample_total(buckets: &[SampleBucket]) -> SampleBucket {
    buckets
        .iter()
        .fold(SampleBucket::default(), |t, b| SampleBucket {
            second: 0,
            requests: t.requests + b.requests,
            errors: t.errors + b.errors,
            latency_us_sum: t.latency_us_sum + b.latency_us_sum,
            latency_us_max: t.latency_us_max.max(b.latency_us_max),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_count_requests_errors_and_latency_per_second_and_group() {
    let a = TestBackend::start("a").await;
    let lb = Lb::with_settings(LbSettings {
        response_timeout: Duration::from_millis(150),
        // The dead backend stays in rotation, so each request to it ends in a 502.
        passive_ejection: Duration::ZERO,
        ..LbSettings::default()
    });
    let mut registry = prometheus_client::registry::Registry::default();
    lb.register_metrics(&mut registry);
    let mut config = app(vec![group("app-v001", 1, true, &[&a])]);
    for (prefix, pool_name) in [("/dead", "dead"), ("/empty", "empty")] {
        config.listeners[0].routes.push(RouteConfig {
            path_prefix: prefix.into(),
            pool: pool_name.into(),
        });
    }
    let dead = BackendConfig {
        id: "dead".into(),
        addr: dead_addr(),
    };
    config.pools.push(pool(
        "dead",
        vec![GroupConfig {
            name: "dead-v001".into(),
            weight: 1,
            enabled: true,
            backends: vec![dead],
        }],
    ));
    config
        .pools
        .push(pool("empty", vec![group("empty-v001", 1, true, &[])]));
    lb.apply(config).await.unwrap();
    let web = addr_of(&lb, "web");
    let c = client();

    let from = unix_now();
    let mut expected = HashMap::new();
    for (path, n) in [
        ("/", 20),
        ("/fail", 10),
        ("/slow", 1),
        ("/dead", 3),
        ("/empty", 2),
    ] {
        for _ in 0..n {
            let (status, _) = get(&c, &format!("http://{web}{path}")).await;
            *expected.entry(status).or_insert(0u64) += 1;
        }
    }
    let to = unix_now() + 1;
    assert_eq!(expected[&StatusCode::OK], 20);
    assert_eq!(expected[&StatusCode::INTERNAL_SERVER_ERROR], 10);
    assert_eq!(expected[&StatusCode::GATEWAY_TIMEOUT], 1);
    assert_eq!(expected[&StatusCode::BAD_GATEWAY], 3);
    assert_eq!(expected[&StatusCode::SERVICE_UNAVAILABLE], 2);

    // A request is recorded when its response ends, which may follow the client's read.
    wait_for("every answer recorded", Duration::from_secs(5), || {
        sample_total(&lb.samples("app-v001", from, to)).requests == 31
    })
    .await;
    let buckets = lb.samples("app-v001", from, to);
    assert!(buckets.windows(2).all(|w| w[0].second < w[1].second));
    for b in &buckets {
        assert!((from..to).contains(&b.second), "{b:?}");
        assert!(b.requests > 0 && b.errors <= b.requests, "{b:?}");
        assert!(b.latency_us_max <= b.latency_us_sum, "{b:?}");
    }
    let total = sample_total(&buckets);
    assert_eq!((total.requests, total.errors), (31, 11), "{total:?}");
    // The 504 waited for the response timeout; the rest were quick.
    assert!(total.latency_us_max >= 150_000, "{total:?}");
    assert!(
        total.latency_us_sum >= total.latency_us_max + 30,
        "{total:?}"
    );

    // The load balancer's 502s count for the group whose backend it tried.
    wait_for("the 502s recorded", Duration::from_secs(5), || {
        sample_total(&lb.samples("dead-v001", from, to)).requests == 3
    })
    .await;
    assert_eq!(sample_total(&lb.samples("dead-v001", from, to)).errors, 3);
    // A 503 for want of a backend chose no group; unknown groups have nothing.
    assert_eq!(lb.samples("empty-v001", from, to), vec![]);
    assert_eq!(lb.samples("nope", 0, u64::MAX), vec![]);
    // `to` is exclusive, `from` inclusive.
    assert_eq!(lb.samples("app-v001", to, u64::MAX), vec![]);
    assert_eq!(lb.samples("app-v001", 0, from), vec![]);

    // The histogram measures the same span, for the backends' answers only.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"lb_request_duration_seconds_count{pool="app",group="app-v001"} 30"#,
        r#"lb_requests_total{listener="web",pool="app",group="app-v001",code="504"} 1"#,
        r#"lb_requests_total{listener="web",pool="dead",group="dead-v001",code="502"} 3"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    // Removing the group keeps its samples for canary analysis.
    lb.apply(app(vec![group("app-v002", 1, true, &[&a])]))
        .await
        .unwrap();
    assert_eq!(sample_total(&lb.samples("app-v001", from, to)).requests, 31);
    lb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Header read timeout

/// Reads until the peer closes (or fails); what was read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, seen: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after 5 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_closes_idle_and_slow_heads_but_not_slow_responses() {
    let slow = TestBackend::start("slow").await;
    let timeout = Duration::from_millis(300);
    let lb = Lb::with_settings(LbSettings {
        header_read_timeout: timeout,
        ..LbSettings::default()
    });
    lb.apply(app(vec![group("g", 1, true, &[&slow])]))
        .await
        .unwrap();
    let web = addr_of(&lb, "web");

    // Nothing sent, or half a head: closed once the timeout has passed.
    for sent in [&b""[..], b"GET / HTTP/1.1\r\nHo"] {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut seen = Vec::new();
        read_until_closed(&mut stream, &mut seen).await;
        assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
        assert!(started.elapsed() >= timeout - Duration::from_millis(20));
    }

    // A response slower than the timeout (600 ms) is served in full on a keep-alive
    // connection, which is then closed a timeout after the response.
    let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.ends_with(b"\r\n\r\nslow") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let answered = Instant::now();
    read_until_closed(&mut stream, &mut seen).await;
    assert!(answered.elapsed() >= timeout - Duration::from_millis(20));
    // The wait restarts with every response: requests 200 ms apart keep a connection open
    // for longer than the timeout.
    let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"\r\n\r\nslow") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    }
    lb.shutdown().await;
}
