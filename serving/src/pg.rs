//! The PostgreSQL wire protocol over the archive (`serving.pg_listen`): psql, DBeaver, Grafana's
//! PostgreSQL data source, psycopg and JDBC drivers run read-only SQL over `events`, `rollup_1m`
//! and `rollup_1h` — the same tables, sandbox and limits as `POST /api/v1/sql`.
//!
//! The protocol and the `pg_catalog` tables clients read on connect come from
//! `datafusion-postgres` (on `pgwire`); this module adds Strata's rules in front of it:
//! - **read-only**: a query runs; `SHOW`, transaction statements and `SET` of the session
//!   settings drivers send on connect (client encoding, date style, time zone, application
//!   name…) pass; everything else — DDL, DML, `COPY`, `SET` of engine settings, external
//!   tables — is refused with SQLSTATE 25006 and a message saying why;
//! - **limits**: at most `serving.sql_max_rows` rows; a query running past `serving.sql_timeout`
//!   (or the client's shorter `statement_timeout`) is cancelled with SQLSTATE 57014; a client's
//!   cancel request stops its query;
//! - **who may connect**: with `serving.auth_token` set, the password must be the token (any
//!   user name); without one, only loopback clients are let in, as the HTTP API does.
//!
//! The session (tables and `pg_catalog`) is [`crate::archive`]'s, shared with Flight SQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, QueryHook};
use strata_batch::sql::{classify, collect_limited, read_only_options, Limits, SqlError};
use strata_shared::Config;

/// Session settings a client may `SET` (drivers send these on connect); any other `SET` is
/// refused, so no client can change how the engine runs for everyone.
const SESSION_SETTINGS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
    "time zone",
];

/// What the read-only rule does with a statement.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// A query: run it here, within the limits.
    Run,
    /// A harmless session statement: let the protocol library answer it.
    Pass,
    /// Refused, with the reason.
    Refuse(String),
}

/// Sorts a statement into run, pass or refuse.
fn verdict(statement: &Statement) -> Verdict {
    match statement {
        Statement::Query(_) | Statement::Explain { .. } => Verdict::Run,
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Verdict::Pass,
        Statement::Set(set) => match set {
            Set::SingleAssignment { variable, .. } => {
                let name = variable.to_string().to_ascii_lowercase();
                if SESSION_SETTINGS.contains(&name.as_str()) {
                    Verdict::Pass
                } else {
                    Verdict::Refuse(format!(
                        "SET {name} would change the shared engine; only session settings ({}) \
                         may be set",
                        SESSION_SETTINGS.join(", ")
                    ))
                }
            }
            Set::SetTimeZone { .. } | Set::SetNames { .. } => Verdict::Pass,
            other => Verdict::Refuse(format!("{other} changes the session's state")),
        },
        Statement::Copy { .. } => {
            Verdict::Refuse("COPY reads or writes files; use a SELECT".into())
        }
        other => {
            let text = other.to_string();
            let kind: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            Verdict::Refuse(format!("{kind} would change data or definitions"))
        }
    }
}

fn pg_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message,
    )))
}

fn refused(why: String) -> PgWireError {
    pg_error(
        "25006",
        format!("refused: the SQL session is read-only ({why})"),
    )
}

fn df_error(e: datafusion::error::DataFusionError) -> PgWireError {
    sql_error(classify(e))
}

fn sql_error(e: SqlError) -> PgWireError {
    match e {
        SqlError::Refused(m) => refused(m),
        SqlError::Query(m) => pg_error("42000", m),
        SqlError::Timeout(t) => pg_error(
            "57014",
            format!("canceling statement: it ran longer than {t:?} (serving.sql_timeout)"),
        ),
        SqlError::Lake(m) => pg_error("58030", format!("lake: {m}")),
    }
}

/// Strata's rules in front of the protocol library's own hooks.
struct ReadOnly {
    max_rows: usize,
    timeout: Duration,
}

impl ReadOnly {
    /// Runs a planned query within the limits and encodes its rows for the client.
    async fn run(
        &self,
        ctx: &SessionContext,
        df: DataFrame,
        client: &dyn HookClient,
    ) -> PgWireResult<Response> {
        let timeout =
            datafusion_postgres_timeout(client).map_or(self.timeout, |t| t.min(self.timeout));
        let schema = Arc::new(df.schema().as_arrow().clone());
        // Cut at the row limit, as the HTTP endpoint does (the protocol has no place to say so).
        let limits = Limits {
            max_rows: self.max_rows,
            timeout,
        };
        let result = collect_limited(df, limits).await.map_err(sql_error)?;
        let table = MemTable::try_new(schema, vec![result.batches]).map_err(df_error)?;
        let rows = ctx.read_table(Arc::new(table)).map_err(df_error)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(
            encode_dataframe(rows, &Format::UnifiedText, Some(options)).await?,
        ))
    }
}

