//! Who is calling (session cookie → [`UserScope`]) and whether a mutating request comes
//! from the application's own origin (CSRF guard).
//!
//! The cookie holds a random token; only its SHA-256 hash is stored, in the auth-sessions
//! table, next to the user id, the active organisation id and an expiry (also the TTL).
//!
//! Looked-up cookies are cached in the container for a short time (`AUTH_CACHE_TTL_SECS`,
//! default 5 s, 0 disables) so that a burst of requests costs one read. The cache never
//! outlives the stored expiry; the price is that revoking a token takes up to that TTL to
//! reach containers that have it cached.
//!
//! Unknown cookies are cheap too: a value that is not token-shaped (43 base64url
//! characters) is refused without a read, and a well-formed token the table does not hold
//! is remembered as unknown for the same TTL (bounded like the cache), so repeating it costs
//! no read. Tokens are random 256-bit values stored before they are handed out, so an
//! unknown token does not become valid later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use lambda_http::{Request, http::Method};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::config::Config;
use crate::domain::UserScope;
use crate::error::ApiError;
use crate::http::header_values;
use crate::store::auth_sessions::{AuthRecord, AuthSessionStore};

/// Most cached cookies per container; the cache is emptied when it is full.
const AUTH_CACHE_CAPACITY: usize = 4096;

/// A new random session token (256 bits, base64url without padding): the cookie value.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Characters in a token: 32 bytes in base64url without padding.
const TOKEN_LEN: usize = 43;

