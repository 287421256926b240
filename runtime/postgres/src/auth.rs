//! What the server may ask of Weir while logging in, checked the same way
//! on both connections: the replication connection asks [`AuthPolicy`]
//! itself, and the SQL connection's stream is wrapped in an [`AuthGuard`],
//! which reads the authentication requests tokio-postgres receives and
//! fails the read before tokio-postgres answers a refused one.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{AuthMethod, PostgresConfig, RequireAuth};

/// Why a cleartext password request is refused, and the ways out.
pub(crate) const CLEARTEXT_REFUSED: &str = "the server asks for the password in cleartext over an unencrypted TCP connection, and \
     Weir does not send it there; use TLS (sslmode), switch the role to scram-sha-256, or set \
     allow_cleartext_password = true";

/// The rules for one connection: `require_auth`, and whether a cleartext
/// password may be sent over it.
#[derive(Clone, Debug)]
pub(crate) struct AuthPolicy {
    require: RequireAuth,
    cleartext_ok: bool,
}

impl AuthPolicy {
    /// `private`: the stream keeps a cleartext password off the network.
    pub(crate) fn new(cfg: &PostgresConfig, private: bool) -> AuthPolicy {
        AuthPolicy {
            require: cfg.require_auth.clone(),
            cleartext_ok: private || cfg.allow_cleartext_password,
        }
    }

    /// Whether Weir may answer the server's authentication request `code`
    /// (3 cleartext, 5 MD5, 10 SASL). Other codes are not judged here.
    pub(crate) fn check_request(&self, code: i32) -> Result<(), String> {
        let method = match code {
            3 => AuthMethod::Password,
            5 => AuthMethod::Md5,
            10 => AuthMethod::ScramSha256,
            _ => return Ok(()),
        };
        if !self.require.allows(method) {
            return Err(format!(
                "the server asks for {} authentication, which require_auth = {:?} does not allow",
                method.name(),
                self.require.to_string()
            ));
        }
        if method == AuthMethod::Password && !self.cleartext_ok {
            return Err(CLEARTEXT_REFUSED.into());
        }
        Ok(())
    }

    /// Whether AuthenticationOk may end the exchange; `finished` says an
    /// allowed method ran to its end (the password sent, or the server's
    /// SCRAM signature verified).
    pub(crate) fn check_ok(&self, finished: bool) -> Result<(), String> {
        if !finished && !self.require.allows(AuthMethod::None) {
            return Err(format!(
                "the server reported success without authenticating Weir (as a trust server, \
                 or one not knowing the password, does), and require_auth = {:?} does not \
                 allow none",
                self.require.to_string()
            ));
        }
        Ok(())
    }
}

/// Applies an [`AuthPolicy`] to the SQL connection, for which
/// tokio-postgres does the login (and would simply answer any request it
/// can). It watches the backend messages up to the first ReadyForQuery and
/// is a plain pass-through after that.
pub(crate) struct AuthGuard<S> {
    inner: S,
    policy: AuthPolicy,
    /// Tag, length and (for `R`) the authentication code of the message
    /// being read.
    head: [u8; 9],
    have: usize,
    /// Body bytes of the current message still to pass by.
    skip: usize,
    /// An allowed method ran to its end: tokio-postgres was asked for the
    /// password, or received the SCRAM final message (which it verifies).
    finished: bool,
    watching: bool,
}

