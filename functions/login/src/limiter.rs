//! Slows repeated login failures for one account.
//!
//! After [`FREE_FAILURES`] failures within [`WINDOW`], each further attempt
//! must wait twice as long as the last, up to [`MAX_WAIT`]. The state lives in
//! the process, so each login replica counts on its own.
//!
//! NOTE: with several replicas an attacker gets each replica's allowance;
//! a shared counter in the database would close that gap.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures allowed before attempts are slowed.
pub const FREE_FAILURES: u32 = 5;
/// How long a failure counts.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest wait imposed.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Accounts tracked at most; the oldest entries are dropped beyond it.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    blocked_until: Option<Instant>,
}

/// Failure counts per account.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    accounts: Mutex<HashMap<String, Failures>>,
}

impl FailureLimiter {
    pub fn new() -> FailureLimiter {
        FailureLimiter::default()
    }

    /// How long `account` must still wait, if it is blocked.
    pub fn blocked_for(&self, account: &str) -> Option<Duration> {
        let accounts = self.accounts.lock().expect("limiter lock is not poisoned");
        let until = accounts.get(account)?.blocked_until?;
        until
            .checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    pub fn record_failure(&self, account: &str) {
        let now = Instant::now();
        let mut accounts = self.accounts.lock().expect("limiter lock is not poisoned");
        if accounts.len() >= MAX_TRACKED {
            accounts.retain(|_, failures| now.duration_since(failures.first) < WINDOW);
        }
        let failures = accounts.entry(account.to_owned()).or_insert(Failures {
            count: 0,
            first: now,
            blocked_until: None,
        });
        if now.duration_since(failures.first) >= WINDOW
            && failures.blocked_until.is_none_or(|until| until <= now)
        {
            *failures = Failures {
                count: 0,
                first: now,
                blocked_until: None,
            };
        }
        failures.count += 1;
        if failures.count >= FREE_FAILURES {
            let excess = failures.count - FREE_FAILURES;
            let wait = Duration::from_secs(1u64 << excess.min(10)).min(MAX_WAIT);
            failures.blocked_until = Some(now + wait);
        }
    }

    pub fn record_success(&self, account: &str) {
        self.accounts
            .lock()
            .expect("limiter lock is not poisoned")
            .remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_free_failures() {
        let limiter = FailureLimiter::new();
        for _ in 0..FREE_FAILURES - 1 {
            limiter.record_failure("a@example.com");
            assert_eq!(limiter.blocked_for("a@example.com"), None);
        }
        limiter.record_failure("a@example.com");
        assert!(limiter.blocked_for("a@example.com").is_some());
        assert_eq!(limiter.blocked_for("b@example.com"), None);
        limiter.record_success("a@example.com");
        assert_eq!(limiter.blocked_for("a@example.com"), None);
    }

    #[test]
    fn waits_grow() {
        let limiter = FailureLimiter::new();
        for _ in 0..FREE_FAILURES + 3 {
            limiter.record_failure("a@example.com");
        }
        let wait = limiter.blocked_for("a@example.com").unwrap();
        assert!(
            wait > Duration::from_secs(4) && wait <= Duration::from_secs(8),
            "{wait:?}"
        );
    }
}
