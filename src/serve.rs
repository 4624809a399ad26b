//! `hamlet serve`: binds the configured front ends (the HTTP API, the
//! SPAMD listener, the Postfix policy service) around one shared
//! [`Service`], runs them until SIGINT or SIGTERM, and lets requests in
//! flight finish. The composition root of the server: the front ends know
//! only the service, never each other.

use crate::config::Config;
use crate::listener::{Guard, Listener};
use crate::service::Service;
use crate::store::Db;
use crate::{Error, Result, build};
use std::sync::Arc;
use std::time::Duration;

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
    file_limit(&cfg);
    let service: Arc<Service<Db>> = Arc::new(build::service(&cfg)?);
    service.start_autolearn();

    let listener = Listener::bind("HTTP", &cfg.http).await?;
    let spamd = match &cfg.spamd {
        Some(addr) => Some(Listener::bind("spamd", addr).await?),
        None => None,
    };
    // The policy service and the milter answer the envelope with one
    // checker (one greylisting store).
    let checker = if cfg.policy.is_some() || cfg.milter.is_some() { Some(Arc::new(build::policy_checker(&cfg)?)) } else { None };
    let policy = match (&cfg.policy, &checker) {
        (Some(addr), Some(c)) => Some((Listener::bind("the policy service", addr).await?, c.clone())),
        _ => None,
    };
    let milter = match (&cfg.milter, &checker) {
        (Some(addr), Some(c)) => Some((Listener::bind("milter", addr).await?, c.clone())),
        _ => None,
    };
    tracing::info!(
        http = %cfg.http,
        spamd = cfg.spamd.as_deref().unwrap_or("off"),
        policy = cfg.policy.as_deref().unwrap_or("off"),
        milter = cfg.milter.as_deref().unwrap_or("off"),
        db = %service.engine().store().describe(),
        "hamlet serving"
    );

    // One shutdown signal, fanned out to every front end.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // One budget for the bodies in flight on every front end, and one
    // record of who waits on its client, to close first when it is spent.
    let guard = Guard::new(cfg.inflight_body_bytes);
    let g = guard.clone();
    service.metrics().listener_counts(move || g.counts());
    let console = cfg.ui.enabled.then(|| {
        let store = service.engine().store();
        crate::http::Console::new(&cfg.ui, service.learn_token().map(str::to_string), store.backend(), store.describe())
    });
    let app = crate::http::app(service.clone(), cfg.max_body_bytes, console);
    let opts = crate::http::Options {
        max_connections: cfg.http_max_connections,
        head_timeout: Duration::from_secs(cfg.head_timeout_s),
        drain: Duration::from_secs(cfg.timeout_s + 5),
    };
    let http = tokio::spawn(crate::http::serve(listener, app, opts, guard.clone(), stopped(stop_rx.clone())));
    let spamd = spamd.map(|l| {
        let opts = crate::spamd::Options::from_config(&cfg);
        tokio::spawn(crate::spamd::serve(l, service.clone(), opts, guard.clone(), stopped(stop_rx.clone())))
    });
    let policy = policy.map(|(l, checker)| {
        tokio::spawn(crate::policy::serve(l, service.clone(), checker, cfg.policy_max_connections, guard.clone(), stopped(stop_rx.clone())))
    });
    let milter = milter.map(|(l, checker)| {
        let opts = crate::milter::Options::from_config(&cfg);
        tokio::spawn(crate::milter::serve(l, service.clone(), checker, opts, guard.clone(), stopped(stop_rx.clone())))
    });
    // Stale greylisting records go hourly.
    let expiry = checker.map(|checker| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let c = checker.clone();
                match tokio::task::spawn_blocking(move || c.expire(crate::envelope::now())).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "greylist expiry"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "greylist expiry failed"),
                    _ => {}
                }
            }
        })
    });
    shutdown_signal().await;
    if let Some(e) = expiry {
        e.abort();
    }
    let _ = stop_tx.send(true);
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::Internal(format!("{what} failed: {e}"));
    http.await.map_err(|e| failed("HTTP server task", &e))?;
    if let Some(s) = spamd {
        s.await.map_err(|e| failed("SPAMD listener task", &e))?;
    }
    if let Some(p) = policy {
        p.await.map_err(|e| failed("policy service task", &e))?;
    }
    if let Some(m) = milter {
        m.await.map_err(|e| failed("milter listener task", &e))?;
    }
    tracing::info!("hamlet stopped");
    Ok(())
}

/// Every connection is a file descriptor: raises the soft limit on open
/// files to what the connection caps need (up to the hard limit), and
/// warns when even the hard limit is below it. With too few, accepts fail
/// (EMFILE) and every client waits, whatever the caps say.
fn file_limit(cfg: &Config) {
    let mut need = cfg.http_max_connections as u64 + 64;
    if cfg.spamd.is_some() {
        need += cfg.spamd_max_connections as u64;
    }
    if cfg.policy.is_some() {
        need += cfg.policy_max_connections as u64;
    }
    if cfg.milter.is_some() {
        need += cfg.milter_max_connections as u64;
    }
    if let Some(users) = cfg.users_dir.as_ref().map(|_| cfg.users_max_open as u64) {
        need += users;
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= need {
        return;
    }
    let want = libc::rlimit { rlim_cur: need.min(lim.rlim_max), rlim_max: lim.rlim_max };
    // SAFETY: as above.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0;
    let now = if raised { want.rlim_cur } else { lim.rlim_cur };
    if now < need {
        tracing::warn!(
            open_files = now,
            needed = need,
            "the open-file limit is below what the connection caps need: raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower the *_max_connections settings"
        );
    }
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
