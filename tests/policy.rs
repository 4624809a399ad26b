//! The Postfix policy service of `hamlet serve` over a real socket, with the
//! exact request bytes Postfix 3.7 sends (../shared/reference/protocols.md):
//! greylisting (defer, then pass after the delay, with state surviving a
//! restart), HELO rejects, non-RCPT stages, persistent connections,
//! malformed requests, and a load test of many concurrent connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    policy: String,
}

impl Server {
    /// `hamlet serve --policy` with greylisting on (delay `delay` seconds).
    fn start(dir: &Path, delay: u64, extra_config: &str) -> Server {
        let db = dir.join("h.redb");
        let cfg = dir.join("hamlet.toml");
        let http = format!("127.0.0.1:{}", free_port());
        let policy = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            &cfg,
            format!(
                "http = \"{http}\"\nlog = \"warn\"\n[envelope]\nmy_names = [\"mx.corp.example\"]\n{extra_config}\n\
                 [envelope.greylist]\nenabled = true\ndelay_s = {delay}\nauto_whitelist = 0\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--config", cfg.to_str().unwrap(), "--policy", &policy])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if TcpStream::connect(&policy).is_ok() {
                return Server { child, policy };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("policy service never listened");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hamlet-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Postfix 3.7 RCPT-stage request.
fn request(client: &str, helo: &str, sender: &str, rcpt: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address={client}\n\
         client_name=mail.other.example\nclient_port=46856\nreverse_client_name=mail.other.example\nserver_address=127.0.0.1\n\
         server_port=2525\nhelo_name={helo}\nsender={sender}\nrecipient={rcpt}\nrecipient_count=0\nqueue_id=\n\
         instance=118f.6b085f5c.cc168.0\nsize=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\n\
         ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\n\
         encryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
    )
}

/// A persistent policy connection, as Postfix keeps one.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { w: s.try_clone().unwrap(), r: BufReader::new(s) }
    }

    /// Sends a request; returns the action (`None` if the server closed).
    fn ask(&mut self, req: &str) -> Option<String> {
        self.w.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut blank = String::new();
        self.r.read_line(&mut blank).ok()?;
        assert_eq!(blank, "\n", "each reply ends with an empty line");
        Some(line.trim_end().strip_prefix("action=").expect("action=").to_string())
    }
}

#[test]
fn greylisting_helo_and_stages_over_one_connection() {
    let dir = tempdir("main");
    let s = Server::start(&dir, 2, "");
    let mut c = Conn::open(&s.policy);
    let first = request("198.51.100.23", "mail.sender.example", "frank@sender.example", "erin@corp.example");
    assert_eq!(c.ask(&first).unwrap(), "DEFER_IF_PERMIT 4.2.0 Greylisted: please retry later");
    assert_eq!(c.ask(&first).unwrap(), "DEFER_IF_PERMIT 4.2.0 Greylisted: please retry later", "too early");
    // Invalid HELO: rejected, and not greylisted.
    let bad = request("192.0.2.7", "bad_helo!", "x@other.example", "erin@corp.example");
    assert!(c.ask(&bad).unwrap().starts_with("REJECT 5.5.2"), "bad HELO");
    let ours = request("192.0.2.7", "mx.corp.example", "x@other.example", "erin@corp.example");
    assert!(c.ask(&ours).unwrap().starts_with("REJECT 5.7.1"), "our own name");
    // Other stages: no opinion.
    let data = first.replace("protocol_state=RCPT", "protocol_state=DATA");
    assert_eq!(c.ask(&data).unwrap(), "DUNNO");
    // After the delay, from another host of the same /24, the retry passes.
    std::thread::sleep(Duration::from_millis(2100));
    let retry = first.replace("198.51.100.23", "198.51.100.99");
    let pass = c.ask(&retry).unwrap();
    assert!(
        pass.starts_with("PREPEND X-Greylist: delayed 2 seconds by hamlet-") || pass.starts_with("PREPEND X-Greylist: delayed 3 seconds"),
        "{pass}"
    );
    assert_eq!(c.ask(&retry).unwrap(), "DUNNO", "known triplet");
    drop(c);
    // The state survives a restart.
    drop(s);
    let s = Server::start(&dir, 2, "");
    let mut c = Conn::open(&s.policy);
    assert_eq!(c.ask(&first).unwrap(), "DUNNO", "pass record kept across restarts");
    // Malformed: the connection is closed, without a reply; the server goes on.
    assert_eq!(c.ask("this is not a policy request\n\n"), None);
    let mut c = Conn::open(&s.policy);
    assert_eq!(c.ask(&first).unwrap(), "DUNNO");
}

#[test]
fn stricter_rules_from_the_config() {
    let dir = tempdir("strict");
    let s = Server::start(&dir, 300, "rules = { HELO_NOT_FQDN = \"reject\", GREYLIST_DEFER = \"off\" }");
    let mut c = Conn::open(&s.policy);
    assert!(c.ask(&request("192.0.2.7", "localhost", "x@other.example", "erin@corp.example")).unwrap().starts_with("REJECT 5.5.2"));
    assert_eq!(c.ask(&request("192.0.2.8", "mail.other.example", "x@other.example", "erin@corp.example")).unwrap(), "DUNNO", "greylisting off");
}

/// Many Postfix-style connections at once, each with many requests: every
/// request answered, none dropped.
#[test]
fn load_many_concurrent_connections() {
    let dir = tempdir("load");
    let s = Server::start(&dir, 300, "");
    let (conns, per) = (100, 20);
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|i| {
            let addr = s.policy.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(&addr);
                let mut answers = 0;
                for j in 0..per {
                    let req = request(
                        &format!("203.0.{}.{}", i % 250, j + 1),
                        "mail.sender.example",
                        &format!("s{j}@sender{i}.example"),
                        "erin@corp.example",
                    );
                    match c.ask(&req) {
                        Some(a) if a.starts_with("DEFER_IF_PERMIT") => answers += 1,
                        other => panic!("connection {i} request {j}: {other:?}"),
                    }
                }
                answers
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(answered, conns * per);
    println!("policy load: {answered} requests over {conns} connections in {secs:.2} s ({:.0} requests/s)", answered as f64 / secs);
}
