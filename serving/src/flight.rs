//! Arrow Flight SQL over the archive (`serving.flight_listen`): ADBC, the Flight SQL JDBC driver,
//! DBeaver and Arrow-native tools run read-only SQL over `events`, `rollup_1m` and `rollup_1h`
//! and get Arrow record batches back, streamed as they are computed — no JSON or text on the way.
//!
//! A query flows: `GetFlightInfo(CommandStatementQuery)` plans the SQL under the read-only rules
//! of [`strata_batch::sql`] and answers its schema and a ticket → `DoGet(ticket)` plans it again
//! and streams the rows. The ticket carries the SQL itself, so no statement state lives in a
//! replica: any strata-serving behind a load balancer can answer any ticket. Prepared statements
//! (without parameters) work the same way, their handle being the SQL.
//!
//! Rules, as for the HTTP endpoint and the PostgreSQL protocol:
//! - **read-only**: DDL, DML, `COPY`, `SET` and other statements are refused
//!   (`PERMISSION_DENIED`, saying why) before anything runs; file paths are not tables;
//! - **limits**: at most `serving.sql_max_rows` rows; past `serving.sql_timeout` the stream ends
//!   with `DEADLINE_EXCEEDED` and the query is stopped; a client that cancels the call (or goes
//!   away) stops its query;
//! - **who may connect**: with `serving.auth_token` set, every call carries
//!   `authorization: Bearer <token>` — or the client first does a handshake with HTTP Basic
//!   credentials whose password is the token (any user name) and gets that header back; without a
//!   token only loopback clients are answered.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use datafusion::datasource::TableType;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use strata_batch::sql::{classify, read_only_options, Limits, SqlError};
use strata_shared::Config;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

/// The stream `DoGet` answers with.
type DoGetStream = <FlightSql as FlightService>::DoGetStream;

/// The Flight SQL service: the shared archive session, the limits and who may call.
pub struct FlightSql {
    ctx: Arc<SessionContext>,
    limits: Limits,
    /// `serving.auth_token`; empty: loopback clients only.
    token: String,
    info: SqlInfoData,
}

/// A refused or failed query as a gRPC status whose message says what is wrong.
fn status(e: SqlError) -> Status {
    match e {
        SqlError::Refused(_) => Status::permission_denied(e.to_string()),
        SqlError::Query(m) => Status::invalid_argument(m),
        SqlError::Timeout(t) => Status::deadline_exceeded(format!(
            "the query ran longer than {t:?} (serving.sql_timeout) and was stopped"
        )),
        SqlError::Lake(m) => Status::unavailable(format!("lake: {m}")),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// A batch stream whose rows stop at `max_rows` and whose time stops at `timeout`; dropping it
/// (the client cancelled or went away) stops the query.
fn limited(
    rows: SendableRecordBatchStream,
    limits: Limits,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    futures::stream::unfold(Some((rows, limits.max_rows)), move |state| async move {
        let (mut rows, left) = state?;
        if left == 0 {
            return None;
        }
        match tokio::time::timeout_at(deadline, rows.next()).await {
            Err(_) => Some((Err(status(SqlError::Timeout(limits.timeout)).into()), None)),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(status(classify(e)).into()), None)),
            Ok(Some(Ok(batch))) => {
                let take = left.min(batch.num_rows());
                if take < batch.num_rows() {
                    tracing::info!(
                        max_rows = limits.max_rows,
                        "Flight SQL: result cut at serving.sql_max_rows"
                    );
                }
                Some((Ok(batch.slice(0, take)), Some((rows, left - take))))
            }
        }
    })
}

