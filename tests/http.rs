//! The HTTP API (`hamlet serve`), as documented in api.md: each example
//! there has a test here. Most drive `router(state)` in-process with
//! `tower::ServiceExt::oneshot`; `real_socket_round_trip` runs the real
//! binary on a loopback port.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hamlet::classify::Params;
use hamlet::engine::Engine;
use hamlet::http::router;
use hamlet::service::Service;
use hamlet::store::MemoryStore;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

const SPAM: &str = "From: deals@offers.example\r\nSubject: Cheap pills now\r\n\r\nBuy cheap pills now, best prices, click here.\r\n";
const HAM: &str = "From: alice@example.org\r\nSubject: Minutes of Tuesday\r\n\r\nThe meeting minutes are attached, see you Tuesday.\r\n";

fn app(token: Option<&str>, limit: usize) -> axum::Router {
    // Models of a message or two per class: without the early-model shrink,
    // which would (rightly) call all of their verdicts unsure.
    let engine = Engine::new(MemoryStore::new(), Params { maturity: 0.0, ..Params::default() });
    router(Arc::new(Service::builder(engine).learn_token(token.map(str::to_string)).build().unwrap()), limit)
}

async fn call(app: &axum::Router, method: &str, uri: &str, auth: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}"));
    (status, json)
}

#[tokio::test]
async fn check_returns_verdict_probability_and_clues() {
    let app = app(None, 1 << 20);
    for _ in 0..3 {
        call(&app, "POST", "/v1/learn/spam", None, SPAM).await;
        call(&app, "POST", "/v1/learn/ham", None, HAM).await;
    }
    let (st, v) = call(&app, "POST", "/v1/check", None, SPAM).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["verdict"], "spam", "{v}");
    assert!(v["probability"].as_f64().unwrap() > 0.9);
    assert!(v["clues"].as_array().unwrap().iter().any(|c| c["token"] == "pills"), "{v}");
    assert!(v["elapsed_ms"].as_f64().is_some());
    assert!(v["stages"]["content"]["tokens"].as_u64().unwrap() > 5);
}

#[tokio::test]
async fn learn_statuses_learned_already_relearned_unlearned() {
    let app = app(Some("s3cret"), 1 << 20);
    let (st, v) = call(&app, "POST", "/v1/learn/spam", Some("s3cret"), SPAM).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::OK, Some("learned")));
    let (st, v) = call(&app, "POST", "/v1/learn/spam", Some("s3cret"), SPAM).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::ALREADY_REPORTED, Some("already learned")));
    let (st, v) = call(&app, "POST", "/v1/learn/ham", Some("s3cret"), SPAM).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::OK, Some("relearned")));
    let (st, v) = call(&app, "POST", "/v1/unlearn", Some("s3cret"), SPAM).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::OK, Some("unlearned")));
    let (_, v) = call(&app, "GET", "/v1/stats", None, "").await;
    assert_eq!(v["messages"]["spam"], 0);
    assert_eq!(v["messages"]["ham"], 0);
}

#[tokio::test]
async fn learning_needs_the_token() {
    let app = app(Some("s3cret"), 1 << 20);
    for auth in [None, Some("wrong"), Some("s3cre")] {
        let (st, v) = call(&app, "POST", "/v1/learn/spam", auth, SPAM).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"]["status"], 401);
    }
    let (_, v) = call(&app, "GET", "/v1/stats", None, "").await;
    assert_eq!(v["messages"]["spam"], 0, "nothing was learned");
}

