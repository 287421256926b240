//! Unit tests of the `clickhouse` sink that need no server: configuration,
//! versions, value encoding, SQL quoting and error answers.

use weir_codec::TemplateUse;
use weir_core::{Column, Lsn, Position, SinkError, Value};

use super::config::ClickHouseSinkConfig;
use super::encode::*;
use crate::registry::parse_sink;

fn section(text: &str) -> toml::Table {
    text.parse().unwrap()
}

#[test]
fn defaults_and_capabilities() {
    let spec = parse_sink(section("type = \"clickhouse\"")).unwrap();
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let config = spec
        .as_any()
        .downcast_ref::<ClickHouseSinkConfig>()
        .unwrap();
    assert_eq!(config, &ClickHouseSinkConfig::new("http://127.0.0.1:8123"));
    let caps = spec.capabilities();
    assert!(caps.applies_state && caps.needs_key && !caps.accepts_raw);
    assert_eq!(caps.max_batch_records, 100_000);
}

#[test]
fn every_problem_is_named() {
    let spec = parse_sink(section(
        "type = \"clickhouse\"\nurl = \"tcp://x:9000\"\nuser = \"\"\ntable = \"{op}_{table}\"\n\
         database = \"{key}\"\nmax_batch_records = 2000000\nmax_batch_bytes = 10\n\
         request_timeout = \"0s\"",
    ))
    .unwrap();
    let problems = spec.validate();
    for field in [
        "url:",
        "user:",
        "table:",
        "database:",
        "max_batch_records:",
        "max_batch_bytes:",
        "request_timeout:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} {problems:?}"
        );
    }
    let errs = parse_sink(section("type = \"clickhouse\"\nurll = \"x\"")).unwrap_err();
    assert!(errs[0].contains("unknown field `urll`"), "{errs:?}");
    let errs = parse_sink(section("type = \"clickhouse\"\nrequest_timeout = \"5\"")).unwrap_err();
    assert!(errs[0].starts_with("request_timeout:"), "{errs:?}");
    let spec = parse_sink(section(
        "type = \"clickhouse\"\nurl = \"http://u:p@host:8123\"",
    ))
    .unwrap();
    assert!(spec.validate()[0].contains("credentials"));
}

#[test]
fn route_templates_are_checked() {
    let spec = parse_sink(section("type = \"clickhouse\"")).unwrap();
    assert!(
        spec.check_topic("t_{schema}_{table}", TemplateUse::Change)
            .is_ok()
    );
    assert!(spec.check_topic("{key.id}", TemplateUse::Change).is_err());
    assert!(spec.check_topic("{op}", TemplateUse::Change).is_err());
    assert!(spec.check_topic("{nope}", TemplateUse::Change).is_err());
}

#[test]
fn the_password_is_never_shown() {
    let mut config = ClickHouseSinkConfig::new("http://h:8123");
    config.password = Some("hunter2".into());
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2") && shown.contains("<redacted>"));
}

fn pos(lsn: u64, seq: u32) -> Position {
    Position {
        commit_lsn: Lsn(lsn),
        seq,
    }
}

