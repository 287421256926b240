//! Opening the socket to Postgres and, when asked for, encrypting it.
//!
//! Both connections of the source (the SQL one on tokio-postgres and the
//! hand-written replication one) come through [`open`], so one `sslmode`
//! means the same thing for both and one set of messages explains a
//! refused certificate. TLS is negotiated the Postgres way: an SSLRequest,
//! a one-byte answer, then the handshake, then the usual startup inside it.
//!
//! `sslmode` keeps libpq's meanings:
//!
//! | mode          | TLS                                  | certificate checked          |
//! |---------------|--------------------------------------|------------------------------|
//! | `disable`     | never                                | —                            |
//! | `prefer`      | if the server accepts it             | only when `sslrootcert` is set (chain) |
//! | `require`     | always                               | only when `sslrootcert` is set (chain) |
//! | `verify-ca`   | always                               | chain to `sslrootcert`       |
//! | `verify-full` | always                               | chain and host name          |
//!
//! Unix sockets never use TLS (the server does not offer it there).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{PostgresConfig, SslMode};
use crate::error::PgError;

/// An open socket to Postgres, encrypted or not.
pub(crate) enum PgStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl PgStream {
    /// Whether a password sent in cleartext stays off the network: it is
    /// encrypted, or it goes to a Unix socket, which only this machine's
    /// kernel carries.
    pub(crate) fn is_private(&self) -> bool {
        match self {
            PgStream::Tcp(_) => false,
            PgStream::Tls(_) => true,
            #[cfg(unix)]
            PgStream::Unix(_) => true,
        }
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(unix)]
            PgStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The SSLRequest code: 1234 in the high half, 5679 in the low half.
const SSL_REQUEST: i32 = 80_877_103;

/// Connects to the configured server and negotiates TLS as `sslmode` says.
pub(crate) async fn open(
    cfg: &PostgresConfig,
    addr: &str,
    context: &str,
) -> Result<PgStream, PgError> {
    if cfg.is_unix_socket() {
        #[cfg(unix)]
        {
            let s = tokio::net::UnixStream::connect(addr)
                .await
                .map_err(|e| PgError::io(addr, context, e))?;
            return Ok(PgStream::Unix(s));
        }
        #[cfg(not(unix))]
        {
            return Err(PgError::Config(format!(
                "postgres: host {:?} is a Unix socket directory, which this platform lacks",
                cfg.host
            )));
        }
    }
    // Read the root certificate before connecting: a typo in its path is a
    // configuration error, not a connection problem worth retrying.
    let connector = match cfg.ssl_mode {
        SslMode::Disable => None,
        _ => Some(connector(cfg)?),
    };
    let mut s = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| PgError::io(addr, context, e))?;
    // Status updates are tiny and latency matters for them.
    s.set_nodelay(true)
        .map_err(|e| PgError::io(addr, context, e))?;
    let Some(connector) = connector else {
        return Ok(PgStream::Tcp(s));
    };

    let mut req = [0u8; 8];
    req[..4].copy_from_slice(&8i32.to_be_bytes());
    req[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    s.write_all(&req)
        .await
        .map_err(|e| PgError::io(addr, context, e))?;
    // Exactly one byte: anything the server (or someone in between) sent
    // after it must go through the TLS handshake, not be taken as plaintext.
    let answer = s
        .read_u8()
        .await
        .map_err(|e| PgError::io(addr, "asking the server for TLS", e))?;
    match answer {
        b'S' => {}
        b'N' if cfg.ssl_mode == SslMode::Prefer => return Ok(PgStream::Tcp(s)),
        b'N' => {
            return Err(PgError::Tls {
                addr: addr.to_owned(),
                message: format!(
                    "the server does not accept TLS connections but sslmode is {}; \
                     turn on ssl in the server's configuration, or lower sslmode",
                    cfg.ssl_mode
                ),
            });
        }
        // Postgres's answer when it cannot start a backend at all (too
        // many clients, out of memory at fork): worth retrying. Like libpq,
        // Weir does not read the message after the byte: nothing has
        // authenticated the server yet, so its words could be anyone's.
        b'E' => {
            return Err(PgError::Connection {
                addr: addr.to_owned(),
                context: "asking the server for TLS".into(),
                message: "the server sent an error response instead of S or N, as Postgres \
                          does when it cannot start a session (too many clients, out of \
                          memory); its text is not shown, as it comes before the server is \
                          authenticated"
                    .into(),
            });
        }
        other => {
            return Err(PgError::Protocol {
                addr: addr.to_owned(),
                message: format!(
                    "the server answered the TLS request with byte {other:#04x} instead of S or N"
                ),
            });
        }
    }

    let name = ServerName::try_from(cfg.host.clone()).map_err(|e| {
        PgError::Config(format!(
            "postgres: host {:?} cannot be used as a TLS server name: {e}",
            cfg.host
        ))
    })?;
    match connector.connect(name, s).await {
        Ok(tls) => Ok(PgStream::Tls(Box::new(tls))),
        Err(e) => Err(handshake_error(cfg, addr, e)),
    }
}

fn handshake_error(cfg: &PostgresConfig, addr: &str, e: io::Error) -> PgError {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return PgError::io(addr, "during the TLS handshake", e);
    };
    let root = || match &cfg.ssl_root_cert {
        Some(p) => p.display().to_string(),
        None => "(none)".to_owned(),
    };
    let message = match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate was not issued by a CA in sslrootcert {}",
            root()
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            let presented = match tls {
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    presented,
                    ..
                }) if !presented.is_empty() => {
                    let names: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
                    format!(" (it names {})", names.join(", "))
                }
                _ => String::new(),
            };
            format!(
                "the server's certificate is not valid for host {:?}{presented}; connect by a \
                 name the certificate lists, or use sslmode = verify-ca to check only the CA",
                cfg.host
            )
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("the server's certificate was refused: {c}")
        }
        other => format!("TLS handshake failed: {other}"),
    };
    PgError::Tls {
        addr: addr.to_owned(),
        message: format!("{message} (sslmode = {})", cfg.ssl_mode),
    }
}

/// `localhost` from rustls's `DnsName("localhost")`, `127.0.0.1` from
/// `IpAddress(127.0.0.1)`; anything else as it is.
fn bare_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, rest)) => rest
            .strip_suffix(')')
            .map(|r| r.trim_matches('"'))
            .unwrap_or(presented),
        None => presented,
    }
}

/// A TLS connector checking what `sslmode` and `sslrootcert` ask for.
fn connector(cfg: &PostgresConfig) -> Result<tokio_rustls::TlsConnector, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Connections may be opened without `validate` having run.
    cfg.validate_tls()?;
    let roots = match &cfg.ssl_root_cert {
        Some(path) => Some(Arc::new(load_roots(path)?)),
        None => None,
    };
    let verifier = Verifier {
        roots,
        check_name: cfg.ssl_mode == SslMode::VerifyFull,
        algs: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Config(format!("postgres: TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn load_roots(path: &Path) -> Result<RootCertStore, PgError> {
    let bad =
        |what: String| PgError::Config(format!("postgres: sslrootcert {}: {what}", path.display()));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// Checks the chain against the configured roots (when there are any) and
/// the host name (in `verify-full`); always checks the handshake
/// signatures, so the peer at least holds the key of what it presented.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algs.all,
            )?;
            if self.check_name {
                verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_lose_their_wrapping() {
        assert_eq!(bare_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("db.example"), "db.example");
    }
}
