//! Tests of `GuardedClient` against real HTTP servers on loopback addresses only.
//!
//! Hostile DNS is simulated with fixed answers (`FakeLookup`) that only ever name loopback
//! addresses; requests to anything else are refused before a connection is attempted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, Method as AxumMethod, StatusCode as AxumStatus};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::*;
use crate::resolve::tests::FakeLookup;

/// Paths the test server was asked for, in order.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<Vec<String>>>);

impl Hits {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, path: &str) -> usize {
        self.paths().iter().filter(|p| *p == path).count()
    }
}

async fn echo(method: AxumMethod, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<binary>"))))
        .collect();
    axum::Json(json!({
        "method": method.as_str(),
        "body": String::from_utf8_lossy(&body),
        "headers": headers,
    }))
}

/// `/to?loc=…&status=…`: a redirect anywhere.
async fn redirect_to(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = q
        .get("status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(302u16);
    Response::builder()
        .status(status)
        .header("location", q.get("loc").cloned().unwrap_or_default())
        .body(Body::empty())
        .unwrap()
}

async fn chain(Path(n): Path<u32>) -> Response {
    let next = if n == 0 {
        "/ok".to_owned()
    } else {
        format!("/chain/{}", n - 1)
    };
    (AxumStatus::FOUND, [("location", next)]).into_response()
}

fn app(hits: Hits) -> Router {
    Router::new()
        .route("/ok", get(|| async { ([("x-test", "yes")], "hello") }))
        .route(
            "/json",
            get(|| async { axum::Json(json!({"status": "green", "n": 3})) }),
        )
        .route("/echo", any(echo))
        .route("/to", any(redirect_to))
        .route("/chain/{n}", get(chain))
        .route(
            "/loop",
            get(|| async { (AxumStatus::FOUND, [("location", "/loop")]) }),
        )
        .route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }))
        .route(
            "/endless",
            get(|| async {
                let chunks = futures::stream::repeat_with(|| {
                    Ok::<_, Infallible>(Bytes::from(vec![b'y'; 64 * 1024]))
                });
                Body::from_stream(chunks)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(20)).await;
                "late"
            }),
        )
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let hits = hits.clone();
            async move {
                hits.0.lock().unwrap().push(req.uri().path().to_owned());
                next.run(req).await
            }
        }))
}

/// Starts the test server on `ip` (a loopback address), port chosen by the OS.
async fn serve(ip: &str) -> (SocketAddr, Hits) {
    serve_at(format!("{ip}:0").parse().unwrap()).await
}

async fn serve_at(addr: SocketAddr) -> (SocketAddr, Hits) {
    assert!(addr.ip().is_loopback(), "tests only contact loopback");
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Hits::default();
    let router = app(hits.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, hits)
}

fn loopback_policy() -> UrlPolicy {
    UrlPolicy {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        timeout: Duration::from_secs(10),
        ..UrlPolicy::public_internet()
    }
}

fn client(policy: UrlPolicy) -> GuardedClient {
    GuardedClient::new(policy).unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn reason(err: &GuardError) -> &GuardError {
    match err {
        GuardError::RedirectNotAllowed { reason, .. } => reason,
        other => panic!("expected RedirectNotAllowed, got {other:?}"),
    }
}

#[tokio::test]
async fn allowed_when_loopback_network_is_allowed() {
    let (addr, hits) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let resp = c.send(GuardedRequest::get(url(addr, "/ok"))).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.is_success());
    assert_eq!(&resp.body[..], b"hello");
    assert_eq!(resp.header("X-Test"), Some("yes"));
    assert_eq!(resp.final_url.as_str(), url(addr, "/ok"));
    assert_eq!(hits.paths(), ["/ok"]);
}