#[test]
fn versions_never_go_backwards() {
    let positions = [
        pos(0, 0),
        pos(0, 1),
        pos(0, 65_534),
        pos(0, 65_535),
        pos(0, u32::MAX),
        pos(1, 0),
        pos(0x1_0000_0000, 3),
        pos(MAX_VERSION_LSN - 1, u32::MAX),
        pos(MAX_VERSION_LSN, 0),
        pos(MAX_VERSION_LSN, u32::MAX),
    ];
    for pair in positions.windows(2) {
        let (a, b) = (version(pair[0]).unwrap(), version(pair[1]).unwrap());
        assert!(a <= b, "{} then {}: {a} > {b}", pair[0], pair[1]);
        if pair[0].commit_lsn != pair[1].commit_lsn || pair[1].seq < 65_535 {
            assert!(a < b, "{} and {} share version {a}", pair[0], pair[1]);
        }
    }
    assert_eq!(version(pos(MAX_VERSION_LSN, u32::MAX)).unwrap(), u64::MAX);
    match version(pos(MAX_VERSION_LSN + 1, 0)) {
        Err(SinkError::Config(m)) => assert!(m.contains("FFFF/FFFFFFFF"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn column(name: &str, type_name: &str, type_oid: u32, key: bool) -> Column {
    Column {
        name: name.into(),
        type_oid,
        type_name: type_name.into(),
        type_modifier: -1,
        key,
    }
}

fn written(ty: ChType, value: &Value) -> Result<String, String> {
    let mut out = Vec::new();
    write_value(&mut out, ty, value)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn values_as_json() {
    let cases = [
        (ChType::UInt8, Value::Bool(true), "1"),
        (ChType::Int16, Value::Int(-32_768), "-32768"),
        (ChType::Int64, Value::Int(i64::MIN), "-9223372036854775808"),
        (ChType::Float64, Value::Float(-2.25e300), "-2.25e300"),
        (ChType::Float64, Value::Float(1e-300), "1e-300"),
        (ChType::Float32, Value::Float(f64::NAN), "\"nan\""),
        (ChType::Float32, Value::Float(f64::NEG_INFINITY), "\"-inf\""),
        (ChType::String, Value::Numeric("-1.50".into()), "\"-1.50\""),
        (
            ChType::String,
            Value::Text("a\"b\\\n".into()),
            "\"a\\\"b\\\\\\n\"",
        ),
        (ChType::Date, Value::Date(0), "\"1970-01-01\""),
        (ChType::Date, Value::Date(MAX_DATE_DAYS), "\"2105-12-31\""),
        (
            ChType::Micros,
            Value::TimestampTz(i64::MAX),
            "9223372036854775807",
        ),
        (ChType::Micros, Value::Time(1), "1"),
        (
            ChType::Uuid,
            Value::Uuid([0xa0; 16]),
            "\"a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0\"",
        ),
        (
            ChType::String,
            Value::Json("{\"a\":1}".into()),
            "\"{\\\"a\\\":1}\"",
        ),
        (ChType::Int32, Value::Null, "null"),
    ];
    for (ty, value, want) in cases {
        assert_eq!(written(ty, &value).as_deref(), Ok(want), "{ty:?} {value:?}");
    }
    let mut out = Vec::new();
    write_bytes(&mut out, &[0xff, b'"', 0, b'\\', b'a']);
    assert_eq!(out, b"\"\xff\\\"\\u0000\\\\a\"");
}

#[test]
fn values_a_column_cannot_hold_are_refused() {
    for (ty, value, says) in [
        (
            ChType::Date,
            Value::Date(-1),
            "outside ClickHouse's Date range",
        ),
        (ChType::Date, Value::Date(i32::MAX), "outside"),
        (ChType::Int16, Value::Int(40_000), "does not fit in Int16"),
        (
            ChType::Int32,
            Value::Text("x".into()),
            "a text value cannot be stored in a Int32",
        ),
        (ChType::Uuid, Value::Int(1), "integer"),
    ] {
        let e = written(ty, &value).unwrap_err();
        assert!(e.contains(says), "{ty:?} {value:?}: {e}");
    }
}

#[test]
fn postgres_types_map_to_clickhouse_types() {
    for (name, oid, key, want) in [
        ("int4", 23, true, "Int32"),
        ("int8", 20, false, "Nullable(Int64)"),
        ("bool", 16, false, "Nullable(UInt8)"),
        ("numeric", 1700, false, "Nullable(String)"),
        ("timestamptz", 1184, false, "Nullable(Int64)"),
        ("date", 1082, false, "Nullable(Date)"),
        ("uuid", 2950, true, "UUID"),
        ("_int4", 1007, false, "Nullable(String)"),
    ] {
        let c = column("c", name, oid, key);
        assert_eq!(ChType::of(&c).column_type(key), want, "{name}");
    }
}

#[test]
fn names_and_literals_are_quoted() {
    assert_eq!(ident("a`b\\c"), "`a\\`b\\\\c`");
    assert_eq!(
        string_literal(b"it's \\ \x01\xff"),
        "'it\\'s \\\\ \\x01\\xFF'"
    );
    assert_eq!(key_literal(ChType::Date, &Value::Date(3)), "toDate(3)");
    assert_eq!(key_literal(ChType::Micros, &Value::Timestamp(-5)), "-5");
    assert_eq!(key_text(ChType::String, &Value::Text("é".into())), "C3A9");
    assert_eq!(key_text(ChType::Date, &Value::Date(19_000)), "19000");
    assert_eq!(
        parse_lookup(ChType::String, Some("C3A9")),
        Ok(Value::Bytes("é".as_bytes().to_vec()))
    );
    assert_eq!(
        parse_lookup(ChType::Float64, Some("nan"))
            .map(|v| matches!(v, Value::Float(f) if f.is_nan())),
        Ok(true)
    );
    assert_eq!(parse_lookup(ChType::Int32, None), Ok(Value::Null));
    assert!(parse_lookup(ChType::String, Some("ABC")).is_err());
}

#[test]
fn error_answers_are_sorted() {
    let auth = classify(
        401,
        "Code: 192, e.displayText() = DB::Exception: Unknown user nobody, e.what() = DB::Exception",
        "inserting",
    );
    match auth {
        ServerError::Other(SinkError::Auth(m)) => {
            assert_eq!(
                m,
                "inserting: ClickHouse answered 401: Code: 192, e.displayText() = DB::Exception: Unknown user nobody"
            );
        }
        other => panic!("{other:?}"),
    }
    match classify(
        500,
        "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: x: (while read the value of key qty): (at row 2)\n, e.what() = DB::Exception",
        "x",
    ) {
        ServerError::Record {
            row,
            column,
            message,
        } => {
            assert_eq!(row, Some(1));
            assert_eq!(column.as_deref(), Some("qty"));
            assert!(message.ends_with("(at row 2)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        classify(
            404,
            "Code: 60, e.displayText() = DB::Exception: Table w.nope doesn't exist.",
            "x"
        ),
        ServerError::Other(SinkError::Config(_))
    ));
    assert!(matches!(
        classify(500, "Code: 252, Too many parts", "x"),
        ServerError::Other(SinkError::Throttled { .. })
    ));
    assert!(matches!(
        classify(503, "", "x"),
        ServerError::Other(SinkError::Transient(_))
    ));
}

#[test]
fn create_table_statement() {
    let schema = weir_core::TableSchema {
        id: 1,
        version: 1,
        schema: "public".into(),
        name: "t".into(),
        columns: vec![
            column("a", "int4", 23, true),
            column("b", "text", 25, true),
            column("n", "numeric", 1700, false),
        ],
        replica_identity: weir_core::ReplicaIdentity::Default,
    };
    assert_eq!(
        create_table_sql("db", "t", &schema),
        "CREATE TABLE IF NOT EXISTS `db`.`t` (`a` Int32, `b` String, `n` Nullable(String), \
         `_weir_deleted` UInt8, `_weir_version` UInt64) ENGINE = ReplacingMergeTree(`_weir_version`) \
         ORDER BY (`a`, `b`)"
    );
}

#[test]
fn only_places_past_the_sixteen_bits_are_saturated() {
    use weir_core::{Lsn, Position};
    let at = |seq| {
        super::encode::saturated(Position {
            commit_lsn: Lsn(1),
            seq,
        })
    };
    // Place 65,535 is the last with a version of its own.
    assert!(!at(0) && !at(65_535));
    assert!(at(65_536) && at(70_000));
}

#[test]
fn readback_compares_the_value_clickhouse_stores_not_its_json() {
    use super::readback::{json_bytes, same};
    // Text and bytea escape one byte differently; ClickHouse stores it once.
    assert_eq!(
        json_bytes(b"\"a\\n\\u000a\\/\\u00e9\\ud83d\\ude00\""),
        Some("a\n\n/é\u{1F600}".as_bytes().to_vec())
    );
    assert_eq!(json_bytes(b"\"\xff\\\"\""), Some(b"\xff\"".to_vec()));
    assert_eq!(json_bytes(b"null"), None);
    assert!(same(ChType::String, b"\"\\n\"", b"\"\\u000a\""));
    assert!(!same(ChType::String, b"\"\"", b"null"));
    assert!(same(ChType::Float64, b"3", b"3.0"));
    assert!(same(ChType::Float64, b"\"nan\"", b"\"nan\""));
    assert!(!same(ChType::Float64, b"\"inf\"", b"\"-inf\""));
    assert!(!same(ChType::Float64, b"0.1", b"0.10000000000000002"));
    // A Float32 is compared as ClickHouse rounds it.
    assert!(same(ChType::Float32, b"0.1", b"0.10000000149011612"));
    assert!(same(
        ChType::Uuid,
        b"\"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11\"",
        b"\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""
    ));
    assert!(!same(ChType::Int64, b"1", b"2"));
    assert!(!same(ChType::Int64, b"1", b"null"));
}

#[test]
fn readback_prints_timestamp_keys_as_postgres_does() {
    use super::readback::postgres_timestamp;
    let day = 86_400_000_000i64;
    assert_eq!(
        postgres_timestamp(19_782 * day + 40_455_500_000, true),
        "2024-02-29 11:14:15.5+00"
    );
    assert_eq!(postgres_timestamp(0, false), "1970-01-01 00:00:00");
    // 44 BC is the ISO year -43.
    let bc = weir_codec::calendar::days_from_civil(-43, 3, 15) * day + 12 * 3_600_000_000;
    assert_eq!(postgres_timestamp(bc, false), "0044-03-15 12:00:00 BC");
    assert_eq!(postgres_timestamp(bc, true), "0044-03-15 12:00:00+00 BC");
    assert_eq!(postgres_timestamp(i64::MAX, true), "infinity");
}
