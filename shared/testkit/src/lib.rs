//! What Strata's tests, benchmarks and demo share, kept out of the services' binaries.
//!
//! [`gen`] is the deterministic load generator behind `strata-gen` (JSON and Protobuf events,
//! duplicates, late and malformed messages, a live rate) with the exact ground truth — count,
//! sum, min, max and quantiles per (series, minute) and per (series, hour) — that the tests, the
//! benchmarks and the chaos run compare every layer with. The rest ([`kit`], re-exported here)
//! starts and stops processes and servers of the local stack, finds free ports, reads
//! `/metrics` pages and cuts network paths. [`promql`] holds the PromQL conformance dataset and
//! the reference Prometheus it is compared with.

pub mod gen;
pub mod kit;
pub mod promql;

pub use kit::*;
