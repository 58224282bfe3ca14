//! What Strata's three layers share.
//!
//! Events flow through this crate in one direction: raw Kafka message bytes are decoded by
//! [`codec`] into a [`MetricEvent`], checked by [`validate`] (every reject is a typed
//! [`Reject`] that names its reason), and identified by [`series::series_id`]. The layers then
//! build their clients from one validated [`config::Config`] with [`kafka`], [`clickhouse`] and
//! [`lake`], and report through [`telemetry`]. The load generator and the test helpers live in
//! `strata-testkit` (`shared/testkit/`), so the services do not ship them.

pub mod clickhouse;
pub mod codec;
pub mod config;
pub mod digest;
pub mod error;
pub mod event;
pub mod kafka;
pub mod lake;
pub mod offset_gaps;
pub mod reject;
pub mod retry;
pub mod self_report;
pub mod series;
pub mod sketch;
pub mod stats;
pub mod telemetry;
pub mod validate;

pub use codec::Encoding;
pub use config::Config;
pub use error::{Error, Result};
pub use event::MetricEvent;
pub use reject::Reject;