/// `hamlet serve` with no token configured makes one (a file beside the
/// database only its owner can read) and learning needs it; the scheme is
/// case-insensitive; `hamlet client` reads the token through `--config`;
/// `open_learning = true` is the explicit way to learn without one.
#[test]
fn learning_is_closed_unless_opened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("hamlet-http-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("h.redb");
    let bin = env!("CARGO_BIN_EXE_hamlet");
    let (mut child, addr) = start_server(&db, &[]);
    let file = dir.join("h.learn-token");
    let token = std::fs::read_to_string(&file).expect("a token file beside the database");
    let token = token.trim();
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let learn = |auth: &str, body: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::{Read, Write};
        write!(s, "POST /v1/learn/spam HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out[9..12].to_string()
    };
    assert_eq!(learn("", SPAM), "401", "no token");
    assert_eq!(learn("Authorization: Bearer x\r\n", SPAM), "401", "a wrong token");
    assert_eq!(learn(&format!("Authorization: bEARER {token}\r\n"), SPAM), "200", "the scheme in any case");
    // The client finds the token through the configuration's database.
    let cfg = dir.join("hamlet.toml");
    std::fs::write(&cfg, format!("db = \"{}\"\n", db.display())).unwrap();
    let mut c = std::process::Command::new(bin)
        .args(["--config", cfg.to_str().unwrap(), "client", "--http", &addr, "-L", "ham"])
        .env_remove("HAMLET_LEARN_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), HAM.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Message successfully un/learned\n");
    let _ = child.kill();
    let _ = child.wait();
    // The same token on the next start.
    let (mut child, addr2) = start_server(&db, &[]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let _ = child.kill();
    let _ = child.wait();
    // Opened explicitly: no token needed.
    std::fs::write(&cfg, format!("db = \"{}\"\nopen_learning = true\n", db.display())).unwrap();
    let (mut child, addr3) = start_server(&db, &["--config", cfg.to_str().unwrap()]);
    let mut s = std::net::TcpStream::connect(&addr3).unwrap();
    use std::io::{Read, Write};
    write!(s, "POST /v1/learn/ham HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", SPAM.len(), SPAM).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = addr2;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn errors_have_one_shape() {
    let app = app(None, 1000);
    let big = "x".repeat(2000);
    let (st, v) = call(&app, "POST", "/v1/check", None, &big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (st, v) = call(&app, "POST", "/v1/check", None, "").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("empty"));
    let (st, v) = call(&app, "GET", "/v2/nothing", None, "").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["status"], 404);
    // axum's own replies get the shape too: a wrong method (keeping Allow).
    let resp = app.clone().oneshot(Request::builder().method("GET").uri("/v1/check").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().get("allow").is_some_and(|a| a.to_str().unwrap().contains("POST")), "{:?}", resp.headers());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("405 body is not JSON ({e}): {bytes:?}"));
    assert_eq!(v["error"]["status"], 405, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("method")), "{v}");
    let (st, v) = call(&app, "DELETE", "/v1/learn/spam", None, SPAM).await;
    assert_eq!((st, v["error"]["status"].as_u64()), (StatusCode::METHOD_NOT_ALLOWED, Some(405)), "{v}");
}

/// Compresses with zstd, as `rspamc -z` does.
fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

async fn call_bytes(app: &axum::Router, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, Value) {
    let mut req = Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}")))
}

