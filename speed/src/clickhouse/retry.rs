//! Which ClickHouse failures are worth retrying, and how long to wait between attempts.
//!
//! Retryable: the server is unreachable, overloaded or restarting (network errors, timeouts,
//! HTTP 5xx without a permanent code, too many parts, memory limits, read-only tables). Missing
//! tables or database: run the migration again, then retry. Anything else (syntax, type
//! mismatch, permissions) is the operator's to fix: strata-speed stops with the error after a few
//! attempts instead of spinning forever — nothing is lost, since no offset moved. The wait
//! between attempts is the shared [`Backoff`].

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

/// The wait between attempts: Strata's one backoff (from 100 ms, doubling, capped, jittered).
pub use strata_shared::retry::Backoff;

/// The first wait after a failed ClickHouse call.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

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
}
