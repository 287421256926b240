//! `weir plugin inspect|test|new`, run as the real binary: what it prints
//! about real components, what real plugins make of events from a file,
//! and the projects it writes. No database or broker is involved.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use weir_tests::*;

fn weir(args: &[&str]) -> Run {
    weir_in(&repo_root(), args)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------- inspect

#[test]
fn help_opens_with_what_weir_does_for_a_user() {
    for flag in ["-h", "--help"] {
        let run = weir(&[flag]);
        assert!(run.status.success(), "{run}");
        assert!(
            run.stdout.starts_with(
                "Weir keeps caches, search indexes, analytics stores and message logs in step with a PostgreSQL database"
            ),
            "{run}"
        );
        assert!(run.stdout.contains("Start here:"), "{run}");
    }
    let long = weir(&["--help"]);
    assert!(
        long.stdout
            .contains("acknowledging a change only once every sink holds it"),
        "{long}"
    );
}

#[test]
fn inspect_describes_a_transform() {
    let wasm = plugin("passthrough");
    let run = weir(&["plugin", "inspect", "--json", path_str(&wasm)]);
    assert!(run.status.success(), "{run}");
    let report: Json = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["world"], "transform", "{run}");
    assert_eq!(report["size"], std::fs::metadata(&wasm).unwrap().len());
    assert_eq!(report["contract"]["version"], "1.0.0", "{run}");
    assert_eq!(report["contract"]["host"], "1.0.0", "{run}");
    assert_eq!(report["contract"]["accepted"], true, "{run}");
    assert_eq!(report["loads"], true, "{run}");
    assert_eq!(report["grants"], json!([]), "{run}");
    let names = |list: &str| -> Vec<String> {
        report[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        names("imports").contains(&"weir:cdc/host@1.0.0".to_owned()),
        "{run}"
    );
    assert!(names("exports").contains(&"process".to_owned()), "{run}");
    assert!(!names("exports").contains(&"route".to_owned()), "{run}");

    // The version is the host's: the first 12 hex digits of the SHA-256.
    let sha = Command::new("sha256sum").arg(&wasm).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(report["version"].as_str().unwrap(), &sha[..12], "{run}");

    let text = weir(&["plugin", "inspect", path_str(&wasm)]);
    assert!(text.status.success(), "{text}");
    for expected in [
        format!("version:   {}\n", &sha[..12]),
        "world:     transform\n".to_owned(),
        "contract:  weir:cdc@1.0.0 (accepted: this Weir implements weir:cdc@1.0.0)\n".to_owned(),
        "grants:    none needed\n".to_owned(),
        "loads:     yes, as a transform\n".to_owned(),
        "  process ".to_owned(),
    ] {
        assert!(
            text.stdout.contains(&expected),
            "{expected:?} missing:\n{text}"
        );
    }
}

#[test]
fn inspect_recognises_a_router() {
    let run = weir(&[
        "plugin",
        "inspect",
        "--json",
        path_str(&plugin("route-by-table")),
    ]);
    assert!(run.status.success(), "{run}");
    let report: Json = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["world"], "router", "{run}");
    assert_eq!(report["loads"], true, "{run}");
}