/// Whether `value` has the shape of a token [`new_token`] makes: 43 base64url characters.
/// A cookie value without that shape cannot be stored, so it is refused without a read.
pub fn is_token_shaped(value: &str) -> bool {
    value.len() == TOKEN_LEN
        && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The stored form of a token: lowercase hex SHA-256. The token itself is never stored.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value of cookie `name` in the request's `Cookie` header(s), if present and non-empty.
///
/// Browsers send every cookie of the site joined in one header, including cookies other
/// applications set, whose values may hold any bytes (UTF-8 text, Latin-1, anything). So the
/// header is split as raw bytes, and only the value of `name` has to be text (our tokens
/// are base64url): an unrelated cookie can never hide the session cookie.
pub fn cookie_value<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all("cookie")
        .iter()
        .flat_map(|header| header.as_bytes().split(|byte| *byte == b';'))
        .filter_map(|pair| {
            let equals = pair.iter().position(|byte| *byte == b'=')?;
            Some((pair[..equals].trim_ascii(), &pair[equals + 1..]))
        })
        .find(|(key, _)| *key == name.as_bytes())
        .and_then(|(_, value)| std::str::from_utf8(value.trim_ascii()).ok())
        .map(|value| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// For POST, PUT, PATCH and DELETE: 403 unless the request carries exactly one `Origin`
/// header equal to `allowed`. Reads (GET, HEAD, OPTIONS) need none.
pub fn require_same_origin(request: &Request, allowed: &str) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let mut origins = header_values(request, "origin");
    match (origins.next(), origins.next()) {
        (Some(origin), None) if origin == allowed => Ok(()),
        _ => Err(ApiError::ForeignOrigin { allowed: allowed.to_owned() }),
    }
}

#[derive(Debug, Clone)]
struct CachedScope {
    scope: UserScope,
    expires_at_secs: i64,
    cached_at: Instant,
}

/// Turns a request's session cookie into the caller's [`UserScope`].
#[derive(Debug)]
pub struct Authenticator {
    store: AuthSessionStore,
    cookie_name: String,
    allowed_origin: String,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, CachedScope>>,
    /// Hashes of well-formed tokens the table did not hold, and when that was read.
    unknown: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    /// An authenticator reading `store`, configured from `config`.
    pub fn new(store: AuthSessionStore, config: &Config) -> Self {
        Self {
            store,
            cookie_name: config.cookie_name.clone(),
            allowed_origin: config.allowed_origin.clone(),
            cache_ttl: config.auth_cache_ttl,
            cache: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
        }
    }

    /// The caller's scope, or 401 when the cookie is missing, unknown or expired.
    pub async fn authenticate(&self, request: &Request) -> Result<UserScope, ApiError> {
        let scope = self.look_up(request).await?;
        crate::telemetry::record_user(scope.user_id());
        Ok(scope)
    }

    async fn look_up(&self, request: &Request) -> Result<UserScope, ApiError> {
        let token = cookie_value(request, &self.cookie_name)
            .ok_or(ApiError::Unauthenticated("sign in required: no session cookie"))?;
        if !is_token_shaped(token) {
            // The answer an unknown token gets, without the read.
            return Err(ApiError::Unauthenticated("session cookie is not valid"));
        }
        let hash = token_hash(token);
        let now = Timestamp::now();
        if let Some(scope) = self.cached(&hash, now) {
            return Ok(scope);
        }
        if self.known_unknown(&hash) {
            return Err(ApiError::Unauthenticated("session cookie is not valid"));
        }
        let Some(record) = self.store.get(&hash).await? else {
            self.remember_unknown(hash);
            return Err(ApiError::Unauthenticated("session cookie is not valid"));
        };
        if record.expires_at_secs <= now.epoch_secs() {
            return Err(ApiError::Unauthenticated("session cookie has expired"));
        }
        let AuthRecord { user_id, org_id, expires_at_secs } = record;
        let scope = UserScope::from_auth_record(user_id, org_id);
        self.remember(hash, &scope, expires_at_secs);
        Ok(scope)
    }

    /// 403 unless a mutating request carries exactly the configured `Origin`.
    pub fn require_same_origin(&self, request: &Request) -> Result<(), ApiError> {
        require_same_origin(request, &self.allowed_origin)
    }

    fn cached(&self, hash: &str, now: Timestamp) -> Option<UserScope> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        let cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(hash)
            .filter(|entry| entry.cached_at.elapsed() < self.cache_ttl)
            .filter(|entry| entry.expires_at_secs > now.epoch_secs())
            .map(|entry| entry.scope.clone())
    }

    fn known_unknown(&self, hash: &str) -> bool {
        if self.cache_ttl.is_zero() {
            return false;
        }
        let unknown = self.unknown.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        unknown.get(hash).is_some_and(|read_at| read_at.elapsed() < self.cache_ttl)
    }

    fn remember_unknown(&self, hash: String) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut unknown = self.unknown.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if unknown.len() >= AUTH_CACHE_CAPACITY {
            unknown.clear();
        }
        unknown.insert(hash, Instant::now());
    }

    fn remember(&self, hash: String, scope: &UserScope, expires_at_secs: i64) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= AUTH_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(
            hash,
            CachedScope { scope: scope.clone(), expires_at_secs, cached_at: Instant::now() },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    fn with_cookies(values: &[&str]) -> Request {
        let mut builder = lambda_http::http::Request::builder();
        for value in values {
            builder = builder.header("cookie", *value);
        }
        builder.body(Body::Empty).unwrap()
    }

    fn post_with_origins(origins: &[&str]) -> Request {
        let mut builder = lambda_http::http::Request::builder().method("POST");
        for origin in origins {
            builder = builder.header("origin", *origin);
        }
        builder.body(Body::Empty).unwrap()
    }

    #[test]
    fn mutating_request_needs_exactly_the_allowed_origin() {
        let allowed = "https://knoq.one";
        assert!(require_same_origin(&post_with_origins(&[allowed]), allowed).is_ok());
        for origins in [
            vec![],
            vec!["https://evil.example"],
            vec!["https://knoq.one.evil.example"],
            vec!["http://knoq.one"],
            vec!["null"],
            vec![allowed, "https://evil.example"],
        ] {
            let err = require_same_origin(&post_with_origins(&origins), allowed).unwrap_err();
            assert_eq!(err.status(), 403, "{origins:?}");
        }
    }

    #[test]
    fn reads_need_no_origin() {
        let get = lambda_http::http::Request::builder().method("GET").body(Body::Empty).unwrap();
        assert!(require_same_origin(&get, "https://knoq.one").is_ok());
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn only_token_shaped_values_are_looked_up() {
        assert!(is_token_shaped(&new_token()));
        let token = new_token();
        for value in [
            "",
            "tok",
            &token[..42],
            &format!("{token}A"),
            &format!("{}=", &token[..42]),
            &format!("{}+", &token[..42]),
            &format!("{}/", &token[..42]),
            &format!("{}é", &token[..41]),
            &format!("{} ", &token[..42]),
        ] {
            assert!(!is_token_shaped(value), "{value:?}");
        }
    }

    #[test]
    fn cookie_is_found_among_others_and_across_headers() {
        let req = with_cookies(&["a=1; knoq_session=tok; b=2"]);
        assert_eq!(cookie_value(&req, "knoq_session"), Some("tok"));
        let req = with_cookies(&["a=1", "knoq_session=tok2"]);
        assert_eq!(cookie_value(&req, "knoq_session"), Some("tok2"));
    }

    #[test]
    fn unrelated_cookies_with_any_bytes_do_not_hide_the_session_cookie() {
        let with_raw = |raw: &[u8]| {
            let value = lambda_http::http::HeaderValue::from_bytes(raw).unwrap();
            lambda_http::http::Request::builder().header("cookie", value).body(Body::Empty).unwrap()
        };
        for raw in [
            "pref=caf\u{e9}; knoq_session=tok".as_bytes(),
            b"pref=caf\xe9; knoq_session=tok",
            b"\xff\xfe=\x80; knoq_session=tok; \xe9=\xe9",
            b"knoq_session=tok; pref=caf\xe9",
        ] {
            let request = with_raw(raw);
            assert_eq!(cookie_value(&request, "knoq_session"), Some("tok"), "{raw:?}");
        }
        let not_text = with_raw(b"knoq_session=t\xe9k");
        assert_eq!(cookie_value(&not_text, "knoq_session"), None, "a token is always text");
    }

    #[test]
    fn missing_empty_or_similarly_named_cookie_is_none() {
        assert_eq!(cookie_value(&with_cookies(&[]), "knoq_session"), None);
        assert_eq!(cookie_value(&with_cookies(&["knoq_session="]), "knoq_session"), None);
        assert_eq!(cookie_value(&with_cookies(&["xknoq_session=t"]), "knoq_session"), None);
    }
}
