//! Who may do what: admin passwords (argon2id), API keys (random, stored as
//! SHA-256, scoped), sessions with their CSRF token, and the login rate
//! limit. Sessions live in memory: restarting the dashboard logs everybody out.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "rb_session";
/// The login form's CSRF cookie (double submit: the form carries the same value).
pub const LOGIN_COOKIE: &str = "rb_login";
/// The shortest password `rundbrief admin user add` accepts.
pub const MIN_PASSWORD_LEN: usize = 12;

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reads only.
    Read,
    /// Reads and actions (pause, resume).
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            other => Err(format!(
                "`{other}` is not a key scope; expected read or write"
            )),
        }
    }
}

/// `n` random bytes from the operating system, as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the operating system's random source works");
    data_encoding::HEXLOWER.encode(&buf)
}

/// The argon2id PHC string of `password` with a fresh random salt (the
/// crate's default parameters: 19 MiB, 2 passes, 1 lane, as OWASP advises).
///
/// # Errors
/// Only if argon2 refuses its own defaults (it does not).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string (false for a string
/// that does not parse).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash to verify against when the user does not exist, so that an
/// unknown name takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

/// Password checks that may run at once: each takes 19 MiB and tens of
/// milliseconds on purpose, so a flood of logins from many addresses (each
/// within its rate limit) must queue rather than exhaust memory.
const CONCURRENT_CHECKS: usize = 4;
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_CHECKS);

/// Checks a login against the stored hash (or the dummy one) off the
/// async threads, at most [`CONCURRENT_CHECKS`] at a time.
pub async fn check_login(stored: Option<String>, password: String) -> bool {
    let Ok(_slot) = CHECKS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| dummy_hash().to_string());
        verify_password(&password, &phc) && known
    })
    .await
    .unwrap_or(false)
}

/// A new API key: `rbk_` and 64 hex digits (256 random bits).
pub fn new_api_key() -> String {
    format!("rbk_{}", random_hex(32))
}

/// What is stored of a key: its SHA-256 in hex (a key has 256 random bits,
/// so a fast hash is enough; nobody can guess one to match).
pub fn key_hash(key: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(key.as_bytes()))
}

/// Equal strings, compared in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always, Secure when asked.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The bearer token of `Authorization: Bearer KEY`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (kind, token) = v.split_once(' ')?;
    kind.eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A logged-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    pub admin: String,
    /// The token every state-changing form of this session must carry.
    pub csrf: String,
    expires: Instant,
}

