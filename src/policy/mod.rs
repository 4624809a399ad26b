//! The Postfix policy delegation server of `hamlet serve`
//! (`check_policy_service inet:127.0.0.1:10040`): the envelope checks
//! ([`crate::envelope`]) answered in Postfix's access(5) actions.
//!
//! Protocol (SMTPD_POLICY_README): Postfix keeps a connection open and
//! sends requests on it, each a block of `name=value` lines ended by an
//! empty line; each gets exactly one `action=...` line and an empty line.
//! Checks run at the RCPT stage (one recipient per request); every other
//! stage gets `DUNNO`. On an internal error the server logs it and closes
//! the connection without a reply, so Postfix applies
//! `smtpd_policy_service_default_action`.

use crate::envelope::greylist::{GreyStore, Verdict};
use crate::envelope::{Checker, Decision, Envelope};
use crate::listener::{self, Conn, Guard, Listener, Slot};
use crate::service::Service;
use crate::store::TokenStore;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest attribute line accepted (certificate subjects can be long).
const MAX_LINE: usize = 8192;
/// Most attributes in one request.
const MAX_ATTRS: usize = 200;
/// A connection idle this long is closed (Postfix closes its own after
/// 300 s, `smtpd_policy_service_max_idle`).
const IDLE: Duration = Duration::from_secs(330);
/// Once a request's first byte has come, the whole request must follow
/// within this: Postfix writes a request at once, a client that drips it
/// is not Postfix.
const REQUEST: Duration = Duration::from_secs(10);

/// A request's attributes. A repeated name keeps its last value.
pub type Attrs = HashMap<String, String>;

/// Why a connection ends.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The client closed between requests: the normal end.
    Closed,
    /// Malformed (too long, not `name=value`, closed mid-request).
    Bad(String),
}

/// Reads one request block.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Attrs, ReadError> {
    let mut attrs = Attrs::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut *r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await.map_err(|e| ReadError::Bad(format!("read error: {e}")))?;
        if n == 0 {
            return Err(if attrs.is_empty() { ReadError::Closed } else { ReadError::Bad("closed inside a request".into()) });
        }
        if !line.ends_with(b"\n") {
            return Err(ReadError::Bad(if n > MAX_LINE { "attribute line too long".into() } else { "closed inside a request".into() }));
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if text.is_empty() {
            return Ok(attrs);
        }
        let Some((name, value)) = text.split_once('=') else {
            return Err(ReadError::Bad(format!("not name=value: {:?}", text.chars().take(60).collect::<String>())));
        };
        if attrs.len() >= MAX_ATTRS {
            return Err(ReadError::Bad("too many attributes".into()));
        }
        attrs.insert(name.to_string(), value.to_string());
    }
}

/// The envelope of a request.
pub fn envelope(a: &Attrs) -> Envelope {
    let get = |k: &str| a.get(k).map(String::as_str).filter(|v| !v.is_empty());
    Envelope {
        client_ip: get("client_address").and_then(|v| v.parse::<IpAddr>().ok()),
        client_name: get("client_name").filter(|n| *n != "unknown").map(str::to_string),
        helo: get("helo_name").unwrap_or("").to_string(),
        mail_from: get("sender").unwrap_or("").to_string(),
        rcpt_to: get("recipient").map(|r| vec![r.to_string()]).unwrap_or_default(),
        sasl_user: get("sasl_username").map(str::to_string),
        known: crate::envelope::Known::ALL,
    }
}

/// The `action=...` line (without line end) for a checked request.
/// `first`: the first recipient of its transaction (Postfix asks once per
/// RCPT TO, and each PREPEND adds a header, so Received-SPF goes with the
/// first only).
pub fn action(report: &crate::envelope::Report, env: &Envelope, now: u64, first: bool) -> String {
    match &report.decision {
        Decision::Reject(t) => format!("REJECT {t}"),
        Decision::Defer(t) => format!("DEFER_IF_PERMIT {t}"),
        Decision::Continue => match (&report.greylist, &report.spf, env.client_ip) {
            (Some(Verdict::Pass { delayed: Some(secs) }), _, _) => {
                format!("PREPEND X-Greylist: {}", crate::envelope::greylist::x_greylist(*secs, now))
            }
            (_, Some(spf), Some(ip)) if first => {
                format!("PREPEND Received-SPF: {}", crate::envelope::spf::received_spf(spf, ip, &env.helo, &env.mail_from))
            }
            _ => "DUNNO".to_string(),
        },
    }
}

/// Serves until `shutdown`; connections in flight finish their current
/// request.
/// At most `max_connections` at once (Postfix opens one per smtpd
/// process, `default_process_limit` 100); past that, the connection idle
/// the longest is closed (Postfix reconnects when it next needs one).
pub async fn serve<S: TokenStore + 'static, G: GreyStore + 'static>(
    listener: Listener,
    service: Arc<Service<S>>,
    checker: Arc<Checker<G>>,
    max_connections: usize,
    guard: Arc<Guard>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Connections wait for Postfix's next request; at shutdown they are
    // told to stop after the request they are in.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    listener::serve(listener, "policy", max_connections, Duration::from_secs(10), guard, stopping, |conn, peer, slot| {
        let (service, checker, stop) = (service.clone(), checker.clone(), stop_rx.clone());
        async move { connection(&service, &checker, conn, peer, &slot, stop).await }
    })
    .await;
}

