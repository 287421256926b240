//! Every decoded type round-trips: the value written by SQL is the value
//! in the sink, in both pgoutput text and binary modes. Unchanged TOAST
//! values and REPLICA IDENTITY FULL old rows come out as they should.

use std::time::Duration;

use serde_json::json;
use weir_tests::types::{TYPES_ROWS as ROWS, TYPES_TABLE as TABLE, native_rows};
use weir_tests::*;

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
    for (line, want) in lines.iter().zip(native_rows()) {
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
