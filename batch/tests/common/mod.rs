//! Helpers shared by the batch tests: a lake in a temporary folder and one-row SQL answers.
#![allow(dead_code)]

use strata_batch::sql::{render, Limits, OutputFormat, SqlSession};
use strata_shared::Config;

/// A configuration whose lake is a fresh temporary folder (kept alive by the returned guard).
pub fn local_lake() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.lake.url = dir.path().join("lake").display().to_string();
    (dir, cfg)
}

/// The first row of a query's answer, as CSV fields.
pub async fn first_row(cfg: &Config, sql: &str) -> Vec<String> {
    let s = SqlSession::open(cfg, Limits::default()).await.unwrap();
    let r = s.query(sql).await.unwrap();
    let csv = render(&r.batches, OutputFormat::Csv).unwrap();
    csv.lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}
