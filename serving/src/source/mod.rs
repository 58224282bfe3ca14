//! Where answers come from: [`batch`] (the exact rollup tables of the lake, in memory) and
//! [`speed`] (ClickHouse's minute rollups).

pub mod batch;
pub mod speed;
