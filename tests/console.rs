//! The web console's JSON endpoints (`/ui/api/*`, `[ui]` in hamlet.toml),
//! in-process through the API's router as `hamlet serve` builds it; the
//! page itself in a real browser is `tests/browser.rs`.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hamlet::classify::Params;
use hamlet::config::UiConfig;
use hamlet::engine::Engine;
use hamlet::history::Addresses;
use hamlet::http::{Console, Peer, app};
use hamlet::service::Service;
use hamlet::store::MemoryStore;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const SPAM: &str =
    "From: deals@offers.example\r\nTo: erin@corp.example\r\nSubject: Cheap pills now\r\n\r\nBuy cheap pills now, best prices, click here.\r\n";
const HAM: &str =
    "From: alice@example.org\r\nTo: erin@corp.example\r\nSubject: Minutes of Tuesday\r\n\r\nThe meeting minutes are attached, see you Tuesday.\r\n";
const TOKEN: &str = "s3cret-learn-token";

fn console(ui: UiConfig) -> axum::Router {
    let engine = Engine::new(MemoryStore::new(), Params { maturity: 0.0, ..Params::default() });
    let service = Service::builder(engine).learn_token(Some(TOKEN.into())).history(hamlet::build::history(&ui)).build().unwrap();
    let c = Console::new(&ui, Some(TOKEN.into()), "memory", "in memory".into());
    app(Arc::new(service), 1 << 20, Some(c))
}

fn on() -> UiConfig {
    UiConfig { enabled: true, ..UiConfig::default() }
}

/// One request: `cookie` and `csrf` as a browser would send them.
struct Call<'a> {
    method: &'a str,
    uri: &'a str,
    body: String,
    json: bool,
    cookie: Option<&'a str>,
    csrf: Option<&'a str>,
    bearer: Option<&'a str>,
    peer: Option<&'a str>,
}

fn get(uri: &str) -> Call<'_> {
    Call { method: "GET", uri, body: String::new(), json: false, cookie: None, csrf: None, bearer: None, peer: None }
}

fn post<'a>(uri: &'a str, body: impl Into<String>) -> Call<'a> {
    Call { method: "POST", body: body.into(), ..get(uri) }
}

impl<'a> Call<'a> {
    fn json(mut self) -> Self {
        self.json = true;
        self
    }
    fn signed(mut self, s: &'a Signed) -> Self {
        self.cookie = Some(&s.cookie);
        self.csrf = Some(&s.csrf);
        self
    }

    async fn send(self, app: &axum::Router) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(self.method).uri(self.uri);
        if self.json {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(c) = self.cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(t) = self.csrf {
            req = req.header("X-CSRF-Token", t);
        }
        if let Some(t) = self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(self.body)).unwrap();
        if let Some(p) = self.peer {
            req.extensions_mut().insert(Peer(Some(p.parse().unwrap())));
        }
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    async fn json_reply(self, app: &axum::Router) -> (StatusCode, Value) {
        let uri = self.uri.to_string();
        let (st, _, body) = self.send(app).await;
        (st, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&body))))
    }
}

struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &axum::Router, secret: &str) -> Result<Signed, (StatusCode, Value)> {
    let (st, headers, body) = post("/ui/api/login", json!({ "secret": secret }).to_string()).json().send(app).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    if st != StatusCode::OK {
        return Err((st, v));
    }
    let set = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    Ok(Signed { cookie: set.split(';').next().unwrap().to_string(), csrf: v["csrf"].as_str().unwrap().to_string() })
}

