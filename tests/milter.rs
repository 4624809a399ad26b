//! The milter front end against miltertest (Debian's `miltertest`,
//! OpenDKIM's milter test driver; `scripts/test.sh` installs it), a second
//! real MTA side beside Postfix (tests/postfix.rs): one scripted session per
//! envelope stage and per action, an aborted message, an abrupt
//! disconnect, and malformed packets from a raw socket. The DNS lists and
//! SPF answer from unbound with the shared harness's zones.

mod common;

use common::serve::{Served, free_port, http};
use common::unbound::{Unbound, unbound};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `hamlet serve --milter` with a config of its own.
struct Server {
    served: Served,
    milter: u16,
    http: u16,
}

fn server(name: &str, config: &str) -> Server {
    let (milter, http) = (free_port(), free_port());
    let toml = format!("log = \"warn\"\nhttp = \"127.0.0.1:{http}\"\nmilter = \"127.0.0.1:{milter}\"\n{config}\n");
    Server { served: Served::start(&format!("milter-{name}"), &toml, &[milter]), milter, http }
}

/// The envelope checks on, answering from unbound: listed clients and SPF
/// fails refused, greylisting for 2 s.
fn envelope_server(u: &Unbound) -> Server {
    server(
        "envelope",
        &format!(
            "[envelope]\nmy_names = [\"mx.corp.example\"]\n[envelope.rules]\nSPF_FAIL = \"reject\"\n[envelope.greylist]\nenabled = true\ndelay_s = 2\n\
             [envelope.spf]\nenabled = true\n[[envelope.dnsbl]]\nzone = \"bl.test\"\naction = \"reject\"\n\
             [envelope.dns]\nnameservers = [\"127.0.0.1:{}\"]\n",
            u.port
        ),
    )
}

/// Helpers every script starts with.
const PRELUDE: &str = r#"
function check(ok, what) if not ok then error(what) end end
function open(host, ip)
  local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 20, 0.1)
  check(conn ~= nil, "cannot connect")
  check(mt.conninfo(conn, host, ip) == nil, "conninfo failed")
  return conn
end
function expect(conn, want, what)
  local got = mt.getreply(conn)
  check(got == want, what .. ": reply " .. tostring(got) .. ", wanted " .. tostring(want))
end
-- A plain message through to its end.
function message(conn, extra)
  check(mt.header(conn, "From", "Alice <alice@example.test>") == nil, "header")
  check(mt.header(conn, "To", "erin@corp.example") == nil, "header")
  check(mt.header(conn, "Subject", "the garden plan") == nil, "header")
  for _, h in ipairs(extra or {}) do check(mt.header(conn, h[1], h[2]) == nil, "header " .. h[1]) end
  check(mt.eoh(conn) == nil, "eoh")
  check(mt.bodystring(conn, "Hi Erin,\r\nthe tomato beds will be rotated next spring.\r\nAlice\r\n") == nil, "body")
  check(mt.eom(conn) == nil, "eom")
end
"#;

