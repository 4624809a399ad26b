//! The listening sockets of `hamlet serve`'s line-protocol edges (SPAMD,
//! the Postfix policy service): TCP or a UNIX socket, and the one accept
//! loop they share, with a cap on connections served at once and a
//! deadline for those still in flight at shutdown.

use crate::{Error, Result};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

    /// Waits for a free slot in `slots`, then for a connection: so a flood
    /// of connections waits in the accept queue instead of piling up
    /// tasks. `None` once `shutdown` completes.
    async fn next(
        &self,
        slots: &Arc<tokio::sync::Semaphore>,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, io::Result<(Conn, Option<IpAddr>)>)> {
        let permit = tokio::select! {
            () = &mut shutdown => return None,
            p = slots.clone().acquire_owned() => p.ok()?,
        };
        tokio::select! {
            () = &mut shutdown => None,
            a = self.accept() => Some((permit, a)),
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
/// `handle` on a task of its own, at most `max_connections` at once (more
/// wait in the kernel's accept queue). Then waits up to `drain` for the
/// connections in flight, and leaves any still busy to finish on their own.
pub async fn serve<F, Fut>(
    listener: Listener,
    what: &'static str,
    max_connections: usize,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
    handle: F,
) where
    F: Fn(Conn, Option<IpAddr>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    while let Some((permit, accepted)) = listener.next(&slots, shutdown.as_mut()).await {
        match accepted {
            Ok((conn, peer)) => {
                let job = handle(conn, peer);
                tasks.spawn(async move {
                    job.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: log, breathe, go on.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    // Past the deadline, connections still busy (a learn committing) go
    // on by themselves rather than being cut off.
    tasks.detach_all();
}

/// An accepted connection: a TCP or UNIX stream, read and written alike.
pub enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
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
