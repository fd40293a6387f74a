//! The retry budget and jittered exponential backoff.
//!
//! Retries move across endpoints first (a failed endpoint is skipped at once) and
//! back off only after a full pass over every endpoint has failed, so a single dead
//! node costs one fast connection error rather than a sleep.

use std::time::Duration;

use rand::Rng as _;

/// The longest `Retry-After` a long-lived retrier honours; a larger one is
/// taken as this (a misconfigured node must not park a fleet for hours).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How hard the client tries before giving up. Bounded both by a number of
/// attempts and by a deadline so a call never hangs for long on a sick cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// No new attempt starts after this much time since the call began.
    pub deadline: Duration,
    /// Backoff after the first failed pass over all endpoints.
    pub initial_backoff: Duration,
    /// Cap on the backoff (before jitter), and on how long a `Retry-After` is honoured.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            deadline: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// After `attempt` failed attempts of a request started at `started`:
    /// waits the backoff before the next one and returns `true`, or returns
    /// `false` at once when the attempts or the deadline are used up.
    pub(crate) async fn wait_for_next(
        &self,
        attempt: u32,
        endpoints: usize,
        retry_after: Option<Duration>,
        started: std::time::Instant,
    ) -> bool {
        if attempt >= self.max_attempts {
            return false;
        }
        let delay = self.delay_before(attempt + 1, endpoints, retry_after);
        if started.elapsed() + delay > self.deadline {
            return false;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        true
    }

    /// The pause before attempt number `next_attempt` (1-based; the first attempt
    /// is 1) when `endpoints` endpoints are configured. Zero while the current pass
    /// still has endpoints left to try. `retry_after` is the server's `Retry-After`,
    /// honoured as a floor up to `max_backoff`.
    pub(crate) fn delay_before(
        &self,
        next_attempt: u32,
        endpoints: usize,
        retry_after: Option<Duration>,
    ) -> Duration {
        let endpoints = u32::try_from(endpoints.max(1)).unwrap_or(u32::MAX);
        let done = next_attempt.saturating_sub(1);
        // Passes over all endpoints completed so far, and attempts into the next one.
        let (pass, into_pass) = (done / endpoints, done % endpoints);
        if pass == 0 || into_pass > 0 {
            return Duration::ZERO;
        }
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << (pass - 1).min(16))
            .min(self.max_backoff);
        // "Equal jitter": half fixed, half random, so clients that failed together
        // do not come back together, yet nobody retries immediately.
        let half = base / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..=half)
        };
        (half + jitter).max(self.retry_after_floor(retry_after))
    }

    /// The pause after the `failures`-th consecutive refusal for load (a
    /// `429` or `503` with `Retry-After`), for callers that retry for as long
    /// as they live (replica bootstraps, watches): never shorter than the
    /// server's `Retry-After` (up to [`MAX_RETRY_AFTER`]), growing
    /// exponentially from `initial_backoff` up to `max_backoff` when that is
    /// longer, plus up to half again at random so that a fleet refused
    /// together does not come back together.
    pub(crate) fn busy_delay(&self, failures: u32, retry_after: Duration) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let base = retry_after.min(MAX_RETRY_AFTER).max(exponential);
        let half = base / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..=half)
        };
        base + jitter
    }

    /// A server's `Retry-After` as the least pause to honour, capped at `max_backoff`.
    pub(crate) fn retry_after_floor(&self, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or(Duration::ZERO).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_endpoints_before_backing_off() {
        let p = RetryPolicy::default();
        // Three endpoints: attempts 2 and 3 go to the other endpoints at once.
        assert_eq!(p.delay_before(1, 3, None), Duration::ZERO);
        assert_eq!(p.delay_before(2, 3, None), Duration::ZERO);
        assert_eq!(p.delay_before(3, 3, None), Duration::ZERO);
        // Attempt 4 starts the second pass: backoff in [25ms, 50ms].
        let d = p.delay_before(4, 3, None);
        assert!(d >= Duration::from_millis(25) && d <= Duration::from_millis(50));
        // Third pass: [50ms, 100ms].
        let d = p.delay_before(7, 3, None);
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
    }

    #[test]
    fn busy_delay_obeys_retry_after_grows_and_is_jittered() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(4),
            ..RetryPolicy::default()
        };
        let second = Duration::from_secs(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            // Early: the Retry-After is the floor, plus up to half of it.
            let d = p.busy_delay(1, second);
            assert!(d >= second && d <= second * 3 / 2, "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 1, "no jitter: {seen:?}");
        // Later: exponential, capped at max_backoff (plus jitter).
        let d = p.busy_delay(6, second);
        assert!(
            d >= Duration::from_millis(3200) && d <= Duration::from_millis(4800),
            "{d:?}"
        );
        for failures in 7..40 {
            let d = p.busy_delay(failures, second);
            assert!(d >= p.max_backoff && d <= p.max_backoff * 3 / 2, "{d:?}");
        }
        // A huge Retry-After is obeyed up to the ceiling.
        let d = p.busy_delay(1, Duration::from_secs(3600));
        assert!(
            d >= MAX_RETRY_AFTER && d <= MAX_RETRY_AFTER * 3 / 2,
            "{d:?}"
        );
    }

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for attempt in 2..40 {
            assert!(p.delay_before(attempt, 1, None) <= p.max_backoff);
        }
        let d = p.delay_before(2, 1, Some(Duration::from_millis(700)));
        assert!(d >= Duration::from_millis(700));
        let d = p.delay_before(2, 1, Some(Duration::from_secs(60)));
        assert_eq!(d, p.max_backoff);
        // Retry-After does not delay a switch to another endpoint mid-pass.
        assert_eq!(
            p.delay_before(2, 3, Some(Duration::from_secs(1))),
            Duration::ZERO
        );
    }
}
