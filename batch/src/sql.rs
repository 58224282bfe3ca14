//! Read-only ad hoc SQL over the lake: a DataFusion session with the lake's tables registered
//! (`events`, `rollup_1m` / `rollup_1h` once a recompute wrote them, `dead_letters` and
//! `dead_letter_replays` once there are any).
//!
//! The sandbox: DDL (`CREATE …`, `DROP …`, `CREATE EXTERNAL TABLE`), DML (`INSERT`, `DELETE`,
//! `UPDATE`), `COPY … TO` and statements (`SET`, transactions) are refused before planning runs;
//! file paths as table names are not enabled, so nothing outside the lake can be read. Results are
//! capped in rows and time.

use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::prelude::DataFrame;
use strata_shared::Config;

use crate::archive::writer::{open_table, EVENTS_TABLE};
use crate::recompute::Tier;

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement would change something or read outside the lake.
    #[error("refused: the SQL session is read-only ({0})")]
    Refused(String),
    /// The query is wrong (syntax, unknown table or column, types).
    #[error("{0}")]
    Query(String),
    /// The query ran past the time limit.
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The lake could not be read.
    #[error("lake: {0}")]
    Lake(String),
}

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row, in an array.
    Json,
}

/// Limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows returned (the rest is cut, and said so).
    pub max_rows: usize,
    /// Longest run time.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A query's rows, and whether the row limit cut them.
pub struct QueryResult {
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// True when more rows existed than `max_rows`.
    pub truncated: bool,
}

/// A read-only session over the lake.
pub struct SqlSession {
    ctx: SessionContext,
    limits: Limits,
}

impl SqlSession {
    /// Registers the lake's tables that exist.
    pub async fn open(cfg: &Config, limits: Limits) -> Result<Self, SqlError> {
        let ctx = SessionContext::new();
        register_lake_tables(cfg, &ctx).await?;
        Ok(Self { ctx, limits })
    }

    /// Runs one read-only statement.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        let options = read_only_options();
        let df = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(classify)?;
        collect_limited(df, self.limits).await
    }
}

/// Runs a planned query within `limits`: at most `max_rows` rows (and whether more existed),
/// stopped after `timeout`. The HTTP endpoint, the CLI and the PostgreSQL protocol share it.
pub async fn collect_limited(df: DataFrame, limits: Limits) -> Result<QueryResult, SqlError> {
    let df = df.limit(0, Some(limits.max_rows + 1)).map_err(classify)?;
    let batches = tokio::time::timeout(limits.timeout, df.collect())
        .await
        .map_err(|_| SqlError::Timeout(limits.timeout))?
        .map_err(classify)?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total <= limits.max_rows {
        return Ok(QueryResult {
            batches,
            truncated: false,
        });
    }
    let mut kept = Vec::new();
    let mut left = limits.max_rows;
    for b in batches {
        if left == 0 {
            break;
        }
        let take = left.min(b.num_rows());
        kept.push(b.slice(0, take));
        left -= take;
    }
    Ok(QueryResult {
        batches: kept,
        truncated: true,
    })
}

/// Registers (or replaces) the lake's tables that exist — `events`, `rollup_1m`, `rollup_1h`,
/// `dead_letters`, `dead_letter_replays` —
/// in `ctx`, each at its newest version.
pub async fn register_lake_tables(cfg: &Config, ctx: &SessionContext) -> Result<(), SqlError> {
    use crate::dead_letters::table::{DEAD_LETTERS_TABLE, REPLAYS_TABLE};
    for name in [
        EVENTS_TABLE,
        Tier::Minute.table(),
        Tier::Hour.table(),
        DEAD_LETTERS_TABLE,
        REPLAYS_TABLE,
    ] {
        let mut table = open_table(cfg, name)
            .await
            .map_err(|e| SqlError::Lake(e.to_string()))?;
        match table.load().await {
            Ok(()) => {
                table
                    .update_datafusion_session(&ctx.state())
                    .map_err(|e| SqlError::Lake(e.to_string()))?;
                let provider = table
                    .table_provider()
                    .await
                    .map_err(|e| SqlError::Lake(e.to_string()))?;
                // A session's schema refuses a second table of one name: the newer version
                // replaces the older (a refresh of a long-lived session).
                ctx.deregister_table(name)
                    .map_err(|e| SqlError::Lake(e.to_string()))?;
                ctx.register_table(name, provider)
                    .map_err(|e| SqlError::Lake(e.to_string()))?;
            }
            Err(deltalake::DeltaTableError::NotATable(_)) => {
                tracing::info!(table = name, "not in the lake yet")
            }
            Err(e) => return Err(SqlError::Lake(e.to_string())),
        }
    }
    Ok(())
}

/// What a read-only session allows: no DDL, no DML, no statements (`SET`, transactions).
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A DataFusion error as a [`SqlError`]: refused kinds (DDL, DML, statements) or a wrong query.
pub fn classify(e: datafusion::error::DataFusionError) -> SqlError {
    let text = e.to_string();
    // SQLOptions reports refused kinds as "… not supported" plan errors naming the kind.
    for kind in ["DDL", "DML", "Statement"] {
        if text.contains(&format!("{kind} not supported")) {
            return SqlError::Refused(text);
        }
    }
    SqlError::Query(text)
}

