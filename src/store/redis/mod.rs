//! The Redis store: one model shared by every hamlet host that points at
//! the same Redis (or Redis Cluster), so a correction learned on one host
//! is in every host's next check.
//!
//! # Layout (one model: the shared one, or one user's)
//! Every key of a model starts with `<prefix>:{<model>}`, so the hash tag
//! puts a whole model on one cluster slot (its scripts run there) and
//! spreads different users' models over the cluster's nodes.
//! - `…:meta`: the layout version.
//! - `…:state`: totals (`ts` `th`), messages (`ms` `mh`) and of those the
//!   starter model's (`ss` `sh`), the regression
//!   bias and combiner (`bias` `m0`-`m3`), the combiner's pairwise memory
//!   (`p0`-`p3`, the last writer's), token and journal counts (`nt`
//!   `nj`), the 4-gram weights' version (`gv`), the bucket levels.
//! - `…:t:<level>:<n>`: tokens, in buckets (hashes); field: the token
//!   text; value: the record (weight f32, day u16, spam and ham as
//!   varints: 8 bytes for most tokens). A token over 60 bytes (past Redis's
//!   64-byte listpack limit) is filed under NUL and its 8-byte hash, its
//!   text in `…:x`. Small hashes are Redis listpacks: two or three bytes of
//!   overhead per entry instead of a key, a `dictEntry`, an object and a
//!   hash per token (rspamd's layout).
//! - `…:j:<level>:<n>`: the learn journal, by digest, bucketed the same way.
//!
//! Buckets grow by linear hashing (`buckets.lua`, [`bucket_hash`]): when a
//! kind holds more than 64 entries per bucket on average, the commit splits
//! the next bucket in two, so buckets stay around 32-128 entries (a hash
//! stays a listpack up to `hash-max-listpack-entries`, 128 by default) at
//! any model size, with no rehash of the whole model.
//! - `…:g`: the byte 4-gram weights, 2^18 f32 as big-endian u32 (BITFIELD).
//!
//! # Round trips
//! A check is one pipeline (the state, an `HMGET` per bucket the message's
//! tokens fall in, and the journal entry of its digest); a learn is that
//! read plus one atomic commit (`commit.lua`). The
//! 4-gram weights (1 MiB) are cached per host and fetched again when their
//! version moved and the copy is older than [`GRAM_REFRESH`]: another host's
//! learn reaches this host's 4-gram weights within that time; counts and
//! token weights are read fresh by every check.
//!
//! # Concurrency
//! The commit sends what it read beside what it wrote: a value nobody
//! changed meanwhile is set as written (so one host gets exactly redb's
//! results), else the change is added to the current value (counts,
//! weights, totals: no update is lost). Journal entries are compared and
//! set: if one changed since it was read (the same message learned on two
//! hosts at once), nothing is applied and the transaction runs again on
//! fresh reads, so learn/relearn/unlearn stay idempotent across hosts.
//!
//! Reads are not snapshots: a view sees writes committed after it began.

mod conn;
mod resp;

pub use conn::{Target, Timeouts, is_redis_url};

use super::{GRAM_DIM, Grams, JournalEntry, ModelState, ReadView, TokenRecord, TokenStore, Totals, WriteLimits, WriteView};
use crate::digest::Digest;
use crate::hash::token_hash;
use crate::{Class, Error, Result};
use redis::{ConnectionLike, Script, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How stale one host's copy of the 4-gram weights may get while others learn.
pub const GRAM_REFRESH: Duration = Duration::from_secs(1);

/// The layout version in `…:meta`.
const LAYOUT: i64 = 1;

/// Bucket levels a new shared model starts at (tokens, journal): 1,024
/// token buckets (the starter model's 27,674 tokens fill them to ~27).
pub const SHARED_LEVELS: (u32, u32) = (10, 6);
/// A user's model: corrections only, a few thousand tokens.
pub const USER_LEVELS: (u32, u32) = (4, 4);

/// How long a big commit (bulk training, `db load`) may take.
const BIG_COMMIT: Duration = Duration::from_secs(60);

/// Tokens per read call, so one huge read does not hold Redis for long.
const READ_CHUNK: usize = 20_000;

/// Tokens longer than this are filed by hash (see the module documentation).
const LONG: usize = 60;

/// The bucket hash of a field (`buckets.lua`'s `bh_of`): in `[0, P)`; a
/// long token's field (NUL, hash, perhaps text) by its first 9 bytes, so a
/// crafted collision's field stays in its bucket when buckets split.
pub fn bucket_hash(field: &[u8]) -> u64 {
    let field = if field.first() == Some(&0) { &field[..field.len().min(9)] } else { field };
    field.iter().fold(0, |h, &b| (h * 257 + u64::from(b) + 1) % P)
}

/// Whether a token is filed by its hash (see the module documentation).
fn is_long(text: &str) -> bool {
    text.len() > LONG || text.starts_with('\0')
}

/// What the scripts get for a token: its bucket hash and, for a long one,
/// its 8-byte hash.
fn token_args(hash: u64, text: &str) -> (u64, Vec<u8>) {
    if is_long(text) {
        let mut f = vec![0u8];
        f.extend_from_slice(&hash.to_be_bytes());
        (bucket_hash(&f), f[1..].to_vec())
    } else {
        (bucket_hash(text.as_bytes()), Vec::new())
    }
}

/// The prime the bucket hash is taken modulo (`buckets.lua`'s `P`).
const P: u64 = 2_097_143;

/// Fields one `HMGET` of a read asks for at most.
const GROUP: usize = 1_000;

/// The bucket levels (level, split pointer) of tokens and of the journal,
/// as this host last saw them: clients name the buckets, the scripts check
/// the levels and answer the new ones if a split moved them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Levels {
    t: (u32, u64),
    j: (u32, u64),
}

impl Levels {
    /// From the `{tL, tS, jL, jS}` a script answers (missing: a new model's).
    fn from_value(v: &Value) -> Levels {
        let a = match v {
            Value::Array(a) => a.as_slice(),
            _ => &[],
        };
        Levels::from_fields(|i| a.get(i).filter(|v| !matches!(v, Value::Nil)).map(int))
    }

    /// From the fields `tL, tS, jL, jS` by their place (`None`: missing).
    fn from_fields(field: impl Fn(usize) -> Option<i64>) -> Levels {
        let n = |i: usize, default: i64| field(i).unwrap_or(default).max(0) as u64;
        Levels { t: (n(0, 4).min(24) as u32, n(1, 0)), j: (n(2, 4).min(24) as u32, n(3, 0)) }
    }

    fn args(&self) -> [u64; 4] {
        [u64::from(self.t.0), self.t.1, u64::from(self.j.0), self.j.1]
    }

    /// The bucket of `kind` (`'t'`, `'j'`) holding bucket hash `bh`.
    fn bucket(&self, base: &str, kind: char, bh: u64) -> String {
        bucket_key(base, self.bucket_id(kind, bh))
    }

