//! Errors of the Postgres source, split by what an operator (or the
//! server's restart loop) can do about them.

use std::fmt;
use std::time::Duration;

use weir_core::Lsn;

/// What went wrong while preparing or running the Postgres source.
///
/// Every message names where (`host:port`, database, slot, publication or
/// tables) and, for problems an operator must fix, how. Use
/// [`PgError::is_retryable`] to tell a lost connection (reconnect after a
/// pause) from a configuration or environment problem (stop and report).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The configuration cannot work as written.
    #[error("{0}")]
    Config(String),

    /// The server is not configured for logical decoding.
    #[error(
        "postgres at {addr}: wal_level is {actual:?} but logical replication needs \"logical\"; \
         run ALTER SYSTEM SET wal_level = logical; as a superuser and restart the server"
    )]
    WalLevel {
        /// `host:port`.
        addr: String,
        /// The server's current `wal_level`.
        actual: String,
    },

    /// The role may not open a replication connection.
    #[error(
        "postgres at {addr}: role {role:?} has neither the REPLICATION attribute nor superuser, \
         so it cannot use replication slots; run ALTER ROLE \"{role}\" REPLICATION; or connect \
         as another role"
    )]
    NotReplicationRole {
        /// `host:port`.
        addr: String,
        /// The role that logged in.
        role: String,
    },

    /// Listed tables do not exist.
    #[error(
        "postgres at {addr}, database {dbname:?}: table(s) to capture not found: {}",
        .tables.join(", ")
    )]
    MissingTables {
        /// `host:port`.
        addr: String,
        /// The database searched.
        dbname: String,
        /// `schema.table` of each missing table.
        tables: Vec<String>,
    },

    /// A table pattern matches no table.
    #[error(
        "postgres at {addr}, database {dbname:?}: no table matches {pattern:?} (source.tables)"
    )]
    NoTableMatches {
        /// `host:port`.
        addr: String,
        /// The database searched.
        dbname: String,
        /// The pattern as written.
        pattern: String,
    },

    /// The publication does not exist and may not be created.
    #[error(
        "postgres at {addr}, database {dbname:?}: publication {publication:?} does not exist \
         and create_publication is off; create it or allow Weir to"
    )]
    PublicationMissing {
        /// `host:port`.
        addr: String,
        /// The database searched.
        dbname: String,
        /// The publication's name.
        publication: String,
    },

    /// The publication exists but does not publish every listed table, and
    /// may not be altered.
    #[error(
        "postgres at {addr}, database {dbname:?}: publication {publication:?} does not include \
         table(s) {} and create_publication is off; run ALTER PUBLICATION ... ADD TABLE or allow \
         Weir to",
        .tables.join(", ")
    )]
    PublicationLacksTables {
        /// `host:port`.
        addr: String,
        /// The database searched.
        dbname: String,
        /// The publication's name.
        publication: String,
        /// `schema.table` of each table the publication lacks.
        tables: Vec<String>,
    },

    /// `all_tables` is set but the existing publication is not `FOR ALL TABLES`.
    #[error(
        "postgres at {addr}, database {dbname:?}: all_tables is set but publication \
         {publication:?} is not FOR ALL TABLES; drop it so Weir can recreate it, or list tables"
    )]
    PublicationNotAllTables {
        /// `host:port`.
        addr: String,
        /// The database searched.
        dbname: String,
        /// The publication's name.
        publication: String,
    },

    /// The slot does not exist and may not be created.
    #[error("postgres at {addr}: replication slot {slot:?} does not exist and create_slot is off")]
    SlotMissing {
        /// `host:port`.
        addr: String,
        /// The slot's name.
        slot: String,
    },

    /// Another process kept the slot for longer than `slot_wait`.
    #[error(
        "postgres at {addr}: replication slot {slot:?} is in use by {} (waited {waited:?}); \
         stop the other consumer, or if it is dead, SELECT pg_terminate_backend(pid)",
        match .pid { Some(p) => format!("process {p}"), None => "another process".to_owned() }
    )]
    SlotInUse {
        /// `host:port`.
        addr: String,
        /// The slot's name.
        slot: String,
        /// The walsender holding the slot, when Postgres said.
        pid: Option<i32>,
        /// How long Weir waited for it to be released.
        waited: Duration,
    },

    /// The server invalidated the slot (`wal_status = lost`): it fell
    /// further behind than `max_slot_wal_keep_size` allows, and the WAL it
    /// still needed is gone. Not retried.
    #[error(
        "postgres at {addr}: replication slot {slot:?} was invalidated by the server \
         (wal_status = lost): it fell more than max_slot_wal_keep_size behind and the WAL \
         it still needed was removed, so the changes after its last confirmed position are \
         gone; set source.on_slot_lost = \"resnapshot\" to make a new slot and take a fresh \
         snapshot, or drop the slot and start again"
    )]
    SlotLost {
        /// `host:port`.
        addr: String,
        /// The slot's name.
        slot: String,
    },

    /// The slot exists but cannot serve this source (wrong plugin, wrong
    /// database, physical slot).
    #[error("postgres at {addr}: replication slot {slot:?} cannot be used: {reason}")]
    SlotMismatch {
        /// `host:port`.
        addr: String,
        /// The slot's name.
        slot: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Authentication failed or asked for a method Weir does not speak.
    #[error("postgres at {addr}: authentication of role {user:?} failed: {message}")]
    Auth {
        /// `host:port`.
        addr: String,
        /// The role.
        user: String,
        /// What happened.
        message: String,
    },

    /// TLS could not be set up as `sslmode` asks: the server refuses TLS, or
    /// its certificate does not pass the checks. Not retried: it needs an
    /// operator (or means someone else is answering).
    #[error("postgres at {addr}: TLS: {message}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What was wrong, naming the certificate problem.
        message: String,
    },

    /// Postgres answered with an error.
    #[error("postgres at {addr}: {context}: {0}", .error)]
    Server {
        /// `host:port`.
        addr: String,
        /// What Weir was doing.
        context: String,
        /// The server's error fields.
        error: Box<ServerError>,
    },

    /// The connection could not be opened or was lost.
    #[error("postgres at {addr}: {context}: {message}")]
    Connection {
        /// `host:port`.
        addr: String,
        /// What Weir was doing.
        context: String,
        /// The underlying I/O or driver error.
        message: String,
    },

    /// The server sent something the replication protocol does not allow.
    #[error("postgres at {addr}: protocol error: {message}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        message: String,
    },

    /// A local I/O failure outside any connection (for example, a thread or
    /// socket that could not be created). Usually transient.
    #[error("{0}")]
    Io(std::io::Error),

    /// A pgoutput message could not be decoded.
    #[error("pgoutput message at LSN {lsn} could not be decoded: {message}")]
    Decode {
        /// Where in the WAL the message came from.
        lsn: Lsn,
        /// What was wrong.
        message: String,
    },
}