/// zstd bodies (rspamd's `Compression: zstd`) are the message they
/// decompress to; more than the body limit is a 413 without inflating it
/// all, corrupt zstd a 400, another compression a 415: never scored as bytes.
#[tokio::test]
async fn zstd_bodies_are_decompressed_within_the_limit() {
    let app = app(None, 1 << 20);
    let z = zstd(SPAM.as_bytes());
    let (st, v) = call_bytes(&app, "/v1/learn/spam", &[("Compression", "zstd")], z.clone()).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::OK, Some("learned")), "{v}");
    // The same message, plain: the one learned above.
    let (st, v) = call(&app, "POST", "/v1/learn/spam", None, SPAM).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::ALREADY_REPORTED, Some("already learned")), "{v}");
    call(&app, "POST", "/v1/learn/ham", None, HAM).await;
    let (_, plain) = call(&app, "POST", "/v1/check", None, SPAM).await;
    for headers in [&[("Compression", "zstd")][..], &[("Content-Encoding", "zstd")], &[]] {
        let (st, v) = call_bytes(&app, "/v1/check", headers, z.clone()).await;
        assert_eq!(st, StatusCode::OK, "{headers:?}: {v}");
        assert_eq!(v["probability"], plain["probability"], "{headers:?}: scored as the message");
        assert_eq!(v["stages"]["content"]["tokens"], plain["stages"]["content"]["tokens"], "{headers:?}");
    }
    // A bomb: 64 MiB of zeros in a few KiB, against a 1 MiB limit.
    let bomb = zstd(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 << 10);
    let (st, v) = call_bytes(&app, "/checkv2", &[("Compression", "zstd")], bomb).await;
    assert_eq!((st, v["error"]["status"].as_u64()), (StatusCode::PAYLOAD_TOO_LARGE, Some(413)), "{v}");
    let (st, v) = call_bytes(&app, "/learnspam", &[("Compression", "zstd")], SPAM.as_bytes().to_vec()).await;
    assert_eq!((st, v["error"]["status"].as_u64()), (StatusCode::BAD_REQUEST, Some(400)), "not zstd: {v}");
    let (st, v) = call_bytes(&app, "/v1/check", &[("Content-Encoding", "gzip")], SPAM.as_bytes().to_vec()).await;
    assert_eq!((st, v["error"]["status"].as_u64()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(415)), "{v}");
    let (st, v) = call_bytes(&app, "/v1/check", &[("Compression", "zstd"), ("Dictionary", "1234")], z).await;
    assert_eq!((st, v["error"]["status"].as_u64()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(415)), "{v}");
    let (_, v) = call(&app, "GET", "/v1/stats", None, "").await;
    assert_eq!((v["messages"]["spam"].as_u64(), v["messages"]["ham"].as_u64()), (Some(1), Some(1)), "nothing else was learned: {v}");
}