/// The grants `--json` reports, as (import, grant).
fn grants(report: &Json) -> Vec<(String, Json)> {
    report["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["import"].as_str().unwrap().to_owned(), g["grant"].clone()))
        .collect()
}

#[test]
fn inspect_names_the_network_grant_and_the_import_needing_it() {
    let wasm = plugin("network");
    let run = weir(&["plugin", "inspect", "--json", path_str(&wasm)]);
    assert!(run.status.success(), "{run}");
    let report: Json = serde_json::from_str(&run.stdout).unwrap();
    let grants = grants(&report);
    assert!(
        grants
            .iter()
            .any(|(i, _)| i.starts_with("wasi:sockets/tcp@")),
        "{run}"
    );
    assert!(
        grants
            .iter()
            .all(|(i, g)| i.starts_with("wasi:sockets/") && g == "sandbox.network"),
        "{run}"
    );
    // It loads once granted what it asks for.
    assert_eq!(report["loads"], true, "{run}");

    let text = weir(&["plugin", "inspect", path_str(&wasm)]);
    assert!(
        text.stdout
            .contains("grants:    sandbox.network = true, for wasi:sockets/"),
        "{text}"
    );
}

#[test]
fn inspect_names_the_directory_grant_and_the_import_needing_it() {
    let wasm = plugin("filesystem");
    let run = weir(&["plugin", "inspect", "--json", path_str(&wasm)]);
    assert!(run.status.success(), "{run}");
    let report: Json = serde_json::from_str(&run.stdout).unwrap();
    let grants = grants(&report);
    assert!(
        grants
            .iter()
            .any(|(i, _)| i.starts_with("wasi:filesystem/preopens@")),
        "{run}"
    );
    assert!(
        grants
            .iter()
            .all(|(i, g)| i.starts_with("wasi:filesystem/") && g == "sandbox.dirs"),
        "{run}"
    );
    let text = weir(&["plugin", "inspect", path_str(&wasm)]);
    assert!(
        text.stdout
            .contains("grants:    sandbox.dirs, for wasi:filesystem/"),
        "{text}"
    );
}

#[test]
fn inspect_refuses_files_that_are_not_components() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let run = weir(&["plugin", "inspect", path_str(&text)]);
    assert!(!run.status.success(), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: cannot inspect {}: not a WebAssembly file",
            text.display()
        ),
        "{run}"
    );

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let run = weir(&["plugin", "inspect", path_str(&core)]);
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr
            .contains("a core WebAssembly module, not a component"),
        "{run}"
    );

    let missing = dir.path().join("missing.wasm");
    let run = weir(&["plugin", "inspect", path_str(&missing)]);
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot read {}", missing.display())),
        "{run}"
    );
}

// ------------------------------------------------------------------- test

/// One native JSON envelope of table `public.users` (`id` the key).
fn envelope(op: &str, xid: u32, commit_lsn: &str, seq: u32, before: Json, after: Json) -> String {
    let row = if after.is_null() { &before } else { &after };
    json!({
        "op": op,
        "schema": "public",
        "table": "users",
        "key": {"id": row["id"]},
        "before": before,
        "after": after,
        "source": {
            "commit_lsn": commit_lsn,
            "lsn": "0/16B3700",
            "xid": xid,
            "commit_time": "2026-11-28T21:00:00.123456Z",
            "seq": seq,
        },
    })
    .to_string()
}

fn user(id: i64, email: &str, status: &str) -> Json {
    json!({"id": id, "email": email, "status": status})
}

