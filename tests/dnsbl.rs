//! DNS lists and SPF against a real DNS server: unbound (Debian's
//! `unbound`; `scripts/test.sh` installs it) on a loopback port serving the
//! harness's `bl.test` zone (RFC 5782's 127.0.0.2 test point, 192.0.2.99
//! listed) and `example.test`'s SPF record (`ip4:192.0.2.0/24
//! a:mail.example.test -all`); and a name server that never answers, to
//! show the budget holds.

use hamlet::envelope::RuleAction;
use hamlet::envelope::dnsbl::{Answer, DnsConfig, Dnsbl, Zone};
mod common;

use common::serve::free_port;
use common::unbound::{Unbound, unbound};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn zone(name: &str, codes: &[(&str, &str)]) -> Zone {
    Zone {
        zone: name.into(),
        allow: false,
        action: RuleAction::Score,
        codes: codes.iter().map(|(a, m)| (a.parse().unwrap(), m.to_string())).collect(),
    }
}

#[tokio::test]
async fn listed_not_listed_and_code_tables() {
    let u = unbound("lists");
    let cfg = DnsConfig { nameservers: vec![format!("127.0.0.1:{}", u.port)], ..Default::default() };
    let d = Dnsbl::new(&cfg, vec![zone("bl.test", &[]), zone("bl.test.", &[("127.0.0.3", "only this code")])]).unwrap();
    let r = d.check("127.0.0.2".parse().unwrap()).await;
    assert_eq!(r[0].answer, Answer::Listed(vec![("127.0.0.2".parse().unwrap(), None)]), "RFC 5782 test point");
    assert_eq!(r[1].answer, Answer::NotListed, "a code outside the zone's table does not count");
    let r = d.check("192.0.2.99".parse().unwrap()).await;
    assert!(matches!(r[0].answer, Answer::Listed(_)));
    for ip in ["192.0.2.1", "127.0.0.1", "2001:db8::1"] {
        assert_eq!(d.check(ip.parse().unwrap()).await[0].answer, Answer::NotListed, "{ip}");
    }
    // Cached: a second answer after unbound is gone.
    drop(u);
    assert!(matches!(d.check("127.0.0.2".parse().unwrap()).await[0].answer, Answer::Listed(_)), "answer cached by its TTL");
}

#[tokio::test]
async fn a_silent_name_server_costs_at_most_the_budget() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let cfg = DnsConfig { nameservers: vec![format!("127.0.0.1:{port}")], timeout_ms: 5000, budget_ms: 800 };
    let d = Dnsbl::new(&cfg, vec![zone("bl.test", &[]), zone("other.test", &[])]).unwrap();
    let start = Instant::now();
    let r = d.check("127.0.0.2".parse().unwrap()).await;
    let took = start.elapsed();
    assert!(r.iter().all(|l| matches!(l.answer, Answer::Failed(_))), "{r:?}");
    // Generous slack for a loaded machine; the point is "not 5 s per zone".
    assert!(took < Duration::from_millis(2500), "took {took:?} with a budget of 800 ms");
    drop(silent);
}