    /// [`Levels::bucket`] as a number that sorts buckets together: the
    /// kind (journal first), the level, the bucket.
    fn bucket_id(&self, kind: char, bh: u64) -> u64 {
        let (l, s) = if kind == 't' { self.t } else { self.j };
        let b = (bh << l) / P;
        let (l, b) = if b < s { (l + 1, (bh << (l + 1)) / P) } else { (l, b) };
        (u64::from(kind == 't') << 63) | (u64::from(l) << 40) | b
    }
}

/// The key of an `HMGET`: a named one, or a bucket by its id.
enum HKey<'a> {
    Named(&'a str),
    Bucket(u64),
}

/// The key of a [`Levels::bucket_id`].
fn bucket_key(base: &str, id: u64) -> String {
    let mut k = Vec::with_capacity(base.len() + 16);
    push_bucket_key(&mut k, base, id);
    String::from_utf8(k).unwrap_or_default()
}

/// Appends [`bucket_key`]`(base, id)`.
fn push_bucket_key(k: &mut Vec<u8>, base: &str, id: u64) {
    k.extend_from_slice(base.as_bytes());
    k.extend_from_slice(if id >> 63 == 1 { b":t:" } else { b":j:" });
    push_decimal(k, (id >> 40) & 0xff);
    k.push(b':');
    push_decimal(k, id & ((1 << 40) - 1));
}

/// The length of [`bucket_key`]`(base, id)`.
fn bucket_key_len(base: &str, id: u64) -> usize {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    base.len() + 3 + digits((id >> 40) & 0xff) + 1 + digits(id & ((1 << 40) - 1))
}

/// Appends `n` in decimal (`write!` was a tenth of a check's client time).
fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// `HMGET key fields[range]` for each of `cmds`, packed in RESP by hand
/// (the client crate's `Cmd`s, `write!` and their allocations were ~10% of
/// a check's time in hamlet); a bucket's key is written from its id.
fn pack_hmgets(base: &str, cmds: &[(HKey<'_>, std::ops::Range<usize>)], fields: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(cmds.len() * 48 + fields.len() * 32);
    for (key, r) in cmds {
        buf.push(b'*');
        push_decimal(&mut buf, 2 + r.len() as u64);
        buf.extend_from_slice(b"\r\n$5\r\nHMGET\r\n$");
        match key {
            HKey::Named(k) => {
                push_decimal(&mut buf, k.len() as u64);
                buf.extend_from_slice(b"\r\n");
                buf.extend_from_slice(k.as_bytes());
            }
            HKey::Bucket(id) => {
                push_decimal(&mut buf, bucket_key_len(base, *id) as u64);
                buf.extend_from_slice(b"\r\n");
                push_bucket_key(&mut buf, base, *id);
            }
        }
        buf.extend_from_slice(b"\r\n");
        for f in &fields[r.clone()] {
            buf.push(b'$');
            push_decimal(&mut buf, f.len() as u64);
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(f);
            buf.extend_from_slice(b"\r\n");
        }
    }
    buf
}

fn scripts() -> &'static [Script; 4] {
    static S: OnceLock<[Script; 4]> = OnceLock::new();
    let with_buckets = |src: &str| Script::new(&format!("{}\n{src}", include_str!("buckets.lua")));
    S.get_or_init(|| {
        [
            with_buckets(include_str!("commit.lua")),
            with_buckets(include_str!("expire.lua")),
            Script::new("return {redis.call('HGET', KEYS[1], 'gv') or '0', redis.call('GET', KEYS[2]) or ''}"),
            Script::new(include_str!("read.lua")),
        ]
    })
}

/// All-zero 4-gram weights, shared (a user's model never has others).
fn zeros() -> Grams {
    static Z: OnceLock<Grams> = OnceLock::new();
    Z.get_or_init(|| Arc::new(vec![0.0; GRAM_DIM])).clone()
}

/// A record as `buckets.lua` packs it: weight (f32), day (u16, little-endian),
/// spam and ham as varints (7 bits a byte, low first).
fn encode_record(r: &TokenRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&r.weight.to_le_bytes());
    b.extend_from_slice(&(r.day.min(u32::from(u16::MAX)) as u16).to_le_bytes());
    for mut n in [r.spam, r.ham] {
        loop {
            let byte = (n % 128) as u8;
            n /= 128;
            if n == 0 {
                b.push(byte);
                break;
            }
            b.push(byte | 128);
        }
    }
    b
}

fn decode_record(b: &[u8]) -> Option<TokenRecord> {
    let weight = f32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
    let day = u32::from(u16::from_le_bytes(b.get(4..6)?.try_into().ok()?));
    let mut rest = &b[6..];
    let mut varint = || -> Option<u32> {
        let mut n: u64 = 0;
        for shift in (0..35).step_by(7) {
            let (&byte, tail) = rest.split_first()?;
            rest = tail;
            n |= u64::from(byte & 127) << shift;
            if byte < 128 {
                return u32::try_from(n).ok();
            }
        }
        None
    };
    let spam = varint()?;
    let ham = varint()?;
    Some(TokenRecord { spam, ham, day, weight })
}

fn encode_journal(e: &JournalEntry) -> [u8; 7] {
    let d = e.day.to_le_bytes();
    [e.class.code(), e.weight, u8::from(e.auto), d[0], d[1], d[2], d[3]]
}

fn decode_journal(b: &[u8]) -> Option<JournalEntry> {
    if b.len() != 7 {
        return None;
    }
    Some(JournalEntry { class: Class::from_code(b[0])?, weight: b[1], auto: b[2] != 0, day: u32::from_le_bytes([b[3], b[4], b[5], b[6]]) })
}

fn bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        _ => &[],
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => parse(bytes(other)).unwrap_or(0),
    }
}

/// A number Redis sent as text.
fn parse<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => Vec::new(),
    }
}

/// A bucket's (field, value).
type Entry = (Vec<u8>, Vec<u8>);

/// What one pipelined read answers: the model's state and 4-gram weights'
/// version, the journal entries and the records, raw (empty: none).
type ReadReply = ((ModelState, i64), Vec<Vec<u8>>, Vec<Vec<u8>>);

/// What one read call returned.
struct Fetched {
    state: ModelState,
    grams_version: i64,
    journal: Vec<Vec<u8>>,
    records: Vec<Vec<u8>>,
}

/// This host's copy of the 4-gram weights.
struct GramCache {
    weights: Grams,
    /// The version in Redis the copy is of; `None` before the first fetch.
    version: Option<i64>,
    fetched: Instant,
}

/// See the module documentation.
pub struct RedisStore {
    target: Arc<Target>,
    /// `<prefix>:{<model>}`.
    base: String,
    state_key: String,
    grams_key: String,
    grams: RwLock<GramCache>,
    /// The bucket levels last seen (`None` before the first call).
    levels: std::sync::Mutex<Option<Levels>>,
}