/// The fields of a Postgres `ErrorResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The SQLSTATE code, such as `42P01`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Whether the SQLSTATE says the condition is transient: connection
    /// failures, a server shutting down or starting up, resource exhaustion.
    pub fn is_transient(&self) -> bool {
        let c = self.code.as_str();
        c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("58")
            || matches!(c, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
    }
}

impl PgError {
    /// Whether trying again later (reconnecting) may succeed. Configuration
    /// and environment errors return `false`: they need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Connection { .. } | PgError::Io(_) => true,
            PgError::Server { error, .. } => error.is_transient(),
            _ => false,
        }
    }

    /// The SQLSTATE code, when Postgres reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Server { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    /// Wraps a tokio-postgres error, keeping the server's fields when it
    /// came from the server.
    pub(crate) fn sql(addr: &str, context: impl Into<String>, e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgError::Server {
                addr: addr.to_owned(),
                context: context.into(),
                error: Box::new(ServerError {
                    severity: db.severity().to_owned(),
                    code: db.code().code().to_owned(),
                    message: db.message().to_owned(),
                    detail: db.detail().map(str::to_owned),
                    hint: db.hint().map(str::to_owned),
                }),
            },
            None => {
                // Display of a non-database tokio-postgres error is terse
                // ("error connecting to server"); the cause says why.
                let mut message = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    message.push_str(": ");
                    message.push_str(&s.to_string());
                    src = s.source();
                }
                PgError::Connection {
                    addr: addr.to_owned(),
                    context: context.into(),
                    message,
                }
            }
        }
    }

    pub(crate) fn io(addr: &str, context: impl Into<String>, e: std::io::Error) -> Self {
        PgError::Connection {
            addr: addr.to_owned(),
            context: context.into(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_level_message_says_how_to_fix() {
        let e = PgError::WalLevel {
            addr: "db:5432".into(),
            actual: "replica".into(),
        };
        let s = e.to_string();
        assert!(s.contains("db:5432"), "{s}");
        assert!(s.contains("\"replica\""), "{s}");
        assert!(s.contains("ALTER SYSTEM SET wal_level = logical"), "{s}");
        assert!(s.contains("restart"), "{s}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn retryability() {
        let server = |code: &str| PgError::Server {
            addr: "h:1".into(),
            context: "x".into(),
            error: Box::new(ServerError {
                severity: "FATAL".into(),
                code: code.into(),
                message: "m".into(),
                detail: None,
                hint: None,
            }),
        };
        assert!(server("57P01").is_retryable());
        assert!(server("08006").is_retryable());
        assert!(server("53300").is_retryable());
        assert!(!server("42P01").is_retryable());
        assert!(!server("28P01").is_retryable());
        assert!(
            PgError::Connection {
                addr: "h:1".into(),
                context: "c".into(),
                message: "reset".into()
            }
            .is_retryable()
        );
        let slot = PgError::SlotInUse {
            addr: "h:1".into(),
            slot: "s".into(),
            pid: Some(42),
            waited: Duration::from_secs(1),
        };
        assert!(!slot.is_retryable());
        assert!(slot.to_string().contains("process 42"));
        assert!(slot.to_string().contains("\"s\""));
    }

    #[test]
    fn server_error_shows_all_fields() {
        let e = ServerError {
            severity: "ERROR".into(),
            code: "42704".into(),
            message: "publication \"p\" does not exist".into(),
            detail: Some("d".into()),
            hint: Some("h".into()),
        };
        assert_eq!(
            e.to_string(),
            "ERROR 42704: publication \"p\" does not exist (detail: d) (hint: h)"
        );
    }
}
