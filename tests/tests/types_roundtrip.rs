//! Every decoded type round-trips: the value written by SQL is the value
//! in the sink, in both pgoutput text and binary modes. Unchanged TOAST
//! values and REPLICA IDENTITY FULL old rows come out as they should.

use std::time::Duration;

use serde_json::json;
use weir_tests::types::{TYPES_ROWS as ROWS, TYPES_TABLE as TABLE};
use weir_tests::*;

fn expected() -> Vec<serde_json::Value> {
    vec![
        json!({"id": 1, "b": true, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64,
               "f4": 1.5, "f8": -2.25e300, "n": "-12345678901234567890.123456789", "n2": "42.500",
               "t": "héllo \"quoted\"\n\ttab \\ done", "vc": "abc", "bp": "ab   ", "nm": "a_name",
               "by": "AP8Q", "d": "2024-02-29", "tm": "13:14:15.123456", "ts": "2024-02-29T13:14:15.5",
               "tstz": "2024-02-29T11:14:15.123Z", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
               "j": {"a": [1, 2.5, "x"]}, "jb": {"b": {"c": null}, "d": [true]},
               "addr": "10.1.2.3/24", "span": "1 day 02:00:03", "arr": "{1,2,3}"}),
        json!({"id": 2, "b": null, "i2": null, "i4": null, "i8": null, "f4": null, "f8": null,
               "n": null, "n2": null, "t": null, "vc": null, "bp": null, "nm": null, "by": null,
               "d": null, "tm": null, "ts": null, "tstz": null, "u": null, "j": null, "jb": null,
               "addr": null, "span": null, "arr": null}),
        json!({"id": 3, "b": false, "i2": 0, "i4": -2147483648, "i8": -9223372036854775808i64,
               "f4": "NaN", "f8": "Infinity", "n": "NaN", "n2": "0.000", "t": "", "vc": "",
               "bp": "     ", "nm": "", "by": "", "d": "-infinity", "tm": "00:00:00",
               "ts": "infinity", "tstz": "-infinity", "u": "00000000-0000-0000-0000-000000000000",
               "j": [], "jb": {}, "addr": "::1", "span": "-1 mons", "arr": "{}"}),
        json!({"id": 4, "f4": "-Infinity", "f8": 1e-300, "n": "0.000000000000000000001",
               "d": "-0043-03-15", "tm": "23:59:59.999999", "ts": "-0043-03-15T12:00:00",
               "tstz": "1970-01-01T00:00:00.000001Z"}),
        json!({"id": 5, "n": "Infinity", "d": "9999-12-31", "ts": "2000-01-01T00:00:00"}),
    ]
}

const OTHER_TYPES: [&str; 3] = ["addr", "span", "arr"];

async fn round_trip(binary: bool) {
    let db = TestDb::new(if binary { "types_bin" } else { "types_text" }, TABLE).await;
    let p = FilePipeline::start(
        &db,
        &["typed"],
        &format!("binary = {binary}\n"),
        &passthrough(),
    );
    let (out, mut weir) = (p.out.clone(), p.weir);
    db.exec(ROWS).await;
    let lines = wait_lines(&out, 5, Duration::from_secs(60));
    for (line, want) in lines.iter().zip(expected()) {
        let after = &line["after"];
        for (col, value) in want.as_object().unwrap() {
            if binary && OTHER_TYPES.contains(&col.as_str()) {
                // Binary mode is lossless only for the typed columns.
                continue;
            }
            assert_eq!(
                &after[col], value,
                "column {col} of row {} (binary = {binary}): got {}, want {value}",
                want["id"], after[col]
            );
        }
    }
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_in_text_mode() {
    round_trip(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_columns_round_trip_in_binary_mode() {
    round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_toast_and_full_replica_identity() {
    let db = TestDb::new(
        "toast",
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         CREATE TABLE audit (id int PRIMARY KEY, note text);
         ALTER TABLE audit REPLICA IDENTITY FULL;",
    )
    .await;
    let p = FilePipeline::start(&db, &["docs", "audit"], "", &passthrough());
    let (out, mut weir) = (p.out.clone(), p.weir);
    // Random hex barely compresses, so a 32 kB body is stored out of line.
    db.exec(
        "INSERT INTO docs SELECT 1, 'first', string_agg(md5(random()::text), '') FROM generate_series(1, 1000);
         UPDATE docs SET title = 'second' WHERE id = 1;
         INSERT INTO audit VALUES (1, 'old note');
         UPDATE audit SET note = 'new note' WHERE id = 1;
         DELETE FROM audit WHERE id = 1;",
    )
    .await;
    let lines = wait_lines(&out, 5, Duration::from_secs(60));
    assert_eq!(
        lines[0]["after"]["body"].as_str().map(str::len),
        Some(32_000)
    );
    assert_eq!(lines[1]["after"]["title"], "second");
    assert_eq!(
        lines[1]["after"]["body"],
        json!({"$unchanged": true}),
        "an untouched TOAST value is unchanged, never null"
    );
    assert_eq!(lines[3]["before"], json!({"id": 1, "note": "old note"}));
    assert_eq!(lines[3]["after"], json!({"id": 1, "note": "new note"}));
    assert_eq!(lines[4]["op"], "delete");
    assert_eq!(lines[4]["before"], json!({"id": 1, "note": "new note"}));
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}
