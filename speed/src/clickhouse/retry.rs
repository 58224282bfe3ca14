//! Which ClickHouse failures are worth retrying, and how long to wait between attempts.
//!
//! Retryable: the server is unreachable, overloaded or restarting (network errors, timeouts,
//! HTTP 5xx without a permanent code, too many parts, memory limits, read-only tables). Missing
//! tables or database: run the migration again, then retry. Anything else (syntax, type
//! mismatch, permissions) is the operator's to fix: strata-speed stops with the error after a few
//! attempts instead of spinning forever — nothing is lost, since no offset moved.

use std::time::Duration;

/// What to do about a failed ClickHouse call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait and try again, as long as it takes.
    Retry,
    /// The schema is missing: migrate, then retry.
    Migrate,
    /// Give up after a few attempts: the request itself is wrong.
    Permanent,
}

/// ClickHouse exception codes that mean "try again later".
const RETRYABLE_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    164, // READONLY
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
];
/// Codes for a schema that is not there (yet).
const MIGRATE_CODES: &[u32] = &[60 /* UNKNOWN_TABLE */, 81 /* UNKNOWN_DATABASE */];

/// The `Code: N.` of a ClickHouse exception text, if any.
pub fn exception_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Classifies an error of the `clickhouse` crate.
pub fn classify(err: &clickhouse::error::Error) -> Verdict {
    use clickhouse::error::Error as E;
    match err {
        E::Network(_) | E::TimedOut => Verdict::Retry,
        E::BadResponse(text) => match exception_code(text) {
            Some(c) if MIGRATE_CODES.contains(&c) => Verdict::Migrate,
            Some(c) if RETRYABLE_CODES.contains(&c) => Verdict::Retry,
            Some(_) => Verdict::Permanent,
            // No exception code: a proxy or the server's HTTP layer (502/503 while restarting).
            None => Verdict::Retry,
        },
        _ => Verdict::Permanent,
    }
}

/// Exponential backoff: 100 ms, doubling, capped at `max`, with ±20 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts at 100 ms.
    pub fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100),
            max,
            attempts: 0,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts += 1;
        let base = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        let jitter = 0.8 + 0.4 * (rand_fraction(self.attempts));
        base.mul_f64(jitter)
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// A cheap deterministic-looking spread in [0, 1) without a random-number dependency.
fn rand_fraction(n: u32) -> f64 {
    let x = (n as u64 ^ std::process::id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as E;

    #[test]
    fn codes_are_read_from_exception_text() {
        assert_eq!(
            exception_code("Code: 252. DB::Exception: Too many parts (300)."),
            Some(252)
        );
        assert_eq!(
            exception_code(
                "bad response: Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"
            ),
            Some(60)
        );
        assert_eq!(exception_code("502 Bad Gateway"), None);
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&E::TimedOut), Verdict::Retry);
        assert_eq!(
            classify(&E::BadResponse(
                "Code: 252. DB::Exception: Too many parts".into()
            )),
            Verdict::Retry
        );
        assert_eq!(
            classify(&E::BadResponse("Code: 241. Memory limit".into())),
            Verdict::Retry
        );
        assert_eq!(
            classify(&E::BadResponse(
                "Code: 60. Table strata.speed_ingest_batch doesn't exist".into()
            )),
            Verdict::Migrate
        );
        assert_eq!(
            classify(&E::BadResponse("Code: 62. Syntax error".into())),
            Verdict::Permanent
        );
        assert_eq!(
            classify(&E::BadResponse("Code: 516. Authentication failed".into())),
            Verdict::Permanent
        );
        assert_eq!(
            classify(&E::BadResponse("503 Service Unavailable".into())),
            Verdict::Retry
        );
        assert_eq!(classify(&E::NotEnoughData), Verdict::Permanent);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(
            d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120),
            "{d:?}"
        );
        assert!(
            d[3] >= Duration::from_millis(640) && d[3] <= Duration::from_millis(960),
            "{d:?}"
        );
        assert!(d[7] <= Duration::from_millis(1200), "{d:?}");
        assert_eq!(b.attempts(), 8);
    }
}
