//! Greylisting (Harris 2003; postgrey's defaults): the first delivery
//! attempt for an unknown (client network, sender, recipient) triplet gets a
//! temporary failure; a retry after `delay` and within `retry_window` passes
//! and creates a pass record that lets the triplet through for `max_age`
//! (refreshed on every pass). A client network that passed
//! `auto_whitelist` times is not greylisted any more.
//!
//! The state sits behind [`GreyStore`] (a redb file for one node; Redis,
//! [`RedisGreyStore`], shares it between MX hosts, so a sender's retry may
//! land on any of them) and time is a parameter of every call, so the state
//! machine is tested with an injected clock.

use crate::net::Cidr;
use crate::store::safe;
use crate::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A triplet's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// First attempt (seconds since the epoch).
    pub first: u64,
    /// Last pass (or first attempt while not yet passed).
    pub last: u64,
    /// Passes so far (0: still greylisted).
    pub passes: u32,
}

/// Where greylisting state lives.
pub trait GreyStore: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Record>>;
    fn put(&self, key: &str, r: Record) -> Result<()>;
    /// Removes every record `keep` says no to; returns how many.
    fn retain(&self, keep: &dyn Fn(&str, &Record) -> bool) -> Result<u64>;
}

/// In memory (tests).
#[derive(Default)]
pub struct MemoryGreyStore(std::sync::Mutex<std::collections::HashMap<String, Record>>);

impl GreyStore for MemoryGreyStore {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        Ok(self.0.lock().map_err(|_| Error::Poisoned("greylist"))?.get(key).copied())
    }
    fn put(&self, key: &str, r: Record) -> Result<()> {
        self.0.lock().map_err(|_| Error::Poisoned("greylist"))?.insert(key.to_string(), r);
        Ok(())
    }
    fn retain(&self, keep: &dyn Fn(&str, &Record) -> bool) -> Result<u64> {
        let mut m = self.0.lock().map_err(|_| Error::Poisoned("greylist"))?;
        let before = m.len();
        m.retain(|k, r| keep(k, r));
        Ok((before - m.len()) as u64)
    }
}

const GREY: TableDefinition<&str, (u64, u64, u32)> = TableDefinition::new("greylist");

/// A redb file: survives restarts.
///
/// After an I/O error (a full disk) redb refuses every later operation on
/// the handle, so the store closes it and opens the file again before the
/// next operation; a panic inside redb (a damaged file) is an error, not
/// the end of the policy connection.
pub struct RedbGreyStore {
    path: PathBuf,
    /// `None` between dropping a failed handle and a successful reopen.
    db: RwLock<Option<redb::Database>>,
    /// An I/O error broke the handle: reopen before the next operation.
    broken: AtomicBool,
}

/// How long a reopen waits for operations on the old handle to end.
const REOPEN_WAIT: Duration = Duration::from_millis(500);

impl RedbGreyStore {
    pub fn open(path: &Path) -> Result<RedbGreyStore> {
        safe::validate_file(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = open_file(path, Duration::ZERO)?;
        Ok(RedbGreyStore { path: path.to_path_buf(), db: RwLock::new(Some(db)), broken: AtomicBool::new(false) })
    }

    /// Runs `f` on the handle (reopened first if an I/O error broke it);
    /// an I/O error marks it broken.
    fn with<T>(&self, f: impl FnOnce(&redb::Database) -> Result<T>) -> Result<T> {
        if self.broken.load(Ordering::Acquire) {
            let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
            if self.broken.load(Ordering::Acquire) {
                if let Some(old) = slot.take() {
                    let _ = safe::guard(&self.path, || {
                        drop(old);
                        Ok(())
                    });
                }
                *slot = Some(open_file(&self.path, REOPEN_WAIT)?);
                self.broken.store(false, Ordering::Release);
            }
        }
        let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = slot.as_ref() else { return Err(Error::Internal("greylist database handle missing after a reopen".into())) };
        let r = safe::guard(&self.path, || f(db));
        if let Err(e) = &r
            && safe::is_io_fault(e)
        {
            self.broken.store(true, Ordering::Release);
        }
        r
    }
}

/// Opens (or creates) the greylist file and its table.
fn open_file(path: &Path, wait: Duration) -> Result<redb::Database> {
    let start = std::time::Instant::now();
    let db = loop {
        match safe::guard(path, || Ok(redb::Database::builder().set_cache_size(16 << 20).create(path))) {
            Ok(Ok(db)) => break db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(20)),
            Ok(Err(e)) => return Err(Error::storage(path, e)),
            Err(e) => return Err(e),
        }
    };
    safe::guard(path, || {
        let tx = db.begin_write()?;
        tx.open_table(GREY)?;
        tx.commit()?;
        Ok(())
    })?;
    Ok(db)
}

