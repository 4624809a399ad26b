//! `hamlet serve`: binds the configured front ends (the HTTP API, the
//! SPAMD listener, the Postfix policy service) around one shared
//! [`Service`], runs them until SIGINT or SIGTERM, and lets requests in
//! flight finish. The composition root of the server: the front ends know
//! only the service, never each other.

use crate::config::Config;
use crate::listener::Listener;
use crate::service::Service;
use crate::store::RedbStore;
use crate::{Error, Result, build};
use std::sync::Arc;

/// Runs `hamlet serve` to the end on a runtime of its own.
pub fn main(cfg: Config) -> Result<()> {
    fixed_mmap_threshold();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::System { what: "cannot start the runtime".into(), source })?;
    rt.block_on(run(cfg))
}

/// Runs the service until SIGINT or SIGTERM; in-flight requests (learns
/// included) finish before it returns.
pub async fn run(cfg: Config) -> Result<()> {
    let service: Arc<Service<RedbStore>> = Arc::new(build::service(&cfg)?);
    service.start_autolearn();

    let listener = tokio::net::TcpListener::bind(&cfg.http).await.map_err(|source| Error::Bind { what: "HTTP", addr: cfg.http.clone(), source })?;
    let spamd = match &cfg.spamd {
        Some(addr) => Some(Listener::bind("spamd", addr).await?),
        None => None,
    };
    let policy = match &cfg.policy {
        Some(addr) => Some((Listener::bind("the policy service", addr).await?, Arc::new(build::policy_checker(&cfg)?))),
        None => None,
    };
    tracing::info!(
        http = %cfg.http,
        spamd = cfg.spamd.as_deref().unwrap_or("off"),
        policy = cfg.policy.as_deref().unwrap_or("off"),
        db = %cfg.db.display(),
        "hamlet serving"
    );

    // One shutdown signal, fanned out to every front end.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let app = crate::http::router(service.clone(), cfg.max_body_bytes);
    let http = tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone())).into_future());
    let spamd = spamd.map(|l| {
        let opts = crate::spamd::Options::from_config(&cfg);
        tokio::spawn(crate::spamd::serve(l, service.clone(), opts, stopped(stop_rx.clone())))
    });
    let policy = policy.map(|(l, checker)| tokio::spawn(crate::policy::serve(l, service.clone(), checker, stopped(stop_rx.clone()))));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::Internal(format!("{what} failed: {e}"));
    http.await.map_err(|e| failed("HTTP server task", &e))?.map_err(|e| failed("HTTP server", &e))?;
    if let Some(s) = spamd {
        s.await.map_err(|e| failed("SPAMD listener task", &e))?;
    }
    if let Some(p) = policy {
        p.await.map_err(|e| failed("policy service task", &e))?;
    }
    tracing::info!("hamlet stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// A long-running service keeps glibc's mmap threshold fixed (256 KiB).
///
/// glibc raises the threshold each time a mapped block is freed, so after
/// the first few learns each learn's 1 MiB copies of the 4-gram weights
/// come from the heap, which they fragment and which never shrinks.
/// Above a fixed threshold they are mappings of their own, given back when
/// freed. Measured with `bench/memory.sh` (dated in `bench/RESULTS.md`): it held
/// 76 MB from its third minute on, against 155–170 MB without; after
/// `bench/http.sh 30`'s learn run 40–43 MB against 98–104 MB, at the same
/// request rate (two runs each, alternating).
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before the
    // service starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
