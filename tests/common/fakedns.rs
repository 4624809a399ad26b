//! An in-process authoritative DNS server on 127.0.0.1 (UDP and TCP on one
//! free port) answering from a zone the test sets and may swap at any time.
//! It speaks the real wire protocol through hickory's message codec, so
//! the code under test uses its real resolver. Names it does not hold are
//! NXDOMAIN; a name marked `timeout` gets no answer for types it does not hold; CNAMEs are
//! chased within the zone; an answer too big for UDP is truncated so the
//! client retries over TCP.

#![allow(dead_code)]

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One owner name's data.
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub records: Vec<RData>,
    /// Queries for this name are never answered, except for the record
    /// types it holds.
    pub timeout: bool,
}

/// Lower-case names without the trailing dot.
pub type Zone = HashMap<String, Node>;

pub fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub struct FakeDns {
    pub port: u16,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeDns {
    /// Starts serving an empty zone (call inside a tokio runtime).
    pub async fn start() -> FakeDns {
        let zone: Arc<Mutex<Zone>> = Arc::default();
        // One port for both transports: bind UDP first, then TCP on it
        // (retrying with another port in the rare case it is taken).
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let port = udp.local_addr().unwrap().port();
        let z = zone.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else { continue };
                if let Some(reply) = answer(&z, &buf[..n], true) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let z = zone.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else { continue };
                let z = z.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        match answer(&z, &q, false) {
                            Some(r) => {
                                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                                out.extend_from_slice(&r);
                                if s.write_all(&out).await.is_err() {
                                    return;
                                }
                            }
                            // A timeout: hold the connection, say nothing.
                            None => {
                                let _ = s.read(&mut [0u8; 1]).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        FakeDns { port, zone, tasks: vec![udp_task, tcp_task] }
    }

    pub fn set_zone(&self, zone: Zone) {
        *self.zone.lock().unwrap() = zone;
    }

    pub fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn answer(zone: &Mutex<Zone>, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = match Message::from_vec(query) {
        Ok(q) => q,
        Err(e) => {
            if std::env::var_os("FAKEDNS_LOG").is_some() {
                eprintln!("fakedns: undecodable query: {e}");
            }
            return None;
        }
    };
    if std::env::var_os("FAKEDNS_LOG").is_some() {
        eprintln!("fakedns: {:?}", q.queries.first());
    }
    let question = q.queries.first()?.clone();
    let mut reply = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    reply.metadata.recursion_desired = q.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(question.clone());
    let zone = zone.lock().unwrap();
    let mut name: Name = question.name().clone();
    let qtype = question.query_type();
    let mut found_any = false;
    // Chase CNAMEs within the zone, at most 8 links.
    for _ in 0..8 {
        let Some(node) = zone.get(&key(&name.to_ascii())) else { break };
        found_any = true;
        // pyspf's rule: a name marked TIMEOUT still answers for the types
        // it lists (a TXT record beside TIMEOUT is served); others time out.
        if node.timeout && !node.records.iter().any(|r| r.record_type() == qtype || matches!(r, RData::CNAME(_))) {
            return None;
        }
        let mut next = None;
        for rd in &node.records {
            if rd.record_type() == qtype {
                reply.add_answer(Record::from_rdata(name.clone(), 60, rd.clone()));
            } else if let RData::CNAME(c) = rd {
                reply.add_answer(Record::from_rdata(name.clone(), 60, rd.clone()));
                next = Some(c.0.clone());
            }
        }
        match next {
            Some(n) if qtype != RecordType::CNAME => name = n,
            _ => break,
        }
    }
    if !found_any {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    let bytes = reply.to_vec().ok()?;
    let limit = q.edns.as_ref().map_or(512, |e| e.max_payload().max(512)) as usize;
    if udp && bytes.len() > limit {
        let mut t = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        t.metadata.truncation = true;
        t.metadata.recursion_available = true;
        t.add_query(question);
        return t.to_vec().ok();
    }
    Some(bytes)
}
