//! Everything strata-speed says to ClickHouse: the schema migration, the atomic batch insert with
//! its offset markers, and the rules for which failures are retried.

pub mod retry;
pub mod schema;
pub mod writer;
