//! The dashboard's sessions: logging in with the admin token sets the
//! cookie `wasmhost_session=EXPIRY.MAC` — `HttpOnly`, `SameSite=Strict`,
//! path `/` — where MAC is HMAC-SHA256, keyed by the admin token, of
//! `wasmhost-session:EXPIRY` (seconds since the Unix epoch).
//!
//! Invariant: a cookie is accepted only with a MAC made from the current
//! token (compared in constant time) and an expiry still ahead, so a new
//! token ends every session and an old cookie is refused as expired even
//! if a browser kept it. Nothing is stored: any replica with the same
//! token accepts the same cookie.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "wasmhost_session";
/// How long a login lasts.
pub const TTL: Duration = Duration::from_secs(8 * 3600);

/// What a request's cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// No session cookie.
    Missing,
    /// A cookie this token made, still valid.
    Valid,
    /// A cookie this token made, past its expiry.
    Expired,
    /// A cookie of another token, or not a session at all.
    Invalid,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(token: &str, expiry: u64) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("wasmhost-session:{expiry}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new session's cookie value, valid for [`TTL`].
pub fn issue(token: &str) -> String {
    let expiry = now_secs() + TTL.as_secs();
    format!("{expiry}.{}", mac(token, expiry))
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Judges the session cookie among `cookies` (a `Cookie` header).
pub fn check(token: &str, cookies: Option<&str>) -> Session {
    check_at(token, cookies, now_secs())
}

fn check_at(token: &str, cookies: Option<&str>, now: u64) -> Session {
    let value = cookies.and_then(|all| {
        all.split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, v)| v)
    });
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Session::Missing;
    };
    let Some((expiry, presented)) = value.split_once('.') else {
        return Session::Invalid;
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return Session::Invalid;
    };
    let expected = mac(token, expiry);
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Session::Invalid;
    }
    if expiry <= now {
        Session::Expired
    } else {
        Session::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_holds_until_it_expires_and_only_for_its_token() {
        let value = issue("secret");
        let header = format!("theme=dark; {COOKIE}={value}");
        assert_eq!(check("secret", Some(&header)), Session::Valid);
        assert_eq!(check("other", Some(&header)), Session::Invalid);
        let later = now_secs() + TTL.as_secs() + 1;
        assert_eq!(check_at("secret", Some(&header), later), Session::Expired);
        assert_eq!(check("secret", Some("theme=dark")), Session::Missing);
        assert_eq!(check("secret", None), Session::Missing);
        let forged = format!("{COOKIE}=99999999999.{}", mac("secret", 1));
        assert_eq!(check("secret", Some(&forged)), Session::Invalid);
        assert_eq!(
            check("secret", Some(&format!("{COOKIE}=junk"))),
            Session::Invalid
        );
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site() {
        let c = set_cookie("1.ab");
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
