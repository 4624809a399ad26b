//! The HTTP listener's connection loop: hyper's HTTP/1.1 server under the
//! shared [`listener::serve`] accept loop, so HTTP has what SPAMD and the
//! policy service have: a connection cap, a deadline for the request head
//! (hyper's `header_read_timeout`), and a place in the [`Guard`] that
//! closes the connection waiting on its client the longest when the cap or
//! the body budget is reached. The body's own deadline and budget are taken
//! where it is read ([`super::Body`]).

use crate::listener::{self, Guard, Listener, Slot};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The listener's settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a request's head, from the moment the
    /// connection waits for one (keep-alive connections included).
    pub head_timeout: Duration,
    /// How long requests in flight may finish at shutdown.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes; then idle
/// connections close, and requests in flight have `opts.drain` to finish.
pub async fn serve(listener: Listener, app: Router, opts: Options, guard: Arc<Guard>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    listener::serve(listener, "http", opts.max_connections, opts.drain, guard, stopping, move |conn, peer, slot: Slot| {
        let (app, mut stop) = (app.clone(), stop_rx.clone());
        async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                // The handler reads the body through the connection's slot
                // (its budget; it marks the connection working once read).
                req.extensions_mut().insert(slot.clone());
                req.extensions_mut().insert(super::Peer(peer));
                let (mut app, slot) = (app.clone(), slot.clone());
                async move {
                    let resp = tower_service::Service::call(&mut app, req).await;
                    slot.waiting();
                    resp
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.head_timeout)
                .serve_connection(TokioIo::new(conn), svc);
            tokio::pin!(conn);
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
    })
    .await;
}