/// Writes batches in `format`.
pub fn render(
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<String, arrow::error::ArrowError> {
    match format {
        OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        OutputFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_shared::MetricEvent;

    use super::*;
    use crate::archive::schema::ArchivedEvent;
    use crate::archive::writer::Archive;

    async fn lake_with_events() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.lake.url = dir.path().join("lake").display().to_string();
        let events: Vec<ArchivedEvent> = (0..3)
            .map(|i| ArchivedEvent {
                event: MetricEvent::new(
                    &format!("e{i}"),
                    "cpu",
                    f64::from(i),
                    1_764_000_000_000 + i64::from(i),
                )
                .with_tag("host", "a"),
                partition: 0,
                offset: i64::from(i),
            })
            .collect();
        let mut archive = Archive::open(&cfg).await.unwrap();
        archive
            .append(&events, &BTreeMap::from([(0, 2)]))
            .await
            .unwrap();
        (dir, cfg)
    }

    #[tokio::test]
    async fn a_long_lived_session_sees_new_commits_when_refreshed() {
        let (_dir, cfg) = lake_with_events().await;
        let ctx = SessionContext::new();
        register_lake_tables(&cfg, &ctx).await.unwrap();
        let count = |ctx: SessionContext| async move {
            let b = ctx
                .sql("SELECT count(*) AS n FROM events")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            render(&b, OutputFormat::Csv).unwrap()
        };
        assert_eq!(count(ctx.clone()).await, "n\n3\n");
        let more = vec![ArchivedEvent {
            event: MetricEvent::new("e9", "cpu", 9.0, 1_764_000_000_009),
            partition: 0,
            offset: 3,
        }];
        let mut archive = Archive::open(&cfg).await.unwrap();
        archive
            .append(&more, &BTreeMap::from([(0, 3)]))
            .await
            .unwrap();
        register_lake_tables(&cfg, &ctx)
            .await
            .expect("a refresh replaces the tables");
        assert_eq!(count(ctx).await, "n\n4\n");
    }

    #[tokio::test]
    async fn selects_over_the_archive_work_in_every_format() {
        let (_dir, cfg) = lake_with_events().await;
        let s = SqlSession::open(&cfg, Limits::default()).await.unwrap();
        let r = s.query("SELECT metric_name, count(*) AS n, sum(value) AS total FROM events GROUP BY metric_name").await.unwrap();
        assert!(!r.truncated);
        let table = render(&r.batches, OutputFormat::Table).unwrap();
        assert!(table.contains("| cpu         | 3 | 3.0   |"), "{table}");
        assert_eq!(
            render(&r.batches, OutputFormat::Csv).unwrap(),
            "metric_name,n,total\ncpu,3,3.0\n"
        );
        assert_eq!(
            render(&r.batches, OutputFormat::Json).unwrap(),
            r#"[{"metric_name":"cpu","n":3,"total":3.0}]"#
        );
    }

    #[tokio::test]
    async fn the_row_limit_cuts_and_says_so() {
        let (_dir, cfg) = lake_with_events().await;
        let s = SqlSession::open(
            &cfg,
            Limits {
                max_rows: 2,
                ..Limits::default()
            },
        )
        .await
        .unwrap();
        let r = s.query("SELECT event_id FROM events").await.unwrap();
        assert!(r.truncated);
        assert_eq!(
            r.batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            2
        );
    }

    #[tokio::test]
    async fn every_sandbox_escape_is_refused() {
        let (dir, cfg) = lake_with_events().await;
        let s = SqlSession::open(&cfg, Limits::default()).await.unwrap();
        let outside = dir.path().join("stolen.csv");
        let refused = [
            "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'"
                .to_owned(),
            "CREATE TABLE t AS SELECT 1".to_owned(),
            "CREATE VIEW v AS SELECT * FROM events".to_owned(),
            "DROP TABLE events".to_owned(),
            "INSERT INTO events SELECT * FROM events".to_owned(),
            "DELETE FROM events".to_owned(),
            "UPDATE events SET value = 0".to_owned(),
            format!("COPY (SELECT * FROM events) TO '{}'", outside.display()),
            "SET datafusion.execution.batch_size = 1".to_owned(),
            "BEGIN TRANSACTION".to_owned(),
        ];
        for sql in &refused {
            match s.query(sql).await {
                Err(SqlError::Refused(_)) => {}
                Err(e) => assert!(!e.to_string().is_empty(), "{sql}: {e}"),
                Ok(_) => panic!("{sql} was allowed"),
            }
        }
        for sql in [
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT 1; DROP TABLE events",
        ] {
            assert!(s.query(sql).await.is_err(), "{sql} was allowed");
        }
        assert!(!outside.exists(), "COPY wrote a file");
        // The table is intact.
        let r = s.query("SELECT count(*) AS n FROM events").await.unwrap();
        assert_eq!(render(&r.batches, OutputFormat::Csv).unwrap(), "n\n3\n");
        // DDL/DML/COPY/SET are refused as such, with a message that says so.
        for sql in &refused[..9] {
            assert!(
                matches!(s.query(sql).await, Err(SqlError::Refused(_))),
                "{sql} not refused as read-only"
            );
        }
    }
}
