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