/// The error [`AuthGuard`] fails the read with; found again by
/// [`AuthGuard::refusal`].
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl<S> AuthGuard<S> {
    pub(crate) fn new(inner: S, policy: AuthPolicy) -> Self {
        AuthGuard {
            inner,
            policy,
            head: [0; 9],
            have: 0,
            skip: 0,
            finished: false,
            watching: true,
        }
    }

    /// This guard's refusal, when `e` (anywhere in its chain) is one.
    pub(crate) fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(r) = err
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|i| i.downcast_ref::<Refused>())
            {
                return Some(r.0.clone());
            }
            cur = err.source();
        }
        None
    }

    /// Follows the message framing through `data`; `Err` on a request the
    /// policy refuses.
    fn watch(&mut self, mut data: &[u8]) -> io::Result<()> {
        while self.watching && !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let want = if self.have >= 1 && self.head[0] == b'R' {
                9
            } else {
                5
            };
            let n = (want - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < want || (want == 5 && self.head[0] == b'R') {
                continue;
            }
            let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                as usize;
            let body = len.saturating_sub(4);
            match self.head[0] {
                b'R' => {
                    let code = i32::from_be_bytes([
                        self.head[5],
                        self.head[6],
                        self.head[7],
                        self.head[8],
                    ]);
                    let verdict = match code {
                        0 => self.policy.check_ok(self.finished),
                        3 | 5 => self.policy.check_request(code).map(|()| {
                            self.finished = true;
                        }),
                        12 => {
                            self.finished = true;
                            Ok(())
                        }
                        _ => self.policy.check_request(code),
                    };
                    if let Err(m) = verdict {
                        return Err(io::Error::new(io::ErrorKind::PermissionDenied, Refused(m)));
                    }
                    self.skip = body.saturating_sub(4);
                }
                b'Z' => self.watching = false,
                _ => self.skip = body,
            }
            self.have = 0;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(e) = this.watch(&buf.filled()[before..]) {
            // Nothing of the refused request reaches the client.
            buf.set_filled(before);
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn policy(require_auth: &str, cleartext_ok: bool) -> AuthPolicy {
        AuthPolicy {
            require: require_auth.parse().unwrap(),
            cleartext_ok,
        }
    }

    #[test]
    fn guard_finds_cleartext_request_split_anywhere() {
        let mut stream = msg(b'N', b"SNOTICE\0Mhi\0\0");
        stream.extend(msg(b'R', &3i32.to_be_bytes()));
        for cut in 0..stream.len() {
            let mut g = AuthGuard::new((), policy("", false));
            let r = g
                .watch(&stream[..cut])
                .and_then(|()| g.watch(&stream[cut..]));
            assert!(r.is_err(), "cut at {cut}");
        }
        // SCRAM, MD5 and trust pass; after ReadyForQuery nothing is watched.
        let mut ok = msg(b'R', &[0, 0, 0, 10, b'S', b'C', 0, 0]);
        ok.extend(msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]));
        ok.extend(msg(b'R', &0i32.to_be_bytes()));
        ok.extend(msg(b'Z', b"I"));
        ok.extend(msg(b'R', &3i32.to_be_bytes()));
        let mut g = AuthGuard::new((), policy("", false));
        for b in &ok {
            g.watch(std::slice::from_ref(b)).unwrap();
        }
    }

    #[test]
    fn guard_applies_require_auth() {
        let ok = msg(b'R', &0i32.to_be_bytes());
        let sasl = msg(b'R', &[0, 0, 0, 10, b'S', b'C', 0, 0]);
        let fin = msg(b'R', &[0, 0, 0, 12, b'v', b'=']);
        let md5 = msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        let run = |require: &str, msgs: &[&[u8]]| {
            let mut g = AuthGuard::new((), policy(require, true));
            msgs.iter()
                .try_for_each(|m| g.watch(m))
                .map_err(|e| e.to_string())
        };
        // Success at once: fine for anything-goes and for none, not for scram.
        run("", &[&ok]).unwrap();
        run("none", &[&ok]).unwrap();
        let e = run("scram-sha-256", &[&ok]).unwrap_err();
        assert!(e.contains("without authenticating"), "{e}");
        // SCRAM to its end passes; MD5 is refused when not listed.
        run("scram-sha-256", &[&sasl, &fin, &ok]).unwrap();
        let e = run("scram-sha-256", &[&md5]).unwrap_err();
        assert!(e.contains("md5 authentication"), "{e}");
        run("md5,scram-sha-256", &[&md5, &ok]).unwrap();
        // SASL started but not finished does not count.
        assert!(run("scram-sha-256", &[&sasl, &ok]).is_err());
    }
}