/// Two transactions: insert, insert, update (xid 700), then a delete
/// (xid 701). Lines 1, 2, 3 and 5; line 4 is blank.
fn users_events(dir: &Path) -> PathBuf {
    let lines = [
        envelope(
            "insert",
            700,
            "0/16B3748",
            0,
            Json::Null,
            user(1, "ada@example.com", "shipped"),
        ),
        envelope(
            "insert",
            700,
            "0/16B3748",
            1,
            Json::Null,
            user(2, "bob@example.com", "new"),
        ),
        envelope(
            "update",
            700,
            "0/16B3748",
            2,
            Json::Null,
            user(1, "ada@lovelace.org", "shipped"),
        ),
        String::new(),
        envelope(
            "delete",
            701,
            "0/16B3900",
            0,
            user(2, "bob@example.com", "new"),
            Json::Null,
        ),
    ];
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `weir plugin test PLUGIN --events EVENTS [--config PAIR]...`.
fn plugin_test(name: &str, events: &Path, config: &[&str]) -> Run {
    let wasm = plugin(name);
    let mut args = vec![
        "plugin",
        "test",
        path_str(&wasm),
        "--events",
        path_str(events),
    ];
    for pair in config {
        args.extend(["--config", pair]);
    }
    weir(&args)
}

#[test]
fn test_runs_a_transform_over_inserts_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    let run = plugin_test("mask", &events, &["columns=email", "mode=redact"]);
    assert!(run.status.success(), "{run}");
    let lines = run.json_lines();
    assert_eq!(lines.len(), 4, "{run}");
    let numbers: Vec<&Json> = lines.iter().map(|l| &l["line"]).collect();
    assert_eq!(numbers, [1, 2, 3, 5], "{run}");
    for line in &lines {
        assert_eq!(line["outcome"], "replace", "{run}");
        let emits = line["emits"].as_array().unwrap();
        assert_eq!(emits.len(), 1, "{run}");
        assert_eq!(emits[0]["destination"], Json::Null, "{run}");
    }
    let change = |i: usize| &lines[i]["emits"][0]["change"];
    assert_eq!(change(0)["op"], "insert");
    assert_eq!(change(0)["after"], user(1, "***", "shipped"), "{run}");
    assert_eq!(change(1)["after"], user(2, "***", "new"), "{run}");
    assert_eq!(change(2)["op"], "update");
    assert_eq!(change(2)["after"], user(1, "***", "shipped"), "{run}");
    assert_eq!(change(3)["op"], "delete");
    assert_eq!(change(3)["before"], user(2, "***", "new"), "{run}");
    assert_eq!(change(3)["after"], Json::Null, "{run}");
    // The envelope is the sink's, source block included.
    assert_eq!(change(3)["source"]["commit_lsn"], "0/16B3900", "{run}");
    assert_eq!(change(3)["key"], json!({"id": 2}), "{run}");
    assert!(
        run.stderr
            .contains("4 event(s) in 2 transaction(s): 0 keep, 0 drop, 4 replace, 0 fail"),
        "{run}"
    );
}

#[test]
fn test_reports_keep_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    let run = plugin_test("filter", &events, &["where=status = shipped"]);
    assert!(run.status.success(), "{run}");
    let outcomes: Vec<(Json, Json)> = run
        .json_lines()
        .into_iter()
        .map(|l| (l["line"].clone(), l["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!(1), json!("keep")),
            (json!(2), json!("drop")),
            (json!(3), json!("keep")),
            (json!(5), json!("drop")),
        ],
        "{run}"
    );
}

#[test]
fn test_isolates_a_trapping_event_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    // id 2 is inserted in the first transaction and deleted in the second;
    // the plugin looks at new rows only, so only the insert traps.
    let run = plugin_test("trap", &events, &["trap_on_id=2"]);
    assert!(
        run.status.success(),
        "a trap is a result, not an error:\n{run}"
    );
    let lines = run.json_lines();
    assert_eq!(lines.len(), 4, "{run}");
    assert_eq!(lines[0], json!({"line": 1, "outcome": "keep"}), "{run}");
    assert_eq!(lines[1]["line"], 2, "{run}");
    assert_eq!(lines[1]["outcome"], "fail", "{run}");
    let error = lines[1]["error"].as_str().unwrap();
    assert!(error.contains("plugin `trap` trapped"), "{run}");
    assert!(error.contains("trap_on_id 2 matched"), "{run}");
    // After it, in the same transaction and the next, on a fresh instance.
    assert_eq!(lines[2], json!({"line": 3, "outcome": "keep"}), "{run}");
    assert_eq!(lines[3], json!({"line": 5, "outcome": "keep"}), "{run}");
    assert!(
        run.stderr
            .contains("2 transaction(s): 3 keep, 0 drop, 0 replace, 1 fail"),
        "{run}"
    );
}