#[tokio::test]
async fn loopback_denied_by_default_without_connecting() {
    let (addr, hits) = serve("127.0.0.1").await;
    let c = client(UrlPolicy::public_internet());
    for target in [
        url(addr, "/ok"),
        format!("http://127.1:{}/ok", addr.port()),
        format!("http://2130706433:{}/ok", addr.port()),
        format!("http://0x7f.1:{}/ok", addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/ok", addr.port()),
        format!("http://localhost:{}/ok", addr.port()),
    ] {
        let err = c.send(GuardedRequest::get(&target)).await.unwrap_err();
        assert!(
            matches!(err, GuardError::AddressNotAllowed { .. }),
            "{target}: {err:?}"
        );
    }
    assert!(hits.paths().is_empty());
}

#[tokio::test]
async fn metadata_address_refused_before_any_connection() {
    let c = client(loopback_policy());
    let started = Instant::now();
    let err = c
        .send(GuardedRequest::get(
            "http://169.254.169.254/latest/meta-data/",
        ))
        .await
        .unwrap_err();
    // An IP literal never reaches the resolver, and a connection attempt would have ended in
    // Connect or Timeout: AddressNotAllowed means `check` refused it first.
    assert_eq!(
        err,
        GuardError::AddressNotAllowed {
            host: "169.254.169.254".into(),
            ip: "169.254.169.254".parse().unwrap()
        }
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn json_and_user_agent() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let resp = c
        .send(GuardedRequest::get(url(addr, "/json")))
        .await
        .unwrap();
    assert_eq!(resp.json().unwrap(), json!({"status": "green", "n": 3}));

    let resp = c
        .send(GuardedRequest::get(url(addr, "/echo")))
        .await
        .unwrap();
    let echoed = resp.json().unwrap();
    assert_eq!(echoed["headers"]["user-agent"], json!(USER_AGENT));
    assert!(USER_AGENT.starts_with("ferry/"));
    let not_json = GuardedResponse {
        body: Bytes::from_static(b"<html>"),
        ..resp
    };
    assert!(matches!(not_json.json(), Err(GuardError::Json { .. })));
}

#[tokio::test]
async fn post_with_headers_and_body() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let req = GuardedRequest::new(Method::POST, url(addr, "/echo"))
        .with_header("X-Custom", "1")
        .with_json(&json!({"deploy": "ok"}));
    let echoed = c.send(req).await.unwrap().json().unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body"], r#"{"deploy":"ok"}"#);
    assert_eq!(echoed["headers"]["x-custom"], "1");
    assert_eq!(echoed["headers"]["content-type"], "application/json");
}

#[tokio::test]
async fn redirect_chain_on_allowed_hosts_works() {
    let (addr, hits) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let resp = c
        .send(GuardedRequest::get(url(addr, "/chain/4")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"hello");
    assert_eq!(resp.final_url.path(), "/ok");
    assert_eq!(
        hits.paths(),
        [
            "/chain/4", "/chain/3", "/chain/2", "/chain/1", "/chain/0", "/ok"
        ]
    );
}

#[tokio::test]
async fn redirect_limit_and_loop() {
    let (addr, hits) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let err = c
        .send(GuardedRequest::get(url(addr, "/loop")))
        .await
        .unwrap_err();
    assert_eq!(err, GuardError::TooManyRedirects { max: 5 });
    assert_eq!(hits.count("/loop"), 6, "the first request and 5 redirects");

    // Five hops is exactly the limit.
    let chain = c.send(GuardedRequest::get(url(addr, "/chain/4"))).await;
    assert!(chain.is_ok());
    let err = c
        .send(GuardedRequest::get(url(addr, "/chain/5")))
        .await
        .unwrap_err();
    assert_eq!(err, GuardError::TooManyRedirects { max: 5 });

    // max_redirects = 0: the 3xx comes back as it is.
    let c = client(UrlPolicy {
        max_redirects: 0,
        ..loopback_policy()
    });
    let resp = c
        .send(GuardedRequest::get(url(addr, "/loop")))
        .await
        .unwrap();
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("location"), Some("/loop"));
}

#[tokio::test]
async fn redirect_to_metadata_address_is_refused() {
    let (addr, hits) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    for loc in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
    ] {
        let target = url(addr, &format!("/to?loc={loc}"));
        let err = c.send(GuardedRequest::get(target)).await.unwrap_err();
        assert!(
            matches!(reason(&err), GuardError::AddressNotAllowed { .. }),
            "{loc}: {err:?}"
        );
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
    }
    assert_eq!(hits.count("/to"), 3);
}

