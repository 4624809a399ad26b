//! The one step from a [`Config`] to running parts: the classifier's
//! parameters, the engine over the configured database, per-user models,
//! the envelope checkers, the shared [`Service`]. Every command goes
//! through here (`serve`, `imap-train`, `check`, `train`, `db`, `eval`), so
//! a setting in `hamlet.toml` means the same thing to all of them.

use crate::classify::Params;
use crate::config::Config;
use crate::engine::Engine;
use crate::envelope::Checker;
use crate::envelope::greylist::{GreyDb, RedbGreyStore, RedisGreyStore};
use crate::service::Service;
use crate::store::{self, Db};
use crate::users::Users;
use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The classifier's parameters: the defaults, with the configured cutoffs.
pub fn params(cfg: &Config) -> Result<Params> {
    cfg.check_cutoffs()?;
    Ok(Params { ham_cutoff: cfg.ham_cutoff, spam_cutoff: cfg.spam_cutoff, cold_start: cfg.cold_start, ..Params::default() })
}

/// How a command opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Read and write; a new database gets the starter model.
    Learn,
    /// Read only when it exists (scoring never waits for a writer); a new
    /// one is created with the starter model.
    Score,
    /// Read and write an existing database (or a new, empty one).
    Existing,
}

/// The engine over the configured database (its parameters are checked
/// before the database is opened, or created).
pub fn engine(cfg: &Config, open: Open) -> Result<Engine<Db>> {
    let params = params(cfg)?;
    Ok(Engine::new(store(cfg, open)?, params))
}

/// The configured database itself (the `db` commands): the redb file, or
/// the shared model on the Redis `db` names.
pub fn store(cfg: &Config, open: Open) -> Result<Db> {
    if cfg.db_is_redis() {
        let target = redis_target(&cfg.db.to_string_lossy(), &cfg.redis)?;
        return Ok(Db::Redis(store::open_redis(target, &cfg.redis.prefix, open != Open::Existing)?));
    }
    Ok(Db::Redb(match open {
        Open::Learn => store::open_db(&cfg.db, true)?,
        Open::Score => store::open_db_read_only(&cfg.db)?,
        Open::Existing => store::open_db(&cfg.db, false)?,
    }))
}

/// The Redis server or cluster `url` names, with `[redis]`'s settings.
fn redis_target(url: &str, cfg: &crate::config::RedisConfig) -> Result<std::sync::Arc<store::redis::Target>> {
    let password = match &cfg.password_file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?.trim().to_string()),
        None => None,
    };
    let timeouts =
        store::redis::Timeouts { connect: Duration::from_millis(cfg.connect_timeout_ms.max(1)), reply: Duration::from_millis(cfg.timeout_ms.max(1)) };
    Ok(std::sync::Arc::new(store::redis::Target::new(url, password.as_deref(), timeouts)?))
}

/// Per-user models, when `users_dir` is set: files there, or models on
/// the Redis that holds the shared one (`db` a Redis URL; `users_dir` then
/// only turns them on).
pub fn users(cfg: &Config, shared: &Db) -> Option<Users> {
    let users =
        cfg.users_dir.clone().map(|d| Users::new(d, cfg.users_ignore.clone(), cfg.users_max_open).with_caps(cfg.users_max, cfg.users_max_bytes))?;
    Some(match shared {
        Db::Redis(s) => users.on_redis(s.target().clone(), &cfg.redis.prefix),
        Db::Redb(_) => users,
    })
}

/// The service `hamlet serve`'s front ends share (the configuration is
/// checked first).
pub fn service(cfg: &Config) -> Result<Service<Db>> {
    cfg.check()?;
    let engine = engine(cfg, Open::Learn)?;
    let users = users(cfg, engine.store());
    Service::builder(engine)
        .learn_token(learn_token(cfg)?)
        .timeout(Duration::from_secs(cfg.timeout_s))
        .envelope(Checker::new(cfg.envelope.clone(), None)?)
        .antivirus(crate::envelope::antivirus::Antivirus::new(&cfg.antivirus)?)
        .users(users)
        .autolearn(cfg.autolearn.enabled.then(|| cfg.autolearn.clone()))
        .history(history(&cfg.ui))
        .build()
}

/// The console's record of recent checks, when `[ui]` is on.
pub fn history(ui: &crate::config::UiConfig) -> Option<crate::history::History> {
    ui.enabled.then(|| {
        crate::history::History::new(crate::history::Settings {
            capacity: ui.history,
            message_bytes: ui.history_message_bytes,
            privacy: crate::history::Privacy { addresses: ui.history_addresses, subjects: ui.history_subjects },
        })
    })
}

/// The token learning needs: `learn_token` if set; none with
/// `open_learning`; else the one in [`Config::learn_token_path`], made
/// there (32 random bytes, hex, mode 0600) if the file does not exist yet.
pub fn learn_token(cfg: &Config) -> Result<Option<String>> {
    if cfg.learn_token.is_some() {
        return Ok(cfg.learn_token.clone());
    }
    if cfg.open_learning {
        return Ok(None);
    }
    let path = cfg.learn_token_path();
    if let Some(t) = read_learn_token(cfg)? {
        return Ok(Some(t));
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).map_err(|e| Error::io("/dev/urandom", e))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|e| Error::io(&path, e))?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()).map_err(|e| Error::io(&path, e))?;
    tracing::info!(file = %path.display(), "made a learn token: learning over HTTP needs `Authorization: Bearer <the token in this file>`");
    Ok(Some(token))
}

/// The token for a client of the service: `learn_token` if set, else the
/// one in [`Config::learn_token_path`] if that file is there (and readable);
/// `None` otherwise (no token is sent).
pub fn read_learn_token(cfg: &Config) -> Result<Option<String>> {
    if cfg.learn_token.is_some() {
        return Ok(cfg.learn_token.clone());
    }
    let path = cfg.learn_token_path();
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        Ok(_) => Err(Error::Invalid(format!("{}: the learn token file is empty: remove it to have a new token made", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Where greylisting state lives: `[envelope] greylist_db`, else beside the
/// token database (`<db stem>.greylist.redb`).
pub fn greylist_path(cfg: &Config) -> PathBuf {
    cfg.envelope.greylist_db.clone().unwrap_or_else(|| cfg.beside_db("greylist.redb"))
}

/// The policy service's envelope checker: greylisting state, when
/// greylisting is on, on the model's Redis (shared by every host) when the
/// model is there and no `greylist_db` file is named, else in its own redb
/// file.
pub fn policy_checker(cfg: &Config) -> Result<Checker<GreyDb>> {
    let grey = match (cfg.envelope.greylist.enabled, cfg.db_is_redis() && cfg.envelope.greylist_db.is_none()) {
        (false, _) => None,
        (true, true) => {
            Some(GreyDb::Redis(RedisGreyStore::new(redis_target(&cfg.db.to_string_lossy(), &cfg.redis)?, &cfg.redis.prefix, &cfg.envelope.greylist)))
        }
        (true, false) => Some(GreyDb::Redb(RedbGreyStore::open(&greylist_path(cfg))?)),
    };
    Checker::new(cfg.envelope.clone(), grey)
}
