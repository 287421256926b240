//! The replication connection, spoken directly on the wire protocol.
//!
//! tokio-postgres cannot open a `replication=database` connection nor
//! speak CopyBoth, so this module does the startup, authentication (trust,
//! cleartext, MD5, SCRAM-SHA-256), simple queries and the framing of the
//! replication stream itself, over the socket (TLS or not) that
//! [`tls::open`] hands it. Message *encoding* and the authentication
//! hashes come from `postgres-protocol`; backend messages are framed and
//! parsed here, because `Message::parse` does not know CopyBothResponse
//! (`W`) and because the hot path wants the frame as a cheap [`Bytes`]
//! slice of the read buffer rather than a parsed copy.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_core::Lsn;

use crate::auth::AuthPolicy;
use crate::config::PostgresConfig;
use crate::error::{PgError, ServerError};
use crate::tls::{self, PgStream};

/// How long opening a connection (TCP connect plus startup) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings forced on the walsender so pgoutput's text output has one
/// predictable form: ISO dates in UTC, round-trippable floats, hex bytea,
/// `postgres` intervals, and money in the C locale (`$1,234.56`): the forms
/// the text decoders parse and the binary printers (`crate::printed`) write.
pub(crate) const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 \
     -c bytea_output=hex -c IntervalStyle=postgres -c lc_monetary=C";

/// Microseconds from 1970-01-01 to 2000-01-01, the epoch of Postgres's
/// timestamps on the wire.
pub(crate) const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

const READ_CHUNK: usize = 64 * 1024;

/// One backend message: its tag and its body (without tag and length).
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) tag: u8,
    pub(crate) body: Bytes,
}

/// The read half: a buffer that hands out whole frames.
pub(crate) struct FrameReader {
    rd: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
    addr: Arc<str>,
    /// Largest message body accepted (`max_message_bytes`).
    max_body: usize,
}

impl FrameReader {
    pub(crate) fn new(
        rd: Box<dyn AsyncRead + Send + Unpin>,
        addr: Arc<str>,
        max_body: usize,
    ) -> FrameReader {
        FrameReader {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
            addr,
            max_body,
        }
    }

    /// The next frame already in the buffer, without reading.
    pub(crate) fn try_frame(&mut self) -> Result<Option<Frame>, PgError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len < 4 {
            return Err(PgError::Protocol {
                addr: self.addr.to_string(),
                message: format!("message {:?} has invalid length {len}", tag as char),
            });
        }
        // The length is the server's word; without a cap a broken or
        // hostile server makes Weir reserve up to 4 GiB per message.
        if len - 4 > self.max_body {
            return Err(PgError::Protocol {
                addr: self.addr.to_string(),
                message: format!(
                    "message {:?} announces {} bytes, more than max_message_bytes ({}); \
                     raise the limit (max_message_mib in Weir's [source]) if rows really are \
                     that large",
                    tag as char,
                    len - 4,
                    self.max_body
                ),
            });
        }
        let total = len + 1;
        if self.buf.len() < total {
            // Make room for the rest of this frame in one go so a large row
            // does not take many small reads.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        let body = self.buf.split_to(len - 4).freeze();
        Ok(Some(Frame { tag, body }))
    }

    /// Reads whatever the socket has (at least one byte).
    pub(crate) async fn fill(&mut self) -> Result<(), PgError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self
            .rd
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| PgError::io(&self.addr, "reading from the server", e))?;
        if n == 0 {
            return Err(PgError::Connection {
                addr: self.addr.to_string(),
                context: "reading from the server".into(),
                message: "the server closed the connection".into(),
            });
        }
        Ok(())
    }

    /// The next frame, reading as needed.
    pub(crate) async fn next_frame(&mut self) -> Result<Frame, PgError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }
}