#[test]
fn test_calls_the_commit_hook_after_each_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    let run = plugin_test("commit-hook", &events, &[]);
    assert!(run.status.success(), "{run}");
    let lines = run.json_lines();
    let shape: Vec<String> = lines
        .iter()
        .map(|l| match l.get("line") {
            Some(n) => format!("{n}:{}", l["outcome"].as_str().unwrap()),
            None => format!("commit {}", l["commit"]["xid"]),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "1:keep",
            "2:keep",
            "3:keep",
            "commit 700",
            "5:keep",
            "commit 701"
        ],
        "{run}"
    );
    let first = &lines[3];
    assert_eq!(first["commit"]["commit_lsn"], "0/16B3748", "{run}");
    let raw = &first["emits"][0]["raw"];
    assert_eq!(raw["key"], Json::Null, "{run}");
    let summary: Json = serde_json::from_str(raw["value"].as_str().unwrap()).unwrap();
    assert_eq!(summary["xid"], 700, "{run}");
    assert_eq!(summary["changes"], 3, "{run}");
    let second: Json =
        serde_json::from_str(lines[5]["emits"][0]["raw"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(second["changes"], 1, "{run}");
    // Its counter, counted once per transaction.
    assert!(
        run.stderr.contains("counters:\n  transactions = 2\n"),
        "{run}"
    );
}

#[test]
fn test_runs_a_router() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    let run = plugin_test(
        "route-by-table",
        &events,
        &["route.public.users=kafka,files", "topic={table}.{op}"],
    );
    assert!(run.status.success(), "{run}");
    let lines = run.json_lines();
    assert_eq!(lines.len(), 4, "{run}");
    assert_eq!(
        lines[0],
        json!({"line": 1, "destinations": [
            {"sink": "kafka", "topic": "users.insert"},
            {"sink": "files", "topic": "users.insert"},
        ]}),
        "{run}"
    );
    assert_eq!(
        lines[3]["destinations"][0]["topic"], "users.delete",
        "{run}"
    );
}

#[test]
fn test_refuses_a_bad_events_file_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    let mut text = std::fs::read_to_string(&events).unwrap();
    text.push_str(&envelope(
        "upsert",
        702,
        "0/16B4000",
        0,
        Json::Null,
        user(3, "c", "new"),
    ));
    text.push('\n');
    std::fs::write(&events, text).unwrap();
    let run = plugin_test("passthrough", &events, &[]);
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stdout.is_empty(),
        "nothing runs before the file is read:\n{run}"
    );
    assert!(
        run.stderr.contains(&format!(
            "error: {}:6: `op`: expected insert, update, delete, truncate, message or read, got \"upsert\"",
            events.display()
        )),
        "{run}"
    );
}

#[test]
fn test_refuses_a_plugin_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let events = users_events(dir.path());
    let run = plugin_test("network", &events, &[]);
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("wasi:sockets/"), "{run}");
    assert!(run.stderr.contains("sandbox.network"), "{run}");

    let run = plugin_test("mask", &events, &[]);
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr
            .contains("plugin `mask` refused its configuration: config key `columns`"),
        "{run}"
    );
}

