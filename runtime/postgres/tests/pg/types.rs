//! Every decoded type, in text and in binary mode, against values whose
//! expected form was worked out independently (epoch numbers checked with
//! Postgres's own `extract(epoch ...)`).

use weir_core::{Op, Value};

use crate::common::*;

const SCHEMA: &str = "CREATE TABLE types (
    id int4 PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, o oid,
    f4 float4, f8 float8, n numeric,
    t text, vc varchar(20), bp char(5), nm name,
    by bytea, d date, tm time, ts timestamp, tstz timestamptz,
    u uuid, j json, jb jsonb)";

const COLUMNS: [(&str, &str); 21] = [
    ("id", "int4"),
    ("b", "bool"),
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("o", "oid"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("n", "numeric"),
    ("t", "text"),
    ("vc", "varchar"),
    ("bp", "bpchar"),
    ("nm", "name"),
    ("by", "bytea"),
    ("d", "date"),
    ("tm", "time"),
    ("ts", "timestamp"),
    ("tstz", "timestamptz"),
    ("u", "uuid"),
    ("j", "json"),
    ("jb", "jsonb"),
];

/// Rows as SQL literals (in column order) and the values expected.
fn rows() -> Vec<(&'static str, Vec<Value>)> {
    use Value::*;
    let uuid = [
        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
        0x11,
    ];
    vec![
        (
            "(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            std::iter::once(Int(1))
                .chain(std::iter::repeat_n(Null, 20))
                .collect(),
        ),
        (
            "(2, true, -32768, 2147483647, -9223372036854775808, 4294967295, 1.5, -0.1, \
             '-123456789012345678901234567890.123456789', 'héllo wörld 🌍', 'varchar', 'ab', \
             'a_name', '\\x00ff0000', '2024-02-29', '23:59:59.999999', \
             '2024-02-29 12:34:56.789012', '2024-02-29 14:34:56.789012+02', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": [1, 2.50, \"x\"],  \"a\": null}', \
             '{\"z\": {\"y\": [1, null, true, \"é\"]}, \"a\": 1.50}')",
            vec![
                Int(2),
                Bool(true),
                Int(-32768),
                Int(2_147_483_647),
                Int(i64::MIN),
                Int(4_294_967_295),
                Float(1.5),
                Float(-0.1),
                Numeric("-123456789012345678901234567890.123456789".into()),
                Text("héllo wörld 🌍".into()),
                Text("varchar".into()),
                Text("ab   ".into()),
                Text("a_name".into()),
                Bytes(vec![0, 0xff, 0, 0]),
                Date(19_782),
                Time(86_399_999_999),
                Timestamp(1_709_210_096_789_012),
                TimestampTz(1_709_210_096_789_012),
                Uuid(uuid),
                // json keeps the text exactly as written.
                Json("{\"b\": [1, 2.50, \"x\"],  \"a\": null}".into()),
                // jsonb normalises key order and spacing.
                Json("{\"a\": 1.50, \"z\": {\"y\": [1, null, true, \"é\"]}}".into()),
            ],
        ),
        (
            "(3, false, 32767, -2147483648, 9223372036854775807, 0, 'NaN', 'Infinity', 'NaN', \
             '', '', '', '', '\\x', 'infinity', '00:00:00', 'infinity', '-infinity', \
             '00000000-0000-0000-0000-000000000000', '[]', '[]')",
            vec![
                Int(3),
                Bool(false),
                Int(32767),
                Int(-2_147_483_648),
                Int(i64::MAX),
                Int(0),
                Float(f64::NAN),
                Float(f64::INFINITY),
                Numeric("NaN".into()),
                Text(String::new()),
                Text(String::new()),
                Text("     ".into()),
                Text(String::new()),
                Bytes(vec![]),
                Date(i32::MAX),
                Time(0),
                Timestamp(i64::MAX),
                TimestampTz(i64::MIN),
                Uuid([0; 16]),
                Json("[]".into()),
                Json("[]".into()),
            ],
        ),
        (
            "(4, NULL, NULL, NULL, NULL, NULL, '-Infinity', 'NaN', 'Infinity', NULL, NULL, \
             NULL, NULL, NULL, '-infinity', '24:00:00', '-infinity', 'infinity', NULL, NULL, \
             NULL)",
            vec![
                Int(4),
                Null,
                Null,
                Null,
                Null,
                Null,
                Float(f64::NEG_INFINITY),
                Float(f64::NAN),
                Numeric("Infinity".into()),
                Null,
                Null,
                Null,
                Null,
                Null,
                Date(i32::MIN),
                Time(86_400_000_000),
                Timestamp(i64::MIN),
                TimestampTz(i64::MAX),
                Null,
                Null,
                Null,
            ],
        ),
        (
            "(5, NULL, NULL, NULL, NULL, NULL, 3.4028235e38, 1e308, '-Infinity', NULL, NULL, \
             NULL, NULL, NULL, '0044-03-15 BC', '12:00:00.5', '0044-03-15 12:00:00 BC', \
             '0001-12-31 23:59:59.5+00 BC', NULL, NULL, NULL)",
            vec![
                Int(5),
                Null,
                Null,
                Null,
                Null,
                Null,
                Float(f64::from(3.402_823_5e38_f32)),
                Float(1e308),
                Numeric("-Infinity".into()),
                Null,
                Null,
                Null,
                Null,
                Null,
                Date(-735_160),
                Time(43_200_500_000),
                Timestamp(-63_517_780_800_000_000),
                TimestampTz(-62_135_596_800_500_000),
                Null,
                Null,
                Null,
            ],
        ),
        (
            "(6, NULL, NULL, NULL, NULL, NULL, 1.1, 5e-324, '0.000100', NULL, NULL, NULL, \
             NULL, NULL, '1970-01-01', '00:00:00.000001', '1969-12-31 23:59:59.999999', \
             '1970-01-01 05:30:00.000001+05:30', NULL, NULL, NULL)",
            vec![
                Int(6),
                Null,
                Null,
                Null,
                Null,
                Null,
                Float(f64::from(1.1_f32)),
                Float(5e-324),
                Numeric("0.000100".into()),
                Null,
                Null,
                Null,
                Null,
                Null,
                Date(0),
                Time(1),
                Timestamp(-1),
                TimestampTz(1),
                Null,
                Null,
                Null,
            ],
        ),
        (
            "(7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1e-20, NULL, NULL, NULL, NULL, \
             NULL, '4000-02-29', NULL, '4000-02-29 01:02:03.000456', NULL, NULL, NULL, NULL)",
            vec![
                Int(7),
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Null,
                Numeric("0.00000000000000000001".into()),
                Null,
                Null,
                Null,
                Null,
                Null,
                Date(741_501),
                Null,
                Timestamp(64_065_690_123_000_456),
                Null,
                Null,
                Null,
                Null,
            ],
        ),
    ]
}

/// Numerics whose binary form exercises weights and scales.
const NUMERICS: [&str; 8] = [
    "0",
    "-0.5",
    "100000000",
    "12345.678900",
    "99999999999999999999.0000",
    "0.0001",
    "-1",
    "10000.0001",
];

async fn check_types(binary: bool) {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute("CREATE TABLE nums (id int PRIMARY KEY, n numeric)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["types", "nums"]);
    cfg.binary = binary;
    let mode = if binary { "binary" } else { "text" };
    let source = weir_postgres::PostgresSource::prepare(cfg).await.unwrap();

    let rows = rows();
    let values: Vec<&str> = rows.iter().map(|(sql, _)| *sql).collect();
    c.batch_execute(&format!("INSERT INTO types VALUES {}", values.join(", ")))
        .await
        .unwrap();
    for (i, n) in NUMERICS.iter().enumerate() {
        c.execute(
            "INSERT INTO nums VALUES ($1, $2::text::numeric)",
            &[&(i as i32), n],
        )
        .await
        .unwrap();
    }

    let mut run = Running::spawn(source);
    let txn = run.txn().await;
    assert_eq!(txn.changes.len(), rows.len());
    for (change, (sql, expected)) in txn.changes.iter().zip(&rows) {
        assert_eq!(change.op, Op::Insert);
        assert!(change.before.is_none());
        let table = change.table.as_ref().unwrap();
        assert_eq!(table.qualified_name(), "public.types");
        let names: Vec<(&str, &str)> = table
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_name.as_str()))
            .collect();
        assert_eq!(names, COLUMNS);
        assert!(table.columns[0].key && table.columns[1..].iter().all(|c| !c.key));
        assert_row(
            change.after.as_ref().unwrap(),
            expected,
            &format!("{mode} {sql}"),
        );
    }
    for (i, n) in NUMERICS.iter().enumerate() {
        let t = run.txn().await;
        let after = t.changes[0].after.as_ref().unwrap();
        assert_eq!(after[0], Value::Int(i as i64));
        assert_eq!(
            after[1],
            Value::Numeric((*n).to_owned()),
            "{mode} numeric {n}"
        );
    }
    run.stop().await.unwrap();
}

#[tokio::test]
async fn types_round_trip_in_text_mode() {
    check_types(false).await;
}

#[tokio::test]
async fn types_round_trip_in_binary_mode() {
    check_types(true).await;
}

/// Types without a typed variant keep Postgres's text and their type name,
/// in both modes.
#[tokio::test]
async fn other_types_keep_their_text() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
         CREATE TABLE others (id int PRIMARY KEY, ip inet, iv interval, arr int4[], m mood,
                              p posint, tz timetz)",
    )
    .await
    .unwrap();
    let text_slot = db.slot();
    let bin_slot = db.slot();
    let text = weir_postgres::PostgresSource::prepare(db.config(&text_slot, &["others"]))
        .await
        .unwrap();
    let mut bin_cfg = db.config(&bin_slot, &["others"]);
    bin_cfg.binary = true;
    let bin = weir_postgres::PostgresSource::prepare(bin_cfg)
        .await
        .unwrap();
    c.batch_execute(
        "INSERT INTO others VALUES (1, '192.168.0.1/24', '1 year 2 mons 3 days 04:05:06.789', \
         '{1,2,NULL}', 'happy', 5, '12:00:00+05:30')",
    )
    .await
    .unwrap();

    let mut run = Running::spawn(text);
    let txn = run.txn().await;
    run.stop().await.unwrap();
    let ch = &txn.changes[0];
    let table = ch.table.as_ref().unwrap();
    let types: Vec<&str> = table.columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(
        types,
        // pgoutput announces a domain under its base type's name.
        [
            "int4",
            "inet",
            "interval",
            "_int4",
            "public.mood",
            "int4",
            "timetz"
        ]
    );
    assert_row(
        ch.after.as_ref().unwrap(),
        &[
            Value::Int(1),
            Value::Other("192.168.0.1/24".into()),
            Value::Other("1 year 2 mons 3 days 04:05:06.789".into()),
            Value::Other("{1,2,NULL}".into()),
            Value::Other("happy".into()),
            // ...and it decodes like the base type.
            Value::Int(5),
            Value::Other("12:00:00+05:30".into()),
        ],
        "text mode",
    );

    // Binary mode: the same values, printed from the binary forms.
    let text_after = ch.after.clone().unwrap();
    let mut run = Running::spawn(bin);
    let txn = run.txn().await;
    run.stop().await.unwrap();
    assert_row(
        txn.changes[0].after.as_ref().unwrap(),
        &text_after,
        "binary mode",
    );
}
