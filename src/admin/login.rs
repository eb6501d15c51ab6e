//! One-time login codes: what a link like `http://127.0.0.1:9901/#login=<code>` carries
//! and `POST /api/v1/login` exchanges for the admin token.
//!
//! A code is 128 random bits (32 hex digits), good once, for [`CODE_LIFETIME`]; it is
//! compared in constant time with every live code. Failed attempts are limited:
//! after [`MAX_FAILURES`] within [`FAILURE_WINDOW`] every attempt is refused, right
//! code or not, until the oldest failure leaves the window.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a code can be exchanged.
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// Failed attempts allowed within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 10;

/// The window [`MAX_FAILURES`] counts in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Live codes kept at most (the oldest goes first).
const MAX_CODES: usize = 16;

/// The live codes and the recent failures.
#[derive(Default)]
pub struct Logins {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Code and when it stops being good.
    codes: VecDeque<(String, Instant)>,
    failures: VecDeque<Instant>,
}

/// Why a code was not accepted.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// Unknown, used or expired.
    Invalid,
    /// Too many failed attempts: try again after this long.
    TooMany(Duration),
}

impl Logins {
    /// A fresh code, good once for [`CODE_LIFETIME`].
    pub fn issue(&self) -> io::Result<String> {
        let code = super::random_hex(16)?;
        self.issue_at(code.clone(), Instant::now());
        Ok(code)
    }

    fn issue_at(&self, code: String, now: Instant) {
        let mut inner = self.lock();
        inner.codes.retain(|(_, until)| *until > now);
        if inner.codes.len() >= MAX_CODES {
            inner.codes.pop_front();
        }
        inner.codes.push_back((code, now + CODE_LIFETIME));
    }

    /// Use `code`: `Ok` once for a live code (which is then gone).
    pub fn redeem(&self, code: &str) -> Result<(), Refused> {
        self.redeem_at(code, Instant::now())
    }

    fn redeem_at(&self, code: &str, now: Instant) -> Result<(), Refused> {
        let mut inner = self.lock();
        while inner
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            inner.failures.pop_front();
        }
        if inner.failures.len() >= MAX_FAILURES {
            let oldest = inner.failures.front().copied().unwrap_or(now);
            return Err(Refused::TooMany(
                FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)),
            ));
        }
        inner.codes.retain(|(_, until)| *until > now);
        // Every live code is compared, so the time taken says nothing about which.
        let mut found = None;
        for (i, (live, _)) in inner.codes.iter().enumerate() {
            if super::routes::constant_time_eq(live.as_bytes(), code.as_bytes()) {
                found = Some(i);
            }
        }
        match found {
            Some(i) => {
                inner.codes.remove(i);
                Ok(())
            }
            None => {
                inner.failures.push_back(now);
                Err(Refused::Invalid)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once() {
        let logins = Logins::default();
        let code = logins.issue().unwrap();
        assert_eq!(code.len(), 32, "128 bits as hex");
        assert!(code.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(logins.issue().unwrap(), code);
        assert_eq!(logins.redeem(&code), Ok(()));
        assert_eq!(logins.redeem(&code), Err(Refused::Invalid));
    }

    #[test]
    fn a_code_expires_after_ten_minutes() {
        let logins = Logins::default();
        let t0 = Instant::now();
        logins.issue_at("a".repeat(32), t0);
        logins.issue_at("b".repeat(32), t0);
        let almost = t0 + CODE_LIFETIME - Duration::from_secs(1);
        assert_eq!(logins.redeem_at(&"a".repeat(32), almost), Ok(()));
        assert_eq!(
            logins.redeem_at(&"b".repeat(32), t0 + CODE_LIFETIME),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn failures_are_limited_even_for_the_right_code() {
        let logins = Logins::default();
        let t0 = Instant::now();
        logins.issue_at("c".repeat(32), t0);
        for i in 0..MAX_FAILURES {
            assert_eq!(
                logins.redeem_at("wrong", t0 + Duration::from_secs(i as u64)),
                Err(Refused::Invalid)
            );
        }
        let t = t0 + Duration::from_secs(20);
        assert_eq!(
            logins.redeem_at(&"c".repeat(32), t),
            Err(Refused::TooMany(Duration::from_secs(40)))
        );
        // Once the first failure leaves the window, the right code works again.
        assert_eq!(
            logins.redeem_at(&"c".repeat(32), t0 + FAILURE_WINDOW),
            Ok(())
        );
    }

    #[test]
    fn live_codes_are_bounded() {
        let logins = Logins::default();
        let t0 = Instant::now();
        for i in 0..MAX_CODES + 1 {
            logins.issue_at(format!("{i:032}"), t0);
        }
        assert_eq!(
            logins.redeem_at(&format!("{:032}", 0), t0),
            Err(Refused::Invalid)
        );
        assert_eq!(logins.redeem_at(&format!("{:032}", 1), t0), Ok(()));
    }
}
