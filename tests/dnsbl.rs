//! DNS lists against a real DNS server: unbound (Debian's `unbound`;
//! `scripts/test.sh` installs it) on a loopback port serving the harness's
//! `bl.test` zone (RFC 5782's 127.0.0.2 test point, 192.0.2.99 listed);
//! and a name server that never answers, to show the budget holds.

use hamlet::envelope::dnsbl::{Answer, DnsConfig, Dnsbl, Zone};
use hamlet::envelope::RuleAction;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Unbound {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unbound(name: &str) -> Unbound {
    assert!(
        Path::new("/usr/sbin/unbound").exists(),
        "unbound is not installed: run scripts/test.sh, or `apt-get install -y unbound`"
    );
    let shared = std::env::var("HAMLET_SHARED").unwrap_or_else(|_| "../shared".into());
    let template = std::fs::read_to_string(Path::new(&shared).join("reference/harness/unbound.conf")).expect("the shared harness's unbound.conf (set HAMLET_SHARED)");
    let dir = std::env::temp_dir().join(format!("hamlet-dns-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let conf = template.replace("@PORT@", &port.to_string()).replace("@DIR@", dir.to_str().unwrap());
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let child = Command::new("/usr/sbin/unbound").arg("-d").arg("-c").arg(dir.join("unbound.conf")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Unbound { child, port, dir };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("unbound never listened");
}

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

/// Through the policy service: a listed client is rejected when its zone
/// says so.
#[test]
fn policy_service_rejects_a_listed_client() {
    use std::io::{BufRead, BufReader, Write};
    let u = unbound("policy");
    let dir = u.dir.join("hamlet");
    std::fs::create_dir_all(&dir).unwrap();
    let (http, policy) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    std::fs::write(
        dir.join("hamlet.toml"),
        format!(
            "http = \"{http}\"\nlog = \"warn\"\n[envelope.dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [[envelope.dnsbl]]\nzone = \"bl.test\"\naction = \"reject\"\n",
            u.port
        ),
    )
    .unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_hamlet"))
        .arg("--db")
        .arg(dir.join("h.redb"))
        .args(["serve", "--config", dir.join("hamlet.toml").to_str().unwrap(), "--policy", &policy])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = None;
    for _ in 0..200 {
        if let Ok(c) = TcpStream::connect(&policy) {
            conn = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = conn.expect("policy service never listened");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut ask = |client: &str| {
        write!(w, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\nclient_name=mail.x.example\nhelo_name=mail.x.example\nsender=a@x.example\nrecipient=erin@corp.example\n\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut blank = String::new();
        r.read_line(&mut blank).unwrap();
        line
    };
    let listed = ask("127.0.0.2");
    assert!(listed.starts_with("action=REJECT 5.7.1") && listed.contains("bl.test"), "{listed}");
    assert_eq!(ask("192.0.2.1"), "action=DUNNO\n");
    let _ = serve.kill();
    let _ = serve.wait();
}