impl GreyStore for RedbGreyStore {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(GREY)?;
            Ok(t.get(key)?.map(|v| {
                let (first, last, passes) = v.value();
                Record { first, last, passes }
            }))
        })
    }
    fn put(&self, key: &str, r: Record) -> Result<()> {
        self.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(GREY)?.insert(key, (r.first, r.last, r.passes))?;
            tx.commit()?;
            Ok(())
        })
    }
    fn retain(&self, keep: &dyn Fn(&str, &Record) -> bool) -> Result<u64> {
        self.with(|db| {
            let tx = db.begin_write()?;
            let mut removed = 0;
            {
                let mut t = tx.open_table(GREY)?;
                let mut drop_keys = Vec::new();
                for entry in t.iter()? {
                    let (k, v) = entry?;
                    let (first, last, passes) = v.value();
                    if !keep(k.value(), &Record { first, last, passes }) {
                        drop_keys.push(k.value().to_string());
                    }
                }
                for k in drop_keys {
                    t.remove(k.as_str())?;
                    removed += 1;
                }
            }
            tx.commit()?;
            Ok(removed)
        })
    }
}

/// On Redis: one string per record, `<prefix>:grey:<key>` (no hash tag, so
/// records spread over a cluster's nodes), value `first last passes`, with
/// a TTL from the rules of [`Greylist::expire`] (an unconfirmed triplet
/// lives `delay + retry_window`, a passed one `max_age` since its last
/// pass), so Redis drops stale records itself and `retain` has nothing to
/// scan. Two hosts seeing the same triplet at once both write a first
/// attempt: the later one wins, a delay a few seconds off at worst.
pub struct RedisGreyStore {
    target: std::sync::Arc<crate::store::redis::Target>,
    prefix: String,
    unconfirmed_ttl: u64,
    passed_ttl: u64,
}

impl RedisGreyStore {
    pub fn new(target: std::sync::Arc<crate::store::redis::Target>, prefix: &str, config: &GreylistConfig) -> RedisGreyStore {
        // A minute beyond the rule, so a record is never gone a moment
        // before `expire` would have dropped it.
        RedisGreyStore {
            target,
            prefix: format!("{prefix}:grey:"),
            unconfirmed_ttl: config.delay_s + config.retry_window_s + 60,
            passed_ttl: config.max_age_s + 60,
        }
    }
}

impl GreyStore for RedisGreyStore {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        let v: Option<String> = self.target.with(true, |c| redis::cmd("GET").arg(format!("{}{key}", self.prefix)).query(c))?;
        Ok(v.and_then(|v| {
            let mut f = v.split(' ');
            Some(Record { first: f.next()?.parse().ok()?, last: f.next()?.parse().ok()?, passes: f.next()?.parse().ok()? })
        }))
    }
    fn put(&self, key: &str, r: Record) -> Result<()> {
        let ttl = if r.passes == 0 { self.unconfirmed_ttl } else { self.passed_ttl };
        let value = format!("{} {} {}", r.first, r.last, r.passes);
        self.target.with(false, |c| redis::cmd("SET").arg(format!("{}{key}", self.prefix)).arg(&value).arg("EX").arg(ttl.max(1)).query::<()>(c))
    }
    fn retain(&self, _keep: &dyn Fn(&str, &Record) -> bool) -> Result<u64> {
        Ok(0)
    }
}

/// The greylist store a configuration names: a redb file, or Redis beside
/// a model on Redis.
pub enum GreyDb {
    Redb(RedbGreyStore),
    Redis(RedisGreyStore),
}

impl GreyStore for GreyDb {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        match self {
            GreyDb::Redb(s) => s.get(key),
            GreyDb::Redis(s) => s.get(key),
        }
    }
    fn put(&self, key: &str, r: Record) -> Result<()> {
        match self {
            GreyDb::Redb(s) => s.put(key, r),
            GreyDb::Redis(s) => s.put(key, r),
        }
    }
    fn retain(&self, keep: &dyn Fn(&str, &Record) -> bool) -> Result<u64> {
        match self {
            GreyDb::Redb(s) => s.retain(keep),
            GreyDb::Redis(s) => s.retain(keep),
        }
    }
}

