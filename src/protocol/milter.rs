//! The milter protocol (Sendmail 8's libmilter, Postfix's `smtpd_milters`),
//! version 6, as pure code: the packet framing, the MTA's commands, the
//! filter's replies and the option negotiation. The MTA is the client: it
//! opens a connection per SMTP session and sends one command per stage;
//! the filter answers each (except macros) with one final reply, after
//! header changes at the end of the message.
//!
//! A packet is a 4-byte big-endian length (of what follows), a command or
//! reply byte and its data; strings are NUL-terminated. Sizes past
//! [`MAX_PACKET`] and malformed data are errors (the listener drops the
//! connection); no input makes the parser panic.

use std::net::IpAddr;

/// The protocol version hamlet speaks (Sendmail 8.14+, Postfix 2.6+).
pub const VERSION: u32 = 6;

/// The largest packet accepted: a body chunk is at most 64 KiB unless the
/// MTA was asked for bigger ones (`SMFIP_MDS_*`, not asked for here), and
/// headers and addresses are far smaller.
pub const MAX_PACKET: usize = 256 << 10;

/// What the filter may do to a message (`SMFIF_*`).
pub mod action {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
}

/// Steps the MTA can leave out or not wait a reply for (`SMFIP_*`).
pub mod step {
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    /// The MTA sends recipients it rejected too (not asked for).
    pub const RCPT_REJ: u32 = 0x800;
    /// The MTA does not wait for a reply to each header (`SMFIP_NR_HDR`),
    /// to the end of the headers (`SMFIP_NR_EOH`) or to each body chunk
    /// (`SMFIP_NR_BODY`): the message streams in without a round trip per
    /// packet, and the filter must not answer those packets.
    pub const NR_HDR: u32 = 0x80;
    pub const NR_EOH: u32 = 0x4_0000;
    pub const NR_BODY: u32 = 0x8_0000;
    /// Headers' values keep their leading space (not asked for).
    pub const HDR_LEADSPC: u32 = 0x10_0000;
}

/// A malformed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterError(pub String);

impl std::fmt::Display for MilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MilterError {}

fn bad(why: impl Into<String>) -> MilterError {
    MilterError(why.into())
}

/// Where the SMTP client connected from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// An IPv4 or IPv6 address and port.
    Inet(IpAddr, u16),
    /// A local socket (its path), or a family the MTA did not know.
    Local(String),
    Unknown,
}

/// A command from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: the MTA's version, actions it allows and steps it can leave out.
    OptNeg { version: u32, actions: u32, steps: u32 },
    /// `D`: macros for the stage named by the command byte (no reply).
    Macro { stage: u8, pairs: Vec<(String, String)> },
    /// `C`: the client's host name (or `[address]`) and address.
    Connect { host: String, peer: Peer },
    /// `H`: the HELO/EHLO name.
    Helo(String),
    /// `M`: the envelope sender (with its `<>`), then ESMTP parameters.
    Mail(Vec<String>),
    /// `R`: one recipient, then ESMTP parameters.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field, its value unfolded as the MTA keeps it.
    Header { name: String, value: Vec<u8> },
    /// `N`: end of the header.
    EndOfHeader,
    /// `B`: a piece of the body.
    Body(Vec<u8>),
    /// `E`: end of the message (with a last piece of body, if any).
    EndOfMessage(Vec<u8>),
    /// `A`: the message is over (rejected elsewhere, or done): forget it.
    Abort,
    /// `Q`: the session is over.
    Quit,
    /// `K`: the session is over; a new one follows on this connection.
    QuitNewConnection,
    /// `U`: an SMTP command the MTA did not know.
    Unknown(Vec<u8>),
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::OptNeg { .. } => "optneg",
            Command::Macro { .. } => "macro",
            Command::Connect { .. } => "connect",
            Command::Helo(_) => "helo",
            Command::Mail(_) => "mail",
            Command::Rcpt(_) => "rcpt",
            Command::Data => "data",
            Command::Header { .. } => "header",
            Command::EndOfHeader => "eoh",
            Command::Body(_) => "body",
            Command::EndOfMessage(_) => "eom",
            Command::Abort => "abort",
            Command::Quit => "quit",
            Command::QuitNewConnection => "quit-nc",
            Command::Unknown(_) => "unknown",
        }
    }
}