impl RedisStore {
    /// Opens the model `model` (`main` for the shared one) under `prefix`,
    /// creating it if it is new. Returns whether it was created by this
    /// call (then the caller may seed it).
    /// `levels`: the token and journal buckets a new model starts with
    /// (2^levels; empty buckets cost nothing, and fewer means more splits
    /// while it grows).
    pub fn open(target: Arc<Target>, prefix: &str, model: &str, levels: (u32, u32)) -> Result<(RedisStore, bool)> {
        let base = format!("{prefix}:{{{model}}}");
        let meta = format!("{base}:meta");
        let (created, layout): (bool, Option<i64>) = target.with(true, |c| {
            let created: bool = redis::cmd("HSETNX").arg(&meta).arg("layout").arg(LAYOUT).query(c)?;
            if created {
                let (t, j) = levels;
                redis::cmd("HSET").arg(format!("{base}:state")).arg("tL").arg(t).arg("tS").arg(0).arg("jL").arg(j).arg("jS").arg(0).query::<()>(c)?;
                if model == "main" {
                    // The 4-gram weights at their full size at once: grown
                    // by BITFIELD, the string would get twice the room.
                    redis::cmd("SET").arg(format!("{base}:g")).arg(vec![0u8; GRAM_DIM * 4]).arg("NX").query::<()>(c)?;
                }
            }
            Ok((created, redis::cmd("HGET").arg(&meta).arg("layout").query(c)?))
        })?;
        let layout = layout.unwrap_or(0);
        if layout != LAYOUT {
            return Err(Error::Invalid(format!(
                "{} {base}: layout {layout}, this hamlet needs {LAYOUT}: `hamlet db dump` it with the hamlet that wrote it and load the dump under another prefix",
                target.display()
            )));
        }
        let store = RedisStore {
            state_key: format!("{base}:state"),
            grams_key: format!("{base}:g"),
            base,
            target,
            grams: RwLock::new(GramCache { weights: zeros(), version: None, fetched: Instant::now() }),
            levels: Default::default(),
        };
        Ok((store, created))
    }

    /// Where it is, to show (no password).
    pub fn describe(&self) -> String {
        format!("{} {}", self.target.display(), self.base)
    }

    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The buckets of `kind` (`t` tokens, `j` journal) in bucket hash
    /// order, as `buckets.lua`'s `bucket_list` names them, and the place in
    /// that list of the bucket holding bucket hash `bh`.
    fn bucket_keys(&self, kind: &str, bh: Option<u64>) -> Result<(Vec<String>, usize)> {
        let (l, s): (Option<u32>, Option<u64>) =
            self.target.with(true, |c| redis::cmd("HMGET").arg(&self.state_key).arg(format!("{kind}L")).arg(format!("{kind}S")).query(c))?;
        let (l, s) = (l.unwrap_or(4).min(24), s.unwrap_or(0));
        let mut keys = Vec::with_capacity((1usize << l) + s as usize);
        for b in 0..1u64 << l {
            if b < s {
                keys.push(format!("{}:{kind}:{}:{}", self.base, l + 1, 2 * b));
                keys.push(format!("{}:{kind}:{}:{}", self.base, l + 1, 2 * b + 1));
            } else {
                keys.push(format!("{}:{kind}:{l}:{b}", self.base));
            }
        }
        let at = bh.map_or(0, |bh| {
            let b = (bh << l) / P;
            if b < s { (2 * b + ((bh << (l + 1)) / P) % 2) as usize } else { (s + b) as usize }
        });
        Ok((keys, at))
    }

