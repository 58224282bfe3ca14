//! The speed layer's integration tests, one test binary: each module is one subject, against the
//! real broker and ClickHouse started by `make up`, through the real `strata-speed` binary.
//! (`clickhouse_down` is a binary of its own: it stops the shared ClickHouse server, which no
//! other test may see.) Run one subject with `cargo test -p strata-speed --test integration -- crash::`.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod cut_insert;
mod inflight;
mod rebalance;
mod rollups;