impl FrameReader {
    /// A reader over bytes already received, with nothing more to come:
    /// lets recorded or made-up server output go through the real framing.
    pub(crate) fn from_bytes(data: &[u8], addr: &str) -> FrameReader {
        FrameReader {
            rd: Box::new(tokio::io::empty()),
            buf: BytesMut::from(data),
            addr: addr.into(),
            max_body: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// The write half, with its own encode buffer.
pub(crate) struct FrameWriter {
    wr: Box<dyn AsyncWrite + Send + Unpin>,
    buf: BytesMut,
    addr: Arc<str>,
}

impl FrameWriter {
    async fn flush_buf(&mut self, context: &str) -> Result<(), PgError> {
        let r = async {
            self.wr.write_all(&self.buf).await?;
            self.wr.flush().await
        }
        .await;
        self.buf.clear();
        r.map_err(|e| PgError::io(&self.addr, context, e))
    }

    /// Sends a standby status update. `reply` asks the server to answer
    /// with a keepalive right away, which doubles as a liveness probe.
    pub(crate) async fn status_update(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply: bool,
    ) -> Result<(), PgError> {
        let mut body = [0u8; 34];
        body[0] = b'r';
        body[1..9].copy_from_slice(&write.0.to_be_bytes());
        body[9..17].copy_from_slice(&flush.0.to_be_bytes());
        body[17..25].copy_from_slice(&apply.0.to_be_bytes());
        body[25..33].copy_from_slice(&now_pg_micros().to_be_bytes());
        body[33] = u8::from(reply);
        self.buf.put_u8(b'd');
        self.buf.put_i32(4 + body.len() as i32);
        self.buf.put_slice(&body);
        self.flush_buf("sending a standby status update").await
    }

    /// Ends the client's side of the CopyBoth stream.
    pub(crate) async fn copy_done(&mut self) -> Result<(), PgError> {
        frontend::copy_done(&mut self.buf);
        self.flush_buf("ending the replication stream").await
    }

    /// Says goodbye and closes the socket.
    pub(crate) async fn terminate(mut self) {
        frontend::terminate(&mut self.buf);
        // The connection is going away either way; a failure to say so
        // politely changes nothing.
        let _ = self.flush_buf("terminating").await;
        let _ = self.wr.shutdown().await;
    }

    async fn query(&mut self, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, &mut self.buf).map_err(|e| PgError::Config(e.to_string()))?;
        self.flush_buf("sending a query").await
    }
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Clone, Debug)]
pub(crate) struct SystemInfo {
    /// The cluster's unique system identifier.
    pub(crate) system_id: String,
    /// The database the connection is bound to.
    pub(crate) dbname: Option<String>,
}

/// An open, authenticated replication connection, ready for commands.
pub(crate) struct ReplConn {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
    pub(crate) addr: Arc<str>,
    /// Major version from the `server_version` parameter (15 for 15.4).
    pub(crate) server_major: u32,
    /// Whether a cleartext password sent here stays off the network
    /// (TLS, or a Unix socket).
    pub(crate) private: bool,
}

impl ReplConn {
    /// Connects, starts up with `replication=database` and authenticates.
    pub(crate) async fn connect(cfg: &PostgresConfig) -> Result<ReplConn, PgError> {
        let addr: Arc<str> = cfg.address().into();
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(cfg, addr.clone())).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Connection {
                addr: addr.to_string(),
                context: "opening the replication connection".into(),
                message: format!("no answer within {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    async fn connect_inner(cfg: &PostgresConfig, addr: Arc<str>) -> Result<ReplConn, PgError> {
        let stream = tls::open(cfg, &addr, "opening the replication connection").await?;
        let private = stream.is_private();
        let (rd, wr): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = match stream {
            // Owned halves of a plain socket need no lock between them.
            PgStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            #[cfg(unix)]
            PgStream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            s @ PgStream::Tls(_) => {
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
        };
        let mut conn = ReplConn {
            reader: FrameReader::new(rd, addr.clone(), cfg.max_message_bytes),
            writer: FrameWriter {
                wr,
                buf: BytesMut::with_capacity(256),
                addr: addr.clone(),
            },
            addr,
            server_major: 0,
            private,
        };
        conn.startup(cfg).await?;
        Ok(conn)
    }

    async fn startup(&mut self, cfg: &PostgresConfig) -> Result<(), PgError> {
        let params = [
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("replication", "database"),
            ("application_name", cfg.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("options", SESSION_OPTIONS),
        ];
        frontend::startup_message(params, &mut self.writer.buf)
            .map_err(|e| PgError::Config(format!("postgres: invalid startup parameter: {e}")))?;
        self.writer.flush_buf("sending the startup message").await?;

        let auth_err = |message: String| PgError::Auth {
            addr: self.addr.to_string(),
            user: cfg.user.clone(),
            message,
        };
        let password = || {
            cfg.password.as_deref().ok_or_else(|| {
                auth_err("the server asks for a password but none is configured".into())
            })
        };
        let policy = AuthPolicy::new(cfg, self.private);
        let mut scram = Scram::NotStarted;
        // An allowed method ran to its end, for require_auth.
        let mut finished = false;
        loop {
            let f = self.reader.next_frame().await?;
            match f.tag {
                b'R' => {
                    let mut b = f.body.clone();
                    if b.len() < 4 {
                        return Err(self.protocol("short authentication message"));
                    }
                    let code = b.get_i32();
                    policy.check_request(code).map_err(auth_err)?;
                    match code {
                        0 => {
                            // A relay that starts SCRAM with the real
                            // server and then skips to success never
                            // showed the server's proof; refuse that. This
                            // does not stop an impostor that answers
                            // success at once, as a trust server does:
                            // require_auth or verify-full do.
                            if matches!(scram, Scram::Started(_) | Scram::Continued(_)) {
                                return Err(auth_err(
                                    "the server reported success before completing the \
                                     SCRAM exchange, so it never proved it knows the password; \
                                     this is not the expected server, or the connection is \
                                     being tampered with"
                                        .into(),
                                ));
                            }
                            policy.check_ok(finished).map_err(auth_err)?;
                        }
                        3 => {
                            frontend::password_message(
                                password()?.as_bytes(),
                                &mut self.writer.buf,
                            )
                            .map_err(|e| auth_err(e.to_string()))?;
                            self.writer.flush_buf("sending the password").await?;
                            finished = true;
                        }
                        5 => {
                            if b.len() < 4 {
                                return Err(self.protocol("short MD5 salt"));
                            }
                            let salt = [b[0], b[1], b[2], b[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                cfg.user.as_bytes(),
                                password()?.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut self.writer.buf)
                                .map_err(|e| auth_err(e.to_string()))?;
                            self.writer.flush_buf("sending the MD5 password").await?;
                            finished = true;
                        }
                        10 => {
                            let mechs: Vec<&[u8]> =
                                b.split(|&c| c == 0).filter(|m| !m.is_empty()).collect();
                            if !mechs.iter().any(|m| *m == SCRAM_SHA_256.as_bytes()) {
                                let names: Vec<_> =
                                    mechs.iter().map(|m| String::from_utf8_lossy(m)).collect();
                                return Err(auth_err(format!(
                                    "the server offers SASL mechanisms {names:?} but Weir speaks \
                                     only SCRAM-SHA-256 (without TLS channel binding)"
                                )));
                            }
                            // Channel binding (SCRAM-SHA-256-PLUS) is not
                            // offered; "n" tells the server so honestly.
                            let s = ScramSha256::new(
                                password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                s.message(),
                                &mut self.writer.buf,
                            )
                            .map_err(|e| auth_err(e.to_string()))?;
                            self.writer
                                .flush_buf("sending the SCRAM first message")
                                .await?;
                            scram = Scram::Started(s);
                        }
                        11 => {
                            let Scram::Started(mut s) = std::mem::take(&mut scram) else {
                                return Err(self.protocol("SASL continue out of order"));
                            };
                            s.update(&b)
                                .map_err(|e| auth_err(format!("SCRAM exchange failed: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.writer.buf)
                                .map_err(|e| auth_err(e.to_string()))?;
                            self.writer
                                .flush_buf("sending the SCRAM final message")
                                .await?;
                            scram = Scram::Continued(s);
                        }
                        12 => {
                            let Scram::Continued(mut s) = std::mem::take(&mut scram) else {
                                return Err(self.protocol("SASL final out of order"));
                            };
                            s.finish(&b).map_err(|e| {
                                auth_err(format!("the server's SCRAM signature is invalid: {e}"))
                            })?;
                            scram = Scram::Verified;
                            finished = true;
                        }
                        other => {
                            let name = match other {
                                2 => "Kerberos V5",
                                6 => "SCM credentials",
                                7 | 8 => "GSSAPI",
                                9 => "SSPI",
                                _ => "an unknown method",
                            };
                            return Err(auth_err(format!(
                                "the server asks for {name} (code {other}); Weir supports trust, \
                                 password, md5 and scram-sha-256"
                            )));
                        }
                    }
                }
                b'E' => {
                    let error = parse_error_fields(&f.body);
                    // Class 28 is "invalid authorization specification":
                    // wrong password, no pg_hba.conf entry, and the like.
                    if error.code.starts_with("28") {
                        return Err(auth_err(error.to_string()));
                    }
                    return Err(self.server_error("logging in", error));
                }
                b'S' => {
                    let mut parts = f.body.split(|&c| c == 0);
                    if parts.next() == Some(b"server_version".as_slice())
                        && let Some(v) = parts.next()
                    {
                        self.server_major = parse_major(v);
                    }
                }
                b'K' | b'N' => log_notice(&f),
                b'Z' => return Ok(()),
                t => {
                    return Err(self.protocol(&format!(
                        "unexpected message {:?} during startup",
                        t as char
                    )));
                }
            }
        }
    }

    fn protocol(&self, message: &str) -> PgError {
        PgError::Protocol {
            addr: self.addr.to_string(),
            message: message.to_owned(),
        }
    }

    fn server_error(&self, context: &str, error: ServerError) -> PgError {
        PgError::Server {
            addr: self.addr.to_string(),
            context: context.to_owned(),
            error: Box::new(error),
        }
    }

    /// Runs one simple query and returns its rows as text.
    pub(crate) async fn simple_query(
        &mut self,
        sql: &str,
        context: &str,
    ) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.writer.query(sql).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let f = self.reader.next_frame().await?;
            match f.tag {
                b'T' | b'C' | b'I' | b'S' => {}
                b'D' => rows.push(parse_data_row(&f.body).ok_or_else(|| {
                    self.protocol(&format!("malformed data row in answer to {sql:?}"))
                })?),
                b'E' => error = Some(parse_error_fields(&f.body)),
                b'N' => log_notice(&f),
                b'Z' => break,
                t => {
                    return Err(self.protocol(&format!(
                        "unexpected message {:?} in answer to {sql:?}",
                        t as char
                    )));
                }
            }
        }
        match error {
            Some(e) => Err(self.server_error(context, e)),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub(crate) async fn identify_system(&mut self) -> Result<SystemInfo, PgError> {
        let rows = self
            .simple_query("IDENTIFY_SYSTEM", "identifying the system")
            .await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| self.protocol("IDENTIFY_SYSTEM returned no row"))?;
        let mut it = row.into_iter();
        let system_id = it
            .next()
            .flatten()
            .ok_or_else(|| self.protocol("IDENTIFY_SYSTEM returned no system id"))?;
        let dbname = it.nth(2).flatten();
        Ok(SystemInfo { system_id, dbname })
    }

    /// `CREATE_REPLICATION_SLOT slot LOGICAL pgoutput`, without exporting
    /// a snapshot. Returns the slot's consistent point.
    pub(crate) async fn create_logical_slot(&mut self, slot: &str) -> Result<Lsn, PgError> {
        Ok(self.create_slot(slot, false).await?.0)
    }

    /// Creates the slot and exports its snapshot: the name workers import
    /// (`SET TRANSACTION SNAPSHOT`), valid while this connection stays
    /// idle. Returns the consistent point and the snapshot's name.
    pub(crate) async fn create_logical_slot_exporting(
        &mut self,
        slot: &str,
    ) -> Result<(Lsn, String), PgError> {
        let (lsn, name) = self.create_slot(slot, true).await?;
        let name = name.ok_or_else(|| {
            self.protocol("CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT returned no snapshot name")
        })?;
        Ok((lsn, name))
    }

    async fn create_slot(
        &mut self,
        slot: &str,
        export: bool,
    ) -> Result<(Lsn, Option<String>), PgError> {
        // Slot names are validated to [a-z0-9_], so they need no quoting.
        let how = if export {
            "EXPORT_SNAPSHOT"
        } else {
            "NOEXPORT_SNAPSHOT"
        };
        let sql = format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput {how}");
        let rows = self
            .simple_query(&sql, &format!("creating replication slot {slot:?}"))
            .await?;
        let first = rows.first();
        let lsn = first
            .and_then(|r| r.get(1).cloned().flatten())
            .ok_or_else(|| self.protocol("CREATE_REPLICATION_SLOT returned no consistent point"))?;
        let lsn = lsn
            .parse()
            .map_err(|e| self.protocol(&format!("CREATE_REPLICATION_SLOT: {e}")))?;
        Ok((lsn, first.and_then(|r| r.get(2).cloned().flatten())))
    }

    /// Sends `START_REPLICATION` and waits for CopyBothResponse. Returns the
    /// server's error (for example "slot is active") as [`PgError::Server`].
    pub(crate) async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
        binary: bool,
        streaming: bool,
    ) -> Result<(), PgError> {
        // The publication list is a string literal holding identifiers:
        // quote as an identifier, then as a literal.
        let pubs = quote_ident(publication).replace('\'', "''");
        let version = if streaming { 2 } else { 1 };
        let mut opts = format!("proto_version '{version}', publication_names '{pubs}'");
        if self.server_major >= 14 {
            opts.push_str(", messages 'true'");
            if binary {
                opts.push_str(", binary 'true'");
            }
            if streaming {
                opts.push_str(", streaming 'true'");
            }
        } else if binary || streaming {
            return Err(PgError::Config(format!(
                "postgres at {}: {} needs PostgreSQL 14 or later (server is {})",
                self.addr,
                if binary { "binary mode" } else { "streaming" },
                self.server_major
            )));
        }
        let sql = format!("START_REPLICATION SLOT {slot} LOGICAL {start} ({opts})");
        self.writer.query(&sql).await?;
        loop {
            let f = self.reader.next_frame().await?;
            match f.tag {
                b'W' => return Ok(()),
                b'E' => {
                    let e = parse_error_fields(&f.body);
                    // Read up to ReadyForQuery so the connection could be
                    // reused; the caller usually drops it.
                    loop {
                        let f = self.reader.next_frame().await?;
                        if f.tag == b'Z' {
                            break;
                        }
                    }
                    return Err(
                        self.server_error(&format!("starting replication from slot {slot:?}"), e)
                    );
                }
                b'N' | b'S' => log_notice(&f),
                t => {
                    return Err(self.protocol(&format!(
                        "unexpected message {:?} in answer to START_REPLICATION",
                        t as char
                    )));
                }
            }
        }
    }

    /// Closes the connection politely.
    pub(crate) async fn close(self) {
        self.writer.terminate().await;
    }
}

/// Where a SCRAM exchange stands; AuthenticationOk is believed only
/// before one starts (trust, password, MD5) or after it is verified.
#[derive(Default)]
enum Scram {
    #[default]
    NotStarted,
    /// Client-first sent.
    Started(ScramSha256),
    /// Client-final sent; the server's signature is still to be checked.
    Continued(ScramSha256),
    /// The server proved it knows the password.
    Verified,
}

fn parse_major(v: &[u8]) -> u32 {
    v.iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0u32, |acc, &c| {
            acc.saturating_mul(10).saturating_add(u32::from(c - b'0'))
        })
}

/// Logs a NoticeResponse (and ignores other informational messages).
pub(crate) fn log_notice(f: &Frame) {
    if f.tag == b'N' {
        let n = parse_error_fields(&f.body);
        tracing::info!(severity = %n.severity, code = %n.code, "postgres: {}", n.message);
    }
}

/// Parses the fields of an ErrorResponse or NoticeResponse body.
pub(crate) fn parse_error_fields(body: &[u8]) -> ServerError {
    let mut e = ServerError::default();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        rest = tail.get(end + 1..).unwrap_or(&[]);
        match kind {
            // 'V' is the untranslated severity; prefer it over 'S'.
            b'V' => e.severity = value,
            b'S' if e.severity.is_empty() => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    e
}

fn parse_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let mut b = body;
    if b.len() < 2 {
        return None;
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return None;
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            if b.len() < len {
                return None;
            }
            row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
            b.advance(len);
        }
    }
    Some(row)
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Now, in microseconds since 2000-01-01 UTC.
fn now_pg_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields() {
        let body =
            b"SERROR\0VERROR\0C55006\0Mreplication slot \"s\" is active for PID 7\0Dd\0Hh\0\0";
        let e = parse_error_fields(body);
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "55006");
        assert_eq!(e.message, "replication slot \"s\" is active for PID 7");
        assert_eq!(e.detail.as_deref(), Some("d"));
        assert_eq!(e.hint.as_deref(), Some("h"));
    }

    #[test]
    fn huge_announced_length_is_refused_before_reserving() {
        // Found by the frames fuzz target: the length is the server's word,
        // and reserving it unchecked asked the allocator for 4 GiB.
        let mut r = FrameReader::from_bytes(b"d\xff\xff\xff\xffw", "test");
        let err = r.try_frame().unwrap_err().to_string();
        assert!(err.contains("announces 4294967291 bytes"), "{err}");
        // The largest message a server can build still waits for its bytes.
        let mut r = FrameReader::from_bytes(&[b'd', 0x40, 0, 0, 4, b'w'], "test");
        assert!(r.try_frame().unwrap().is_none());
    }

    #[test]
    fn data_row() {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i32(2);
        b.put_slice(b"ab");
        b.put_i32(-1);
        b.put_i32(0);
        assert_eq!(
            parse_data_row(&b).unwrap(),
            vec![Some("ab".into()), None, Some(String::new())]
        );
        assert!(parse_data_row(&b[..5]).is_none());
    }

    #[tokio::test]
    async fn announced_length_beyond_the_cap_is_refused_unallocated() {
        let mut data = vec![b'd'];
        data.extend_from_slice(&(u32::MAX - 8).to_be_bytes());
        data.extend_from_slice(b"whatever follows");
        let mut r = FrameReader::new(
            Box::new(std::io::Cursor::new(data)),
            "db:5432".into(),
            crate::DEFAULT_MAX_MESSAGE_BYTES,
        );
        let err = r.next_frame().await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PgError::Protocol { .. }), "{msg}");
        assert!(
            msg.contains(
                "message 'd' announces 4294967283 bytes, more than max_message_bytes (1073741824)"
            ),
            "{msg}"
        );
        assert!(r.buf.capacity() <= 2 * READ_CHUNK, "{}", r.buf.capacity());

        // At the cap is fine.
        let mut data = vec![b'd'];
        data.extend_from_slice(&(4u32 + 16).to_be_bytes());
        data.extend_from_slice(&[7; 16]);
        let mut r = FrameReader::new(Box::new(std::io::Cursor::new(data)), "db:5432".into(), 16);
        assert_eq!(r.next_frame().await.unwrap().body.len(), 16);
    }

    #[test]
    fn quoting_and_versions() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(parse_major(b"15.4 (Debian 15.4-1)"), 15);
        assert_eq!(parse_major(b"16beta1"), 16);
    }
}