/// `[greylist]` settings (postgrey's defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GreylistConfig {
    pub enabled: bool,
    /// Seconds a new triplet must wait.
    pub delay_s: u64,
    /// After the delay, how long a retry is still accepted (else it starts over).
    pub retry_window_s: u64,
    /// How long a pass record lives since its last pass.
    pub max_age_s: u64,
    /// Passes after which a client network is whitelisted (0: never).
    pub auto_whitelist: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Client networks never greylisted.
    pub whitelist_clients: Vec<String>,
    /// Client host names (verified rDNS) never greylisted: exact, or a
    /// suffix when it starts with `.` (`.google.com`).
    pub whitelist_rdns: Vec<String>,
    /// Recipients never greylisted: an address, or `@domain`.
    pub whitelist_recipients: Vec<String>,
    /// Sender domains not greylisted when SPF passes for them.
    pub whitelist_spf_domains: Vec<String>,
    /// Greylist only suspicious clients: no rDNS, DNSBL-listed, or SPF not pass.
    pub only_suspicious: bool,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            delay_s: 300,
            retry_window_s: 2 * 86_400,
            max_age_s: 35 * 86_400,
            auto_whitelist: 5,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            whitelist_clients: Vec::new(),
            whitelist_rdns: Vec::new(),
            whitelist_recipients: Vec::new(),
            whitelist_spf_domains: Vec::new(),
            only_suspicious: false,
        }
    }
}

/// What greylisting says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; `delayed` is set on the first pass after a defer.
    Pass { delayed: Option<u64> },
    /// Temporarily refused; retry in this many seconds.
    Defer { retry_in: u64 },
    /// Not greylisted, and why.
    Exempt(&'static str),
}

/// Signals from other checks that greylisting may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    pub spf_pass: bool,
    pub dnsbl_listed: bool,
}

/// The greylisting state machine over a store.
pub struct Greylist<S: GreyStore> {
    pub config: GreylistConfig,
    whitelist_nets: Vec<Cidr>,
    store: S,
}