#[tokio::test]
async fn redirect_off_the_allow_list_is_refused() {
    let (addr, hits) = serve("127.0.0.1").await;
    // Only the name `localhost` is allow-listed: a redirect to the IP is off the list.
    let c = client(UrlPolicy {
        allowed_hosts: Some(vec!["localhost".into()]),
        ..loopback_policy()
    });
    let port = addr.port();
    let ok = c
        .send(GuardedRequest::get(format!("http://localhost:{port}/ok")))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let target = format!("http://localhost:{port}/to?loc=http://127.0.0.1:{port}/echo");
    let err = c.send(GuardedRequest::get(target)).await.unwrap_err();
    assert!(
        matches!(reason(&err), GuardError::HostNotAllowed { host } if host == "127.0.0.1"),
        "{err:?}"
    );
    assert_eq!(hits.count("/echo"), 0);

    // A scheme the policy does not allow is refused the same way.
    let target = format!("http://localhost:{port}/to?loc=file:///etc/passwd");
    let err = c.send(GuardedRequest::get(target)).await.unwrap_err();
    assert!(
        matches!(reason(&err), GuardError::SchemeNotAllowed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirect_to_a_name_resolving_to_a_denied_address_is_refused() {
    let (addr, hits) = serve("127.0.0.1").await;
    // Only 127.0.0.1 is allowed; `internal.test` resolves to another loopback address.
    let policy = UrlPolicy {
        allowed_networks: vec!["127.0.0.1/32".parse().unwrap()],
        ..loopback_policy()
    };
    let dns = FakeLookup::new(&[("internal.test", &["127.0.0.2"])]);
    let c = GuardedClient::with_lookup(policy, dns).unwrap();
    let port = addr.port();
    let target = url(addr, &format!("/to?loc=http://internal.test:{port}/echo"));
    let err = c.send(GuardedRequest::get(target)).await.unwrap_err();
    assert!(
        matches!(reason(&err), GuardError::AddressNotAllowed { host, .. } if host == "internal.test"),
        "{err:?}"
    );
    assert_eq!(hits.count("/echo"), 0);
}

#[tokio::test]
async fn dns_answer_with_only_denied_addresses_is_refused_by_the_resolver() {
    let (addr, hits) = serve("127.0.0.1").await;
    // `loopback.test` passes `check` (it is just a name); only the resolver can catch it.
    let dns = FakeLookup::new(&[("loopback.test", &["127.0.0.1", "::1"])]);
    let c = GuardedClient::with_lookup(
        UrlPolicy {
            timeout: Duration::from_secs(10),
            ..UrlPolicy::public_internet()
        },
        dns,
    )
    .unwrap();
    let target = format!("http://loopback.test:{}/ok", addr.port());
    assert!(c.policy().check(&target).is_ok());
    let err = c.send(GuardedRequest::get(target)).await.unwrap_err();
    assert_eq!(
        err,
        GuardError::AddressNotAllowed {
            host: "loopback.test".into(),
            ip: "127.0.0.1".parse().unwrap()
        }
    );
    assert!(hits.paths().is_empty());
}

#[tokio::test]
async fn localhost_is_refused_by_the_system_resolver_path() {
    // `check` refuses `localhost` by name; the resolver refuses it by address. Here a policy
    // that allows the name's check (loopback v6 only) still cannot reach 127.0.0.1.
    let (addr, hits) = serve("127.0.0.1").await;
    let c = client(UrlPolicy {
        allowed_networks: vec!["::1/128".parse().unwrap()],
        timeout: Duration::from_secs(10),
        ..UrlPolicy::public_internet()
    });
    let target = format!("http://localhost:{}/ok", addr.port());
    assert!(c.policy().check(&target).is_ok());
    let result = c.send(GuardedRequest::get(target)).await;
    // Either /etc/hosts has no ::1 for localhost (refused by the resolver), or the connection
    // went to [::1] where nothing listens: never to 127.0.0.1.
    match result {
        Err(GuardError::AddressNotAllowed { ip, .. }) => assert!(ip.is_ipv4()),
        Err(GuardError::Connect { .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(hits.paths().is_empty());
}

#[tokio::test]
async fn resolver_drops_denied_addresses_so_rebinding_cannot_reach_them() {
    // The "internal" server listens on 127.0.0.2; the permitted one on 127.0.0.1, same port.
    let (internal, internal_hits) = serve("127.0.0.2").await;
    let (public, public_hits) = serve_at(SocketAddr::new(
        "127.0.0.1".parse().unwrap(),
        internal.port(),
    ))
    .await;
    let dns = FakeLookup::new(&[("rebind.test", &["127.0.0.2", "127.0.0.1"])]);
    let c = GuardedClient::with_lookup(
        UrlPolicy {
            allowed_networks: vec!["127.0.0.1/32".parse().unwrap()],
            ..loopback_policy()
        },
        dns,
    )
    .unwrap();
    let resp = c
        .send(GuardedRequest::get(format!(
            "http://rebind.test:{}/ok",
            public.port()
        )))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(public_hits.paths(), ["/ok"]);
    assert!(
        internal_hits.paths().is_empty(),
        "the denied address was never contacted"
    );
}

#[tokio::test]
async fn redirect_method_rules() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    for (status, want_method, want_body) in [
        (303, "GET", ""),
        (302, "GET", ""),
        (301, "GET", ""),
        (307, "POST", "payload"),
        (308, "POST", "payload"),
    ] {
        let req = GuardedRequest::new(
            Method::POST,
            url(addr, &format!("/to?status={status}&loc=/echo")),
        )
        .with_header("content-type", "text/plain")
        .with_body("payload");
        let echoed = c.send(req).await.unwrap().json().unwrap();
        assert_eq!(echoed["method"], want_method, "{status}");
        assert_eq!(echoed["body"], want_body, "{status}");
        let content_type = echoed["headers"].get("content-type");
        assert_eq!(content_type.is_some(), !want_body.is_empty(), "{status}");
    }
    // 303 after PUT is a GET too; 307 keeps PUT.
    let req =
        GuardedRequest::new(Method::PUT, url(addr, "/to?status=303&loc=/echo")).with_body("x");
    assert_eq!(c.send(req).await.unwrap().json().unwrap()["method"], "GET");
    let req =
        GuardedRequest::new(Method::PUT, url(addr, "/to?status=307&loc=/echo")).with_body("x");
    assert_eq!(c.send(req).await.unwrap().json().unwrap()["method"], "PUT");
}

#[tokio::test]
async fn relative_and_absolute_locations() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    for loc in [
        "echo",
        "./echo",
        "/echo",
        &url(addr, "/echo"),
        &format!("//{addr}/echo"),
    ] {
        let resp = c
            .send(GuardedRequest::get(url(addr, &format!("/to?loc={loc}"))))
            .await
            .unwrap();
        assert_eq!(resp.final_url.path(), "/echo", "{loc}");
    }
}

#[tokio::test]
async fn credentials_stay_on_their_origin() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let port = addr.port();
    let send = |target: String| {
        let c = c.clone();
        async move {
            let req = GuardedRequest::get(target)
                .with_header("Authorization", "Bearer s3cret")
                .with_header("X-Api-Key", "s3cret")
                .with_header("Cookie", "session=s3cret")
                .with_header("X-Trace", "keep-me");
            c.send(req).await.unwrap().json().unwrap()
        }
    };
    // Same origin: everything is kept.
    let same = send(url(addr, "/to?loc=/echo")).await;
    assert_eq!(same["headers"]["authorization"], "Bearer s3cret");
    assert_eq!(same["headers"]["x-api-key"], "s3cret");
    // Another origin (localhost vs 127.0.0.1): credential-like headers are dropped.
    let cross = send(url(addr, &format!("/to?loc=http://localhost:{port}/echo"))).await;
    let headers = cross["headers"].as_object().unwrap();
    assert!(!headers.contains_key("authorization"), "{headers:?}");
    assert!(!headers.contains_key("x-api-key"), "{headers:?}");
    assert!(!headers.contains_key("cookie"), "{headers:?}");
    assert_eq!(headers["x-trace"], "keep-me");
}

#[tokio::test]
async fn url_userinfo_is_sent_but_never_shown() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let target = format!("http://deployer:s3cret@{addr}/echo?token=abc");
    let req = GuardedRequest::get(&target).with_header("Authorization-Extra", "s3cret");
    assert!(!format!("{req:?}").contains("s3cret"));
    let resp = c.send(req).await.unwrap();
    let echoed = resp.json().unwrap();
    // Basic auth from the URL reached the server…
    assert!(
        echoed["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Basic ")
    );
    // …but the response does not carry the credentials.
    assert_eq!(resp.final_url.username(), "");
    assert_eq!(resp.final_url.password(), None);
    let shown = format!("{resp:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("abc"),
        "{shown}"
    );

    // Nor do errors.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = c
        .send(GuardedRequest::get(format!(
            "http://deployer:s3cret@{closed}/x?token=abc"
        )))
        .await
        .unwrap_err();
    assert!(matches!(err, GuardError::Connect { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("abc"),
        "{shown}"
    );
}

#[tokio::test]
async fn header_rules() {
    let c = client(loopback_policy());
    for (name, value) in [
        ("Host", "internal.example.com"),
        ("content-length", "5"),
        ("Transfer-Encoding", "chunked"),
        ("bad name", "x"),
        ("X-Injected", "a\r\nX-Evil: s3cret"),
    ] {
        let req = GuardedRequest::get("http://127.0.0.1:1/").with_header(name, value);
        let err = c.send(req).await.unwrap_err();
        assert!(
            matches!(&err, GuardError::ForbiddenHeader { name: n, .. } if n == name),
            "{name}: {err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("s3cret"));
    }
}

#[tokio::test]
async fn response_over_the_cap_is_refused() {
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(UrlPolicy {
        max_response_bytes: 1024 * 1024,
        ..loopback_policy()
    });
    // Known length: refused from Content-Length, without reading.
    let err = c
        .send(GuardedRequest::get(url(addr, "/big")))
        .await
        .unwrap_err();
    assert_eq!(err, GuardError::ResponseTooLarge { limit: 1024 * 1024 });
    // Endless chunked body: reading stops at the cap.
    let err = c
        .send(GuardedRequest::get(url(addr, "/endless")))
        .await
        .unwrap_err();
    assert_eq!(err, GuardError::ResponseTooLarge { limit: 1024 * 1024 });
    // Exactly at the cap is fine.
    let c = client(UrlPolicy {
        max_response_bytes: 5,
        ..loopback_policy()
    });
    let resp = c.send(GuardedRequest::get(url(addr, "/ok"))).await.unwrap();
    assert_eq!(&resp.body[..], b"hello");
    let c = client(UrlPolicy {
        max_response_bytes: 4,
        ..loopback_policy()
    });
    let err = c
        .send(GuardedRequest::get(url(addr, "/ok")))
        .await
        .unwrap_err();
    assert_eq!(err, GuardError::ResponseTooLarge { limit: 4 });
}

#[tokio::test]
async fn slow_server_times_out() {
    let (addr, _) = serve("127.0.0.1").await;
    let timeout = Duration::from_millis(300);
    let c = client(UrlPolicy {
        timeout,
        ..loopback_policy()
    });
    let started = Instant::now();
    let err = c
        .send(GuardedRequest::get(url(addr, "/slow")))
        .await
        .unwrap_err();
    assert_eq!(err, GuardError::Timeout { after: timeout });
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn https_uses_the_ring_provider_without_a_global_one() {
    // No process-wide provider is installed in this test binary; TLS still initialises.
    // The server speaks plain HTTP, so the handshake fails: a transport error, not a panic.
    let (addr, _) = serve("127.0.0.1").await;
    let c = client(loopback_policy());
    let err = c
        .send(GuardedRequest::get(format!("https://{addr}/ok")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GuardError::Connect { reason, .. } if !reason.contains("provider")),
        "{err:?}"
    );
}

#[tokio::test]
async fn policy_is_validated_and_schemes_limited() {
    let err = GuardedClient::new(UrlPolicy {
        allowed_hosts: Some(vec!["bad_host".into()]),
        ..UrlPolicy::public_internet()
    })
    .unwrap_err();
    assert!(matches!(err, GuardError::InvalidPolicy { .. }), "{err:?}");

    // A policy may allow other schemes for `check`; the client still only speaks HTTP(S).
    let c = client(UrlPolicy {
        schemes: vec!["http".into(), "ftp".into()],
        ..loopback_policy()
    });
    let err = c
        .send(GuardedRequest::get("ftp://127.0.0.1/file"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GuardError::SchemeNotAllowed { .. }),
        "{err:?}"
    );
    let err = client(UrlPolicy::deny_all())
        .send(GuardedRequest::get("https://example.com/"))
        .await
        .unwrap_err();
    assert!(matches!(err, GuardError::HostNotAllowed { .. }), "{err:?}");
}