/// The first whole packet in `buf`: `Ok(Some((its length with the length
/// field, command byte and data)))`, `Ok(None)` if `buf` does not hold all
/// of it yet.
pub fn frame(buf: &[u8]) -> Result<Option<(usize, &[u8])>, MilterError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len == 0 {
        return Err(bad("an empty packet"));
    }
    if len > MAX_PACKET {
        return Err(bad(format!("a packet of {len} bytes (at most {MAX_PACKET})")));
    }
    Ok(buf.get(4..4 + len).map(|p| (4 + len, p)))
}

/// Parses one packet (command byte and data).
pub fn parse(packet: &[u8]) -> Result<Command, MilterError> {
    let (&cmd, data) = packet.split_first().ok_or_else(|| bad("an empty packet"))?;
    Ok(match cmd {
        b'O' => {
            let w = |i: usize| data.get(4 * i..4 * i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match (w(0), w(1), w(2)) {
                (Some(version), Some(actions), Some(steps)) => Command::OptNeg { version, actions, steps },
                _ => return Err(bad("option negotiation shorter than 12 bytes")),
            }
        }
        b'D' => {
            let (&stage, rest) = data.split_first().ok_or_else(|| bad("macros without a stage"))?;
            let strings = strings(rest)?;
            if strings.len() % 2 != 0 {
                return Err(bad("a macro name without a value"));
            }
            let pairs = strings.chunks(2).map(|p| (text(p[0]), text(p[1]))).collect();
            Command::Macro { stage, pairs }
        }
        b'C' => {
            let nul = data.iter().position(|&b| b == 0).ok_or_else(|| bad("connect without a host name"))?;
            let host = text(&data[..nul]);
            let rest = &data[nul + 1..];
            let peer = match rest.split_first() {
                None | Some((b'U', _)) => Peer::Unknown,
                Some((&family, after)) => {
                    let port = after.get(..2).map(|p| u16::from_be_bytes([p[0], p[1]])).ok_or_else(|| bad("connect without a port"))?;
                    let addr = strings(&after[2..])?.first().map(|a| text(a)).ok_or_else(|| bad("connect without an address"))?;
                    match family {
                        b'4' | b'6' => {
                            let ip = addr.trim_start_matches("IPv6:").parse().map_err(|_| bad(format!("connect: {addr:?} is not an address")))?;
                            Peer::Inet(ip, port)
                        }
                        b'L' => Peer::Local(addr),
                        other => return Err(bad(format!("connect: unknown address family {:?}", other as char))),
                    }
                }
            };
            Command::Connect { host, peer }
        }
        b'H' => Command::Helo(strings(data)?.first().map(|s| text(s)).unwrap_or_default()),
        b'M' => Command::Mail(args(data, "MAIL")?),
        b'R' => Command::Rcpt(args(data, "RCPT")?),
        b'T' => Command::Data,
        b'L' => {
            let s = strings(data)?;
            match s.as_slice() {
                [name, value] if !name.is_empty() => Command::Header { name: text(name), value: value.to_vec() },
                _ => return Err(bad("a header is not a name and a value")),
            }
        }
        b'N' => Command::EndOfHeader,
        b'B' => Command::Body(data.to_vec()),
        b'E' => Command::EndOfMessage(data.to_vec()),
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => Command::Unknown(data.strip_suffix(b"\0").unwrap_or(data).to_vec()),
        other => return Err(bad(format!("unknown command {:?}", other as char))),
    })
}

/// NUL-terminated strings; the last must be terminated too.
fn strings(data: &[u8]) -> Result<Vec<&[u8]>, MilterError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let body = data.strip_suffix(b"\0").ok_or_else(|| bad("a string without its NUL"))?;
    Ok(body.split(|&b| b == 0).collect())
}

