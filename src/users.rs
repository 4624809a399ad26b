//! Per-user models: each user's own corrections in a redb file of their own
//! (`<users_dir>/<name>.redb`), layered over the shared model when that
//! user's mail is scored ([`crate::store::Layered`]).
//!
//! A user is named by the SPAMD `User:` header (spamc `-u`) or the HTTP
//! `X-Hamlet-User` header. Names in `users_ignore` (spamc sends the Unix
//! user running it, `root` or `nobody` from an MTA pipe) use the shared
//! model. Learning with a user name trains that user's model only; the
//! shared model is trained without one.
//!
//! Files are opened on first use and kept open, at most `max_open` of them;
//! past that the least recently used one not in use is closed.
//!
//! When the shared model is on Redis, so are the users' ([`Users::on_redis`]):
//! one model per user under its own hash tag (`<prefix>:{u:<name>}`, so a
//! cluster spreads users over its nodes), every host sees the same ones, and
//! the set `<prefix>:users` counts them for `users_max` (`users_max_bytes`
//! does not apply: Redis's own `maxmemory` does).

use crate::store::redis::{RedisStore, Target, USER_LEVELS};
use crate::store::{Db, RedbStore};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// See the module documentation.
pub struct Users {
    dir: PathBuf,
    ignore: Vec<String>,
    max_open: usize,
    /// Caps on the number of models and their total bytes (see
    /// [`Users::with_caps`]).
    max_users: usize,
    max_bytes: u64,
    open: Mutex<HashMap<String, (Arc<Db>, u64)>>,
    tick: AtomicU64,
    /// The Redis and key prefix the models are on, instead of files.
    redis: Option<(Arc<Target>, String)>,
}

/// Accepted user names: spamd's `[-A-Za-z0-9_]` plus `.`, `@` and `+`
/// (mail systems pass addresses), 1–128 bytes, not starting with `.` or
/// `-`. They name files, so nothing else gets through.
pub fn valid_name(u: &str) -> bool {
    !u.is_empty() && u.len() <= 128 && !u.starts_with(['.', '-']) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b))
}

impl Users {
    pub fn new(dir: PathBuf, ignore: Vec<String>, max_open: usize) -> Users {
        Users {
            dir,
            ignore,
            max_open: max_open.max(1),
            max_users: usize::MAX,
            max_bytes: u64::MAX,
            open: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            redis: None,
        }
    }

    /// Keeps the models on this Redis, under `prefix`, instead of files.
    pub fn on_redis(mut self, target: Arc<Target>, prefix: &str) -> Users {
        self.redis = Some((target, prefix.to_string()));
        self
    }

    fn users_key(prefix: &str) -> String {
        format!("{prefix}:users")
    }

    /// The user's model on Redis (see [`Users::get`]).
    fn get_redis(&self, target: &Arc<Target>, prefix: &str, name: &str, create: bool) -> Result<Option<Db>> {
        let meta = format!("{prefix}:{{u:{name}}}:meta");
        let exists: bool = target.with(true, |c| redis::cmd("EXISTS").arg(&meta).query(c))?;
        if !exists {
            if !create {
                return Ok(None);
            }
            let n: usize = target.with(true, |c| redis::cmd("SCARD").arg(Users::users_key(prefix)).query(c))?;
            if n >= self.max_users {
                return Err(Error::UsersFull { user: name.to_string(), why: format!("{n} per-user models, the most users_max allows") });
            }
        }
        let (store, _) = RedisStore::open(target.clone(), prefix, &format!("u:{name}"), USER_LEVELS)?;
        if !exists {
            target.with(false, |c| redis::cmd("SADD").arg(Users::users_key(prefix)).arg(name).query::<()>(c))?;
        }
        Ok(Some(Db::Redis(store)))
    }

    /// At most `max_users` models, holding at most `max_bytes` together:
    /// past either, creating a model is refused ([`Error::UsersFull`]).
    pub fn with_caps(mut self, max_users: usize, max_bytes: u64) -> Users {
        self.max_users = max_users;
        self.max_bytes = max_bytes;
        self
    }

    /// Whether one more model fits the caps: the models on disk are
    /// counted when a new one is about to be created (rare once users
    /// have theirs), so the files stay the one truth.
    fn room_for_one_more(&self, name: &str) -> Result<()> {
        let (mut n, mut bytes) = (0usize, 0u64);
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|x| x == "redb") {
                n += 1;
                bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        let why = if n >= self.max_users {
            format!("{n} per-user models, the most users_max allows")
        } else if bytes >= self.max_bytes {
            format!("the per-user models hold {bytes} bytes, users_max_bytes is {}", self.max_bytes)
        } else {
            return Ok(());
        };
        Err(Error::UsersFull { user: name.to_string(), why })
    }

