//! The serving layer's integration tests, one test binary (one link of DataFusion, delta-rs and
//! the rest instead of one per file): each module is one subject, against the real ClickHouse,
//! broker and lake started by `make up`, through the real `strata-serving` binary.
//! Run one subject with `cargo test -p strata-serving --test integration -- scale::`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod conformance;
mod degraded;
mod fuzz;
mod merge;
mod pg;
mod scale;
mod schemathesis;
mod security;
mod sql_clients;
