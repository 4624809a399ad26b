//! The listening sockets of `hamlet serve`'s front ends (HTTP, SPAMD, the
//! Postfix policy service): TCP or a UNIX socket, the one accept loop they
//! share, and the [`Guard`] that keeps slow or hostile clients from
//! starving the others.
//!
//! Every listener has a cap on connections served at once; message bodies
//! in flight, over all listeners together, have one byte budget. A client
//! that is slow on purpose (slowloris: a byte every few seconds, or a body
//! held back by its last byte) looks like a real one until its deadline, so
//! caps alone would let a few hundred of them lock everyone out for that
//! long. Instead, when a listener is full or the budget is spent, the
//! connection that has been waiting on its client the longest is closed to
//! make room. A real client sends its request at once and is never the
//! longest waiting one; a server's own work (scoring, a learn committing)
//! is never interrupted.

use crate::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A bound listening socket.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    /// The socket and its path (removed when the listener stops).
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `IP:PORT` for `what` (named in errors), or a UNIX socket when `addr` starts with `/` (a
    /// stale socket file left by a previous run is replaced; any other file
    /// there is an error). The socket's permissions follow the umask: they
    /// decide who may connect (for SPAMD, who may TELL).
    pub async fn bind(what: &'static str, addr: &str) -> Result<Listener> {
        let fail = |source: io::Error| Error::Bind { what, addr: addr.to_string(), source };
        if addr.starts_with('/') {
            let path = PathBuf::from(addr);
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(fail(io::Error::new(io::ErrorKind::AlreadyExists, "a file that is not a socket is there")));
                }
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(fail(io::Error::new(io::ErrorKind::AddrInUse, "another server is listening there")));
                }
                std::fs::remove_file(&path).map_err(fail)?;
            }
            Ok(Listener::Unix(tokio::net::UnixListener::bind(&path).map_err(fail)?, path))
        } else {
            Ok(Listener::Tcp(tokio::net::TcpListener::bind(addr).await.map_err(fail)?))
        }
    }

    /// The bound TCP address (tests bind port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Accepts one connection, with the peer's address (TCP only).
    async fn accept(&self) -> io::Result<(Conn, Option<IpAddr>)> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, a)| {
                // Replies are small and final: no Nagle delay.
                let _ = s.set_nodelay(true);
                (Conn::Tcp(s), Some(a.ip()))
            }),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| (Conn::Unix(s), None)),
        }
    }
}