#[tokio::test]
async fn the_page_is_self_contained_and_locked_down() {
    let app = console(on());
    for (uri, kind) in [("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let (st, headers, body) = get(uri).send(&app).await;
        assert_eq!(st, StatusCode::OK, "{uri}");
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{csp}");
        let text = String::from_utf8(body).unwrap();
        assert!(text.len() > 200, "{uri} is a real asset");
        // Nothing from elsewhere: no absolute URLs but the SVG namespace.
        let outside = text.replace("http://www.w3.org/2000/svg", "");
        assert!(!outside.contains("http://") && !outside.contains("https://") && !outside.contains("//cdn"), "{uri} loads from outside");
    }
    let (_, headers, _) = get("/ui").send(&app).await;
    assert_eq!(headers[header::LOCATION], "/ui/");
    // Off unless enabled: the API alone.
    let plain = hamlet::http::router(Arc::new(Service::builder(Engine::new(MemoryStore::new(), Params::default())).build().unwrap()), 1 << 20);
    assert_eq!(get("/ui/").send(&plain).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sign_in_by_token_or_password_and_out() {
    let password = "correct horse battery";
    let app = console(UiConfig { password_hash: Some(hamlet::http::ui::hash_password(password)), ..on() });
    let (st, v) = get("/ui/api/session").json_reply(&app).await;
    assert_eq!((st, &v["signed_in"], &v["read_only"]), (StatusCode::OK, &json!(false), &json!(false)));
    assert_eq!(get("/ui/api/status").json_reply(&app).await.0, StatusCode::UNAUTHORIZED, "nothing shown without sign-in");
    assert_eq!(get("/ui/api/history").json_reply(&app).await.0, StatusCode::UNAUTHORIZED);
    for wrong in ["", "s3cret", "correct horse battery!"] {
        let (st, v) = sign_in(&app, wrong).await.err().unwrap();
        assert_eq!((st, &v["error"]["status"]), (StatusCode::UNAUTHORIZED, &json!(401)));
    }
    // A form post (not JSON) cannot sign in.
    assert_eq!(post("/ui/api/login", format!("secret={TOKEN}")).send(&app).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let by_password = sign_in(&app, password).await.unwrap();
    let s = sign_in(&app, TOKEN).await.unwrap();
    let (st, v) = Call { cookie: Some(&s.cookie), ..get("/ui/api/session") }.json_reply(&app).await;
    assert_eq!((st, &v["signed_in"], v["csrf"].as_str()), (StatusCode::OK, &json!(true), Some(s.csrf.as_str())));
    assert_eq!(Call { cookie: Some(&s.cookie), ..get("/ui/api/status") }.json_reply(&app).await.0, StatusCode::OK);
    // Signing out needs the CSRF token too, and ends that session only.
    assert_eq!(Call { cookie: Some(&s.cookie), ..post("/ui/api/logout", "") }.json_reply(&app).await.0, StatusCode::FORBIDDEN);
    assert_eq!(post("/ui/api/logout", "").signed(&s).json_reply(&app).await.0, StatusCode::OK);
    assert_eq!(Call { cookie: Some(&s.cookie), ..get("/ui/api/status") }.json_reply(&app).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(Call { cookie: Some(&by_password.cookie), ..get("/ui/api/status") }.json_reply(&app).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_check_shows_in_the_history_with_its_clues_and_learns_from_there() {
    let app = console(on());
    let s = sign_in(&app, TOKEN).await.unwrap();
    for (path, msg) in [("/v1/learn/spam", SPAM), ("/v1/learn/ham", HAM)] {
        assert_eq!(Call { bearer: Some(TOKEN), ..post(path, msg) }.json_reply(&app).await.0, StatusCode::OK);
    }
    let (st, checked) = post("/v1/check", SPAM).json_reply(&app).await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = post("/checkv2", HAM).json_reply(&app).await;
    assert_eq!(v["action"], "no action");

    let (st, list) = Call { cookie: Some(&s.cookie), ..get("/ui/api/history?limit=10") }.json_reply(&app).await;
    assert_eq!(st, StatusCode::OK);
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    let (newest, spam) = (&entries[0], &entries[1]);
    assert_eq!((&newest["via"], &newest["action"], &newest["subject"]), (&json!("checkv2"), &json!("no action"), &json!("Minutes of Tuesday")));
    assert_eq!((&spam["via"], &spam["action"]), (&json!("http"), &Value::Null), "the API's client decides");
    assert_eq!(
        (&spam["sender"], &spam["rcpt"], &spam["subject"]),
        (&json!("deals@offers.example"), &json!("erin@corp.example"), &json!("Cheap pills now"))
    );
    assert_eq!(spam["probability"], checked["probability"]);
    assert_eq!((&spam["verdict"], &spam["learnable"]), (&checked["verdict"], &json!(true)));

    let id = spam["id"].as_u64().unwrap();
    let (st, e) = Call { cookie: Some(&s.cookie), ..get(&format!("/ui/api/history/{id}")) }.json_reply(&app).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(e["clues"], checked["clues"], "the clues of the check itself");
    assert!(e["clues"].as_array().unwrap().iter().any(|c| c["token"] == "pills"), "{e}");
    assert!(e["spam_cutoff"].as_f64().is_some() && e["content"]["tokens"].as_u64().unwrap() > 5);

    // Learning from the history: CSRF first.
    let uri = format!("/ui/api/history/{id}/learn");
    let body = json!({ "as": "spam" }).to_string();
    assert_eq!(Call { cookie: Some(&s.cookie), ..post(&uri, body.clone()) }.json().json_reply(&app).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        Call { cookie: Some(&s.cookie), csrf: Some("0000"), ..post(&uri, body.clone()) }.json().json_reply(&app).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(Call { csrf: Some(&s.csrf), ..post(&uri, body.clone()) }.json().json_reply(&app).await.0, StatusCode::UNAUTHORIZED, "no cookie");
    let (_, before) = get("/v1/stats").json_reply(&app).await;
    let (st, v) = post(&uri, json!({ "as": "ham" }).to_string()).json().signed(&s).json_reply(&app).await;
    assert_eq!((st, &v["result"]), (StatusCode::OK, &json!("relearned")), "{v}");
    let (_, after) = get("/v1/stats").json_reply(&app).await;
    assert_eq!(after["messages"]["ham"], before["messages"]["ham"].as_u64().unwrap() + 1);
    assert_eq!(v["model"]["ham"], after["messages"]["ham"]);
    let (_, e) = Call { cookie: Some(&s.cookie), ..get(&format!("/ui/api/history/{id}")) }.json_reply(&app).await;
    assert_eq!(e["learned"], "ham");
    let (st, v) = post(&uri, json!({ "as": "forget" }).to_string()).json().signed(&s).json_reply(&app).await;
    assert_eq!((st, &v["result"]), (StatusCode::OK, &json!("unlearned")));
    let (st, _) = post(&uri, json!({ "as": "maybe" }).to_string()).json().signed(&s).json_reply(&app).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(Call { cookie: Some(&s.cookie), ..get("/ui/api/history/999") }.json_reply(&app).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_counts_match_the_service() {
    let app = console(on());
    let s = sign_in(&app, TOKEN).await.unwrap();
    Call { bearer: Some(TOKEN), ..post("/v1/learn/spam", SPAM) }.send(&app).await;
    post("/v1/check", SPAM).send(&app).await;
    post("/v1/check", HAM).send(&app).await;
    let (st, v) = Call { cookie: Some(&s.cookie), ..get("/ui/api/status") }.json_reply(&app).await;
    assert_eq!(st, StatusCode::OK);
    let (_, stats) = get("/v1/stats").json_reply(&app).await;
    assert_eq!((&v["checks"], &v["learns"]), (&stats["checks"], &stats["learns"]));
    assert_eq!(
        (&v["model"]["spam"], &v["model"]["ham"], &v["model"]["tokens"]),
        (&stats["messages"]["spam"], &stats["messages"]["ham"], &stats["tokens"])
    );
    let minutes = v["minutes"].as_array().unwrap();
    let last = minutes.last().unwrap();
    assert_eq!((&last["checks"], &last["learns"]), (&json!(2), &json!(1)), "{v}");
    let names: Vec<&str> = v["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Model store", "DNS lists", "SPF", "DKIM/DMARC", "Greylisting", "Antivirus"]);
    assert_eq!(v["history"], json!({ "capacity": 1000, "kept": 2 }));
}

#[tokio::test]
async fn read_only_shows_but_never_acts() {
    let app = console(UiConfig { read_only: true, ..on() });
    post("/v1/check", SPAM).send(&app).await;
    let (_, v) = get("/ui/api/session").json_reply(&app).await;
    assert_eq!((&v["signed_in"], &v["read_only"]), (&json!(false), &json!(true)));
    assert_eq!(get("/ui/api/status").json_reply(&app).await.0, StatusCode::OK);
    let (st, list) = get("/ui/api/history").json_reply(&app).await;
    assert_eq!((st, list["entries"].as_array().unwrap().len()), (StatusCode::OK, 1));
    let (st, _) = post("/ui/api/history/0/learn", json!({ "as": "spam" }).to_string()).json().json_reply(&app).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(post("/ui/api/learn?as=spam", SPAM).json_reply(&app).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn loopback_only_unless_opened() {
    let app = console(on());
    let (st, v) = Call { peer: Some("192.0.2.7"), ..get("/ui/api/session") }.json_reply(&app).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(Call { peer: Some("127.0.0.1"), ..get("/ui/api/session") }.json_reply(&app).await.0, StatusCode::OK);
    assert_eq!(Call { peer: Some("192.0.2.7"), ..post("/v1/check", HAM) }.json_reply(&app).await.0, StatusCode::OK, "the API is not the console");
    let open = console(UiConfig { remote: true, ..on() });
    assert_eq!(Call { peer: Some("192.0.2.7"), ..get("/ui/api/session") }.json_reply(&open).await.0, StatusCode::OK);
}

#[tokio::test]
async fn privacy_settings_reach_the_history() {
    let app = console(UiConfig { history_addresses: Addresses::Domain, history_subjects: false, history_message_bytes: 0, ..on() });
    let s = sign_in(&app, TOKEN).await.unwrap();
    post("/v1/check", SPAM).send(&app).await;
    let (_, list) = Call { cookie: Some(&s.cookie), ..get("/ui/api/history") }.json_reply(&app).await;
    let e = &list["entries"][0];
    assert_eq!(
        (&e["sender"], &e["rcpt"], &e["subject"], &e["learnable"]),
        (&json!("offers.example"), &json!("corp.example"), &Value::Null, &json!(false))
    );
    let (st, v) = post("/ui/api/history/0/learn", json!({ "as": "spam" }).to_string()).json().signed(&s).json_reply(&app).await;
    assert_eq!(st, StatusCode::GONE, "{v}");
}

#[tokio::test]
async fn try_a_message_and_learn_it() {
    let app = console(on());
    let s = sign_in(&app, TOKEN).await.unwrap();
    Call { bearer: Some(TOKEN), ..post("/v1/learn/spam", SPAM) }.send(&app).await;
    Call { bearer: Some(TOKEN), ..post("/v1/learn/ham", HAM) }.send(&app).await;
    assert_eq!(Call { cookie: Some(&s.cookie), ..post("/ui/api/try", SPAM) }.json_reply(&app).await.0, StatusCode::FORBIDDEN);
    let (st, v) = post("/ui/api/try", SPAM).signed(&s).json_reply(&app).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["verdict"], "spam", "{v}");
    assert!(!v["clues"].as_array().unwrap().is_empty());
    let (_, list) = Call { cookie: Some(&s.cookie), ..get("/ui/api/history") }.json_reply(&app).await;
    assert!(list["entries"].as_array().unwrap().is_empty(), "a try is not a check of mail");
    let other = SPAM.replace("Cheap pills", "Cheap watches");
    let (st, v) = post("/ui/api/learn?as=spam", other).signed(&s).json_reply(&app).await;
    assert_eq!((st, &v["result"], &v["model"]["spam"]), (StatusCode::OK, &json!("learned"), &json!(2)));
    assert_eq!(post("/ui/api/learn?as=eggs", SPAM).signed(&s).json_reply(&app).await.0, StatusCode::BAD_REQUEST);
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[tokio::test]
async fn evaluate_uploaded_messages() {
    let app = console(on());
    let s = sign_in(&app, TOKEN).await.unwrap();
    let (_, v) = Call { cookie: Some(&s.cookie), ..get("/ui/api/eval") }.json_reply(&app).await;
    assert_eq!(v["state"], "idle");
    assert_eq!(Call { cookie: Some(&s.cookie), ..get("/ui/api/eval/roc.svg") }.send(&app).await.0, StatusCode::NOT_FOUND);
    let mut messages = Vec::new();
    for i in 0..20 {
        let (label, m) =
            if i % 2 == 0 { ("spam", SPAM.replace("now", &format!("now {i}"))) } else { ("ham", HAM.replace("Tuesday.", &format!("Tuesday {i}."))) };
        messages.push(json!({ "label": label, "data": b64(m.as_bytes()) }));
    }
    let (st, v) = post("/ui/api/eval", json!({ "messages": messages }).to_string()).json().signed(&s).json_reply(&app).await;
    assert_eq!((st, &v["state"]), (StatusCode::ACCEPTED, &json!("running")), "{v}");
    let mut v = Value::Null;
    for _ in 0..200 {
        v = Call { cookie: Some(&s.cookie), ..get("/ui/api/eval") }.json_reply(&app).await.1;
        if v["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(v["state"], "done", "{v}");
    let r = &v["result"];
    assert_eq!((&r["messages"], &r["spam"], &r["ham"]), (&json!(20), &json!(10), &json!(10)));
    assert!(r["roca"].as_f64().unwrap() < 5.0, "{r}");
    let (st, headers, svg) = Call { cookie: Some(&s.cookie), ..get("/ui/api/eval/roc.svg") }.send(&app).await;
    assert_eq!((st, headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/svg+xml"));
    assert!(String::from_utf8(svg).unwrap().contains("<svg"));
    // Bad requests are refused before anything runs.
    for bad in [
        json!({ "messages": [{ "label": "eggs", "data": "" }] }),
        json!({ "messages": [{ "label": "spam", "data": "!!" }] }),
        json!({ "folder": "x" }),
        json!({}),
    ] {
        let (st, v) = post("/ui/api/eval", bad.to_string()).json().signed(&s).json_reply(&app).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    }
}