/// The sessions, by the SHA-256 of their cookie value (a memory dump does
/// not give away live cookies).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// Starts a session for `admin`; returns the cookie value.
    pub fn create(&self, admin: &str, ttl: Duration) -> String {
        let token = random_hex(32);
        let s = Session {
            admin: admin.to_string(),
            csrf: random_hex(32),
            expires: Instant::now() + ttl,
        };
        self.lock().insert(key_hash(&token), s);
        token
    }

    /// The live session of the request's cookie.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let key = key_hash(token);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the request's session.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, SESSION_COOKIE) {
            self.lock().remove(&key_hash(token));
        }
    }

    pub fn evict_expired(&self) {
        let now = Instant::now();
        self.lock().retain(|_, s| s.expires > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keys kept before idle ones are evicted early: bounds the memory many
/// source addresses or names can make us use.
const MAX_KEYS: usize = 100_000;

/// Login attempts per client IP and per user name, and the lock-out of a
/// name after repeated failures.
pub struct LoginLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_name: DefaultKeyedRateLimiter<String>,
    lockout: Lockout,
}

/// After `after` failed logins in a row, a name is locked for `duration`
/// (even the right password waits); a success clears its count.
pub struct Lockout {
    after: u32,
    duration: Duration,
    failures: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

impl LoginLimits {
    /// `per_minute` attempts a minute for each key (0 counts as 1), the whole
    /// minute's allowance as burst; a name locked for `lock_for` after
    /// `lock_after` failures in a row (0: never).
    pub fn new(per_minute: u32, lock_after: u32, lock_for: Duration) -> LoginLimits {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(n);
        LoginLimits {
            per_ip: RateLimiter::keyed(quota),
            per_name: RateLimiter::keyed(quota),
            lockout: Lockout {
                after: lock_after,
                duration: lock_for,
                failures: Mutex::default(),
            },
        }
    }

    /// `Some(seconds)` while `name` is locked out.
    pub fn locked(&self, name: &str) -> Option<u64> {
        let map = self.failures();
        let until = map.get(&name.to_lowercase())?.1?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(left.as_secs() + 1)
    }

    /// Counts a failed login for `name`; true when it locked the name now.
    pub fn failed(&self, name: &str) -> bool {
        if self.lockout.after == 0 {
            return false;
        }
        let mut map = self.failures();
        if map.len() > MAX_KEYS {
            let now = Instant::now();
            map.retain(|_, (_, until)| until.is_some_and(|u| u > now));
        }
        let entry = map.entry(name.to_lowercase()).or_insert((0, None));
        entry.0 += 1;
        if entry.0 >= self.lockout.after {
            *entry = (0, Some(Instant::now() + self.lockout.duration));
            return true;
        }
        false
    }

    /// A successful login: the name's failures are forgotten.
    pub fn succeeded(&self, name: &str) {
        self.failures().remove(&name.to_lowercase());
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Option<Instant>)>> {
        self.lockout
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one attempt for `ip` and `name`; `Err(seconds)` to wait.
    pub fn check(&self, ip: IpAddr, name: &str) -> Result<(), u64> {
        if self.per_ip.len() > MAX_KEYS || self.per_name.len() > MAX_KEYS {
            self.evict_idle();
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.per_ip.check_key(&ip).map_err(wait_secs)?;
        self.per_name
            .check_key(&name.to_lowercase())
            .map_err(wait_secs)
    }

    pub fn evict_idle(&self) {
        self.per_ip.retain_recent();
        self.per_name.retain_recent();
    }
}

fn wait_secs(n: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    use governor::clock::{Clock, DefaultClock};
    n.wait_time_from(DefaultClock::default().now()).as_secs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[tokio::test]
    async fn logins_check_the_hash_and_queue_beyond_the_limit() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(
            !check_login(None, "correct horse battery".into()).await,
            "no such user"
        );
        let all = (0..2 * CONCURRENT_CHECKS).map(|i| {
            let (h, pw) = (
                h.clone(),
                if i % 2 == 0 {
                    "correct horse battery"
                } else {
                    "wrong"
                },
            );
            tokio::spawn(check_login(Some(h), pw.to_string()))
        });
        let mut results = Vec::new();
        for t in all {
            results.push(t.await.unwrap());
        }
        let expected: Vec<bool> = (0..2 * CONCURRENT_CHECKS).map(|i| i % 2 == 0).collect();
        assert_eq!(results, expected);
        assert_eq!(
            CHECKS.available_permits(),
            CONCURRENT_CHECKS,
            "every slot is given back"
        );
    }

    #[test]
    fn names_are_locked_out_after_failures_in_a_row() {
        let l = LoginLimits::new(100, 3, Duration::from_secs(60));
        assert!(!l.failed("Ann") && !l.failed("ann"));
        l.succeeded("ANN");
        assert!(
            !l.failed("ann") && !l.failed("ann"),
            "a success started the count over"
        );
        assert_eq!(l.locked("ann"), None);
        assert!(l.failed("ann"), "the third in a row locks");
        assert!((1..=60).contains(&l.locked("Ann").unwrap()));
        assert_eq!(l.locked("bob"), None);
        let never = LoginLimits::new(100, 0, Duration::from_secs(60));
        assert!((0..50).all(|_| !never.failed("ann")) && never.locked("ann").is_none());
    }

    #[test]
    fn keys_are_random_and_stored_as_sha256() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(key_hash(&a).len(), 64);
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cookies_and_bearer_tokens_are_found() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; rb_session=xyz; b=2".parse().unwrap());
        h.insert("authorization", "Bearer  rbk_1 ".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "rb_sess"), None);
        assert_eq!(bearer(&h), Some("rbk_1"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn logins_are_limited_per_ip_and_per_name() {
        let l = LoginLimits::new(2, 0, Duration::ZERO);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(ip, "ann").is_ok() && l.check(ip, "bob").is_ok());
        assert!(
            l.check(ip, "cid").unwrap_err() > 0,
            "the IP's allowance is used"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.check(other, "Ann").is_ok());
        assert!(
            l.check(other, "ann").is_err(),
            "the name's allowance is used"
        );
    }
}