    /// The bucket levels as last seen, read from Redis the first time.
    fn levels(&self) -> Result<Levels> {
        if let Some(l) = *self.levels.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(l);
        }
        let v: Value = self.target.with(true, |c| redis::cmd("HMGET").arg(&self.state_key).arg("tL").arg("tS").arg("jL").arg("jS").query(c))?;
        let l = Levels::from_value(&v);
        self.saw_levels(l);
        Ok(l)
    }

    fn saw_levels(&self, l: Levels) {
        *self.levels.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
    }

    /// One read call (or one per [`READ_CHUNK`] tokens).
    fn fetch(&self, digests: &[Digest], tokens: &[(u64, &str)]) -> Result<Fetched> {
        let mut out = Fetched { state: ModelState::default(), grams_version: 0, journal: Vec::new(), records: Vec::with_capacity(tokens.len()) };
        let mut chunks = tokens.chunks(READ_CHUNK);
        let mut first = true;
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            if !first && chunk.is_empty() {
                break;
            }
            let journal = if first { digests } else { &[] };
            let ((state, grams_version), j, records) = self.read_call(journal, chunk)?;
            out.state = state;
            out.grams_version = grams_version;
            if first {
                out.journal = j;
            }
            out.records.extend(records);
            first = false;
            if chunk.len() < READ_CHUNK {
                break;
            }
        }
        Ok(out)
    }

    /// Runs `HMGET key fields…` for each of `cmds` and answers their
    /// replies: one pipeline on a single server; on a cluster one call of a
    /// script that runs them (the cluster client reads a whole pipeline's
    /// replies even after one timed out, each with the whole timeout).
    /// Plain commands where possible: Redis spent twice the CPU on the same
    /// `HMGET`s run from Lua (bench/RESULTS.md).
    fn hmgets(&self, cmds: &[(HKey<'_>, std::ops::Range<usize>)], fields: &[&[u8]]) -> Result<resp::Replies> {
        let buf = pack_hmgets(&self.base, cmds, fields);
        if let Some(got) = self.target.pipeline(&buf, cmds.len()) {
            return got;
        }
        let mut inv = scripts()[3].prepare_invoke();
        inv.key(&self.state_key);
        for (key, r) in cmds {
            match key {
                HKey::Named(k) => inv.arg(*k),
                HKey::Bucket(id) => inv.arg(bucket_key(&self.base, *id)),
            };
            inv.arg(r.len()).arg(&fields[r.clone()]);
        }
        Ok(resp::Replies::from_values(array(self.target.with(true, |c| inv.invoke(c))?)))
    }

    /// One read: the state fields, the journal entries and the records
    /// (empty: none), in one round of `HMGET`s ([`RedisStore::hmgets`]), a
    /// bucket each, named by the levels last seen. The levels are read first
    /// and last: levels only grow, so equal ones mean no split moved a field
    /// meanwhile (else the read runs again).
    fn read_call(&self, digests: &[Digest], tokens: &[(u64, &str)]) -> Result<ReadReply> {
        // A long token's field, and its field if a crafted token took that
        // first (`buckets.lua`'s `token_field`): which one holds it, `…:x`
        // tells.
        let long: Vec<(usize, Vec<u8>, Vec<u8>)> = tokens
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| is_long(t))
            .map(|(i, &(h, t))| {
                let mut f = vec![0u8];
                f.extend_from_slice(&h.to_be_bytes());
                let mut g = f.clone();
                g.extend_from_slice(t.as_bytes());
                (i, f, g)
            })
            .collect();
        const STATE: [&str; 20] =
            ["ts", "th", "ms", "mh", "bias", "m0", "m1", "m2", "ss", "sh", "gv", "tL", "tS", "jL", "jS", "m3", "p0", "p1", "p2", "p3"];
        // Where the four bucket levels are in STATE (read again last, to see
        // a split that ran meanwhile).
        const LEVELS_AT: usize = 11;
        let xkey = format!("{}:x", self.base);
        for _ in 0..8 {
            let lv = self.levels()?;
            // Every field asked for, with its bucket: the digests, the
            // plain tokens, then each long token's two fields.
            let mut asks: Vec<(u64, &[u8])> = Vec::with_capacity(digests.len() + tokens.len() + long.len());
            asks.extend(digests.iter().map(|d| (lv.bucket_id('j', bucket_hash(&d.0)), &d.0[..])));
            asks.extend(tokens.iter().filter(|(_, t)| !is_long(t)).map(|(_, t)| (lv.bucket_id('t', bucket_hash(t.as_bytes())), t.as_bytes())));
            for (_, f, g) in &long {
                let id = lv.bucket_id('t', bucket_hash(f));
                asks.push((id, f));
                asks.push((id, g));
            }
            // One HMGET per bucket (at most GROUP fields): where each ask's
            // value comes back, (reply, place).
            let mut order: Vec<usize> = (0..asks.len()).collect();
            order.sort_unstable_by_key(|&i| asks[i].0);
            let mut places = vec![(0usize, 0usize); asks.len()];
            let mut fields: Vec<&[u8]> = Vec::with_capacity(asks.len() + STATE.len() + 4 + long.len());
            let mut cmds: Vec<(HKey<'_>, std::ops::Range<usize>)> = Vec::with_capacity(asks.len() + 3);
            fields.extend(STATE.iter().map(|f| f.as_bytes()));
            cmds.push((HKey::Named(&self.state_key), 0..fields.len()));
            let mut at = 0;
            while at < order.len() {
                let id = asks[order[at]].0;
                let end = (at..order.len()).take(GROUP).find(|&k| asks[order[k]].0 != id).unwrap_or(order.len().min(at + GROUP));
                for (k, &i) in order[at..end].iter().enumerate() {
                    places[i] = (cmds.len(), k);
                }
                let from = fields.len();
                fields.extend(order[at..end].iter().map(|&i| asks[i].1));
                cmds.push((HKey::Bucket(id), from..fields.len()));
                at = end;
            }
            if !long.is_empty() {
                let from = fields.len();
                fields.extend(long.iter().map(|(_, f, _)| &f[..]));
                cmds.push((HKey::Named(&xkey), from..fields.len()));
            }
            let from = fields.len();
            fields.extend(STATE[LEVELS_AT..LEVELS_AT + 4].iter().map(|f| f.as_bytes()));
            cmds.push((HKey::Named(&self.state_key), from..fields.len()));
            let got = self.hmgets(&cmds, &fields)?;
            let last = got.len().saturating_sub(1);
            let num = |r: usize, k: usize| got.get(r, k).and_then(parse::<i64>);
            let before = Levels::from_fields(|k| num(0, LEVELS_AT + k));
            let after = Levels::from_fields(|k| num(last, k));
            if before != lv || after != lv {
                self.saw_levels(after);
                continue;
            }
            let x = |n: usize| if long.is_empty() { None } else { got.get(last - 1, n) };
            let take = |(g, k): (usize, usize)| -> Vec<u8> { got.get(g, k).map(<[u8]>::to_vec).unwrap_or_default() };
            let journal: Vec<Vec<u8>> = (0..digests.len()).map(|i| take(places[i])).collect();
            let mut records = Vec::with_capacity(tokens.len());
            let (mut plain, mut next_long) = (digests.len(), digests.len() + tokens.len() - long.len());
            let mut longs = long.iter().enumerate().peekable();
            for (i, &(_, t)) in tokens.iter().enumerate() {
                match longs.next_if(|(_, (at, ..))| *at == i) {
                    Some((n, _)) => {
                        let owner = x(n).unwrap_or_default();
                        let (plain_field, taken) = (take(places[next_long]), take(places[next_long + 1]));
                        next_long += 2;
                        records.push(if !owner.is_empty() && owner != t.as_bytes() { taken } else { plain_field });
                    }
                    None => {
                        records.push(take(places[plain]));
                        plain += 1;
                    }
                }
            }
            let u = |k: usize| num(0, k).unwrap_or(0).max(0) as u64;
            let f = |k: usize| got.get(0, k).and_then(parse::<f64>).unwrap_or(0.0);
            let state = ModelState {
                totals: Totals { spam: u(0), ham: u(1) },
                messages: Totals { spam: u(2), ham: u(3) },
                starter: Totals { spam: u(8), ham: u(9) },
                bias: f(4),
                mix: [f(5), f(6), f(7), f(15)],
                last_pair: [f(16), f(17), f(18), f(19)],
            };
            return Ok(((state, num(0, 10).unwrap_or(0)), journal, records));
        }
        Err(Error::Remote(format!("{}: the bucket levels kept moving during a read", self.describe())))
    }

    /// The 4-gram weights, fetched again if `seen` (the version a read just
    /// saw) differs from the copy's and the copy is older than
    /// [`GRAM_REFRESH`]; `force` fetches whenever the version differs.
    fn gram_copy(&self, seen: Option<i64>, force: bool) -> Result<Grams> {
        {
            let g = self.grams.read().unwrap_or_else(|p| p.into_inner());
            let fresh = match (g.version, seen) {
                (None, _) => false,
                (Some(v), Some(s)) => v == s || (!force && g.fetched.elapsed() < GRAM_REFRESH),
                (Some(_), None) => !force && g.fetched.elapsed() < GRAM_REFRESH,
            };
            if fresh {
                return Ok(g.weights.clone());
            }
        }
        let (version, blob): (i64, Vec<u8>) = self.target.with(true, |c| {
            let v: Value = scripts()[2].key(&self.state_key).key(&self.grams_key).invoke(c)?;
            let a = array(v);
            Ok((a.first().map_or(0, int), a.get(1).map(|b| bytes(b).to_vec()).unwrap_or_default()))
        })?;
        let weights = if blob.iter().all(|&b| b == 0) {
            zeros()
        } else {
            let mut w = vec![0.0f32; GRAM_DIM];
            for (x, b) in w.iter_mut().zip(blob.chunks_exact(4)) {
                *x = f32::from_bits(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            Arc::new(w)
        };
        let mut g = self.grams.write().unwrap_or_else(|p| p.into_inner());
        *g = GramCache { weights: weights.clone(), version: Some(version), fetched: Instant::now() };
        Ok(weights)
    }

    fn count(&self, field: &str) -> Result<u64> {
        let n: Option<i64> = self.target.with(true, |c| redis::cmd("HGET").arg(&self.state_key).arg(field).query(c))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Every (field, value) of the buckets `keys[first..]`, whole buckets
    /// up to `want` entries, with the place after the last bucket read.
    fn buckets(&self, keys: &[String], first: usize, want: usize) -> Result<(Vec<Entry>, usize)> {
        let mut out = Vec::new();
        let mut b = first;
        while b < keys.len() && out.len() < want {
            let step = 256.min(keys.len() - b);
            let keys = &keys[b..b + step];
            let got: Vec<Vec<(Vec<u8>, Vec<u8>)>> = self.target.with(true, |c| {
                let mut all = Vec::with_capacity(keys.len());
                for k in keys {
                    all.push(redis::cmd("HGETALL").arg(k).query(c)?);
                }
                Ok(all)
            })?;
            for g in got {
                out.extend(g);
            }
            b += step;
        }
        Ok((out, b))
    }

    /// Drops old tokens and journal entries inside Redis (see `expire.lua`),
    /// 64 buckets per call: nothing leaves Redis, and the work per call is
    /// bounded (a bucket split between two calls may be looked at twice, or
    /// once less, in one pass: expiry runs again).
    pub fn expire(&self, today: u32, max_age_days: u32, hapax_age_days: u32) -> Result<super::ExpireStats> {
        let mut stats = super::ExpireStats::default();
        for kind in ["t", "j"] {
            let mut first = 0u64;
            loop {
                let (examined, removed, total): (u64, u64, u64) = self.target.with(true, |c| {
                    scripts()[1]
                        .key(&self.state_key)
                        .arg(&self.base)
                        .arg(today)
                        .arg(max_age_days)
                        .arg(hapax_age_days)
                        .arg(first)
                        .arg(64)
                        .arg(kind)
                        .invoke(c)
                })?;
                if kind == "t" {
                    stats.examined += examined;
                    stats.removed += removed;
                } else {
                    stats.journal_removed += removed;
                }
                first += 64;
                if first >= total {
                    break;
                }
            }
        }
        Ok(stats)
    }

    /// Every key of this model.
    fn all_keys(&self) -> Result<Vec<String>> {
        let mut keys = vec![format!("{}:meta", self.base), self.state_key.clone(), self.grams_key.clone()];
        keys.extend(self.bucket_keys("t", None)?.0);
        keys.extend(self.bucket_keys("j", None)?.0);
        Ok(keys)
    }

    /// Bytes Redis uses for this model's keys (`MEMORY USAGE` of each key:
    /// exact but a scan of every bucket; for `db stats` and benchmarks).
    pub fn memory_bytes(&self) -> Result<u64> {
        let keys = self.all_keys()?;
        let mut total = 0;
        for chunk in keys.chunks(1024) {
            let sizes: Vec<Option<u64>> = self.target.with(true, |c| {
                let mut v = Vec::with_capacity(chunk.len());
                for k in chunk {
                    v.push(redis::cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0).query(c)?);
                }
                Ok(v)
            })?;
            total += sizes.into_iter().flatten().sum::<u64>();
        }
        Ok(total)
    }

    /// Removes every key of this model.
    pub fn destroy(&self) -> Result<()> {
        let keys = self.all_keys()?;
        for chunk in keys.chunks(1024) {
            self.target.with(false, |c| {
                for k in chunk {
                    redis::cmd("DEL").arg(k).query::<()>(c)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn commit(&self, t: Txn<'_>) -> Result<bool> {
        let journal: Vec<_> = t.journal.iter().filter_map(|(d, (read, new))| new.map(|n| (d, read, n))).collect();
        let (read, new) = match (&t.state, t.state_new) {
            (Some((r, _)), Some(n)) => (*r, n),
            _ => (ModelState::default(), ModelState::default()),
        };
        let changed: Vec<_> = t
            .tokens
            .iter()
            .filter_map(|(text, s)| s.new.map(|n| (text, token_args(s.hash, text), &s.read_raw, n.map(|r| encode_record(&r)).unwrap_or_default())))
            .collect();
        let mut grams = Vec::with_capacity(t.grams.len() * 12);
        let mut slots: Vec<_> = t.grams.iter().collect();
        slots.sort_unstable_by_key(|(s, _)| **s);
        for &(&slot, &(read, now)) in &slots {
            if now.to_bits() != read {
                grams.extend_from_slice(&slot.to_be_bytes());
                grams.extend_from_slice(&read.to_be_bytes());
                grams.extend_from_slice(&now.to_bits().to_be_bytes());
            }
        }
        // A big commit holds Redis longer than one learn's: give it time.
        let big = t.tokens.len() > 5_000 || t.journal.len() > 100;
        let mut answer = None;
        for _ in 0..8 {
            let lv = self.levels()?;
            let mut inv = scripts()[0].prepare_invoke();
            inv.key(&self.state_key).key(&self.grams_key).arg(&self.base).arg(&lv.args()[..]);
            inv.arg(journal.len());
            for (d, read, new) in &journal {
                inv.arg(lv.bucket(&self.base, 'j', bucket_hash(&d.0))).arg(&d.0[..]).arg(&read[..]);
                inv.arg(new.map(|e| encode_journal(&e).to_vec()).unwrap_or_default());
            }
            let delta = |a: u64, b: u64| b as i64 - a as i64;
            inv.arg(delta(read.totals.spam, new.totals.spam)).arg(delta(read.totals.ham, new.totals.ham));
            inv.arg(delta(read.messages.spam, new.messages.spam)).arg(delta(read.messages.ham, new.messages.ham));
            inv.arg(delta(read.starter.spam, new.starter.spam)).arg(delta(read.starter.ham, new.starter.ham));
            for (r, n) in [(read.bias, new.bias)].into_iter().chain(read.mix.into_iter().zip(new.mix)) {
                let (r, n) = if r.is_finite() && n.is_finite() { (r, n) } else { (0.0, 0.0) };
                inv.arg(format!("{r:?}")).arg(format!("{n:?}"));
            }
            // The pairwise step's memory: the last writer's ('' = unchanged).
            for (r, n) in read.last_pair.into_iter().zip(new.last_pair) {
                inv.arg(if r != n && n.is_finite() { format!("{n:?}") } else { String::new() });
            }
            inv.arg(changed.len());
            for (text, (bh, h8), read_raw, new) in &changed {
                inv.arg(lv.bucket(&self.base, 't', *bh)).arg(text.as_str()).arg(&h8[..]).arg(&read_raw[..]).arg(&new[..]);
            }
            inv.arg(grams.as_slice());
            let v: Value = self.target.with_timeout(false, big.then_some(BIG_COMMIT), |c| inv.invoke(c))?;
            let a = array(v);
            match bytes(a.first().unwrap_or(&Value::Nil)) {
                b"conflict" => return Ok(false),
                b"levels" => self.saw_levels(Levels::from_value(a.get(1).unwrap_or(&Value::Nil))),
                _ => {
                    self.saw_levels(Levels::from_value(a.get(3).unwrap_or(&Value::Nil)));
                    answer = Some(a);
                    break;
                }
            }
        }
        let a = answer.ok_or_else(|| Error::Remote(format!("{}: the bucket levels kept moving during a commit", self.describe())))?;
        let (version, conflicts) = (a.get(1).map_or(0, int), a.get(2).map_or(0, int));
        if !grams.is_empty() {
            let mut g = self.grams.write().unwrap_or_else(|p| p.into_inner());
            let base = t.gram_base.borrow().clone();
            if conflicts == 0 && g.version == Some(version - 1) && base.is_some_and(|b| Arc::ptr_eq(&g.weights, &b)) {
                // Nobody else changed them: this host's copy is Redis's.
                let w = Arc::make_mut(&mut g.weights);
                for (&slot, &(_, now)) in slots {
                    w[slot as usize] = now;
                }
                g.version = Some(version);
            } else {
                g.version = Some(-1);
                g.fetched = Instant::now() - GRAM_REFRESH;
            }
        }
        Ok(true)
    }
}

/// A read view: every call reads Redis (see the module documentation),
/// except the state, which it reads once, and journal entries announced by
/// [`ReadView::want_journal`], which come with the next read.
struct View<'a> {
    store: &'a RedisStore,
    /// The state and 4-gram version the first read call saw.
    seen: std::cell::Cell<Option<(ModelState, i64)>>,
    /// Digests the next read is to fetch the journal entries of.
    wanted: std::cell::RefCell<Vec<Digest>>,
    /// Journal entries fetched along with a read (raw; empty: none).
    entries: std::cell::RefCell<HashMap<Digest, Vec<u8>>>,
}

impl<'a> View<'a> {
    fn new(store: &'a RedisStore) -> View<'a> {
        View { store, seen: Default::default(), wanted: Default::default(), entries: Default::default() }
    }

    fn fetch(&self, digests: &[Digest], tokens: &[(u64, &str)]) -> Result<Fetched> {
        let wanted = std::mem::take(&mut *self.wanted.borrow_mut());
        let all: Vec<Digest> = digests.iter().chain(&wanted).copied().collect();
        let mut f = self.store.fetch(&all, tokens)?;
        if self.seen.get().is_none() {
            self.seen.set(Some((f.state, f.grams_version)));
        }
        let extra = f.journal.split_off(digests.len().min(f.journal.len()));
        self.entries.borrow_mut().extend(wanted.into_iter().zip(extra));
        Ok(f)
    }
}

/// Tokens in (bucket hash, text) order, after `after`.
fn scan_tokens(store: &RedisStore, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
    let after = after.map(|t| (token_args(token_hash(t), t).0, t.to_string()));
    let (keys, mut bucket) = store.bucket_keys("t", after.as_ref().map(|(bh, _)| *bh))?;
    let xkey = format!("{}:x", store.base);
    let mut out = Vec::new();
    while out.len() < limit && bucket < keys.len() {
        let (entries, next) = store.buckets(&keys, bucket, limit)?;
        bucket = next;
        let long: Vec<&Vec<u8>> = entries.iter().map(|(f, _)| f).filter(|f| f.first() == Some(&0)).collect();
        let texts: HashMap<Vec<u8>, Vec<u8>> = if long.is_empty() {
            HashMap::new()
        } else {
            let got: Vec<Option<Vec<u8>>> = store.target.with(true, |c| redis::cmd("HMGET").arg(&xkey).arg(&long).query(c))?;
            long.into_iter().cloned().zip(got).filter_map(|(f, t)| Some((f, t?))).collect()
        };
        let mut got: Vec<(u64, String, TokenRecord)> = entries
            .into_iter()
            .filter_map(|(f, v)| {
                let rec = decode_record(&v)?;
                let text = String::from_utf8(if f.first() == Some(&0) { texts.get(&f)?.clone() } else { f }).ok()?;
                Some((token_args(token_hash(&text), &text).0, text, rec))
            })
            .filter(|(h, t, _)| after.as_ref().is_none_or(|(ah, at)| (h, t) > (ah, at)))
            .collect();
        got.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out.extend(got.into_iter().map(|(_, t, r)| (t, r)));
    }
    out.truncate(limit);
    Ok(out)
}

fn scan_journal(store: &RedisStore, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
    let (keys, mut bucket) = store.bucket_keys("j", after.map(|d| bucket_hash(&d.0)))?;
    let mut out = Vec::new();
    while out.len() < limit && bucket < keys.len() {
        let (entries, next) = store.buckets(&keys, bucket, limit)?;
        bucket = next;
        let mut got: Vec<(Digest, JournalEntry)> = entries
            .into_iter()
            .filter_map(|(k, v)| Some((Digest(k.try_into().ok()?), decode_journal(&v)?)))
            .filter(|(d, _)| after.is_none_or(|a| (bucket_hash(&d.0), d) > (bucket_hash(&a.0), a)))
            .collect();
        got.sort_unstable_by_key(|(d, _)| (bucket_hash(&d.0), *d));
        out.extend(got);
    }
    out.truncate(limit);
    Ok(out)
}

impl ReadView for View<'_> {
    fn state(&self) -> Result<ModelState> {
        match self.seen.get() {
            Some((s, _)) => Ok(s),
            None => Ok(self.fetch(&[], &[])?.state),
        }
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(self.fetch(&[], &[(token_hash(token), token)])?.records.first().and_then(|r| decode_record(r)))
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        out.extend(self.fetch(&[], tokens)?.records.iter().map(|r| decode_record(r)));
        Ok(())
    }
    fn state_and_records(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<ModelState> {
        let f = self.fetch(&[], tokens)?;
        out.extend(f.records.iter().map(|r| decode_record(r)));
        Ok(f.state)
    }
    fn want_journal(&self, digest: &Digest) {
        self.wanted.borrow_mut().push(*digest);
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        if let Some(raw) = self.entries.borrow().get(digest) {
            return Ok(decode_journal(raw));
        }
        Ok(self.fetch(std::slice::from_ref(digest), &[])?.journal.first().and_then(|j| decode_journal(j)))
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        scan_tokens(self.store, after, limit)
    }
    fn token_count(&self) -> Result<u64> {
        self.store.count("nt")
    }
    fn journal_count(&self) -> Result<u64> {
        self.store.count("nj")
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        scan_journal(self.store, after, limit)
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        let seen = self.seen.get().map(|(_, v)| v);
        Ok(super::sum_slots(&self.store.gram_copy(seen, false)?, slots))
    }
    fn gram_weights(&self) -> Result<Grams> {
        let seen = self.fetch(&[], &[])?.grams_version;
        self.store.gram_copy(Some(seen), true)
    }
}

/// A token inside a write: what was read, and what is to be written.
struct TxnToken {
    hash: u64,
    read_raw: Vec<u8>,
    read: Option<TokenRecord>,
    /// `Some(None)`: remove.
    new: Option<Option<TokenRecord>>,
}

/// A write in progress: reads cached, writes collected for one commit.
struct Txn<'a> {
    store: &'a RedisStore,
    /// The state as read, and the 4-gram version then.
    state: Option<(ModelState, i64)>,
    state_new: Option<ModelState>,
    /// Digest -> (entry as read, raw; the entry to write).
    journal: HashMap<Digest, (Vec<u8>, Option<Option<JournalEntry>>)>,
    tokens: HashMap<String, TxnToken>,
    /// Slot -> (bits as read, value now).
    grams: HashMap<u32, (u32, f32)>,
    /// This host's copy of the weights when the write first needed them.
    gram_base: std::cell::RefCell<Option<Grams>>,
}

impl<'a> Txn<'a> {
    fn new(store: &'a RedisStore) -> Txn<'a> {
        Txn {
            store,
            state: None,
            state_new: None,
            journal: HashMap::new(),
            tokens: HashMap::new(),
            grams: HashMap::new(),
            gram_base: Default::default(),
        }
    }

    fn gram_base(&self) -> Result<Grams> {
        if let Some(g) = &*self.gram_base.borrow() {
            return Ok(g.clone());
        }
        let seen = self.state.as_ref().map(|(_, v)| *v);
        let g = self.store.gram_copy(seen, false)?;
        *self.gram_base.borrow_mut() = Some(g.clone());
        Ok(g)
    }

    /// Reads (in one call) what is not read yet of these digests and tokens.
    fn load(&mut self, digests: &[Digest], tokens: &[(u64, &str)]) -> Result<()> {
        let digests: Vec<Digest> = digests.iter().filter(|d| !self.journal.contains_key(*d)).copied().collect();
        let mut seen = std::collections::HashSet::new();
        let tokens: Vec<(u64, &str)> = tokens.iter().filter(|(_, t)| !self.tokens.contains_key(*t) && seen.insert(*t)).copied().collect();
        if digests.is_empty() && tokens.is_empty() && self.state.is_some() {
            return Ok(());
        }
        let f = self.store.fetch(&digests, &tokens)?;
        if self.state.is_none() {
            self.state = Some((f.state, f.grams_version));
        }
        for (d, raw) in digests.into_iter().zip(f.journal) {
            self.journal.insert(d, (raw, None));
        }
        for ((hash, t), raw) in tokens.into_iter().zip(f.records) {
            let read = decode_record(&raw);
            self.tokens.insert(t.to_string(), TxnToken { hash, read_raw: raw, read, new: None });
        }
        Ok(())
    }

    fn token(&mut self, token: &str) -> Result<&mut TxnToken> {
        if !self.tokens.contains_key(token) {
            self.load(&[], &[(token_hash(token), token)])?;
        }
        self.tokens.get_mut(token).ok_or_else(|| Error::Internal("redis txn: a token read is missing".into()))
    }
}

impl ReadView for Txn<'_> {
    fn state(&self) -> Result<ModelState> {
        match (self.state_new, &self.state) {
            (Some(s), _) => Ok(s),
            (None, Some((s, _))) => Ok(*s),
            (None, None) => Ok(self.store.fetch(&[], &[])?.state),
        }
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        match self.tokens.get(token) {
            Some(t) => Ok(t.new.unwrap_or(t.read)),
            None => View::new(self.store).get(token),
        }
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        let missing: Vec<(u64, &str)> = tokens.iter().filter(|(_, t)| !self.tokens.contains_key(*t)).copied().collect();
        let fetched = if missing.is_empty() { Vec::new() } else { self.store.fetch(&[], &missing)?.records };
        let mut fetched = fetched.iter();
        for (_, t) in tokens {
            out.push(match self.tokens.get(*t) {
                Some(x) => x.new.unwrap_or(x.read),
                None => fetched.next().and_then(|r| decode_record(r)),
            });
        }
        Ok(())
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        match self.journal.get(digest) {
            Some((raw, new)) => Ok(new.unwrap_or_else(|| decode_journal(raw))),
            None => View::new(self.store).journal(digest),
        }
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        scan_tokens(self.store, after, limit)
    }
    fn token_count(&self) -> Result<u64> {
        self.store.count("nt")
    }
    fn journal_count(&self) -> Result<u64> {
        self.store.count("nj")
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        scan_journal(self.store, after, limit)
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        let base = self.gram_base()?;
        Ok(super::sum_weights(slots, |s| match self.grams.get(&s) {
            Some(&(_, now)) => now,
            None => super::gram_at(&base, s),
        }))
    }
    fn gram_weights(&self) -> Result<Grams> {
        let mut w = (*self.gram_base()?).clone();
        for (&s, &(_, now)) in &self.grams {
            if let Some(x) = w.get_mut(s as usize) {
                *x = now;
            }
        }
        Ok(Arc::new(w))
    }
}

impl WriteView for Txn<'_> {
    fn prefetch(&mut self, digests: &[Digest], tokens: &[(u64, &str)]) -> Result<()> {
        self.load(digests, tokens)
    }
    fn set_state(&mut self, state: ModelState) -> Result<()> {
        self.load(&[], &[])?;
        self.state_new = Some(state);
        Ok(())
    }
    fn put(&mut self, token: &str, record: TokenRecord) -> Result<()> {
        self.token(token)?.new = Some(Some(record));
        Ok(())
    }
    fn remove(&mut self, token: &str) -> Result<()> {
        self.token(token)?.new = Some(None);
        Ok(())
    }
    fn set_journal(&mut self, digest: &Digest, entry: Option<JournalEntry>) -> Result<()> {
        self.load(std::slice::from_ref(digest), &[])?;
        if let Some(j) = self.journal.get_mut(digest) {
            j.1 = Some(entry);
        }
        Ok(())
    }
    fn gram_add(&mut self, slots: &[u32], delta: f32) -> Result<()> {
        let base = self.gram_base()?;
        for &s in slots {
            if (s as usize) >= GRAM_DIM {
                continue;
            }
            let base = super::gram_at(&base, s);
            let e = self.grams.entry(s).or_insert((base.to_bits(), base));
            e.1 += delta;
        }
        Ok(())
    }
}

/// How many times a write runs again after a journal conflict.
const CONFLICT_RETRIES: usize = 8;

impl TokenStore for RedisStore {
    fn read(&self) -> Result<Box<dyn ReadView + '_>> {
        Ok(Box::new(View::new(self)))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        for _ in 0..CONFLICT_RETRIES {
            let mut t = Txn::new(self);
            f(&mut t)?;
            if self.commit(t)? {
                return Ok(());
            }
        }
        Err(Error::Remote(format!("{}: the same messages kept being learned elsewhere meanwhile; try again", self.describe())))
    }

    fn write_limits(&self) -> WriteLimits {
        // A commit is one script: Redis runs nothing else meanwhile. 50,000
        // records and 2,000 messages keep one under ~0.2 s.
        WriteLimits { records: 50_000, messages: 2_000, replays: true }
    }

    fn health(&self) -> Result<()> {
        self.target.with(true, |c: &mut dyn ConnectionLike| redis::cmd("PING").query::<()>(c))?;
        self.read()?.state().map(|_| ())
    }

    fn expire(&self, today: u32, max_age_days: u32, hapax_age_days: u32, _batch: usize) -> Result<super::ExpireStats> {
        RedisStore::expire(self, today, max_age_days, hapax_age_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client names buckets as `buckets.lua` does (`<base>:<kind>:<level>:<n>`,
    /// split buckets one level down), and sorts a kind's buckets together.
    #[test]
    fn buckets_are_named_as_the_scripts_name_them() {
        let lv = Levels { t: (10, 3), j: (4, 0) };
        for bh in [0, 1, 2047, 4096, 9000, 1_000_000, P - 1] {
            let b = (bh << 10) / P;
            let want = if b < 3 { format!("m:t:11:{}", (bh << 11) / P) } else { format!("m:t:10:{b}") };
            assert_eq!(lv.bucket("m", 't', bh), want);
            assert_eq!(lv.bucket("m", 'j', bh), format!("m:j:4:{}", (bh << 4) / P));
            assert!(lv.bucket_id('j', bh) < lv.bucket_id('t', 0));
        }
        let mut v = Vec::new();
        push_decimal(&mut v, 0);
        push_decimal(&mut v, 18_446_744_073_709_551_615);
        assert_eq!(v, b"018446744073709551615");
        let cmd = pack_hmgets("m", &[(HKey::Named("k"), 0..2), (HKey::Bucket(lv.bucket_id('t', 9000)), 1..2)], &[b"a", b""]);
        assert_eq!(cmd, b"*4\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$1\r\na\r\n$0\r\n\r\n*3\r\n$5\r\nHMGET\r\n$8\r\nm:t:10:4\r\n$0\r\n\r\n");
    }

    #[test]
    fn records_and_journal_entries_round_trip() {
        for r in [TokenRecord { spam: 7, ham: u32::MAX, day: 20_792, weight: -0.125 }, TokenRecord::default()] {
            assert_eq!(decode_record(&encode_record(&r)), Some(r));
        }
        assert_eq!(encode_record(&TokenRecord { spam: 1, ham: 127, day: 1, weight: 0.0 }).len(), 8);
        assert_eq!(decode_record(b"short"), None);
        assert_eq!(decode_record(&[0, 0, 0, 0, 1, 0, 255, 255, 255, 255, 255, 1]), None, "a count past u32");
        let e = JournalEntry { class: Class::Spam, day: 20_792, weight: 2, auto: true };
        assert_eq!(decode_journal(&encode_journal(&e)), Some(e));
        assert_eq!(decode_journal(b""), None);
    }

    /// A redis-server of its own on a free loopback port and a Unix socket,
    /// with a password, stopped on drop.
    struct Server(std::process::Child, u16, std::path::PathBuf);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_file(&self.2);
        }
    }

    fn redis_server() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let sock = std::env::temp_dir().join(format!("hamlet-unit-redis-{port}.sock"));
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", "s3cret"])
            .args(["--unixsocket", sock.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}: the Redis store's tests need it: apt-get install -y redis-server"));
        let server = Server(child, port, sock);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && server.2.exists() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not start");
    }

    fn open(url: &str, prefix: &str) -> Result<RedisStore> {
        let timeouts = Timeouts { connect: Duration::from_secs(2), reply: Duration::from_secs(5) };
        let target = Arc::new(Target::new(url, None, timeouts)?);
        Ok(RedisStore::open(target, prefix, "main", (0, 0))?.0)
    }

    /// The behaviour every store has (`store::conformance`), on a real
    /// redis-server, with buckets split while it runs (level 0: one bucket
    /// each to start with); by TCP and by Unix socket, with a password and
    /// a database number (the check's own connections send `AUTH` and
    /// `SELECT` themselves).
    #[test]
    fn conformance_on_a_real_redis() {
        let server = redis_server();
        let tcp = format!("redis://:s3cret@127.0.0.1:{}/2", server.1);
        super::super::conformance::run(&open(&tcp, "conf").unwrap(), false);
        let unix = format!("redis+unix://{}?db=3&pass=s3cret", server.2.display());
        super::super::conformance::run(&open(&unix, "conf").unwrap(), false);
        // Both in their own database, none in database 0.
        let size = |db: u32| -> i64 {
            let mut c = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/{db}", server.1)).unwrap().get_connection().unwrap();
            redis::cmd("DBSIZE").query(&mut c).unwrap()
        };
        assert!(size(2) > 0 && size(3) > 0 && size(0) == 0, "{} {} {}", size(2), size(3), size(0));
        // A wrong password is a clear error, not a hang.
        let e = open(&format!("redis://:wrong@127.0.0.1:{}/2", server.1), "conf").err().expect("a wrong password must fail").to_string();
        assert!(e.contains("127.0.0.1") && !e.contains("wrong@"), "{e}");
    }

    /// The check's pipeline on its own connection: replies of a few hundred
    /// buckets in one read, an error reply reported, the connection reused.
    #[test]
    fn pipelined_reads_on_the_checks_own_connections() {
        let server = redis_server();
        let store = open(&format!("redis://:s3cret@127.0.0.1:{}/4", server.1), "pipe").unwrap();
        let n = 300;
        let keys: Vec<String> = (0..n).map(|i| format!("nothing:{i}")).collect();
        let cmds: Vec<_> = keys.iter().map(|k| (HKey::Named(k), 0..2)).collect();
        let buf = pack_hmgets("pipe", &cmds, &[b"a", b"b"]);
        for _ in 0..3 {
            let r = store.target.pipeline(&buf, n).expect("a single server").unwrap();
            assert_eq!(r.len(), n);
            assert!((0..n).all(|i| r.fields(i) == 2 && r.get(i, 0).is_none()));
        }
        let mut c = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/4", server.1)).unwrap().get_connection().unwrap();
        redis::cmd("SET").arg("a-string").arg("x").query::<()>(&mut c).unwrap();
        let bad = pack_hmgets("pipe", &[(HKey::Named("a-string"), 0..1), (HKey::Named("nothing"), 0..1)], &[b"f"]);
        let e = store.target.pipeline(&bad, 2).unwrap().expect_err("HMGET of a string is an error").to_string();
        assert!(e.contains("WRONGTYPE"), "{e}");
        // The connection is still in step.
        assert_eq!(store.target.pipeline(&buf, n).unwrap().unwrap().len(), n);
    }
}
