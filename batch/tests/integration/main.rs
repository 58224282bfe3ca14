//! The batch layer's integration tests, one test binary (one link of DataFusion, delta-rs and
//! librdkafka instead of one per file): each module is one subject, against the real broker and
//! the real lake (a local folder or SeaweedFS) started by `make up`.
//! Run one subject with `cargo test -p strata-batch --test integration -- recompute::`.

#[path = "../common/mod.rs"]
mod common;

mod archive;
mod ballista;
mod coverage;
mod import;
mod python_reader;
mod read_your_writes;
mod recompute;
mod serve;
