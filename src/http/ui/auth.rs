//! The console's sign-in: the console password's hash (PBKDF2-HMAC-SHA256,
//! as `hamlet ui-password` makes it), and the signed-in sessions, each
//! with its CSRF token, held in memory (a restart signs everyone out).

use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// PBKDF2 rounds: OWASP's 2023 figure for PBKDF2-HMAC-SHA256. A sign-in
/// costs about a third of a second of one core here, and sign-ins are
/// checked one at a time ([`super::Console`]), so guessing cannot take the
/// machine.
const ROUNDS: u32 = 600_000;

/// Most sessions at once; past it, the one closest to expiry goes.
const MAX_SESSIONS: usize = 256;

/// `len` random bytes as lowercase hex.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    // The system's generator failing is not something to go on without.
    SystemRandom::new().fill(&mut bytes).expect("the system random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The line for `[ui] password_hash`: `pbkdf2-sha256$ROUNDS$SALT$HASH`
/// (salt and hash in hex).
pub fn hash_password(password: &str) -> String {
    let salt = unhex(&random_hex(16)).unwrap_or_default();
    let mut out = [0u8; 32];
    let rounds = NonZeroU32::new(ROUNDS).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password.as_bytes(), &mut out);
    format!("pbkdf2-sha256${ROUNDS}${}${}", hex(&salt), hex(&out))
}

/// Whether `password` matches a [`hash_password`] line (in constant time);
/// a malformed line matches nothing.
pub fn verify_password(password: &str, line: &str) -> bool {
    let mut parts = line.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(rounds), Some(salt), Some(hash)) = (rounds.parse::<u32>().ok().and_then(NonZeroU32::new), unhex(salt), unhex(hash)) else {
        return false;
    };
    // A short hash would match a share of all passwords (one byte: 1 in 256).
    if hash.len() != 32 || salt.len() < 8 {
        return false;
    }
    ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password.as_bytes(), &hash).is_ok()
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// What its state-changing requests must send in `X-CSRF-Token`.
    pub csrf: String,
    expires: Instant,
}

/// The signed-in sessions, by the id in their cookie.
pub struct Sessions {
    lifetime: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions { lifetime, map: Mutex::new(HashMap::new()) }
    }

    /// A new session: its id (for the cookie) and the session.
    pub fn open(&self) -> (String, Session) {
        let id = random_hex(32);
        let session = Session { csrf: random_hex(32), expires: Instant::now() + self.lifetime };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn close(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// The cookie's lifetime in seconds.
    pub fn max_age(&self) -> u64 {
        self.lifetime.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_and_nothing_else() {
        let line = hash_password("correct horse");
        assert!(line.starts_with("pbkdf2-sha256$600000$"));
        assert!(verify_password("correct horse", &line));
        assert!(!verify_password("correct horsf", &line));
        assert_ne!(line, hash_password("correct horse"), "salted");
        for bad in ["", "pbkdf2-sha256$0$00$00", "pbkdf2-sha256$1$zz$00", "md5$1$00$00", "pbkdf2-sha256$1$00$00$00"] {
            assert!(!verify_password("", bad), "{bad}");
        }
        // A one-byte hash would let one password in 256 through: none may.
        let salt = "00".repeat(16);
        let one_byte = (0..=255u8).map(|b| format!("pbkdf2-sha256$1${salt}${b:02x}"));
        assert!(one_byte.into_iter().all(|line| (0..64).all(|i| !verify_password(&format!("guess {i}"), &line))));
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_secs(3600));
        let (id, session) = s.open();
        assert_eq!(id.len(), 64);
        assert_eq!(s.get(&id).map(|x| x.csrf), Some(session.csrf));
        s.close(&id);
        assert!(s.get(&id).is_none());
        let short = Sessions::new(Duration::ZERO);
        let (id, _) = short.open();
        assert!(short.get(&id).is_none(), "expired");
    }

    #[test]
    fn sessions_are_capped() {
        let s = Sessions::new(Duration::from_secs(3600));
        let first = s.open().0;
        for _ in 0..MAX_SESSIONS {
            s.open();
        }
        assert!(s.get(&first).is_none(), "the oldest made room");
        assert_eq!(s.map.lock().unwrap().len(), MAX_SESSIONS);
    }
}
