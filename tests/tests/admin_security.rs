//! The admin endpoint defends the data path: with `admin.token` set,
//! deploys and reads that quote row values need the token; a request
//! naming a host not allowed (a DNS-rebinding page) is refused; Weir will
//! not listen off loopback without a token; one deploy runs at a time and
//! a second is refused before its body is read; bodies are bounded; and
//! only a few validated versions may wait for a transaction boundary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use weir_tests::*;

const TOKEN: &str = "test-token-0123456789abcdef";

/// Sends `head` (request line and headers, without the blank line that
/// ends them) and `body`, and returns the whole response as text.
fn send(port: u16, head: &str, body: &[u8]) -> String {
    let mut s = connect(port, head);
    s.write_all(body).unwrap();
    read_response(&mut s)
}

/// Opens a connection and sends `head` and the blank line after it.
fn connect(port: u16, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin endpoint");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{head}\r\nConnection: close\r\n\r\n").unwrap();
    s
}

/// Everything the server sends until it closes; what came before an
/// error (a reset after an early answer) is kept.
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn body(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or_default()
}

fn get(port: u16, path: &str, extra: &str) -> String {
    send(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}{extra}"),
        b"",
    )
}

fn put(port: u16, path: &str, extra: &str, bytes: &[u8]) -> String {
    send(
        port,
        &format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: {}{extra}",
            bytes.len()
        ),
        bytes,
    )
}