/// `hamlet serve --policy` with `config` (plus the unbound resolver), and
/// a connection to its policy port.
struct PolicyServer {
    child: Child,
    conn: std::io::BufReader<TcpStream>,
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PolicyServer {
    fn start(u: &Unbound, config: &str) -> PolicyServer {
        let dir = u.dir.join("hamlet");
        std::fs::create_dir_all(&dir).unwrap();
        let (http, policy) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let toml = format!("http = \"{http}\"\nlog = \"warn\"\n{config}\n[envelope.dns]\nnameservers = [\"127.0.0.1:{}\"]\n", u.port);
        std::fs::write(dir.join("hamlet.toml"), toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hamlet"))
            .arg("--db")
            .arg(dir.join("h.redb"))
            .args(["serve", "--config", dir.join("hamlet.toml").to_str().unwrap(), "--policy", &policy])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if let Ok(c) = TcpStream::connect(&policy) {
                return PolicyServer { child, conn: std::io::BufReader::new(c) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("policy service never listened");
    }

    /// One RCPT-stage request (`attrs`: `name=value` lines); the action line.
    fn ask(&mut self, attrs: &str) -> String {
        use std::io::{BufRead, Write};
        write!(self.conn.get_mut(), "request=smtpd_access_policy\nprotocol_state=RCPT\n{attrs}\n").unwrap();
        let mut line = String::new();
        self.conn.read_line(&mut line).unwrap();
        let mut blank = String::new();
        self.conn.read_line(&mut blank).unwrap();
        line
    }
}

/// Through the policy service: a listed client is rejected when its zone
/// says so.
#[test]
fn policy_service_rejects_a_listed_client() {
    let u = unbound("policy");
    let mut p = PolicyServer::start(&u, "[[envelope.dnsbl]]\nzone = \"bl.test\"\naction = \"reject\"");
    let ask = |p: &mut PolicyServer, client: &str| {
        p.ask(&format!(
            "client_address={client}\nclient_name=mail.x.example\nhelo_name=mail.x.example\nsender=a@x.example\nrecipient=erin@corp.example\n"
        ))
    };
    let listed = ask(&mut p, "127.0.0.2");
    assert!(listed.starts_with("action=REJECT 5.7.1") && listed.contains("bl.test"), "{listed}");
    assert_eq!(ask(&mut p, "192.0.2.1"), "action=DUNNO\n");
}

fn spf_checker(nameserver: String, budget_ms: u64) -> hamlet::envelope::spf::SpfChecker {
    let cfg = DnsConfig { nameservers: vec![nameserver], timeout_ms: 1500, budget_ms };
    hamlet::envelope::spf::SpfChecker::new(hamlet::envelope::dnsbl::resolver(&cfg).unwrap(), "mx.corp.example", Duration::from_millis(budget_ms))
}

#[tokio::test]
async fn spf_against_unbound() {
    use hamlet::envelope::spf::{Identity, Verdict};
    let u = unbound("spf");
    let spf = spf_checker(format!("127.0.0.1:{}", u.port), 3000);
    let ip = |s: &str| s.parse().unwrap();
    let r = spf.check(ip("192.0.2.55"), "mail.example.test", "alice@example.test").await;
    assert_eq!((r.verdict, r.identity, r.domain.as_str()), (Verdict::Pass, Identity::MailFrom, "example.test"), "{r:?}");
    assert_eq!(spf.check(ip("198.51.100.1"), "mx.other.test", "alice@example.test").await.verdict, Verdict::Fail);
    // No record at all: none. A null sender: the HELO identity decides.
    assert_eq!(spf.check(ip("198.51.100.1"), "mx.other.test", "bob@mail.example.test").await.verdict, Verdict::None);
    let r = spf.check(ip("198.51.100.1"), "example.test", "").await;
    assert_eq!((r.verdict, r.identity), (Verdict::Fail, Identity::Helo));
    // An IPv4 client seen as IPv4-mapped IPv6 is the same client.
    assert_eq!(spf.check(ip("::ffff:192.0.2.55"), "mail.example.test", "alice@example.test").await.verdict, Verdict::Pass);
}

#[tokio::test]
async fn spf_with_a_silent_name_server_is_temperror_within_the_budget() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spf = spf_checker(format!("127.0.0.1:{}", silent.local_addr().unwrap().port()), 800);
    let start = Instant::now();
    let r = spf.check("192.0.2.55".parse().unwrap(), "mail.example.test", "alice@example.test").await;
    let took = start.elapsed();
    assert_eq!(r.verdict, hamlet::envelope::spf::Verdict::TempError, "{r:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?} with a budget of 800 ms");
}

/// Through the policy service with SPF on: a forged sender is rejected
/// when SPF_FAIL is set to reject, a permitted one gets Received-SPF.
#[test]
fn policy_service_spf() {
    let u = unbound("policy-spf");
    let mut p = PolicyServer::start(
        &u,
        "[envelope]\nmy_names = [\"mx.corp.example\"]\n[envelope.rules]\nSPF_FAIL = \"reject\"\n[envelope.spf]\nenabled = true",
    );
    let ask = |p: &mut PolicyServer, client: &str, instance: &str, rcpt: &str| {
        p.ask(&format!(
            "client_address={client}\nclient_name=mx.x.example\nhelo_name=mx.x.example\nsender=alice@example.test\nrecipient={rcpt}\ninstance={instance}\n"
        ))
    };
    let forged = ask(&mut p, "198.51.100.1", "a.1", "erin@corp.example");
    assert!(forged.starts_with("action=REJECT 5.7.23 SPF fail for mailfrom example.test"), "{forged}");
    let ok = ask(&mut p, "192.0.2.55", "b.1", "erin@corp.example");
    assert!(ok.starts_with("action=PREPEND Received-SPF: pass (hamlet: domain of alice@example.test designates 192.0.2.55"), "{ok}");
    assert_eq!(ask(&mut p, "192.0.2.55", "b.1", "frank@corp.example"), "action=DUNNO\n", "one Received-SPF per transaction");
}
