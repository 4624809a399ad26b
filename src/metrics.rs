//! `GET /metrics`: Prometheus text exposition, hand-written (a few counters
//! and one histogram do not need a metrics crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Endpoint {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request, verdict and learn counters.
#[derive(Default)]
pub struct Metrics {
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
    verdicts: Mutex<BTreeMap<&'static str, u64>>,
    learns: Mutex<BTreeMap<&'static str, u64>>,
    /// Learns refused because a new per-user model would pass `users_max`
    /// or `users_max_bytes`.
    users_refused: std::sync::atomic::AtomicU64,
    /// Antivirus scans by result (`clean`, `virus`, `skipped`, `error`).
    antivirus: Mutex<BTreeMap<&'static str, u64>>,
    /// Milter outcomes by SMTP stage (`connect`, `helo`, `mail`, `rcpt`,
    /// `eom`) and result (`continue`, `reject`, `defer`, an action).
    milter: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The listeners' guard: connections closed to make room, bodies
    /// refused for want of budget (set by `serve`).
    listener_counts: std::sync::OnceLock<Box<dyn Fn() -> (u64, u64) + Send + Sync>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Records one request to `path` (the route pattern, never the raw URI,
    /// so label values stay bounded).
    pub fn request(&self, path: &str, status: u16, seconds: f64) {
        let mut eps = lock(&self.endpoints);
        let e = eps.entry(path.to_string()).or_default();
        *e.by_status.entry(status).or_default() += 1;
        e.count += 1;
        e.sum += seconds;
        for (b, bound) in e.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *b += 1;
            }
        }
    }

    pub fn verdict(&self, v: &'static str) {
        *lock(&self.verdicts).entry(v).or_default() += 1;
    }

    pub fn learn(&self, outcome: &'static str) {
        *lock(&self.learns).entry(outcome).or_default() += 1;
    }

    /// Counts a learn refused for a new user past the per-user caps.
    pub fn user_refused(&self) {
        self.users_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts one antivirus scan and its time (in the latency histogram as
    /// the `antivirus scan` endpoint).
    pub fn antivirus(&self, result: &'static str, seconds: f64) {
        *lock(&self.antivirus).entry(result).or_default() += 1;
        self.request("antivirus scan", 200, seconds);
    }

    /// Counts one milter outcome at its stage.
    pub fn milter(&self, stage: &'static str, result: &'static str) {
        *lock(&self.milter).entry((stage, result)).or_default() += 1;
    }

    /// Where `/metrics` reads the listeners' eviction and budget-refusal
    /// counts from (the first call wins).
    pub fn listener_counts(&self, read: impl Fn() -> (u64, u64) + Send + Sync + 'static) {
        let _ = self.listener_counts.set(Box::new(read));
    }

    /// Verdicts given so far, by name (`spam`, `ham`, `unsure`).
    pub fn verdicts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.verdicts).clone()
    }

    /// HTTP requests answered so far, every endpoint and status.
    pub fn requests_total(&self) -> u64 {
        lock(&self.endpoints).values().map(|e| e.count).sum()
    }

    /// The text exposition; `db_bytes` and `uptime` are gauges read now.
    pub fn render(&self, db_bytes: u64, uptime_s: u64) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# HELP hamlet_requests_total HTTP requests by endpoint and status.");
        let _ = writeln!(o, "# TYPE hamlet_requests_total counter");
        let eps = lock(&self.endpoints);
        for (path, e) in eps.iter() {
            for (status, n) in &e.by_status {
                let _ = writeln!(o, "hamlet_requests_total{{endpoint=\"{path}\",status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(o, "# HELP hamlet_request_duration_seconds Request latency by endpoint.");
        let _ = writeln!(o, "# TYPE hamlet_request_duration_seconds histogram");
        for (path, e) in eps.iter() {
            for (b, bound) in e.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(o, "hamlet_request_duration_seconds_bucket{{endpoint=\"{path}\",le=\"{bound}\"}} {b}");
            }
            let _ = writeln!(o, "hamlet_request_duration_seconds_bucket{{endpoint=\"{path}\",le=\"+Inf\"}} {}", e.count);
            let _ = writeln!(o, "hamlet_request_duration_seconds_sum{{endpoint=\"{path}\"}} {}", e.sum);
            let _ = writeln!(o, "hamlet_request_duration_seconds_count{{endpoint=\"{path}\"}} {}", e.count);
        }
        drop(eps);
        let _ = writeln!(o, "# HELP hamlet_verdicts_total Verdicts given by /v1/check.");
        let _ = writeln!(o, "# TYPE hamlet_verdicts_total counter");
        for (v, n) in lock(&self.verdicts).iter() {
            let _ = writeln!(o, "hamlet_verdicts_total{{verdict=\"{v}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP hamlet_learns_total Learn and unlearn requests by outcome.");
        let _ = writeln!(o, "# TYPE hamlet_learns_total counter");
        for (v, n) in lock(&self.learns).iter() {
            let _ = writeln!(o, "hamlet_learns_total{{outcome=\"{}\"}} {n}", v.replace(' ', "_"));
        }
        let _ = writeln!(o, "# HELP hamlet_users_refused_total Learns refused because a new per-user model would pass users_max or users_max_bytes.");
        let _ = writeln!(o, "# TYPE hamlet_users_refused_total counter");
        let _ = writeln!(o, "hamlet_users_refused_total {}", self.users_refused.load(std::sync::atomic::Ordering::Relaxed));
        let _ = writeln!(o, "# HELP hamlet_milter_total Milter outcomes by SMTP stage and result.");
        let _ = writeln!(o, "# TYPE hamlet_milter_total counter");
        for ((stage, result), n) in lock(&self.milter).iter() {
            let _ = writeln!(o, "hamlet_milter_total{{stage=\"{stage}\",result=\"{}\"}} {n}", result.replace(' ', "_"));
        }
        let _ = writeln!(o, "# HELP hamlet_antivirus_scans_total Antivirus scans by result.");
        let _ = writeln!(o, "# TYPE hamlet_antivirus_scans_total counter");
        for (result, n) in lock(&self.antivirus).iter() {
            let _ = writeln!(o, "hamlet_antivirus_scans_total{{result=\"{result}\"}} {n}");
        }
        if let Some(read) = self.listener_counts.get() {
            let (evicted, refused) = read();
            let _ = writeln!(o, "# HELP hamlet_connections_evicted_total Connections closed to make room at a cap or when file descriptors ran out.");
            let _ = writeln!(o, "# TYPE hamlet_connections_evicted_total counter");
            let _ = writeln!(o, "hamlet_connections_evicted_total {evicted}");
            let _ = writeln!(o, "# HELP hamlet_bodies_refused_total Request bodies refused for want of room in the in-flight budget.");
            let _ = writeln!(o, "# TYPE hamlet_bodies_refused_total counter");
            let _ = writeln!(o, "hamlet_bodies_refused_total {refused}");
        }
        let _ = writeln!(o, "# HELP hamlet_db_bytes Size of the token database file.");
        let _ = writeln!(o, "# TYPE hamlet_db_bytes gauge");
        let _ = writeln!(o, "hamlet_db_bytes {db_bytes}");
        let _ = writeln!(o, "# HELP hamlet_uptime_seconds Seconds since the service started.");
        let _ = writeln!(o, "# TYPE hamlet_uptime_seconds gauge");
        let _ = writeln!(o, "hamlet_uptime_seconds {uptime_s}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.request("/v1/check", 200, 0.003);
        m.request("/v1/check", 200, 0.2);
        m.request("/v1/check", 413, 0.0001);
        let t = m.render(10, 1);
        assert!(t.contains("hamlet_requests_total{endpoint=\"/v1/check\",status=\"200\"} 2"), "{t}");
        assert!(t.contains("le=\"0.0005\"} 1"));
        assert!(t.contains("le=\"0.005\"} 2"));
        assert!(t.contains("le=\"+Inf\"} 3"));
        assert!(t.contains("hamlet_db_bytes 10"));
        assert!(t.contains("hamlet_users_refused_total 0"));
        m.user_refused();
        assert!(m.render(10, 1).contains("hamlet_users_refused_total 1"));
        m.milter("rcpt", "defer");
        m.milter("eom", "soft reject");
        m.listener_counts(|| (3, 4));
        let t = m.render(10, 1);
        assert!(t.contains("hamlet_milter_total{stage=\"rcpt\",result=\"defer\"} 1"), "{t}");
        assert!(t.contains("hamlet_milter_total{stage=\"eom\",result=\"soft_reject\"} 1"), "{t}");
        assert!(t.contains("hamlet_connections_evicted_total 3") && t.contains("hamlet_bodies_refused_total 4"), "{t}");
        assert_eq!(m.requests_total(), 3);
    }
}