fn bearer(token: &str) -> String {
    format!("\r\nAuthorization: Bearer {token}")
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_and_row_values_need_the_token_and_an_allowed_host() {
    let db = TestDb::new(
        "admin_token",
        "CREATE TABLE t (id int, secret text, PRIMARY KEY (id, secret))",
    )
    .await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("trap.wasm");
    std::fs::copy(plugin("trap"), &trap).unwrap();
    let body_toml = format!(
        "[[transforms]]\nname = \"trapper\"\npath = {trap:?}\nconfig = {{ trap_on_id = \"5\" }}\n\n[plugins]\nwatch = false\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\nallowed_hosts = [\"weir.internal\"]\n"
    );
    let p = FilePipeline::start(&db, &["t"], "", &body_toml);
    let original = std::fs::read(&trap).unwrap();
    let dropper = std::fs::read(plugin("passthrough")).unwrap();

    // Deploying without the token, or with a wrong one, is refused and
    // changes nothing.
    for auth in [
        String::new(),
        bearer("wrong-token-0123456789abcdef"),
        bearer(""),
    ] {
        let refused = put(admin, "/plugins/trapper", &auth, &dropper);
        assert!(refused.starts_with("HTTP/1.1 401"), "{auth:?}: {refused}");
        assert!(refused.contains("www-authenticate: Bearer"), "{refused}");
        assert!(body(&refused).contains("admin token"), "{refused}");
    }
    assert_eq!(std::fs::read(&trap).unwrap(), original);
    // Plugins are listed once the pipeline has started them, a little after
    // the slot exists.
    let plugins = wait_for(Duration::from_secs(30), || {
        let plugins = get(admin, "/plugins", &bearer(TOKEN));
        (!http_json(&plugins)["trapper"].is_null()).then_some(plugins)
    })
    .expect("the plugin is listed on /plugins");
    assert_eq!(http_json(&plugins)["trapper"]["deploys"], 0, "{plugins}");

    // Reads that can quote rows need it too; probes do not.
    for path in ["/status", "/plugins"] {
        let refused = get(admin, path, "");
        assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
    }
    assert!(get(admin, "/metrics", "").starts_with("HTTP/1.1 200"));
    let health = get(admin, "/health", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_eq!(body(&health), "ok\n");

    // A page that rebinds its own name to 127.0.0.1 names itself as Host,
    // and is refused even with the right token.
    for host in [
        "rebind.attacker.example",
        "rebind.attacker.example:80",
        "0.0.0.0",
    ] {
        let refused = send(
            admin,
            &format!(
                "PUT /plugins/trapper HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}{}",
                dropper.len(),
                bearer(TOKEN)
            ),
            &dropper,
        );
        assert!(refused.starts_with("HTTP/1.1 403"), "{host}: {refused}");
        assert!(
            // JSON quotes the name as \"name\".
            body(&refused).contains(&format!(
                "does not answer to host \\\"{}\\\"",
                host.trim_end_matches(":80")
            )) && body(&refused).contains("admin.allowed_hosts"),
            "{refused}"
        );
        let refused = send(admin, &format!("GET /health HTTP/1.1\r\nHost: {host}"), b"");
        assert!(refused.starts_with("HTTP/1.1 403"), "{host}: {refused}");
    }
    assert_eq!(std::fs::read(&trap).unwrap(), original);
    for host in [
        format!("127.0.0.1:{admin}"),
        format!("LOCALHOST:{admin}"),
        format!("weir.internal:{admin}"),
        // Probes and scrapers name the node by its address; no rebinding
        // page can send an address as its name.
        format!("10.1.2.3:{admin}"),
        format!("[fd00::7]:{admin}"),
    ] {
        let ok = send(admin, &format!("GET /health HTTP/1.1\r\nHost: {host}"), b"");
        assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
    }

    // With the token, a deploy goes through.
    let deployed = put(admin, "/plugins/trapper", &bearer(TOKEN), &original);
    assert!(deployed.starts_with("HTTP/1.1 200"), "{deployed}");

    // A halt's reason names the failing change's key, here a secret:
    // without the token /health tells only that it halted.
    db.exec("INSERT INTO t VALUES (5, 'hunter2-row-value')")
        .await;
    let halted = wait_for(Duration::from_secs(60), || {
        let h = get(admin, "/health", "");
        h.starts_with("HTTP/1.1 503").then_some(h)
    })
    .unwrap_or_else(|| panic!("the pipeline did not halt:\n{}", p.weir.log()));
    assert_eq!(body(&halted), "halted\n", "{halted}");
    let told = get(admin, "/health", &bearer(TOKEN));
    assert!(
        told.starts_with("HTTP/1.1 503") && body(&told).contains("hunter2-row-value"),
        "{told}"
    );
    let status = get(admin, "/status", &bearer(TOKEN));
    assert!(status.contains("hunter2-row-value"), "{status}");
    assert!(!get(admin, "/status", "").contains("hunter2"));
    assert!(!get(admin, "/metrics", "").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_deploy_at_a_time_refused_before_its_body_and_bodies_are_bounded() {
    let db = TestDb::new("admin_deploys", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass.wasm");
    std::fs::copy(plugin("passthrough"), &pass).unwrap();
    let body_toml = format!(
        "[[transforms]]\nname = \"pass\"\npath = {pass:?}\n\n[plugins]\nwatch = false\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nmax_body_mib = 1\n"
    );
    let p = FilePipeline::start(&db, &["t"], "", &body_toml);
    let component = std::fs::read(&pass).unwrap();
    let head = |len: usize| {
        format!("PUT /plugins/pass HTTP/1.1\r\nHost: localhost:{admin}\r\nContent-Length: {len}")
    };

    // A first deploy whose body is still arriving holds the endpoint, so
    // a second is refused at once, though it sends no body at all. (Tried
    // again if the second came first: then the first is refused and the
    // second waits for its body until the read times out.)
    let slow_len = 900_000;
    let (mut slow, refused) = wait_for(Duration::from_secs(30), || {
        let mut slow = connect(admin, &head(slow_len));
        slow.write_all(&[0; 1000]).ok()?;
        let mut second = connect(admin, &head(slow_len));
        second
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let r = read_response(&mut second);
        r.starts_with("HTTP/1.1 409").then_some((slow, r))
    })
    .unwrap_or_else(|| panic!("a second deploy was not refused:\n{}", p.weir.log()));
    assert!(
        body(&refused).contains("another deploy is in progress"),
        "{refused}"
    );
    // The first one goes on: its body, not a component, is refused as such.
    slow.write_all(&vec![0; slow_len - 1000]).unwrap();
    let first = read_response(&mut slow);
    assert!(first.starts_with("HTTP/1.1 422"), "{first}");
    // And the endpoint takes deploys again.
    let deployed = put(admin, "/plugins/pass", "", &component);
    assert!(deployed.starts_with("HTTP/1.1 200"), "{deployed}");

    // A declared length over the limit is refused before the body...
    let over = (1 << 20) + 1;
    let mut s = connect(admin, &head(over));
    let refused = read_response(&mut s);
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(
        body(&refused).contains("larger than admin.max_body_mib (1 MiB)"),
        "{refused}"
    );
    // ...and an undeclared one once the limit is passed.
    let mut s = connect(
        admin,
        &format!(
            "PUT /plugins/pass HTTP/1.1\r\nHost: localhost:{admin}\r\nTransfer-Encoding: chunked"
        ),
    );
    let mut writer = s.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..64 {
            if write!(writer, "{:x}\r\n", chunk.len()).is_err()
                || writer.write_all(&chunk).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let refused = read_response(&mut s);
    let _ = s.shutdown(std::net::Shutdown::Both);
    feeder.join().unwrap();
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert_eq!(std::fs::read(&pass).unwrap(), component);
}

#[test]
fn listening_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nhost = {:?}\nport = {}\ndatabase = \"weir_admin_never_created\"\ntables = [\"t\"]\n\n[sinks.out]\ntype = \"file\"\npath = \"-\"\n\n[admin]\nlisten = \"0.0.0.0:0\"\n",
            pg_host(),
            pg_port()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for command in ["run", "check"] {
        let (status, out) = run_weir(&[command, "--config", config], Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{command}: {out}");
        assert!(
            out.contains(
                "admin.listen: 0.0.0.0:0 is not a loopback address, so admin.token must be set"
            ),
            "{command}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn few_new_versions_wait_for_a_transaction_boundary() {
    let db = TestDb::new("admin_swaps", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("stamp.wasm");
    std::fs::write(&stamp, stamp_version(0)).unwrap();
    // The first transform holds the processor inside a transaction: it
    // blocks on row 1 until its deadline, and that change is skipped.
    let body_toml = format!(
        "[[transforms]]\nname = \"hold\"\npath = {:?}\ntimeout = \"10s\"\non_failure = \"skip\"\nconfig = {{ trap_on_id = \"1\" }}\n\n\
         [[transforms]]\nname = \"stamp\"\npath = {stamp:?}\n\n[pipeline]\nmax_batch = 1\n\n\
         [plugins]\nwatch = false\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        plugin("sleeper")
    );
    let p = FilePipeline::start(&db, &["t"], "", &body_toml);
    // The slot exists a moment before the pipeline runs (the initial
    // snapshot is recorded in between): wait until deploys are taken.
    wait_for(Duration::from_secs(30), || {
        let status = get(admin, "/status", "");
        status.contains("\"state\":\"running\"").then_some(())
    })
    .unwrap_or_else(|| panic!("the pipeline never ran:\n{}", p.weir.log()));

    // Inside that transaction no boundary comes, so every accepted version
    // waits, holding its compiled code. Four may.
    db.exec("BEGIN; INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b'); COMMIT")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last = String::new();
    for n in 1..=4 {
        let deployed = put(admin, "/plugins/stamp", "", &stamp_version(n));
        assert!(deployed.starts_with("HTTP/1.1 200"), "{n}: {deployed}");
        last = http_json(&deployed)["version"].as_str().unwrap().to_owned();
    }
    let refused = put(admin, "/plugins/stamp", "", &stamp_version(5));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        body(&refused).contains("4 new plugin versions already wait for a transaction boundary"),
        "{refused}"
    );
    // The refused one was not written either.
    assert_eq!(std::fs::read(&stamp).unwrap(), stamp_version(4));

    // The transaction ends on the version it started with; the next one
    // runs the last accepted version, and the queue is free again.
    let lines = wait_lines(&p.out, 1, Duration::from_secs(60));
    assert_eq!(lines[0]["after"]["v"], "b@weir-stamp:000", "{lines:?}");
    db.exec("INSERT INTO t VALUES (3, 'c')").await;
    let lines = wait_lines(&p.out, 2, Duration::from_secs(60));
    assert_eq!(lines[1]["after"]["v"], "c@weir-stamp:004", "{lines:?}");
    wait_for(Duration::from_secs(30), || {
        let plugins = http_json(&get(admin, "/plugins", ""));
        (plugins["stamp"]["version"] == last.as_str()).then_some(())
    })
    .unwrap_or_else(|| panic!("the last version never took over:\n{}", p.weir.log()));
    let deployed = put(admin, "/plugins/stamp", "", &stamp_version(5));
    assert!(deployed.starts_with("HTTP/1.1 200"), "{deployed}");
}