/// A one-batch answer (catalog listings) as a `DoGet` stream.
fn one_batch(batch: Result<RecordBatch, FlightError>) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .build(futures::stream::once(async { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`, for results of `schema`.
fn flight_info(
    schema: &arrow::datatypes::Schema,
    ticket: Any,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| internal("encoding the result schema", e))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn sql_of(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes).map_err(|_| Status::invalid_argument("the handle is not UTF-8 SQL"))
}

impl FlightSql {
    /// The service over `ctx` with the limits and token of `cfg`.
    pub fn new(cfg: &Config, ctx: Arc<SessionContext>) -> Self {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Strata");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(
            SqlInfo::FlightSqlServerStatementTimeout,
            cfg.serving.sql_timeout.as_millis().min(i32::MAX as u128) as i32,
        );
        Self {
            ctx,
            limits: Limits {
                max_rows: cfg.serving.sql_max_rows,
                timeout: cfg.serving.sql_timeout,
            },
            token: cfg.serving.auth_token.expose().to_owned(),
            info: info.build().expect("static SqlInfo values are valid"),
        }
    }

    /// Lets the call through if it carries the token (or, with no token set, comes from loopback).
    #[allow(clippy::result_large_err)] // tonic's Status is what every handler returns
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.token.is_empty() {
            return match request.remote_addr() {
                Some(peer) if peer.ip().is_loopback() => Ok(()),
                _ => Err(Status::permission_denied(
                    "no serving.auth_token is set, so only clients on loopback are answered",
                )),
            };
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match header.and_then(|h| h.strip_prefix("Bearer ")) {
            Some(given)
                if crate::app::constant_time_eq(given.as_bytes(), self.token.as_bytes()) =>
            {
                Ok(())
            }
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated(
                "missing token: send `authorization: Bearer <serving.auth_token>`, or hand-shake \
                 with the token as password",
            )),
        }
    }

    /// Plans `sql` under the read-only rules (refusals happen here, before anything runs).
    async fn plan(&self, sql: &str) -> Result<DataFrame, Status> {
        let df = self
            .ctx
            .sql_with_options(sql, read_only_options())
            .await
            .map_err(|e| status(classify(e)))?;
        let params = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| status(classify(e)))?;
        if !params.is_empty() {
            return Err(Status::invalid_argument(
                "query parameters ($1, ?) are not supported over Flight SQL; write the values \
                 into the SQL",
            ));
        }
        Ok(df)
    }

    /// Plans and runs `sql`, streaming its rows within the limits.
    async fn run(&self, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let df = self.plan(sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let rows = df
            .limit(0, Some(self.limits.max_rows + 1))
            .map_err(|e| status(classify(e)))?
            .execute_stream()
            .await
            .map_err(|e| status(classify(e)))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(limited(rows, self.limits))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    /// Every (catalog, schema, table, type, table schema) of the session.
    async fn tables(
        &self,
    ) -> Vec<(
        String,
        String,
        String,
        &'static str,
        arrow::datatypes::SchemaRef,
    )> {
        let mut out = Vec::new();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    if let Ok(Some(table)) = schema.table(&table_name).await {
                        let kind = match table.table_type() {
                            TableType::View => "VIEW",
                            TableType::Temporary => "LOCAL TEMPORARY",
                            TableType::Base => "TABLE",
                        };
                        out.push((
                            catalog_name.clone(),
                            schema_name.clone(),
                            table_name,
                            kind,
                            table.schema(),
                        ));
                    }
                }
            }
        }
        out
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        if !self.token.is_empty() {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if let Some(basic) = header.strip_prefix("Basic ") {
                // Padded or not: Arrow's Go client (ADBC) leaves the padding out.
                let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(basic.trim_end_matches('='))
                    .map_err(|_| Status::invalid_argument("Basic credentials are not base64"))?;
                let decoded = String::from_utf8_lossy(&decoded);
                let password = decoded.split_once(':').map_or("", |(_, p)| p);
                if !crate::app::constant_time_eq(password.as_bytes(), self.token.as_bytes()) {
                    return Err(Status::unauthenticated(
                        "wrong password (it is serving.auth_token)",
                    ));
                }
            } else {
                self.authorize(&request)?;
            }
        } else {
            self.authorize(&request)?;
        }
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: self.token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if !self.token.is_empty() {
            let bearer = format!("Bearer {}", self.token);
            let value = MetadataValue::try_from(bearer.as_str())
                .map_err(|e| internal("token header", e))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let df = self.plan(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        flight_info(
            df.schema().as_arrow(),
            ticket.as_any(),
            request.into_inner(),
        )
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let df = self.plan(sql_of(&cmd.prepared_statement_handle)?).await?;
        flight_info(df.schema().as_arrow(), cmd.as_any(), request.into_inner())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder(&self.info).schema();
        flight_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        self.run(sql_of(&ticket.statement_handle)?).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        self.run(sql_of(&query.prepared_statement_handle)?).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for name in self.ctx.catalog_names() {
            builder.append(name);
        }
        Ok(one_batch(builder.build()))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for catalog_name in self.ctx.catalog_names() {
            if let Some(catalog) = self.ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        Ok(one_batch(builder.build()))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, columns) in self.tables().await {
            builder
                .append(catalog, schema, table, kind, &columns)
                .map_err(|e| internal("listing tables", e))?;
        }
        Ok(one_batch(builder.build()))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for kind in ["TABLE", "VIEW", "LOCAL TEMPORARY"] {
            builder.append(kind);
        }
        Ok(one_batch(builder.build()))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        Ok(one_batch(query.into_builder(&self.info).build()))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let df = self.plan(&query.query).await?;
        let IpcMessage(schema) = SchemaAsIpc::new(df.schema().as_arrow(), &Default::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| internal("encoding the result schema", e))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Nothing is held for a prepared statement: its handle is its SQL.
        self.authorize(&request)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on `listener` over the shared archive session until the process ends.
pub async fn serve(cfg: Arc<Config>, ctx: Arc<SessionContext>, listener: tokio::net::TcpListener) {
    let service = FlightServiceServer::new(FlightSql::new(&cfg, ctx));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    if let Err(e) = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming(incoming)
        .await
    {
        tracing::error!(error = %e, "Flight SQL: server stopped");
    }
}
