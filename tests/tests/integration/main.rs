//! End-to-end tests of the whole pipeline, one test binary: each module is one subject, against
//! the real broker, ClickHouse and S3 started by `make up` and the real Strata binaries.
//! Run one subject with `cargo test -p strata-tests --test integration -- e2e::`.

mod alerting;
mod current_clickhouse;
mod dead_letters;
mod e2e;
mod grafana_panels;
mod producers;
mod services_script;