/// The client's own `statement_timeout`, if it set one.
fn datafusion_postgres_timeout(client: &dyn HookClient) -> Option<Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::Refuse(why) => Some(Err(refused(why))),
            Verdict::Run => Some(
                async {
                    let df = ctx
                        .sql_with_options(&statement.to_string(), read_only_options())
                        .await
                        .map_err(df_error)?;
                    self.run(ctx, df, client).await
                }
                .await,
            ),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match verdict(statement) {
            Verdict::Refuse(why) => Some(Err(refused(why))),
            Verdict::Run | Verdict::Pass => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::Refuse(why) => Some(Err(refused(why))),
            Verdict::Run => Some(
                async {
                    read_only_options().verify_plan(plan).map_err(df_error)?;
                    let plan = plan
                        .clone()
                        .replace_params_with_values(params)
                        .map_err(df_error)?;
                    let df = ctx.execute_logical_plan(plan).await.map_err(df_error)?;
                    self.run(ctx, df, client).await
                }
                .await,
            ),
        }
    }
}

/// Without a token: no password asked (only loopback clients get this far).
struct Open {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// With a token: the password must be the token.
#[derive(Debug)]
struct Token(String);

// Written out by hand: `#[async_trait]` cannot name `LoginInfo`'s elided lifetime the way the
// trait's own expansion does.
impl AuthSource for Token {
    fn get_password<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _login: &'life1 LoginInfo<'_>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = PgWireResult<Password>> + Send + 'async_trait>,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let password = Password::new(None, self.0.as_bytes().to_vec());
        Box::pin(async move { Ok(password) })
    }
}

/// The protocol's handlers: the session service for queries, `S` for start-up.
struct Handlers<S> {
    service: Arc<DfSessionService>,
    startup: Arc<S>,
    cancel: Arc<DefaultCancelHandler>,
}

impl<S: StartupHandler + 'static> PgWireServerHandlers for Handlers<S> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// Serves the PostgreSQL protocol on `listener` over the shared archive session until the
/// process ends.
pub async fn serve(cfg: Arc<Config>, ctx: Arc<SessionContext>, listener: tokio::net::TcpListener) {
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly {
            max_rows: cfg.serving.sql_max_rows,
            timeout: cfg.serving.sql_timeout,
        }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let service = Arc::new(DfSessionService::new_with_hooks(ctx, hooks));
    let connections = Arc::new(ConnectionManager::new());
    let cancel = Arc::new(DefaultCancelHandler::new(connections.clone()));
    let token = cfg.serving.auth_token.expose().to_owned();
    if token.is_empty() {
        let handlers = Arc::new(Handlers {
            service,
            startup: Arc::new(Open { connections }),
            cancel,
        });
        accept(listener, handlers, true).await
    } else {
        let startup = CleartextPasswordAuthStartupHandler::new(
            Token(token),
            DefaultServerParameterProvider::default(),
        )
        .with_connection_manager(connections);
        let handlers = Arc::new(Handlers {
            service,
            startup: Arc::new(startup),
            cancel,
        });
        accept(listener, handlers, false).await
    }
}

async fn accept<S: StartupHandler + 'static>(
    listener: tokio::net::TcpListener,
    handlers: Arc<Handlers<S>>,
    loopback_only: bool,
) {
    loop {
        let (socket, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL protocol: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if loopback_only && !peer.ip().is_loopback() {
            tracing::warn!(%peer, "PostgreSQL protocol: refused a non-loopback client (no serving.auth_token set)");
            continue;
        }
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(e) =
                datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers).await
            {
                tracing::debug!(error = %e, %peer, "PostgreSQL protocol: connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn of(sql: &str) -> Verdict {
        let s = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        verdict(&s[0])
    }

    #[test]
    fn queries_run_and_session_statements_pass() {
        assert_eq!(of("SELECT count(*) FROM events"), Verdict::Run);
        assert_eq!(of("EXPLAIN SELECT 1"), Verdict::Run);
        for sql in [
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET TIME ZONE 'UTC'",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
        ] {
            assert_eq!(of(sql), Verdict::Pass, "{sql}");
        }
    }

    #[test]
    fn writes_copies_and_engine_settings_are_refused_with_a_reason() {
        for (sql, says) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT INTO"),
            ("DELETE FROM events", "DELETE FROM"),
            ("COPY events TO '/tmp/x.csv'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "shared engine"),
        ] {
            match of(sql) {
                Verdict::Refuse(why) => assert!(why.contains(says), "{sql}: {why}"),
                v => panic!("{sql}: {v:?}"),
            }
        }
    }
}