/// Runs a Lua script (after [`PRELUDE`]) against the server's milter port;
/// panics with miltertest's output if it fails.
fn miltertest(s: &Server, name: &str, script: &str) -> String {
    assert!(Path::new("/usr/bin/miltertest").exists(), "miltertest is not installed: run scripts/test.sh, or `apt-get install -y miltertest`");
    let file = s.served.dir.join(format!("{name}.lua"));
    std::fs::write(&file, format!("{PRELUDE}\n{script}")).unwrap();
    let out = Command::new("miltertest").args(["-D", &format!("port={}", s.milter), "-s"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "miltertest {name} failed:\n{text}\nhamlet's log:\n{}", s.served.log());
    text
}

/// `GET /metrics` of the server.
fn metrics(s: &Server) -> String {
    http(s.http, "GET", "/metrics", "", b"").1
}

#[test]
fn envelope_verdicts_answer_at_their_stage() {
    let u = unbound("milter-stages");
    let s = envelope_server(&u);
    // Connect: a client on the DNS list (RFC 5782's test point).
    miltertest(
        &s,
        "connect",
        r#"
        local conn = open("listed.example", "127.0.0.2")
        expect(conn, SMFIR_REPLYCODE, "a listed client at connect")
        mt.disconnect(conn)
        "#,
    );
    // HELO: a greeting no SMTP server sends.
    miltertest(
        &s,
        "helo",
        r#"
        local conn = open("mail.example.test", "192.0.2.55")
        expect(conn, SMFIR_CONTINUE, "connect")
        check(mt.helo(conn, "bad_helo!") == nil, "helo")
        expect(conn, SMFIR_REPLYCODE, "an invalid HELO")
        mt.disconnect(conn)
        "#,
    );
    // MAIL: SPF fails (example.test allows 192.0.2.0/24 only), set to reject.
    miltertest(
        &s,
        "mail",
        r#"
        local conn = open("mx.other.test", "198.51.100.1")
        check(mt.helo(conn, "mx.other.test") == nil, "helo")
        expect(conn, SMFIR_CONTINUE, "helo")
        check(mt.mailfrom(conn, "<alice@example.test>") == nil, "mail")
        expect(conn, SMFIR_REPLYCODE, "an SPF fail at MAIL")
        mt.disconnect(conn)
        "#,
    );
    // RCPT: a new triplet is greylisted, that recipient only; after the
    // delay it passes, and the message gets the trace fields on top and
    // loses the forged ones.
    miltertest(
        &s,
        "rcpt",
        r#"
        local conn = open("mail.example.test", "192.0.2.55")
        check(mt.helo(conn, "mail.example.test") == nil, "helo")
        check(mt.mailfrom(conn, "<alice@example.test>") == nil, "mail")
        expect(conn, SMFIR_CONTINUE, "SPF passes")
        check(mt.rcptto(conn, "<erin@corp.example>") == nil, "rcpt")
        expect(conn, SMFIR_REPLYCODE, "a new triplet is greylisted")
        check(mt.rcptto(conn, "<bad recipient>") == nil, "rcpt")
        expect(conn, SMFIR_REPLYCODE, "a malformed recipient")
        mt.disconnect(conn)
        mt.sleep(2.3)
        conn = open("mail.example.test", "192.0.2.55")
        check(mt.helo(conn, "mail.example.test") == nil, "helo")
        check(mt.mailfrom(conn, "<alice@example.test>") == nil, "mail")
        check(mt.rcptto(conn, "<erin@corp.example>") == nil, "rcpt")
        expect(conn, SMFIR_CONTINUE, "the retry after the delay")
        message(conn, {{"X-Spam-Flag", "YES"}, {"Authentication-Results", "mx.corp.example; dkim=pass header.d=bank.example"},
                       {"Authentication-Results", "relay.other.example; spf=pass"}})
        expect(conn, SMFIR_CONTINUE, "eom")
        check(mt.eom_check(conn, MT_HDRINSERT, "Received-SPF"), "Received-SPF on top")
        check(mt.eom_check(conn, MT_HDRINSERT, "X-Greylist"), "X-Greylist")
        check(mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results"), "Authentication-Results")
        check(mt.eom_check(conn, MT_HDRADD, "X-Spam-Flag", "NO"), "hamlet's verdict")
        check(mt.eom_check(conn, MT_HDRDELETE, "X-Spam-Flag"), "the forged verdict removed")
        check(mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results"), "the forged results removed")
        local ar = mt.getheader(conn, "Authentication-Results", 0)
        check(ar ~= nil and string.find(ar, "mx.corp.example;", 1, true) == 1, "authserv-id: " .. tostring(ar))
        check(string.find(ar, "spf=pass smtp.mailfrom=alice@example.test", 1, true) ~= nil, "spf in " .. ar)
        local spf = mt.getheader(conn, "Received-SPF", 0)
        check(spf ~= nil and string.find(spf, "pass", 1, true) == 1, "Received-SPF: " .. tostring(spf))
        mt.disconnect(conn)
        "#,
    );
    let m = metrics(&s);
    for line in [
        "hamlet_milter_total{stage=\"connect\",result=\"reject\"} 1",
        "hamlet_milter_total{stage=\"helo\",result=\"reject\"} 1",
        "hamlet_milter_total{stage=\"mail\",result=\"reject\"} 1",
        "hamlet_milter_total{stage=\"rcpt\",result=\"defer\"} 1",
        "hamlet_milter_total{stage=\"rcpt\",result=\"reject\"} 1",
        "hamlet_milter_total{stage=\"eom\",result=\"add_headers\"} 1",
    ] {
        assert!(m.contains(line), "{line} in:\n{m}");
    }
}

#[test]
fn every_action_by_its_threshold() {
    // Each threshold at 0: every message takes that action.
    for (name, config, checks) in [
        // (miltertest's MT_SMTPREPLY check crashes it: the reply's code and
        // text are the Postfix test's and the unit tests' to check; the
        // metrics tell a reject from a soft reject.)
        ("reject", "milter_reject_at = 0.0", r#"expect(conn, SMFIR_REPLYCODE, "reject")"#),
        ("soft-reject", "milter_soft_reject_at = 0.0", r#"expect(conn, SMFIR_REPLYCODE, "soft reject")"#),
        ("discard", "milter_discard_at = 0.0", r#"expect(conn, SMFIR_DISCARD, "discard")"#),
        (
            "quarantine",
            "milter_quarantine_at = 0.0",
            r#"check(mt.eom_check(conn, MT_QUARANTINE), "quarantined")
               check(mt.eom_check(conn, MT_HDRADD, "X-Spam-Status"), "with hamlet's headers")"#,
        ),
        ("headers", "", r#"check(mt.eom_check(conn, MT_HDRADD, "X-Spam-Checker-Version"), "hamlet's headers")"#),
    ] {
        let s = server(name, config);
        let script = format!(
            r#"
            local conn = open("mail.example.test", "192.0.2.55")
            check(mt.helo(conn, "mail.example.test") == nil, "helo")
            check(mt.mailfrom(conn, "<alice@example.test>") == nil, "mail")
            check(mt.rcptto(conn, "<erin@corp.example>") == nil, "rcpt")
            message(conn)
            {checks}
            mt.disconnect(conn)
            "#
        );
        miltertest(&s, name, &script);
        let m = metrics(&s);
        let action = if name == "headers" { "add_headers" } else { &name.replace('-', "_") };
        assert!(m.contains(&format!("hamlet_milter_total{{stage=\"eom\",result=\"{action}\"}} 1")), "{name}: {m}");
    }
}

#[test]
fn aborted_malformed_and_abrupt_sessions() {
    let s = server("abort", "");
    // An aborted message, then a whole one on the same connection; then
    // an abrupt disconnect inside a message.
    miltertest(
        &s,
        "abort",
        r#"
        local conn = open("mail.example.test", "192.0.2.55")
        check(mt.mailfrom(conn, "<alice@example.test>") == nil, "mail")
        check(mt.rcptto(conn, "<erin@corp.example>") == nil, "rcpt")
        check(mt.header(conn, "Subject", "never finished") == nil, "header")
        check(mt.abort(conn) == nil, "abort")
        check(mt.mailfrom(conn, "<alice@example.test>") == nil, "mail after abort")
        check(mt.rcptto(conn, "<erin@corp.example>") == nil, "rcpt")
        message(conn)
        expect(conn, SMFIR_CONTINUE, "eom after an abort")
        check(mt.eom_check(conn, MT_HDRADD, "X-Spam-Flag"), "scored")
        mt.disconnect(conn)
        conn = open("mail.example.test", "192.0.2.55")
        check(mt.header(conn, "Subject", "cut off") == nil, "header")
        mt.disconnect(conn, false)
        "#,
    );
    // Malformed packets: each connection is closed, the server goes on.
    for bad in [
        &b"\0\0\0\0"[..],             // an empty packet
        b"\x7f\xff\xff\xff",          // a length far past the limit
        b"\0\0\0\x02Zz",              // an unknown command
        b"\0\0\0\x0dO\0\0\0\x06\0\0", // a negotiation cut short
        b"\0\0\0\x08Chost\x004\0",    // a connect without its address
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", s.milter)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bad).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let closed = c.read_to_end(&mut rest);
        assert!(closed.is_ok() || rest.is_empty(), "{bad:?}: {closed:?}");
        assert!(rest.is_empty(), "{bad:?}: no reply to a malformed packet, got {rest:?}");
    }
    miltertest(
        &s,
        "after",
        r#"
        local conn = open("mail.example.test", "192.0.2.55")
        message(conn)
        expect(conn, SMFIR_CONTINUE, "eom")
        mt.disconnect(conn)
        "#,
    );
}
