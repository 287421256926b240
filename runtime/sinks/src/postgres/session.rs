//! The connection to the target that the sink and its readback each hold
//! (never one between them): made again after it broke, with the
//! statements prepared on it, and its errors told apart by kind.

use std::collections::HashMap;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use weir_core::SinkError;
use weir_postgres::PostgresConfig;

use super::config::PostgresSinkConfig;
use super::sink::{Kind, connect_error, describe, kind};

pub(super) struct Session {
    /// Where the target is, for messages.
    pub(super) place: String,
    client: Option<Client>,
    /// Prepared statements by SQL text (this connection's).
    statements: HashMap<String, Statement>,
}

impl Session {
    /// Not connected yet: see [`Session::open`].
    pub(super) fn new(name: &str, config: &PostgresSinkConfig) -> Session {
        Session {
            place: format!(
                "postgres at {}, database {:?}",
                config.connection(name).address(),
                config.database
            ),
            client: None,
            statements: HashMap::new(),
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Connects again as `cfg` says, and runs `setup` on the connection
    /// (`doing` says what it does, for its error).
    pub(super) async fn open(
        &mut self,
        cfg: &PostgresConfig,
        setup: &str,
        doing: &str,
    ) -> Result<(), SinkError> {
        self.close();
        let client = weir_postgres::connect(cfg).await.map_err(connect_error)?;
        client
            .batch_execute(setup)
            .await
            .map_err(|e| self.error(doing, &e))?;
        self.client = Some(client);
        Ok(())
    }

    /// Drops the connection, and the statements prepared on it.
    pub(super) fn close(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    pub(super) fn client(&self) -> &Client {
        self.client.as_ref().expect("connected before use")
    }

    /// A statement-level error as a [`SinkError`] of its kind.
    pub(super) fn error(&self, doing: &str, e: &tokio_postgres::Error) -> SinkError {
        let message = format!("{}: {doing}: {}", self.place, describe(e));
        match kind(e) {
            Kind::Transient => SinkError::Transient(message),
            Kind::Auth => SinkError::Auth(message),
            Kind::Config | Kind::Record => SinkError::Config(message),
        }
    }

    /// `sql` with parameters of `types`, prepared the first time on this
    /// connection.
    pub(super) async fn prepare(
        &mut self,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client().prepare_typed(sql, types).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}
