//! Why a message was refused: the typed reason every decode or validation failure carries.
//!
//! A [`Reject`] travels with the untouched message to the dead-letter topic: its [`Reject::code`]
//! goes into the `strata.reason` header and into the DLQ counter's `reason` label, its `Display`
//! text into `strata.error`. Codes are part of Strata's external contract: they never change
//! meaning once published.

/// The reason a message was refused. `Display` gives a sentence for a human; [`Reject::code`]
/// a stable identifier for machines.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// The Kafka message had no value, or a zero-length one.
    #[error("empty payload")]
    EmptyPayload,
    /// The message is larger than `validation.max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the message value in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A Confluent wire-format frame (magic byte 0) that is truncated or names a message other
    /// than `analytics.MetricEvent`.
    #[error("bad Confluent frame: {0}")]
    BadFrame(String),
    /// The body looked like JSON (it starts with `{` or `[`) but is not valid JSON, or not an object.
    #[error("invalid JSON: {0}")]
    BadJson(String),
    /// The body is not a valid `analytics.MetricEvent` Protobuf message.
    #[error("invalid Protobuf: {0}")]
    BadProtobuf(String),
    /// A required field is absent (or empty, in Protobuf where absence cannot be told apart).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field, e.g. `value` or `tags.region`.
        field: String,
        /// What it must be, e.g. "a number".
        expected: &'static str,
    },
    /// `value` is NaN or infinite.
    #[error("value {0} is not finite")]
    NonFiniteValue(f64),
    /// `timestamp_ms` is older than `validation.max_past` before now.
    #[error("timestamp {timestamp_ms} is before the oldest accepted time {min_ms}")]
    TimestampTooOld {
        /// The event's timestamp.
        timestamp_ms: i64,
        /// The oldest accepted timestamp at the time of the check.
        min_ms: i64,
    },
    /// `timestamp_ms` is further than `validation.max_future` after now.
    #[error("timestamp {timestamp_ms} is after the newest accepted time {max_ms}")]
    TimestampInFuture {
        /// The event's timestamp.
        timestamp_ms: i64,
        /// The newest accepted timestamp at the time of the check.
        max_ms: i64,
    },
    /// `event_id` is empty of content, too long, or has control characters.
    #[error("bad event_id: {0}")]
    BadEventId(String),
    /// `metric_name` does not match `[a-zA-Z_:][a-zA-Z0-9_:.]*` or is too long.
    #[error("bad metric_name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:.]* and be at most the configured length")]
    BadMetricName(String),
    /// A tag key does not match `[a-zA-Z_][a-zA-Z0-9_]*` or is too long.
    #[error(
        "bad tag key {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and be at most the configured length"
    )]
    BadTagKey(String),
    /// A tag key that Strata reserves for itself (`source`, `quantile`, or starting with `__`).
    #[error(
        "tag key {0:?} is reserved (source, quantile and keys starting with __ belong to Strata)"
    )]
    ReservedTagKey(String),
    /// A tag value that is empty or too long.
    #[error("bad value for tag {key:?}: {problem}")]
    BadTagValue {
        /// The tag's key.
        key: String,
        /// What is wrong with the value.
        problem: String,
    },
    /// More tags than `validation.max_tags`.
    #[error("{count} tags exceed the limit of {max}")]
    TooManyTags {
        /// Number of tags on the event.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// `source` is too long or has control characters.
    #[error("bad source: {0}")]
    BadSource(String),

    /// A StatsD line that cannot be read (`name:value|type[|@rate][|#tags]`).
    #[error("bad StatsD line: {0}")]
    BadStatsd(String),
}

impl Reject {
    /// Every reason code, in declaration order (for metrics pre-registration and docs).
    pub const CODES: &'static [&'static str] = &[
        "empty_payload",
        "too_large",
        "bad_frame",
        "bad_json",
        "bad_protobuf",
        "missing_field",
        "wrong_type",
        "non_finite_value",
        "timestamp_too_old",
        "timestamp_in_future",
        "bad_event_id",
        "bad_metric_name",
        "bad_tag_key",
        "reserved_tag_key",
        "bad_tag_value",
        "too_many_tags",
        "bad_source",
        "bad_statsd",
    ];

    /// The stable machine-readable reason code (the DLQ `strata.reason` header).
    ///
    /// ```
    /// use strata_shared::Reject;
    /// assert_eq!(Reject::MissingField("value").code(), "missing_field");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Reject::EmptyPayload => "empty_payload",
            Reject::TooLarge { .. } => "too_large",
            Reject::BadFrame(_) => "bad_frame",
            Reject::BadJson(_) => "bad_json",
            Reject::BadProtobuf(_) => "bad_protobuf",
            Reject::MissingField(_) => "missing_field",
            Reject::WrongType { .. } => "wrong_type",
            Reject::NonFiniteValue(_) => "non_finite_value",
            Reject::TimestampTooOld { .. } => "timestamp_too_old",
            Reject::TimestampInFuture { .. } => "timestamp_in_future",
            Reject::BadEventId(_) => "bad_event_id",
            Reject::BadMetricName(_) => "bad_metric_name",
            Reject::BadTagKey(_) => "bad_tag_key",
            Reject::ReservedTagKey(_) => "reserved_tag_key",
            Reject::BadTagValue { .. } => "bad_tag_value",
            Reject::TooManyTags { .. } => "too_many_tags",
            Reject::BadSource(_) => "bad_source",
            Reject::BadStatsd(_) => "bad_statsd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once() {
        let samples = [
            Reject::EmptyPayload,
            Reject::TooLarge { size: 2, max: 1 },
            Reject::BadFrame(String::new()),
            Reject::BadJson(String::new()),
            Reject::BadProtobuf(String::new()),
            Reject::MissingField("x"),
            Reject::WrongType {
                field: "x".into(),
                expected: "a number",
            },
            Reject::NonFiniteValue(f64::NAN),
            Reject::TimestampTooOld {
                timestamp_ms: 0,
                min_ms: 1,
            },
            Reject::TimestampInFuture {
                timestamp_ms: 2,
                max_ms: 1,
            },
            Reject::BadEventId(String::new()),
            Reject::BadMetricName(String::new()),
            Reject::BadTagKey(String::new()),
            Reject::ReservedTagKey(String::new()),
            Reject::BadTagValue {
                key: "k".into(),
                problem: "empty".into(),
            },
            Reject::TooManyTags { count: 2, max: 1 },
            Reject::BadSource(String::new()),
            Reject::BadStatsd(String::new()),
        ];
        let codes: Vec<_> = samples.iter().map(Reject::code).collect();
        assert_eq!(codes, Reject::CODES);
    }

    #[test]
    fn messages_name_the_problem() {
        let r = Reject::WrongType {
            field: "tags.region".into(),
            expected: "a string",
        };
        assert_eq!(r.to_string(), "field `tags.region` must be a string");
        let r = Reject::TooManyTags { count: 40, max: 32 };
        assert_eq!(r.to_string(), "40 tags exceed the limit of 32");
    }
}