    /// Whether a name is one of `users_ignore` (scored and learned with
    /// the shared model).
    pub fn ignored(&self, name: &str) -> bool {
        self.ignore.iter().any(|i| i.eq_ignore_ascii_case(name))
    }

    /// The user's model, opened if need be; `None` for an ignored name, or
    /// when the user has no model yet and `create` is false. Only learning
    /// creates a model: a check naming a user never creates a file (so
    /// requests with made-up names cannot fill the disk). Names are
    /// case-insensitive (`Bob@Example.org` is `bob@example.org`).
    pub fn get(&self, name: &str, create: bool) -> Result<Option<Arc<Db>>> {
        if !valid_name(name) {
            return Err(Error::Invalid(format!("bad user name {name:?}")));
        }
        let name = name.to_ascii_lowercase();
        if self.ignored(&name) {
            return Ok(None);
        }
        let now = self.tick.fetch_add(1, Ordering::Relaxed);
        // Held while opening: one process may open a redb file only once.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((store, used)) = open.get_mut(&name) {
            *used = now;
            return Ok(Some(store.clone()));
        }
        if open.len() >= self.max_open {
            let idle = open.iter().filter(|(_, (s, _))| Arc::strong_count(s) == 1).min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(k) = idle {
                open.remove(&k);
            }
        }
        if let Some((target, prefix)) = &self.redis {
            let Some(store) = self.get_redis(target, prefix, &name, create)? else { return Ok(None) };
            let store = Arc::new(store);
            open.insert(name, (store.clone(), now));
            return Ok(Some(store));
        }
        let path = self.dir.join(format!("{name}.redb"));
        if !path.exists() {
            if !create {
                return Ok(None);
            }
            self.room_for_one_more(&name)?;
        }
        // No waiting for a file another process holds: the lock is held here.
        let store = Arc::new(Db::Redb(RedbStore::open_with_cache(&path, Duration::ZERO, crate::store::USER_CACHE_BYTES)?));
        open.insert(name, (store.clone(), now));
        Ok(Some(store))
    }

    /// Models on disk (files in the folder), or on Redis.
    pub fn model_count(&self) -> u64 {
        if let Some((target, prefix)) = &self.redis {
            return target.with(true, |c| redis::cmd("SCARD").arg(Users::users_key(prefix)).query(c)).unwrap_or(0);
        }
        std::fs::read_dir(&self.dir).map_or(0, |d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "redb")).count() as u64)
    }

    /// Models open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["bob", "bob@example.org", "a.b+tag@x-y.org", "x_1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "../etc", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn opens_ignores_and_evicts() {
        let dir = std::env::temp_dir().join(format!("hamlet-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let users = Users::new(dir.clone(), vec!["root".into()], 2);
        assert!(users.get("root", true).unwrap().is_none());
        assert!(users.get("../x", true).is_err());
        assert!(users.get("alice", false).unwrap().is_none(), "a check creates nothing");
        assert!(!dir.join("alice.redb").exists());
        let a = users.get("Alice", true).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &users.get("alice", false).unwrap().unwrap()), "case-insensitive, opened once");
        assert!(dir.join("alice.redb").exists());
        users.get("bob", true).unwrap();
        users.get("carol", true).unwrap();
        assert_eq!(users.open_count(), 2, "bob (idle, oldest) was closed; alice is in use");
        drop(a);
        users.get("bob", false).unwrap();
        assert_eq!(users.open_count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn caps_refuse_new_users_only() {
        let dir = std::env::temp_dir().join(format!("hamlet-users-caps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let users = Users::new(dir.clone(), vec![], 8).with_caps(2, u64::MAX);
        users.get("a", true).unwrap();
        users.get("b", true).unwrap();
        let Err(e) = users.get("c", true) else { panic!("a third user must be refused") };
        assert!(matches!(e, Error::UsersFull { .. }), "{e}");
        assert!(e.to_string().contains("users_max"), "{e}");
        assert!(!dir.join("c.redb").exists());
        assert!(users.get("c", false).unwrap().is_none(), "a check is never refused");
        assert!(users.get("a", true).unwrap().is_some(), "existing users keep learning");
        // The byte cap: the two models already hold more than 1 byte.
        drop(users);
        let users = Users::new(dir.clone(), vec![], 8).with_caps(100, 1);
        assert!(users.get("b", true).unwrap().is_some());
        let Err(e) = users.get("d", true) else { panic!("past the byte cap a new user must be refused") };
        assert!(e.to_string().contains("users_max_bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
