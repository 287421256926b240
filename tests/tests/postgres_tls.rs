//! `[source] sslmode` and `sslrootcert` through the real binary, against a
//! private cluster with `ssl = on` and a certificate made here: verify-full
//! streams over TLS (the walsender says so), and an untrusted CA stops Weir
//! before it reads anything, naming the certificate problem.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use weir_tests::*;

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

/// CA, other CA, and a server certificate for `localhost` signed by the
/// first, in `dir`, readable by the server.
fn write_pki(dir: &Path) {
    let ca = new_ca("Weir e2e CA");
    let other = new_ca("Unrelated CA");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &*ca).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // The server runs as `postgres` and refuses a key it does not own.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        let st = std::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "chown the certificate directory");
    }
}

fn config(dir: &Path, port: u16, root: &str) -> std::path::PathBuf {
    let path = dir.join(format!("weir-{root}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\nhost = \"localhost\"\nport = {port}\nuser = \"postgres\"\n\
             database = \"postgres\"\ntables = [\"t\"]\nslot = \"tls_e2e\"\n\
             sslmode = \"verify-full\"\nsslrootcert = \"{root}\"\n\n\
             [sinks.out]\ntype = \"file\"\npath = {:?}\n",
            dir.join("out.jsonl")
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn verify_full_streams_over_tls_and_an_untrusted_ca_stops_weir() {
    let certs = tempfile::tempdir().unwrap();
    write_pki(certs.path());
    let file = |name: &str| format!("'{}'", certs.path().join(name).display());
    let cluster = PrivateCluster::start(&[
        ("wal_level", "logical"),
        ("ssl", "on"),
        ("ssl_cert_file", &file("server.crt")),
        ("ssl_key_file", &file("server.key")),
    ]);
    let (admin, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();

    // An untrusted CA: Weir stops at once, saying which check failed, and
    // creates nothing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        certs.path().join("other-ca.pem"),
        dir.path().join("other-ca.pem"),
    )
    .unwrap();
    std::fs::copy(certs.path().join("ca.pem"), dir.path().join("ca.pem")).unwrap();
    let bad = config(dir.path(), cluster.port, "other-ca.pem");
    let (status, out) = run_weir(
        &["run", "--config", bad.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("TLS: the server's certificate was not issued by a CA in sslrootcert")
            && out.contains("other-ca.pem"),
        "{out}"
    );
    let slots: i64 = admin
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        slots, 0,
        "nothing may be created past a refused certificate"
    );

    // The trusted CA, found relative to the config file.
    let good = config(dir.path(), cluster.port, "ca.pem");
    let mut weir = WeirProcess::start(&good, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Encrypted walsender streaming from the slot: Weir is capturing.
    let tls_walsender = "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
                         WHERE r.application_name = 'weir' AND s.ssl";
    loop {
        let n: i64 = admin.query_one(tls_walsender, &[]).await.unwrap().get(0);
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline && weir.is_running(),
            "no encrypted walsender for weir:\n{}",
            weir.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .execute("INSERT INTO t VALUES (42)", &[])
        .await
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let lines = tokio::task::spawn_blocking(move || wait_lines(&out, 1, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(lines[0]["after"]["id"], 42, "{lines:?}");
    let status = weir.terminate().expect("exit status");
    assert!(
        status.success(),
        "weir exited with {status}:\n{}",
        weir.log()
    );
}
