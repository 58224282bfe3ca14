//! The ClickHouse client built from `[clickhouse]`, and safe quoting for the SQL Strata writes.
//!
//! Works with ClickHouse 18.16 and current releases: schema validation is off (18.16 lacks
//! `RowBinaryWithNamesAndTypes`) and values go through client-side `?` binding, never splicing.

use clickhouse::{Client, Compression};

use crate::config::ClickHouseConfig;
use crate::error::Result;

/// A client bound to `clickhouse.database`.
pub fn client(cfg: &ClickHouseConfig) -> Client {
    server_client(cfg).with_database(&cfg.database)
}

/// A client bound to no database (for `CREATE DATABASE` and `system.*`).
pub fn server_client(cfg: &ClickHouseConfig) -> Client {
    Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_password(cfg.password.expose())
        .with_compression(Compression::Lz4)
        .with_validation(false)
}

/// Creates `clickhouse.database` if it does not exist.
pub async fn ensure_database(cfg: &ClickHouseConfig) -> Result<()> {
    server_client(cfg)
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote_identifier(&cfg.database)
        ))
        .execute()
        .await?;
    Ok(())
}

/// Quotes an identifier for ClickHouse SQL: backticks, with backslash and backtick escaped.
///
/// ```
/// use strata_shared::clickhouse::quote_identifier;
/// assert_eq!(quote_identifier("rollup_1m"), "`rollup_1m`");
/// assert_eq!(quote_identifier("a`b"), "`a\\`b`");
/// ```
pub fn quote_identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('`');
    out
}