/// The client's network: IPv4 /24, IPv6 /64 by default.
pub fn network(ip: IpAddr, v4: u8, v6: u8) -> String {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(v4.min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            format!("{}/{bits}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4a) => network(IpAddr::V4(v4a), v4, v6),
            None => {
                let bits = u32::from(v6.min(128));
                let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                format!("{}/{bits}", std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        },
    }
}

/// postgrey's sender normalisation, so list mail is not greylisted on
/// every message: lower-case; BATV `prvs=tag=local` → `local`; `+ext`
/// dropped; standalone numbers in the local part (VERP: `bounce-123-4567`)
/// → `#`, while digits inside a word (`user1`) stay.
pub fn normalize_sender(sender: &str) -> String {
    let s = sender.trim().to_ascii_lowercase();
    let Some((local, domain)) = s.rsplit_once('@') else { return s };
    let mut local = local.to_string();
    if let Some(rest) = local.strip_prefix("prvs=")
        && let Some((_, orig)) = rest.split_once('=')
    {
        local = orig.to_string();
    }
    if let Some((base, _)) = local.split_once('+') {
        local = base.to_string();
    }
    // Split into runs of word characters and the rest; a run of digits
    // only (a standalone number, postgrey's \b\d+\b) becomes '#'.
    let mut out = String::with_capacity(local.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for ch in local.chars() {
        if ch.is_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    format!("{out}@{domain}")
}

impl<S: GreyStore> Greylist<S> {
    pub fn new(config: GreylistConfig, store: S) -> Result<Greylist<S>> {
        let whitelist_nets = config.whitelist_clients.iter().map(|c| Cidr::parse(c)).collect::<Result<_>>()?;
        Ok(Greylist { config, whitelist_nets, store })
    }

    /// Judges one recipient of a delivery attempt at time `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        client: IpAddr,
        client_name: Option<&str>,
        sender: &str,
        recipient: &str,
        sasl_user: Option<&str>,
        signals: Signals,
        now: u64,
    ) -> Result<Verdict> {
        let c = &self.config;
        if sasl_user.is_some_and(|u| !u.is_empty()) {
            return Ok(Verdict::Exempt("authenticated"));
        }
        if self.whitelist_nets.iter().any(|n| n.contains(client)) {
            return Ok(Verdict::Exempt("client whitelisted"));
        }
        if let Some(name) = client_name {
            let name = name.to_ascii_lowercase();
            if c.whitelist_rdns.iter().any(|p| {
                let p = p.to_ascii_lowercase();
                if p.starts_with('.') { name.ends_with(&p) } else { name == p }
            }) {
                return Ok(Verdict::Exempt("client name whitelisted"));
            }
        }
        let rcpt = recipient.trim().to_ascii_lowercase();
        let rcpt_domain = rcpt.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        if c.whitelist_recipients.iter().any(|w| {
            let w = w.to_ascii_lowercase();
            w == rcpt || Some(&w) == rcpt_domain.as_ref()
        }) {
            return Ok(Verdict::Exempt("recipient whitelisted"));
        }
        let sender_domain = sender.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        if signals.spf_pass && sender_domain.is_some_and(|d| c.whitelist_spf_domains.iter().any(|w| w.eq_ignore_ascii_case(&d))) {
            return Ok(Verdict::Exempt("sender domain with SPF pass"));
        }
        if c.only_suspicious && client_name.is_some() && !signals.dnsbl_listed && signals.spf_pass {
            return Ok(Verdict::Exempt("not suspicious"));
        }
        let net = network(client, c.ipv4_prefix, c.ipv6_prefix);
        // Auto-whitelisting is per client address, as postgrey's: a /24
        // holds neighbours on shared hosting and clouds.
        let client_key = format!("client\0{client}");
        if c.auto_whitelist > 0
            && let Some(r) = self.store.get(&client_key)?
            && r.passes >= c.auto_whitelist
            && now.saturating_sub(r.last) <= c.max_age_s
        {
            self.store.put(&client_key, Record { last: now, passes: r.passes.saturating_add(1), ..r })?;
            return Ok(Verdict::Exempt("client auto-whitelisted"));
        }
        let key = format!("{net}\0{}\0{rcpt}", normalize_sender(sender));
        let verdict = match self.store.get(&key)? {
            Some(r) if r.passes == 0 && now.saturating_sub(r.first) < c.delay_s => {
                Verdict::Defer { retry_in: c.delay_s - now.saturating_sub(r.first) }
            }
            Some(r) if r.passes == 0 && now.saturating_sub(r.first) <= c.delay_s + c.retry_window_s => {
                self.store.put(&key, Record { first: r.first, last: now, passes: 1 })?;
                Verdict::Pass { delayed: Some(now.saturating_sub(r.first)) }
            }
            Some(r) if r.passes > 0 && now.saturating_sub(r.last) <= c.max_age_s => {
                self.store.put(&key, Record { first: r.first, last: now, passes: r.passes.saturating_add(1) })?;
                Verdict::Pass { delayed: None }
            }
            // New, or a retry that came too late, or a pass record gone stale.
            _ => {
                self.store.put(&key, Record { first: now, last: now, passes: 0 })?;
                Verdict::Defer { retry_in: c.delay_s }
            }
        };
        // Only a triplet's first successful retry counts (postgrey's rule):
        // later deliveries and other recipients of the same mail do not.
        if matches!(verdict, Verdict::Pass { delayed: Some(_) }) && c.auto_whitelist > 0 {
            let r = self.store.get(&client_key)?.unwrap_or(Record { first: now, last: now, passes: 0 });
            self.store.put(&client_key, Record { last: now, passes: r.passes.saturating_add(1), ..r })?;
        }
        Ok(verdict)
    }

    /// Removes stale records: unconfirmed past their retry window, passed
    /// ones (and client counts) past `max_age`. Returns how many.
    pub fn expire(&self, now: u64) -> Result<u64> {
        let c = self.config.clone();
        self.store.retain(&move |_, r| {
            if r.passes == 0 { now.saturating_sub(r.first) <= c.delay_s + c.retry_window_s } else { now.saturating_sub(r.last) <= c.max_age_s }
        })
    }
}

/// The `X-Greylist` field value for a delivery let through after `secs`
/// of greylisting, at `now` (what milter-greylist and postgrey write).
pub fn x_greylist(secs: u64, now: u64) -> String {
    format!("delayed {secs} seconds by hamlet-{}; {}", env!("CARGO_PKG_VERSION"), rfc2822_date(now))
}

/// `Thu, 26 Nov 2026 16:30:27 +0000` (UTC).
pub fn rfc2822_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!("{}, {d} {} {y} {:02}:{:02}:{:02} +0000", DAYS[(days % 7) as usize], MONTHS[(m - 1) as usize], rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::rfc2822_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(super::rfc2822_date(1_795_710_627), "Thu, 26 Nov 2026 16:30:27 +0000");
        assert!(super::x_greylist(300, 0).starts_with("delayed 300 seconds by hamlet-"));
    }

    #[test]
    fn redb_store_refuses_a_foreign_file_and_reopens_after_a_fault() {
        let dir = std::env::temp_dir().join(format!("hamlet-grey-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let foreign = dir.join("f.redb");
        std::fs::write(&foreign, b"").unwrap();
        assert!(matches!(RedbGreyStore::open(&foreign), Err(Error::NotADatabase { .. })));
        let store = RedbGreyStore::open(&dir.join("g.redb")).unwrap();
        let r = Record { first: 1, last: 2, passes: 0 };
        store.put("k", r).unwrap();
        store.broken.store(true, Ordering::Release);
        assert_eq!(store.get("k").unwrap(), Some(r), "reopened");
        assert!(!store.broken.load(Ordering::Acquire));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn grey(config: GreylistConfig) -> Greylist<MemoryGreyStore> {
        Greylist::new(config, MemoryGreyStore::default()).unwrap()
    }

    const T0: u64 = 1_800_000_000;

    fn attempt<S: GreyStore>(g: &Greylist<S>, client: &str, sender: &str, now: u64) -> Verdict {
        g.check(ip(client), Some("mail.sender.example"), sender, "erin@corp.example", None, Signals::default(), now).unwrap()
    }

    /// The whole state machine on one store.
    fn state_machine<S: GreyStore>(g: &Greylist<S>) {
        let s = "frank@sender.example";
        assert_eq!(attempt(g, "198.51.100.23", s, T0), Verdict::Defer { retry_in: 300 });
        assert_eq!(attempt(g, "198.51.100.23", s, T0 + 60), Verdict::Defer { retry_in: 240 }, "too early: the clock is not restarted");
        assert_eq!(attempt(g, "198.51.100.99", s, T0 + 301), Verdict::Pass { delayed: Some(301) }, "same /24 retries from another host");
        assert_eq!(attempt(g, "198.51.100.23", s, T0 + 400), Verdict::Pass { delayed: None });
        // Another triplet that retries too late starts over.
        assert_eq!(attempt(g, "192.0.2.1", s, T0), Verdict::Defer { retry_in: 300 });
        assert_eq!(attempt(g, "192.0.2.1", s, T0 + 300 + 2 * 86_400 + 1), Verdict::Defer { retry_in: 300 });
        // A pass record lives 35 days since its last pass.
        let later = T0 + 400 + 35 * 86_400;
        assert_eq!(attempt(g, "198.51.100.23", s, later), Verdict::Pass { delayed: None });
        assert_eq!(attempt(g, "198.51.100.23", s, later + 35 * 86_400 + 1), Verdict::Defer { retry_in: 300 }, "stale");
        // Expiry removes the stale unconfirmed record.
        assert!(g.expire(later + 40 * 86_400).unwrap() >= 1);
    }

    #[test]
    fn state_machine_in_memory() {
        state_machine(&grey(GreylistConfig { auto_whitelist: 0, ..Default::default() }));
    }

    #[test]
    fn state_machine_in_redb_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("hamlet-grey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("g.redb");
        let config = GreylistConfig { auto_whitelist: 0, ..Default::default() };
        state_machine(&Greylist::new(config.clone(), RedbGreyStore::open(&path).unwrap()).unwrap());
        let g = Greylist::new(config.clone(), RedbGreyStore::open(&path).unwrap()).unwrap();
        assert_eq!(attempt(&g, "203.0.113.1", "x@y.example", T0), Verdict::Defer { retry_in: 300 });
        drop(g);
        let g = Greylist::new(config, RedbGreyStore::open(&path).unwrap()).unwrap();
        assert_eq!(attempt(&g, "203.0.113.1", "x@y.example", T0 + 300), Verdict::Pass { delayed: Some(300) }, "state survived a restart");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exemptions_and_auto_whitelist() {
        let g = grey(GreylistConfig {
            auto_whitelist: 2,
            whitelist_clients: vec!["10.0.0.0/8".into()],
            whitelist_rdns: vec![".bigmail.example".into()],
            whitelist_recipients: vec!["@abuse.example".into(), "postmaster@corp.example".into()],
            whitelist_spf_domains: vec!["bank.example".into()],
            ..Default::default()
        });
        let check = |client: &str, name: Option<&str>, sender: &str, rcpt: &str, sasl: Option<&str>, spf: bool| {
            g.check(ip(client), name, sender, rcpt, sasl, Signals { spf_pass: spf, dnsbl_listed: false }, T0).unwrap()
        };
        assert_eq!(check("10.1.2.3", None, "a@b.example", "x@corp.example", None, false), Verdict::Exempt("client whitelisted"));
        assert_eq!(
            check("192.0.2.1", Some("out3.BigMail.example"), "a@b.example", "x@corp.example", None, false),
            Verdict::Exempt("client name whitelisted")
        );
        assert_eq!(check("192.0.2.1", None, "a@b.example", "Postmaster@corp.example", None, false), Verdict::Exempt("recipient whitelisted"));
        assert_eq!(check("192.0.2.1", None, "a@b.example", "r@abuse.example", None, false), Verdict::Exempt("recipient whitelisted"));
        assert_eq!(check("192.0.2.1", None, "a@bank.example", "x@corp.example", None, true), Verdict::Exempt("sender domain with SPF pass"));
        assert!(
            matches!(check("192.0.2.1", None, "a@bank.example", "x@corp.example", None, false), Verdict::Defer { .. }),
            "no SPF pass, no exemption"
        );
        assert_eq!(check("192.0.2.1", None, "a@b.example", "x@corp.example", Some("alice"), false), Verdict::Exempt("authenticated"));
        // Two first passes whitelist the client address (not its network).
        for (i, s) in ["p@one.example", "q@two.example"].iter().enumerate() {
            let t = T0 + 1000 * i as u64;
            assert!(matches!(g.check(ip("198.51.100.7"), None, s, "x@corp.example", None, Signals::default(), t).unwrap(), Verdict::Defer { .. }));
            assert!(matches!(
                g.check(ip("198.51.100.7"), None, s, "x@corp.example", None, Signals::default(), t + 300).unwrap(),
                Verdict::Pass { .. }
            ));
        }
        assert_eq!(
            g.check(ip("198.51.100.7"), None, "new@three.example", "x@corp.example", None, Signals::default(), T0 + 5000).unwrap(),
            Verdict::Exempt("client auto-whitelisted")
        );
        assert!(
            matches!(
                g.check(ip("198.51.100.8"), None, "new@three.example", "x@corp.example", None, Signals::default(), T0 + 5000).unwrap(),
                Verdict::Defer { .. }
            ),
            "a neighbour is not whitelisted"
        );
    }

    #[test]
    fn only_suspicious() {
        let g = grey(GreylistConfig { only_suspicious: true, ..Default::default() });
        let check = |name: Option<&str>, spf: bool, listed: bool| {
            g.check(ip("192.0.2.1"), name, "a@b.example", "x@corp.example", None, Signals { spf_pass: spf, dnsbl_listed: listed }, T0).unwrap()
        };
        assert_eq!(check(Some("mx.b.example"), true, false), Verdict::Exempt("not suspicious"));
        assert!(matches!(check(None, true, false), Verdict::Defer { .. }), "no rDNS");
        assert!(matches!(check(Some("mx.b.example"), false, false), Verdict::Defer { .. }), "SPF not pass");
        assert!(matches!(check(Some("mx.b.example"), true, true), Verdict::Defer { .. }), "listed");
    }

    #[test]
    fn keys() {
        assert_eq!(network(ip("198.51.100.23"), 24, 64), "198.51.100.0/24");
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6"), 24, 64), "2001:db8:1:2::/64");
        assert_eq!(network(ip("::ffff:198.51.100.23"), 24, 64), "198.51.100.0/24");
        assert_eq!(network(ip("198.51.100.23"), 32, 64), "198.51.100.23/32");
        assert_eq!(normalize_sender("Frank+Lists@Sender.example"), "frank@sender.example");
        assert_eq!(normalize_sender("prvs=1234abcd=frank@sender.example"), "frank@sender.example");
        assert_eq!(normalize_sender("bounce-123-4567@lists.example"), "bounce-#-#@lists.example");
        assert_eq!(normalize_sender("user1@x.example"), "user1@x.example", "digits inside a word stay");
        assert_eq!(normalize_sender(""), "");
    }
}