fn args(data: &[u8], what: &str) -> Result<Vec<String>, MilterError> {
    let a: Vec<String> = strings(data)?.into_iter().map(text).collect();
    if a.is_empty() {
        return Err(bad(format!("{what} without an address")));
    }
    Ok(a)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A reply of the filter's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `O`: the version, actions and steps agreed on.
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    Continue,
    Accept,
    Reject,
    TempFail,
    Discard,
    /// `y`: reject (5xx) or defer (4xx) with this SMTP reply.
    ReplyCode {
        code: u16,
        text: String,
    },
    /// `h`: add a header field at the end.
    AddHeader {
        name: String,
        value: String,
    },
    /// `i`: insert a header field before the `index`th field (0: at the
    /// top, where trace fields such as `Received-SPF` belong).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `m`: change the `index`th (from 1) field named `name`; an empty
    /// value deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `q`: hold the message in the MTA's quarantine.
    Quarantine(String),
    /// `p`: still working (resets the MTA's timeout).
    Progress,
}

impl Reply {
    /// Appends the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let cstr = |out: &mut Vec<u8>, s: &str| {
            out.extend(s.bytes().filter(|&b| b != 0));
            out.push(0);
        };
        match self {
            Reply::OptNeg { version, actions, steps } => {
                out.push(b'O');
                for w in [version, actions, steps] {
                    out.extend_from_slice(&w.to_be_bytes());
                }
            }
            Reply::Continue => out.push(b'c'),
            Reply::Accept => out.push(b'a'),
            Reply::Reject => out.push(b'r'),
            Reply::TempFail => out.push(b't'),
            Reply::Discard => out.push(b'd'),
            Reply::ReplyCode { code, text } => {
                out.push(b'y');
                cstr(out, &smtp_reply(*code, text));
            }
            Reply::AddHeader { name, value } => {
                out.push(b'h');
                cstr(out, name);
                cstr(out, value);
            }
            Reply::InsertHeader { index, name, value } => {
                out.push(b'i');
                out.extend_from_slice(&index.to_be_bytes());
                cstr(out, name);
                cstr(out, value);
            }
            Reply::ChangeHeader { index, name, value } => {
                out.push(b'm');
                out.extend_from_slice(&index.to_be_bytes());
                cstr(out, name);
                cstr(out, value);
            }
            Reply::Quarantine(reason) => {
                out.push(b'q');
                cstr(out, reason);
            }
            Reply::Progress => out.push(b'p'),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// An SMTP reply line for `SMFIR_REPLYCODE`: the code (4xx or 5xx, else
/// 451 or 554 by its first digit), an enhanced status code when the text
/// does not start with one, the text on one line (CR and LF become spaces)
/// and `%` doubled (the MTA formats the text).
pub fn smtp_reply(code: u16, text: &str) -> String {
    let code = match code {
        400..=599 => code,
        c if c / 100 == 4 => 451,
        _ => 554,
    };
    let one_line: String = text.chars().map(|c| if c == '\r' || c == '\n' || c == '\0' { ' ' } else { c }).collect();
    let one_line = one_line.trim().replace('%', "%%");
    let enhanced = one_line.split(' ').next().is_some_and(|w| {
        let p: Vec<&str> = w.split('.').collect();
        p.len() == 3 && p.iter().all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
    });
    let status = if code / 100 == 4 { "4.7.1" } else { "5.7.1" };
    match (enhanced, one_line.is_empty()) {
        (true, _) => format!("{code} {one_line}"),
        (false, true) => format!("{code} {status}"),
        (false, false) => format!("{code} {status} {one_line}"),
    }
}

/// The options to agree on: the version is the lower of the two (at least
/// 2), the actions those hamlet wants that the MTA allows, and of the
/// steps hamlet would rather skip those the MTA can leave out. An MTA that
/// cannot let hamlet add headers is an error.
pub fn negotiate(mta_version: u32, mta_actions: u32, mta_steps: u32, want_actions: u32, skip_steps: u32) -> Result<Reply, MilterError> {
    if mta_version < 2 {
        return Err(bad(format!("milter protocol version {mta_version} is too old (2 to {VERSION})")));
    }
    if mta_actions & action::ADD_HEADERS == 0 {
        return Err(bad("the MTA does not let milters add headers"));
    }
    Ok(Reply::OptNeg { version: mta_version.min(VERSION), actions: want_actions & mta_actions, steps: skip_steps & mta_steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(cmd);
        p.extend_from_slice(data);
        p
    }

    fn one(cmd: u8, data: &[u8]) -> Result<Command, MilterError> {
        let p = packet(cmd, data);
        let (n, body) = frame(&p)?.expect("whole");
        assert_eq!(n, p.len());
        parse(body)
    }

    /// The commands as Postfix 3.7 sends them.
    #[test]
    fn postfix_commands() {
        let mut optneg = Vec::new();
        for w in [6u32, 0x1ff, 0x1f_ffff] {
            optneg.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(one(b'O', &optneg), Ok(Command::OptNeg { version: 6, actions: 0x1ff, steps: 0x1f_ffff }));
        assert_eq!(
            one(b'D', b"Cj\0mx.example.net\0{daemon_name}\0smtpd\0"),
            Ok(Command::Macro { stage: b'C', pairs: vec![("j".into(), "mx.example.net".into()), ("{daemon_name}".into(), "smtpd".into())] })
        );
        assert_eq!(
            one(b'C', b"mail.example.org\x004\x00\x19192.0.2.25\0"),
            Ok(Command::Connect { host: "mail.example.org".into(), peer: Peer::Inet("192.0.2.25".parse().unwrap(), 25) })
        );
        assert_eq!(
            one(b'C', b"[2001:db8::1]\x006\x01\xbbIPv6:2001:db8::1\0"),
            Ok(Command::Connect { host: "[2001:db8::1]".into(), peer: Peer::Inet("2001:db8::1".parse().unwrap(), 443) })
        );
        assert_eq!(one(b'C', b"localhost\0U"), Ok(Command::Connect { host: "localhost".into(), peer: Peer::Unknown }));
        assert_eq!(one(b'H', b"alice-laptop\0"), Ok(Command::Helo("alice-laptop".into())));
        assert_eq!(one(b'M', b"<alice@example.org>\0SIZE=1234\0"), Ok(Command::Mail(vec!["<alice@example.org>".into(), "SIZE=1234".into()])));
        assert_eq!(one(b'R', b"<bob@example.net>\0"), Ok(Command::Rcpt(vec!["<bob@example.net>".into()])));
        assert_eq!(one(b'L', b"Subject\0Minutes\0"), Ok(Command::Header { name: "Subject".into(), value: b"Minutes".to_vec() }));
        assert_eq!(one(b'L', b"X-Empty\0\0"), Ok(Command::Header { name: "X-Empty".into(), value: Vec::new() }));
        assert_eq!(one(b'B', b"Hi Bob,\r\n"), Ok(Command::Body(b"Hi Bob,\r\n".to_vec())));
        for (c, want) in [
            (b'T', Command::Data),
            (b'N', Command::EndOfHeader),
            (b'E', Command::EndOfMessage(Vec::new())),
            (b'A', Command::Abort),
            (b'Q', Command::Quit),
            (b'K', Command::QuitNewConnection),
        ] {
            assert_eq!(one(c, b""), Ok(want));
        }
    }

    #[test]
    fn bad_packets_are_errors() {
        for (cmd, data) in [
            (b'O', &b"\0\0\0\x06"[..]),
            (b'D', b""),
            (b'D', b"Cj\0"),
            (b'C', b"host"),
            (b'C', b"host\x004\x00"),
            (b'C', b"host\x004\x00\x19not-an-ip\0"),
            (b'C', b"host\x00X\x00\x19x\0"),
            (b'M', b""),
            (b'M', b"<a@b>"),
            (b'L', b"Subject\0"),
            (b'L', b"\0value\0"),
            (b'Z', b""),
        ] {
            assert!(one(cmd, data).is_err(), "{} {:?}", cmd as char, String::from_utf8_lossy(data));
        }
        assert!(frame(&[0, 0, 0, 0]).is_err(), "an empty packet");
        assert!(frame(&((MAX_PACKET + 1) as u32).to_be_bytes()).is_err(), "too big");
        assert_eq!(frame(&[0, 0, 0, 5, b'B', 1]), Ok(None), "not all there yet");
    }

    #[test]
    fn replies_as_the_mta_reads_them() {
        let mut out = Vec::new();
        Reply::Continue.encode(&mut out);
        Reply::AddHeader { name: "X-Spam-Flag".into(), value: "YES".into() }.encode(&mut out);
        Reply::ChangeHeader { index: 2, name: "X-Spam-Status".into(), value: String::new() }.encode(&mut out);
        Reply::ReplyCode { code: 550, text: "spam (score 0.99, 100%)\r\nsure".into() }.encode(&mut out);
        Reply::InsertHeader { index: 0, name: "Received-SPF".into(), value: "pass".into() }.encode(&mut out);
        assert_eq!(
            out,
            [
                &b"\0\0\0\x01c"[..],
                b"\0\0\0\x11hX-Spam-Flag\0YES\0",
                b"\0\0\0\x14m\0\0\0\x02X-Spam-Status\0\0",
                b"\0\0\0\x2ay550 5.7.1 spam (score 0.99, 100%%)  sure\0",
                b"\0\0\0\x17i\0\0\0\0Received-SPF\0pass\0",
            ]
            .concat()
        );
        let mut o = Vec::new();
        negotiate(6, 0x1ff, 0x1f_ffff, action::ADD_HEADERS | action::CHANGE_HEADERS | action::QUARANTINE, step::NO_UNKNOWN | step::NO_DATA)
            .unwrap()
            .encode(&mut o);
        assert_eq!(o, b"\0\0\0\x0dO\0\0\0\x06\0\0\0\x31\0\0\x03\0");
        assert!(negotiate(6, 0, 0, action::ADD_HEADERS, 0).is_err());
        assert!(negotiate(1, 0x1ff, 0, action::ADD_HEADERS, 0).is_err());
        assert_eq!(negotiate(2, 0x3f, 0x7f, 0x31, 0x300), Ok(Reply::OptNeg { version: 2, actions: 0x31, steps: 0 }));
        // Postfix offers every no-reply step; a version 2 MTA none of them.
        let quiet = step::NR_HDR | step::NR_EOH | step::NR_BODY;
        assert_eq!(negotiate(6, 0x1ff, 0x1f_ffff, 0x31, quiet), Ok(Reply::OptNeg { version: 6, actions: 0x31, steps: quiet }));
        assert_eq!(negotiate(2, 0x3f, 0x7f, 0x31, quiet), Ok(Reply::OptNeg { version: 2, actions: 0x31, steps: 0 }));
    }

    #[test]
    fn smtp_replies_are_one_clean_line() {
        assert_eq!(smtp_reply(550, "5.7.1 spam"), "550 5.7.1 spam");
        assert_eq!(smtp_reply(451, "try later"), "451 4.7.1 try later");
        assert_eq!(smtp_reply(250, ""), "554 5.7.1");
        assert_eq!(smtp_reply(42, "x\0y"), "554 5.7.1 x y");
    }

    proptest::proptest! {
        /// Any bytes: framed and parsed, an error or a command, never a panic.
        #[test]
        fn hostile_packets_never_panic(bytes in proptest::collection::vec(proptest::prop_oneof![
            proptest::sample::select(b"OCDHMRLBENAQKTU46L\0\x01\x19".to_vec()),
            proptest::prelude::any::<u8>(),
        ], 0..300)) {
            let mut at = 0;
            while let Ok(Some((n, p))) = frame(&bytes[at..]) {
                let _ = parse(p);
                at += n;
            }
            let _ = parse(&bytes);
        }
    }
}