impl Drop for Listener {
    /// A UNIX socket's file goes with its listener.
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves `listener` until `shutdown` completes: each connection runs
/// `handle` on a task of its own, at most `max_connections` at once on this
/// listener. A connection past the cap closes this listener's connection
/// that has waited on its client the longest, if any does; else it waits
/// until one ends (so a flood waits in the kernel's accept queue instead of
/// piling up tasks). Then waits up to `drain` for the connections in
/// flight, and leaves any still busy to finish on their own.
pub async fn serve<F, Fut>(
    listener: Listener,
    what: &'static str,
    max_connections: usize,
    drain: Duration,
    guard: Arc<Guard>,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    F: Fn(Conn, Option<IpAddr>, Slot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cap = max_connections.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((conn, peer)) => {
                let slot = tokio::select! {
                    () = &mut shutdown => break,
                    s = guard.admit(what, cap) => s,
                };
                let job = handle(conn, peer, slot.clone());
                tasks.spawn(async move {
                    tokio::select! {
                        () = job => {}
                        () = slot.evicted() => tracing::debug!(listener = what, "closed a connection waiting on its client to make room"),
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE): connections
                // waiting on their clients hold them, so the longest waiting
                // one anywhere is closed to make room, as at the cap; then
                // breathe and go on.
                let out_of_files = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if !(out_of_files && guard.evict(|_, _| true)) {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(if out_of_files { 5 } else { 50 })).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    // Past the deadline, connections still busy (a learn committing) go
    // on by themselves rather than being cut off.
    tasks.detach_all();
}

/// What the connections of every listener share: who is connected where,
/// who is waiting on its client and since when, and the budget of message
/// bytes in flight (see the module documentation).
pub struct Guard {
    table: Mutex<Table>,
    /// Signalled whenever a connection ends.
    freed: Notify,
    /// The byte budget, in KiB permits.
    budget: Arc<Semaphore>,
    budget_kib: usize,
    evictions: AtomicU64,
    refusals: AtomicU64,
}

#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Entry>,
}

struct Entry {
    listener: &'static str,
    /// Since when the connection waits on its client; `None` while the
    /// server works on its request.
    waiting: Option<Instant>,
    /// Budget KiB it holds.
    held: usize,
    kick: Arc<Kick>,
}

#[derive(Default)]
struct Kick {
    kicked: AtomicBool,
    notify: Notify,
}

/// Budget units: KiB, rounded up.
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

impl Guard {
    /// A guard whose listeners together hold at most `budget_bytes` of
    /// message bodies at once.
    pub fn new(budget_bytes: usize) -> Arc<Guard> {
        let budget_kib = kib(budget_bytes).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Guard {
            table: Mutex::new(Table::default()),
            freed: Notify::new(),
            budget: Arc::new(Semaphore::new(budget_kib)),
            budget_kib,
            evictions: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is plain data, consistent between statements: a panic
        // elsewhere while it was held leaves nothing half-done.
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections closed to make room, and bodies refused for want of
    /// budget, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.evictions.load(Ordering::Relaxed), self.refusals.load(Ordering::Relaxed))
    }

    /// Connections open on `listener` now.
    pub fn open(&self, listener: &str) -> usize {
        self.table().conns.values().filter(|e| e.listener == listener).count()
    }

    /// Closes the connection, among those `eligible`, that has waited on its
    /// client the longest. False when none is waiting.
    fn evict(&self, eligible: impl Fn(u64, &Entry) -> bool) -> bool {
        let t = self.table();
        let victim = t
            .conns
            .iter()
            .filter(|(id, e)| eligible(**id, e) && !e.kick.kicked.load(Ordering::Relaxed))
            .filter_map(|(_, e)| e.waiting.map(|w| (w, e)))
            .min_by_key(|(w, _)| *w);
        match victim {
            Some((_, e)) => {
                e.kick.kicked.store(true, Ordering::Relaxed);
                e.kick.notify.notify_one();
                self.evictions.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// A slot on `listener` for a connection just accepted: at once if the
    /// listener is under `cap` or one of its connections waits on its
    /// client (that one is closed), else when one ends.
    async fn admit(self: &Arc<Self>, listener: &'static str, cap: usize) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let open = self.table().conns.values().filter(|e| e.listener == listener && !e.kick.kicked.load(Ordering::Relaxed)).count();
            if open < cap || self.evict(|_, e| e.listener == listener) {
                let mut t = self.table();
                t.next += 1;
                let id = t.next;
                let kick = Arc::new(Kick::default());
                t.conns.insert(id, Entry { listener, waiting: Some(Instant::now()), held: 0, kick: kick.clone() });
                return Slot { inner: Arc::new(SlotInner { id, guard: self.clone(), kick }) };
            }
            freed.await;
        }
    }
}

/// A connection's place in its listener: the handle through which it says
/// whether it waits on its client, and takes budget for a body. Clones
/// share the place; it is given back when the last one drops.
#[derive(Clone)]
pub struct Slot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    id: u64,
    guard: Arc<Guard>,
    kick: Arc<Kick>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.guard.table().conns.remove(&self.id);
        self.guard.freed.notify_waiters();
    }
}

/// Budget held for a body; given back when dropped.
pub struct Room {
    _permit: OwnedSemaphorePermit,
    kib: usize,
    slot: Slot,
}

impl Drop for Room {
    fn drop(&mut self) {
        if let Some(e) = self.slot.inner.guard.table().conns.get_mut(&self.slot.inner.id) {
            e.held = e.held.saturating_sub(self.kib);
        }
    }
}

impl Slot {
    fn set_waiting(&self, waiting: Option<Instant>) {
        if let Some(e) = self.inner.guard.table().conns.get_mut(&self.inner.id) {
            e.waiting = waiting;
        }
    }

    /// The connection now waits on its client (for a request, or the rest of one).
    pub fn waiting(&self) {
        self.set_waiting(Some(Instant::now()));
    }

    /// The server works on the connection's request: it may not be closed to make room.
    pub fn working(&self) {
        self.set_waiting(None);
    }

    /// Completes when the guard closes this connection to make room.
    pub async fn evicted(&self) {
        loop {
            let n = self.inner.kick.notify.notified();
            if self.inner.kick.kicked.load(Ordering::Relaxed) {
                return;
            }
            n.await;
            if self.inner.kick.kicked.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    /// Budget for `bytes` of message: at once if there is room; else the
    /// connection holding budget that has waited on its client the longest
    /// is closed, and so on, for up to `wait`. `None` when `bytes` is more
    /// than the whole budget, or no room came in time (counted).
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Option<Room> {
        let guard = &self.inner.guard;
        let k = kib(bytes).max(1);
        if k > guard.budget_kib {
            guard.refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let permits = u32::try_from(k).unwrap_or(u32::MAX);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(p) = guard.budget.clone().try_acquire_many_owned(permits) {
                return Some(self.room(p, k));
            }
            let me = self.inner.id;
            let evicted = guard.evict(|id, e| id != me && e.held > 0);
            // After an eviction, the budget comes back when that
            // connection's task has dropped it: look again shortly.
            let step = if evicted { tokio::time::Instant::now() + Duration::from_millis(100) } else { deadline };
            match tokio::time::timeout_at(step.min(deadline), guard.budget.clone().acquire_many_owned(permits)).await {
                Ok(Ok(p)) => return Some(self.room(p, k)),
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                _ => {
                    guard.refusals.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
    }

    fn room(&self, permit: OwnedSemaphorePermit, k: usize) -> Room {
        if let Some(e) = self.inner.guard.table().conns.get_mut(&self.inner.id) {
            e.held += k;
        }
        Room { _permit: permit, kib: k, slot: self.clone() }
    }
}

/// An accepted connection: a TCP or UNIX stream, read and written alike.
pub enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Conn {
    /// Asks the kernel to acknowledge what has been read at once, for a
    /// protocol whose peer sends packets that get no reply (a milter's
    /// macros and, when negotiated, its headers and body): without it the
    /// peer's Nagle algorithm holds its next small packet until our delayed
    /// ACK goes out, up to 40 ms a message on Linux (bench/RESULTS.md,
    /// milter). Linux clears the flag as it pleases, so it is set after
    /// every read. A UNIX stream has no ACKs.
    pub fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        if let Conn::Tcp(s) = self {
            // Only a hint: failing leaves the stream as it was.
            let _ = s.set_quickack(true);
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `slot` as its connection task would: ends when evicted.
    fn watch(slot: &Slot) -> tokio::task::JoinHandle<()> {
        let s = slot.clone();
        tokio::spawn(async move { s.evicted().await })
    }

    #[tokio::test]
    async fn a_full_listener_closes_the_longest_waiting_connection_never_a_working_one() {
        let guard = Guard::new(1 << 20);
        let a = guard.admit("x", 2).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = guard.admit("x", 2).await;
        let (wa, wb) = (watch(&a), watch(&b));
        // Another listener's connections do not count against "x".
        let _other = guard.admit("y", 1).await;
        let c = guard.admit("x", 2).await;
        tokio::time::timeout(Duration::from_secs(1), wa).await.expect("the oldest waiting one goes").unwrap();
        assert!(!wb.is_finished());
        drop(a);
        assert_eq!(guard.open("x"), 2);
        // Working connections are never closed: the newcomer waits for one to end.
        b.working();
        c.working();
        let d = tokio::spawn({
            let g = guard.clone();
            async move { g.admit("x", 2).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!d.is_finished() && !wb.is_finished());
        // b's connection ends (its watcher holds a clone of the slot too).
        wb.abort();
        let _ = wb.await;
        drop(b);
        let _d = tokio::time::timeout(Duration::from_secs(1), d).await.expect("admitted once one ended").unwrap();
        assert_eq!(guard.counts().0, 1);
    }

    #[tokio::test]
    async fn the_budget_is_taken_from_the_longest_waiting_holder() {
        let guard = Guard::new(100 << 10);
        let slow = guard.admit("x", 10).await;
        let room = slow.reserve(80 << 10, Duration::ZERO).await.expect("room at first");
        let evicted = watch(&slow);
        let fast = guard.admit("x", 10).await;
        // Its task ends when evicted, and gives the room back.
        let holder = tokio::spawn(async move {
            evicted.await.unwrap();
            drop(room);
            drop(slow);
        });
        let got = fast.reserve(50 << 10, Duration::from_secs(2)).await;
        assert!(got.is_some(), "the slow holder made room");
        holder.await.unwrap();
        // More than the whole budget is refused at once; a working holder
        // is not evicted, so room that does not come in time is refused.
        assert!(fast.reserve(200 << 10, Duration::from_secs(5)).await.is_none());
        fast.working();
        let other = guard.admit("x", 10).await;
        assert!(other.reserve(60 << 10, Duration::from_millis(200)).await.is_none());
        assert_eq!(guard.counts(), (1, 2));
    }
}