// -------------------------------------------------------------------- new

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn new_writes_a_rust_project() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("plugins");
    // Run from outside the repository: the templates are in the binary.
    let run = weir_in(
        dir.path(),
        &[
            "plugin",
            "new",
            "--lang",
            "rust",
            "pii-scrub",
            "--dir",
            "plugins",
        ],
    );
    assert!(run.status.success(), "{run}");
    let project = parent.join("pii-scrub");
    assert!(
        run.stdout.contains("Created the Rust plugin `pii-scrub`"),
        "{run}"
    );
    assert!(run.stdout.contains("cargo test-native"), "{run}");
    assert!(
        run.stdout
            .contains("weir plugin test target/wasm32-wasip2/release/pii_scrub.wasm --events"),
        "{run}"
    );

    let files = files_under(&project);
    for expected in [
        ".cargo/config.toml",
        "Cargo.lock",
        "Cargo.toml",
        "README.md",
        "src/lib.rs",
        "weir-plugin-sdk/Cargo.toml",
        "weir-plugin-sdk/src/lib.rs",
        "weir-plugin-sdk/src/testing.rs",
        "weir-plugin-sdk/wit/weir-cdc.wit",
    ] {
        assert!(
            files.contains(&expected.to_owned()),
            "{expected} missing: {files:?}"
        );
    }
    let read = |p: &str| std::fs::read_to_string(project.join(p)).unwrap();
    for file in &files {
        assert!(!read(file).contains("{{"), "{file}: a placeholder is left");
    }
    assert!(read("Cargo.toml").contains("name = \"pii-scrub\""));
    assert!(read("README.md").contains("release/pii_scrub.wasm"));
    assert!(read("src/lib.rs").contains("`pii-scrub`"));
    let root = repo_root();
    let repo_file = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(
        read("weir-plugin-sdk/src/lib.rs"),
        repo_file("plugins/sdk/src/lib.rs")
    );
    assert_eq!(
        read("weir-plugin-sdk/wit/weir-cdc.wit"),
        repo_file("wit/weir-cdc.wit")
    );
    assert!(
        !std::fs::symlink_metadata(project.join("weir-plugin-sdk/wit/weir-cdc.wit"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the contract is a real file"
    );
    assert_eq!(read("Cargo.lock"), repo_file("plugins/Cargo.lock"));

    // Never over an existing directory, and nothing in it is touched.
    std::fs::write(project.join("src/lib.rs"), "// mine").unwrap();
    let again = weir_in(
        dir.path(),
        &[
            "plugin",
            "new",
            "--lang",
            "rust",
            "pii-scrub",
            "--dir",
            "plugins",
        ],
    );
    assert!(!again.status.success(), "{again}");
    assert!(again.stderr.contains("already exists"), "{again}");
    assert_eq!(read("src/lib.rs"), "// mine");
}

#[test]
fn new_writes_python_and_js_projects() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    for (lang, source, helper) in [
        ("python", "plugin.py", "weir_plugin/__init__.py"),
        ("js", "plugin.js", "weir_plugin/index.js"),
    ] {
        let parent = dir.path().join(lang);
        let run = weir(&[
            "plugin",
            "new",
            "--lang",
            lang,
            "redact-pii",
            "--dir",
            path_str(&parent),
        ]);
        assert!(run.status.success(), "{run}");
        assert!(run.stdout.contains("./build.sh"), "{run}");
        let project = parent.join("redact-pii");
        let files = files_under(&project);
        for expected in ["README.md", "build.sh", source, helper, "wit/weir-cdc.wit"] {
            assert!(
                files.contains(&expected.to_owned()),
                "{lang}: {expected} missing: {files:?}"
            );
        }
        assert!(
            !files.iter().any(|f| f.contains("__pycache__")),
            "{files:?}"
        );
        for file in &files {
            let text = std::fs::read_to_string(project.join(file)).unwrap();
            assert!(
                !text.contains("{{"),
                "{lang}: {file}: a placeholder is left"
            );
        }
        let build = std::fs::read_to_string(project.join("build.sh")).unwrap();
        assert!(build.contains("redact-pii.wasm"), "{build}");
        let mode = std::fs::metadata(project.join("build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{lang}: build.sh must be executable");
    }
}

#[test]
fn new_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    for (name, why) in [
        ("PiiScrub", "must start with a lowercase letter"),
        ("pii_scrub", "'_' is not allowed"),
        ("9lives", "must start with a lowercase letter"),
        ("fn", "Cargo refuses it"),
    ] {
        let run = weir(&[
            "plugin",
            "new",
            "--lang",
            "rust",
            name,
            "--dir",
            path_str(dir.path()),
        ]);
        assert!(!run.status.success(), "{run}");
        assert!(run.stderr.contains(why), "{name}: {run}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
