//! TLS against a private cluster started with `ssl = on` and a CA and
//! server certificate made here. Its pg_hba.conf has only `hostssl` lines
//! for TCP, so every connection that gets in over TCP was encrypted.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::auth_tests::{Cluster, admin, stream_one_row};
use crate::conn::ReplConn;
use crate::{PgError, PostgresConfig, PostgresSource, SslMode};

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes the server's certificate (for `localhost` only, so that
/// `127.0.0.1` is a name it does not hold) and key, a CA file that signed
/// it and one that did not.
fn write_pki(dir: &Path) -> Result<String, String> {
    let ca = new_ca("Weir test CA");
    let other = new_ca("Some other CA");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &*ca).unwrap();
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    write("server.crt", &cert.pem())?;
    write("server.key", &key.serialize_pem())?;
    write("ca.pem", &ca.pem())?;
    write("other-ca.pem", &other.pem())?;
    // Postgres refuses a key others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
        dir.display()
    ))
}

struct Tls<'a> {
    cluster: &'a Cluster,
}

impl Tls<'_> {
    fn config(
        &self,
        host: &str,
        mode: SslMode,
        root: Option<&str>,
        user: &str,
        slot: &str,
    ) -> PostgresConfig {
        let password = match user {
            "scram_user" => Some("scram secret"),
            "pw_user" => Some("plain secret"),
            _ => None,
        };
        PostgresConfig {
            host: host.into(),
            ssl_mode: mode,
            ssl_root_cert: root.map(|r| self.cluster.dir.join(r)),
            ..self.cluster.config(user, password, slot)
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.cluster.dir.join(name)
    }
}

/// Both connections fail with a TLS error whose message holds `needle`.
async fn both_fail(cfg: PostgresConfig, needle: &str) {
    let what = format!("{} {:?} {:?}", cfg.host, cfg.ssl_mode, cfg.ssl_root_cert);
    let repl = ReplConn::connect(&cfg).await.err();
    let sql = PostgresSource::prepare(cfg).await.err();
    for (which, err) in [("replication", repl), ("SQL", sql)] {
        let err = err.unwrap_or_else(|| panic!("{what}: the {which} connection succeeded"));
        assert!(
            matches!(&err, PgError::Tls { message, .. } if message.contains(needle)),
            "{what}, {which} connection: expected a TLS error naming {needle:?}, got {err}"
        );
        assert!(!err.is_retryable(), "{err}");
    }
}

#[tokio::test]
async fn sslmodes_against_a_tls_cluster() {
    let hba = "local all all trust\n\
               hostssl all scram_user 127.0.0.1/32 scram-sha-256\n\
               hostssl all pw_user 127.0.0.1/32 password\n\
               hostssl all postgres 127.0.0.1/32 trust\n";
    let cluster = Cluster::start_with(hba, write_pki)
        .unwrap_or_else(|e| panic!("starting a private cluster: {e}"));
    let admin = admin(&cluster).await;
    admin
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY);
             CREATE PUBLICATION p FOR TABLE t;
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram secret';
             CREATE ROLE pw_user LOGIN REPLICATION PASSWORD 'plain secret';",
        )
        .await
        .unwrap();
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(ssl, "on");
    let tls = Tls { cluster: &cluster };

    // verify-full by the certificate's name: SCRAM over TLS, then the
    // cleartext password, which TLS makes acceptable without consent.
    for (i, user) in ["scram_user", "pw_user"].into_iter().enumerate() {
        let cfg = tls.config(
            "localhost",
            SslMode::VerifyFull,
            Some("ca.pem"),
            user,
            &format!("full_{user}"),
        );
        assert!(!cfg.allow_cleartext_password);
        stream_one_row(cfg, &admin, i as i32).await;
    }

    // Only a trusted CA will do, in every mode that is given one.
    for mode in [
        SslMode::VerifyFull,
        SslMode::VerifyCa,
        SslMode::Require,
        SslMode::Prefer,
    ] {
        let cfg = tls.config("localhost", mode, Some("other-ca.pem"), "scram_user", "x");
        let needle = format!(
            "not issued by a CA in sslrootcert {}",
            tls.file("other-ca.pem").display()
        );
        both_fail(cfg, &needle).await;
    }

    // The certificate names localhost, not 127.0.0.1: verify-full refuses
    // it, naming both; verify-ca checks only the CA and gets in.
    let cfg = tls.config(
        "127.0.0.1",
        SslMode::VerifyFull,
        Some("ca.pem"),
        "scram_user",
        "x",
    );
    both_fail(cfg, "not valid for host \"127.0.0.1\" (it names localhost)").await;
    let cfg = tls.config(
        "127.0.0.1",
        SslMode::VerifyCa,
        Some("ca.pem"),
        "scram_user",
        "ca_scram",
    );
    stream_one_row(cfg, &admin, 10).await;

    // Without a root certificate, require and prefer encrypt without
    // checking the certificate (libpq's meaning).
    for (i, mode) in [SslMode::Require, SslMode::Prefer].into_iter().enumerate() {
        let slot = format!("unverified_{i}");
        let cfg = tls.config("127.0.0.1", mode, None, "scram_user", &slot);
        stream_one_row(cfg, &admin, 20 + i as i32).await;
    }

    // The hostssl lines are what proves the successes above were
    // encrypted: unencrypted, the server does not let Weir in.
    let cfg = tls.config("localhost", SslMode::Disable, None, "scram_user", "x");
    let err = ReplConn::connect(&cfg)
        .await
        .err()
        .expect("plaintext let in");
    assert!(
        matches!(&err, PgError::Auth { message, .. } if message.contains("no encryption")),
        "{err}"
    );

    // Configuration mistakes are named before anything is sent.
    let cfg = tls.config("localhost", SslMode::VerifyFull, None, "scram_user", "x");
    let err = PostgresSource::prepare(cfg).await.err().unwrap();
    assert!(err.to_string().contains("needs sslrootcert"), "{err}");
    let cfg = tls.config(
        "localhost",
        SslMode::VerifyFull,
        Some("missing.pem"),
        "scram_user",
        "x",
    );
    let err = PostgresSource::prepare(cfg).await.err().unwrap();
    assert!(
        matches!(&err, PgError::Config(m) if m.contains("missing.pem")),
        "{err}"
    );
    let cfg = tls.config(
        "localhost",
        SslMode::VerifyFull,
        Some("server.key"),
        "scram_user",
        "x",
    );
    let err = ReplConn::connect(&cfg).await.err().unwrap();
    assert!(
        matches!(&err, PgError::Config(m) if m.contains("no PEM certificate")),
        "{err}"
    );
}
