//! The HTTP endpoints: [`prom`] (the Prometheus query API), [`json`] (the JSON API), [`admin`]
//! (SQL and recompute jobs), with [`params`] and [`response`] shared by all of them.

pub mod admin;
pub mod json;
pub mod params;
pub mod prom;
pub mod response;
