//! The idempotent migration: `sql/clickhouse/*.sql`, in file-name order, with `{db}` replaced by
//! the quoted database name. Run at every start-up; safe to run concurrently.

use strata_shared::clickhouse::{ensure_database, quote_identifier, server_client};
use strata_shared::config::ClickHouseConfig;

/// The migration files, compiled in: (name, SQL).
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "001_speed_rollup_1m.sql",
        include_str!("../../../sql/clickhouse/001_speed_rollup_1m.sql"),
    ),
    (
        "002_speed_ingest_batch.sql",
        include_str!("../../../sql/clickhouse/002_speed_ingest_batch.sql"),
    ),
    (
        "003_speed_last_sample.sql",
        include_str!("../../../sql/clickhouse/003_speed_last_sample.sql"),
    ),
];

/// Columns a rollup table of an earlier version lacks, added before the migration that needs
/// them (ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`): (before file, column, type).
pub const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "003_speed_last_sample.sql",
        "last",
        "AggregateFunction(argMax, Float64, Int64)",
    ),
    (
        "003_speed_last_sample.sql",
        "last_ms",
        "AggregateFunction(max, Int64)",
    ),
];

/// The rollup table's name.
pub const ROLLUP_TABLE: &str = "speed_rollup_1m";
/// The insert target's name: one row per batch (003's, with the newest sample of each row;
/// 002's `speed_ingest_batch` is dropped by 003).
pub const INGEST_TABLE: &str = "speed_ingest_batch_v2";

/// The statements of one migration file for database `db`: comments dropped, split on `;`.
pub fn statements(sql: &str, db: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{db}", &quote_identifier(db));
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Creates the database and every table and view that is missing.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<(), clickhouse::error::Error> {
    ensure_database(cfg).await.map_err(|e| match e {
        strata_shared::Error::ClickHouse(e) => e,
        other => clickhouse::error::Error::Custom(other.to_string()),
    })?;
    let client = server_client(cfg);
    for (name, sql) in MIGRATIONS {
        for (_, column, ty) in ADDED_COLUMNS.iter().filter(|(before, ..)| before == name) {
            add_column(&client, &cfg.database, column, ty).await?;
        }
        for stmt in statements(sql, &cfg.database) {
            tracing::debug!(
                migration = name,
                "applying: {}",
                stmt.lines().next().unwrap_or_default()
            );
            client.query(&stmt).execute().await?;
        }
    }
    Ok(())
}

/// Adds `column` to the rollup table unless it has it; a concurrent migration that added it
/// first is no error.
async fn add_column(
    client: &clickhouse::Client,
    db: &str,
    column: &str,
    ty: &str,
) -> Result<(), clickhouse::error::Error> {
    let has = || async {
        client
            .query(
                "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(db)
            .bind(ROLLUP_TABLE)
            .bind(column)
            .fetch_one::<u64>()
            .await
    };
    if has().await? > 0 {
        return Ok(());
    }
    let stmt = format!(
        "ALTER TABLE {}.{ROLLUP_TABLE} ADD COLUMN {} {ty}",
        quote_identifier(db),
        quote_identifier(column)
    );
    tracing::info!(column, "adding a column to {ROLLUP_TABLE}");
    match client.query(&stmt).execute().await {
        Ok(()) => Ok(()),
        Err(e) if has().await? > 0 => {
            tracing::debug!(error = %e, "added meanwhile by another migration");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_templated() {
        let stmts = statements(MIGRATIONS[0].1, "strata");
        assert_eq!(stmts.len(), 1);
        let stmts = statements(MIGRATIONS[1].1, "strata");
        assert_eq!(stmts.len(), 4);
        assert!(stmts
            .iter()
            .all(|s| s.contains("IF EXISTS `strata`.") || s.contains("IF NOT EXISTS `strata`.")));
        assert!(stmts
            .iter()
            .all(|s| !s.contains("{db}") && !s.contains("--")));
    }

    #[test]
    fn the_database_name_is_quoted_not_spliced() {
        let stmts = statements("CREATE TABLE {db}.t (x UInt8) ENGINE = Null;", "we`ird");
        assert_eq!(
            stmts,
            vec!["CREATE TABLE `we\\`ird`.t (x UInt8) ENGINE = Null"]
        );
    }
}