/// Past `users_max` per-user models, a learn for a new user is a 507 in
/// the error shape, counted in /metrics; existing users keep learning.
#[tokio::test]
async fn per_user_models_are_capped() {
    let dir = std::env::temp_dir().join(format!("hamlet-http-users-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::new(MemoryStore::new(), Params { maturity: 0.0, ..Params::default() });
    let users = hamlet::users::Users::new(dir.clone(), vec![], 8).with_caps(2, u64::MAX);
    let app = router(Arc::new(Service::builder(engine).users(Some(users)).build().unwrap()), 1 << 20);
    for u in ["ann", "bob"] {
        let (st, v) = call_bytes(&app, "/v1/learn/spam", &[("X-Hamlet-User", u)], SPAM.into()).await;
        assert_eq!(st, StatusCode::OK, "{u}: {v}");
    }
    let (st, v) = call_bytes(&app, "/v1/learn/spam", &[("X-Hamlet-User", "cid")], SPAM.into()).await;
    assert_eq!((st, v["error"]["status"].as_u64()), (StatusCode::INSUFFICIENT_STORAGE, Some(507)), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("users_max")), "{v}");
    assert!(!dir.join("cid.redb").exists());
    let (st, v) = call_bytes(&app, "/v1/learn/ham", &[("X-Hamlet-User", "ann")], HAM.into()).await;
    assert_eq!((st, v["result"].as_str()), (StatusCode::OK, Some("learned")), "an existing user keeps learning: {v}");
    let (st, _) = call_bytes(&app, "/v1/check", &[("X-Hamlet-User", "dan")], SPAM.into()).await;
    assert_eq!(st, StatusCode::OK, "a check for a user without a model is never refused");
    let resp = app.clone().oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("hamlet_users_refused_total 1"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn stats_and_health() {
    let app = app(None, 1 << 20);
    let (st, v) = call(&app, "GET", "/healthz", None, "").await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    call(&app, "POST", "/v1/learn/ham", None, HAM).await;
    let (st, v) = call(&app, "GET", "/v1/stats", None, "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["messages"]["ham"], 1);
    assert!(v["tokens"].as_u64().unwrap() > 5);
    assert!(v["uptime_s"].as_u64().is_some());
}

/// Starts `hamlet --db DB serve` on a free loopback port with `extra` flags
/// and waits until it listens; returns the child and its address.
fn start_server(db: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hamlet"))
        .args(["--db", db.to_str().unwrap(), "serve", "--http", &addr])
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return (child, addr);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("hamlet serve never listened on {addr}");
}

/// The real binary on a loopback port: learn, check, SIGTERM, and the learn
/// is in the database afterwards.
#[test]
fn real_socket_round_trip() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("hamlet-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("h.redb");
    let bin = env!("CARGO_BIN_EXE_hamlet");
    let init = std::process::Command::new(bin).args(["--db", db.to_str().unwrap(), "db", "init", "--empty"]).output().unwrap();
    assert!(init.status.success());
    let (mut child, addr) = start_server(&db, &["--learn-token", "t0ken"]);
    let request = |head: &str, body: &str| -> String {
        for _ in 0..100 {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
                write!(s, "{head}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("server never listened on {addr}");
    };
    let learned = request("POST /v1/learn/spam HTTP/1.1\r\nAuthorization: Bearer t0ken", SPAM);
    assert!(learned.starts_with("HTTP/1.1 200"), "{learned}");
    let checked = request("POST /v1/check HTTP/1.1", SPAM);
    assert!(checked.contains("\"verdict\""), "{checked}");
    // SIGTERM: graceful shutdown, then the learn is on disk.
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    let stats = std::process::Command::new(bin).args(["--db", db.to_str().unwrap(), "db", "stats"]).output().unwrap();
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("spam      1 messages"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// kill -9 during a stream of learns: the database opens afterwards and every
/// learn that got a 2xx is in it.
#[test]
fn kill_9_loses_no_acknowledged_learn() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("hamlet-http-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("msgs")).unwrap();
    let db = dir.join("h.redb");
    let bin = env!("CARGO_BIN_EXE_hamlet");
    let ok = std::process::Command::new(bin).args(["--db", db.to_str().unwrap(), "db", "init", "--empty"]).status().unwrap();
    assert!(ok.success());
    let (mut child, addr) = start_server(&db, &[]);
    let token = std::fs::read_to_string(dir.join("h.learn-token")).expect("serve makes a learn token beside its database");
    let token = token.trim().to_string();
    // Two clients stream learns; the server is killed while they do, so the
    // kill lands in the middle of requests and transactions.
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let addr = addr.clone();
            let dir = dir.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let learn = |body: &str| -> Option<u16> {
                    let mut s = std::net::TcpStream::connect(&addr).ok()?;
                    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
                    write!(s, "POST /v1/learn/spam HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).ok()?;
                    let mut out = String::new();
                    s.read_to_string(&mut out).ok()?;
                    out.get(9..12)?.parse().ok()
                };
                let mut acked = Vec::new();
                for i in 0..100_000 {
                    let body = format!("Message-ID: <m{c}-{i}@kill.example>\r\nSubject: offer {i}\r\n\r\nunique words w{c}x{i}a w{c}x{i}b\r\n");
                    match learn(&body) {
                        Some(s) if (200..300).contains(&s) => {
                            let p = dir.join("msgs").join(format!("{c}-{i}.eml"));
                            std::fs::write(&p, &body).unwrap();
                            acked.push(p);
                        }
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let acknowledged: Vec<std::path::PathBuf> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let _ = child.wait();
    assert!(acknowledged.len() >= 20, "only {} learns acknowledged before the kill", acknowledged.len());
    // The database opens, and learning each acknowledged message again is a no-op.
    let mut args: Vec<String> = vec!["--db".into(), db.to_str().unwrap().into(), "train".into(), "--spam".into()];
    args.extend(acknowledged.iter().map(|p| p.to_str().unwrap().to_string()));
    let out = std::process::Command::new(bin).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{} already learned", acknowledged.len())), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn metrics_count_requests_verdicts_and_learns() {
    let app = app(None, 1 << 20);
    call(&app, "POST", "/v1/learn/spam", None, SPAM).await;
    call(&app, "POST", "/v1/check", None, SPAM).await;
    call(&app, "POST", "/v1/check", None, "").await;
    let resp = app.clone().oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for want in [
        "hamlet_requests_total{endpoint=\"/v1/check\",status=\"200\"} 1",
        "hamlet_requests_total{endpoint=\"/v1/check\",status=\"400\"} 1",
        "hamlet_request_duration_seconds_count{endpoint=\"/v1/check\"} 2",
        "hamlet_learns_total{outcome=\"learned\"} 1",
        "hamlet_verdicts_total{verdict=",
        "hamlet_db_bytes ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[tokio::test]
async fn rspamd_compatible_endpoints() {
    let app = app(Some("pw"), 1 << 20);
    let resp = app.clone().oneshot(Request::builder().uri("/ping").body(Body::empty()).unwrap()).await.unwrap();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"pong\n");
    // rspamc sends the controller password as `Password:`.
    let learn =
        |body: &str, uri: &str| Request::builder().method("POST").uri(uri).header("Password", "pw").body(Body::from(body.to_string())).unwrap();
    for _ in 0..2 {
        let r = app.clone().oneshot(learn(SPAM, "/learnspam")).await.unwrap();
        assert!(r.status() == StatusCode::OK || r.status() == StatusCode::ALREADY_REPORTED);
    }
    let r = app.clone().oneshot(learn(HAM, "/learnham")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["success"], true);
    let body = format!("Message-ID: <x1@example.org>\r\n{SPAM}");
    let (st, v) = call(&app, "POST", "/checkv2", None, &body).await;
    assert_eq!(st, StatusCode::OK);
    for key in ["is_skipped", "score", "required_score", "action", "symbols", "messages", "time_real"] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    assert_eq!(v["message-id"], "x1@example.org");
    assert_eq!(v["required_score"], 13.5);
    assert_eq!(v["action"], "add header", "{v}");
    assert!(v["symbols"]["HAMLET_SPAM"]["score"].as_f64().unwrap() > 13.5);
}

/// Real rspamc (Debian package rspamd) against hamlet serve: `symbols` and
/// `learn_spam` work unchanged.
#[test]
fn rspamc_works_against_hamlet() {
    let rspamc = ["/usr/bin/rspamc", "/usr/local/bin/rspamc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| panic!("rspamc is missing: apt-get install -y --no-install-recommends rspamd (scripts/test.sh does)"));
    let dir = std::env::temp_dir().join(format!("hamlet-rspamc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("h.redb");
    let msg = dir.join("spam.eml");
    std::fs::write(&msg, format!("Message-ID: <r1@example.org>\r\n{SPAM}")).unwrap();
    let (mut child, addr) = start_server(&db, &["--learn-token", "pw"]);
    let run = |args: &[&str]| {
        let o = std::process::Command::new(rspamc).args(["-h", &addr]).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    let learned = run(&["-P", "pw", "learn_spam", msg.to_str().unwrap()]);
    let again = run(&["-P", "pw", "learn_spam", msg.to_str().unwrap()]);
    let denied = run(&["-P", "wrong", "learn_spam", msg.to_str().unwrap()]);
    let symbols = run(&["symbols", msg.to_str().unwrap()]);
    child.kill().unwrap();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(learned.contains("success = true"), "{learned}");
    assert!(again.contains("already learned"), "{again}");
    assert!(!denied.contains("success = true"), "{denied}");
    assert!(symbols.contains("Action:") && symbols.contains("Score:") && symbols.contains("HAMLET_"), "{symbols}");
    assert!(symbols.contains("Message-ID: r1@example.org"), "{symbols}");
}

/// A free rspamc from Debian's rspamd package.
fn rspamc_path() -> &'static str {
    ["/usr/bin/rspamc", "/usr/local/bin/rspamc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| panic!("rspamc is missing: apt-get install -y --no-install-recommends rspamd (scripts/test.sh does)"))
}

/// A temporary folder with an empty database (no starter model, so the
/// counts below are exactly what the test did), removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hamlet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_hamlet"))
            .args(["--db", dir.join("h.redb").to_str().unwrap(), "db", "init", "--empty"])
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Real `rspamc -z`: the zstd body is the message, learned and scored as
/// such (learning it plain afterwards finds it already learned).
#[test]
fn rspamc_z_is_decompressed() {
    let dir = Scratch::new("rspamc-z");
    let msg = dir.0.join("spam.eml");
    std::fs::write(&msg, format!("Message-ID: <z1@example.org>\r\n{SPAM}")).unwrap();
    let ham = dir.0.join("ham.eml");
    std::fs::write(&ham, format!("Message-ID: <z2@example.org>\r\n{HAM}")).unwrap();
    let (mut child, addr) = start_server(&dir.0.join("h.redb"), &["--learn-token", "pw"]);
    let run = |args: &[&str]| {
        let o = std::process::Command::new(rspamc_path()).args(["-h", &addr]).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    let m = msg.to_str().unwrap();
    let learned = run(&["-z", "-P", "pw", "learn_spam", m]);
    let again = run(&["-P", "pw", "learn_spam", m]);
    run(&["-P", "pw", "learn_ham", ham.to_str().unwrap()]);
    let zipped = run(&["-z", "symbols", m]);
    let plain = run(&["symbols", m]);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(learned.contains("success = true"), "{learned}");
    assert!(again.contains("already learned"), "the -z learn learned the message itself: {again}");
    let score = |out: &str| out.lines().find(|l| l.starts_with("Score:")).map(str::to_string).unwrap_or_else(|| panic!("no score in {out}"));
    assert_eq!(score(&zipped), score(&plain), "-z scores the message\n{zipped}\n{plain}");
    assert!(zipped.contains("Message-ID: z1@example.org"), "{zipped}");
}

/// Real `rspamc stat`, `counters` and `uptime` print what the service did:
/// two checks, one learn, the learned messages per class.
#[test]
fn rspamc_stat_counters_and_uptime() {
    let dir = Scratch::new("rspamc-stat");
    let msg = dir.0.join("spam.eml");
    std::fs::write(&msg, format!("Message-ID: <s1@example.org>\r\n{SPAM}")).unwrap();
    let (mut child, addr) = start_server(&dir.0.join("h.redb"), &[]);
    let run = |args: &[&str]| {
        let o = std::process::Command::new(rspamc_path()).args(["-h", &addr]).args(args).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    let m = msg.to_str().unwrap();
    let token = std::fs::read_to_string(dir.0.join("h.learn-token")).expect("serve makes a learn token beside its database");
    run(&["-P", token.trim(), "learn_spam", m]);
    run(&["-P", token.trim(), "learn_spam", m]);
    run(&["symbols", m]);
    run(&["symbols", m]);
    let (ok_stat, stat) = run(&["stat"]);
    let (ok_counters, counters) = run(&["counters"]);
    let (ok_uptime, uptime) = run(&["uptime"]);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(ok_stat && ok_counters && ok_uptime, "{stat}\n{counters}\n{uptime}");
    for want in ["Messages scanned: 2", "Messages learned: 1", "Total learns: 1"] {
        assert!(stat.lines().any(|l| l == want), "no {want:?} in\n{stat}");
    }
    let statfile =
        |sym: &str| stat.lines().find(|l| l.starts_with(&format!("Statfile: {sym} "))).unwrap_or_else(|| panic!("no {sym} in\n{stat}")).to_string();
    assert!(statfile("BAYES_SPAM").contains("learned: 1;"), "{stat}");
    assert!(statfile("BAYES_HAM").contains("learned: 0;"), "{stat}");
    let actions: u64 = stat
        .lines()
        .filter(|l| l.starts_with("Messages with action "))
        .map(|l| l.rsplit_once(": ").unwrap().1.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(actions, 2, "every check has an action\n{stat}");
    // The counters table: hamlet's verdict symbols, their hits adding up to the checks.
    let hits: u64 = counters
        .lines()
        .filter(|l| l.contains("HAMLET_"))
        .map(|l| l.split('|').map(str::trim).rfind(|c| !c.is_empty()).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(hits, 2, "{counters}");
    assert!(uptime.lines().any(|l| l.starts_with("Uptime: ")), "{uptime}");
}

async fn call_with(app: &axum::Router, uri: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
    let mut req = Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// rspamd's envelope headers: outcomes reported, their tokens scored and
/// learned, a reject decides checkv2's action.
#[tokio::test]
async fn envelope_headers_are_checked_reported_and_learned() {
    let app = app(None, 1 << 20);
    let bare = [
        ("IP", "198.51.100.23"),
        ("Hostname", "unknown"),
        ("Helo", "localhost"),
        ("From", "<frank@sender.example>"),
        ("Rcpt", "<erin@corp.example>"),
    ];
    let (st, v) = call_with(&app, "/v1/check", &bare, HAM).await;
    assert_eq!(st, StatusCode::OK);
    let env = &v["stages"]["envelope"];
    assert_eq!(env["decision"], "continue", "{v}");
    let rules: Vec<&str> = env["outcomes"].as_array().unwrap().iter().map(|o| o["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["HELO_NOT_FQDN", "CLIENT_NO_RDNS"], "{v}");
    assert_eq!(env["outcomes"][0]["token"], "env:helo=bare");
    // Learned with the message: the token gets counts like any word.
    let (st, _) = call_with(&app, "/v1/learn/spam", &bare, SPAM).await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = call_with(&app, "/v1/check", &bare, HAM).await;
    assert!(v["clues"].as_array().unwrap().iter().any(|c| c["token"] == "env:helo=bare" && c["spam"] == 1), "{v}");
    // The recipient counts as the Delivered-To the message will get.
    assert!(v["clues"].as_array().unwrap().iter().any(|c| c["token"] == "dto:addr:erin@corp.example" && c["spam"] == 1), "{v}");
    let (_, v) = call(&app, "POST", "/v1/check", None, HAM).await;
    assert!(v["stages"]["envelope"].is_null(), "no envelope headers, no envelope stage");
    // checkv2: outcomes as symbols, a reject as the action.
    let bad = [
        ("IP", "198.51.100.23"),
        ("Hostname", "mail.sender.example"),
        ("Helo", "bad_helo!"),
        ("From", "frank@sender.example"),
        ("Rcpt", "erin@corp.example"),
    ];
    let (_, v) = call_with(&app, "/checkv2", &bad, HAM).await;
    assert_eq!(v["action"], "reject", "{v}");
    assert_eq!(v["symbols"]["HELO_INVALID"]["options"][0], "env:helo=invalid");
    // Fields not sent are not checked: no HELO header is no missing HELO.
    let (_, v) = call_with(&app, "/checkv2", &[("IP", "198.51.100.23"), ("Rcpt", "erin@corp.example")], HAM).await;
    assert_ne!(v["action"], "reject", "{v}");
    assert!(v["symbols"]["HELO_MISSING"].is_null(), "{v}");
    let (st, _) = call_with(&app, "/v1/check", &[("IP", "not-an-ip")], HAM).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}