/// One Postfix connection: requests until it closes, goes idle, or we stop.
async fn connection<S: TokenStore + 'static, G: GreyStore + 'static>(
    service: &Arc<Service<S>>,
    checker: &Arc<Checker<G>>,
    stream: Conn,
    peer: Option<IpAddr>,
    slot: &Slot,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    // Postfix's `instance` names one transaction on this connection: the
    // last one that got its Received-SPF.
    let mut last_instance = String::new();
    loop {
        slot.waiting();
        // Idle until the next request's first byte, then the request
        // within its deadline.
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = tokio::time::timeout(IDLE, r.fill_buf()) => r,
        };
        match first {
            Ok(Ok(b)) if !b.is_empty() => {}
            _ => return,
        }
        let attrs = match tokio::time::timeout(REQUEST, read_request(&mut r)).await {
            Ok(Ok(a)) => a,
            Ok(Err(ReadError::Closed)) => return,
            Err(_) => {
                tracing::warn!(peer = ?peer, "policy request not complete within {} s; closing", REQUEST.as_secs());
                return;
            }
            Ok(Err(ReadError::Bad(m))) => {
                tracing::warn!(peer = ?peer, error = %m, "policy request refused; closing");
                return;
            }
        };
        slot.working();
        let start = Instant::now();
        if attrs.get("request").map(String::as_str) != Some("smtpd_access_policy") {
            tracing::warn!(peer = ?peer, "policy request without request=smtpd_access_policy; closing");
            return;
        }
        let state = attrs.get("protocol_state").cloned().unwrap_or_default();
        let line = if state == "RCPT" {
            let env = envelope(&attrs);
            let instance = attrs.get("instance").cloned().unwrap_or_default();
            let first = instance.is_empty() || instance != last_instance;
            let lookups = checker.lookups(&env).await;
            let c = checker.clone();
            let t = crate::envelope::now();
            match tokio::task::spawn_blocking(move || c.check_with(&env, &lookups, t).map(|r| (action(&r, &env, t, first), r))).await {
                Ok(Ok((line, report))) => {
                    if line.starts_with("PREPEND Received-SPF") {
                        last_instance = instance;
                    }
                    let rules: Vec<&str> = report.outcomes.iter().map(|o| o.rule).collect();
                    tracing::info!(client = attrs.get("client_address").map_or("", String::as_str), sender = attrs.get("sender").map_or("", String::as_str),
                        recipient = attrs.get("recipient").map_or("", String::as_str), outcomes = %rules.join(","), action = %line, "policy");
                    line
                }
                Ok(Err(e)) => {
                    // Postfix applies its default action to a dropped connection.
                    tracing::error!(error = %e, "policy check failed; closing the connection");
                    service.metrics().request("policy RCPT", 500, start.elapsed().as_secs_f64());
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy check panicked; closing the connection");
                    return;
                }
            }
        } else {
            "DUNNO".to_string()
        };
        service.metrics().request(&format!("policy {}", if state == "RCPT" { "RCPT" } else { "other" }), 200, start.elapsed().as_secs_f64());
        let reply = format!("action={}\n\n", line.replace(['\r', '\n'], " "));
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact request Postfix 3.7.11 sent (../shared/reference/protocols.md).
    const POSTFIX: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=198.51.100.23\n\
        client_name=mail.other.example\nclient_port=46856\nreverse_client_name=mail.other.example\nserver_address=127.0.0.1\n\
        server_port=2525\nhelo_name=mail.sender.example\nsender=frank@sender.example\nrecipient=erin@corp.example\n\
        recipient_count=0\nqueue_id=\ninstance=118f.6b085f5c.cc168.0\nsize=0\netrn_domain=\nstress=\nsasl_method=\n\
        sasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n\
        encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n";

    #[tokio::test]
    async fn parses_postfix_requests() {
        let two = format!("{POSTFIX}{POSTFIX}");
        let mut r = BufReader::new(two.as_bytes());
        for _ in 0..2 {
            let a = read_request(&mut r).await.unwrap();
            let e = envelope(&a);
            assert_eq!(e.client_ip, Some("198.51.100.23".parse().unwrap()));
            assert_eq!(e.client_name.as_deref(), Some("mail.other.example"));
            assert_eq!((e.helo.as_str(), e.mail_from.as_str()), ("mail.sender.example", "frank@sender.example"));
            assert_eq!(e.rcpt_to, vec!["erin@corp.example".to_string()]);
            assert_eq!(e.sasl_user, None);
        }
        assert_eq!(read_request(&mut r).await, Err(ReadError::Closed));
        let mut r = BufReader::new(&b"request=smtpd_access_policy\nhalf"[..]);
        assert!(matches!(read_request(&mut r).await, Err(ReadError::Bad(_))));
        let mut r = BufReader::new(&b"no equals sign\n\n"[..]);
        assert!(matches!(read_request(&mut r).await, Err(ReadError::Bad(_))));
        let long = format!("x={}\n\n", "a".repeat(MAX_LINE + 10));
        let mut r = BufReader::new(long.as_bytes());
        assert!(matches!(read_request(&mut r).await, Err(ReadError::Bad(_))));
        let a = read_request(&mut BufReader::new(&b"client_name=unknown\nsender=\n\n"[..])).await.unwrap();
        let e = envelope(&a);
        assert_eq!((e.client_name, e.mail_from.as_str()), (None, ""));
    }
}
