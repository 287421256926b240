use std::sync::Arc;

use weir_core::{
    ChangeEvent, Column, LogicalMessage, Lsn, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId,
    Value,
};

use super::calendar::{self, MICROS_PER_DAY, civil_from_days, days_from_civil};
use super::{encode_key_json, encode_native_json};

fn column(name: &str, type_name: &str, key: bool) -> Column {
    Column {
        name: name.to_owned(),
        type_oid: 0,
        type_name: type_name.to_owned(),
        type_modifier: -1,
        key,
    }
}

fn orders() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 16384,
        version: 1,
        schema: "public".to_owned(),
        name: "orders".to_owned(),
        columns: vec![column("id", "int8", true), column("status", "text", false)],
        replica_identity: ReplicaIdentity::Default,
    })
}

fn source() -> SourceInfo {
    SourceInfo {
        commit_lsn: "0/16B3748".parse().unwrap(),
        lsn: "0/16B3700".parse().unwrap(),
        xid: 123,
        // 2026-11-28T21:00:00.123456Z
        commit_time_micros: 1_795_899_600_123_456,
        seq: 0,
        snapshot: Default::default(),
    }
}

fn event(op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
    ChangeEvent {
        op,
        table: Some(orders()),
        before,
        after,
        message: None,
        source: source(),
        txn: TxnId(1),
    }
}

fn json(event: &ChangeEvent) -> String {
    let mut out = Vec::new();
    encode_native_json(event, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The text of one value, encoded as the only column of a row.
fn value_json(value: Value) -> String {
    let table = Arc::new(TableSchema {
        id: 1,
        version: 1,
        schema: "s".to_owned(),
        name: "t".to_owned(),
        columns: vec![column("v", "whatever", false)],
        replica_identity: ReplicaIdentity::Default,
    });
    let event = ChangeEvent {
        table: Some(table),
        ..event(Op::Insert, None, Some(vec![value]))
    };
    let text = json(&event);
    let rest = text
        .strip_prefix(
            r#"{"op":"insert","schema":"s","table":"t","key":null,"before":null,"after":{"v":"#,
        )
        .unwrap();
    let end = rest.find(r#"},"source":"#).unwrap();
    rest[..end].to_owned()
}

fn value_error(value: Value) -> String {
    let event = ChangeEvent {
        table: Some(Arc::new(TableSchema {
            columns: vec![column("v", "json", false)],
            ..(*orders()).clone()
        })),
        ..event(Op::Insert, None, Some(vec![value]))
    };
    let mut out = b"kept".to_vec();
    let err = encode_native_json(&event, &mut out).unwrap_err();
    assert_eq!(
        out, b"kept",
        "a failed encoding leaves the buffer as it was"
    );
    err.to_string()
}

const SOURCE: &str = r#""source":{"commit_lsn":"0/16B3748","lsn":"0/16B3700","xid":123,"commit_time":"2026-11-28T21:00:00.123456Z","seq":0}"#;

#[test]
fn insert_envelope() {
    let e = event(
        Op::Insert,
        None,
        Some(vec![Value::Int(42), Value::Text("new".into())]),
    );
    assert_eq!(
        json(&e),
        format!(
            r#"{{"op":"insert","schema":"public","table":"orders","key":{{"id":42}},"before":null,"after":{{"id":42,"status":"new"}},{SOURCE}}}"#
        )
    );
}

#[test]
fn a_snapshot_row_is_a_read_marked_in_its_source_and_decodes_back() {
    let e = event(
        Op::Read,
        None,
        Some(vec![Value::Int(7), Value::Text("old".into())]),
    );
    let text = json(&e);
    let source = SOURCE.trim_end_matches('}');
    assert_eq!(
        text,
        format!(
            r#"{{"op":"read","schema":"public","table":"orders","key":{{"id":7}},"before":null,"after":{{"id":7,"status":"old"}},{source},"snapshot":true}}}}"#
        )
    );
    let back = crate::decode_native_json(&text, &mut Default::default()).unwrap();
    assert_eq!(back.op, Op::Read);
    assert_eq!(back.source, e.source);
}

#[test]
fn update_and_delete_envelopes() {
    let update = event(
        Op::Update,
        Some(vec![Value::Int(42), Value::Text("new".into())]),
        Some(vec![Value::Int(42), Value::Text("paid".into())]),
    );
    assert_eq!(
        json(&update),
        format!(
            r#"{{"op":"update","schema":"public","table":"orders","key":{{"id":42}},"before":{{"id":42,"status":"new"}},"after":{{"id":42,"status":"paid"}},{SOURCE}}}"#
        )
    );
    // A key-only identity sends the key and NULL for the other columns.
    let delete = event(Op::Delete, Some(vec![Value::Int(7), Value::Null]), None);
    assert_eq!(
        json(&delete),
        format!(
            r#"{{"op":"delete","schema":"public","table":"orders","key":{{"id":7}},"before":{{"id":7,"status":null}},"after":null,{SOURCE}}}"#
        )
    );
}

#[test]
fn truncate_and_message_envelopes() {
    let truncate = event(Op::Truncate, None, None);
    assert_eq!(
        json(&truncate),
        format!(
            r#"{{"op":"truncate","schema":"public","table":"orders","key":null,"before":null,"after":null,{SOURCE}}}"#
        )
    );
    let message = ChangeEvent {
        table: None,
        message: Some(LogicalMessage {
            prefix: "audit".into(),
            content: b"hello".to_vec(),
        }),
        ..event(Op::Message, None, None)
    };
    assert_eq!(
        json(&message),
        format!(
            r#"{{"op":"message","schema":null,"table":null,"key":null,"before":null,"after":null,"message":{{"prefix":"audit","content":"aGVsbG8="}},{SOURCE}}}"#
        )
    );
    let mut key = Vec::new();
    assert!(!encode_key_json(&message, &mut key).unwrap());
    assert!(!encode_key_json(&truncate, &mut key).unwrap());
    assert!(key.is_empty());

    let broken = ChangeEvent {
        message: None,
        ..message
    };
    assert!(encode_native_json(&broken, &mut Vec::new()).is_err());
}

#[test]
fn every_value_variant() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::Null, "null"),
        (Value::Unchanged, r#"{"$unchanged":true}"#),
        (Value::Bool(true), "true"),
        (Value::Bool(false), "false"),
        (Value::Int(0), "0"),
        (Value::Int(-42), "-42"),
        (Value::Int(i64::MAX), "9223372036854775807"),
        (Value::Int(i64::MIN), "-9223372036854775808"),
        (Value::Float(1.5), "1.5"),
        (Value::Float(-0.25), "-0.25"),
        (Value::Float(f64::NAN), r#""NaN""#),
        (Value::Float(f64::INFINITY), r#""Infinity""#),
        (Value::Float(f64::NEG_INFINITY), r#""-Infinity""#),
        (Value::Numeric("12.50".into()), r#""12.50""#),
        (Value::Numeric("NaN".into()), r#""NaN""#),
        (Value::Text("plain".into()), r#""plain""#),
        (Value::Text(String::new()), r#""""#),
        (
            Value::Text(
                "quote\" back\\ nl\n tab\t cr\r bs\u{8} ff\u{c} nul\0 esc\u{1b} del\u{7f}".into(),
            ),
            "\"quote\\\" back\\\\ nl\\n tab\\t cr\\r bs\\b ff\\f nul\\u0000 esc\\u001b del\u{7f}\"",
        ),
        (Value::Text("naïve 日本 🦀".into()), r#""naïve 日本 🦀""#),
        (Value::Bytes(vec![]), r#""""#),
        (Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]), r#""3q2+7w==""#),
        (Value::Bytes(vec![0xfb, 0xff]), r#""+/8=""#),
        (Value::Date(0), r#""1970-01-01""#),
        (Value::Date(i32::MAX), r#""infinity""#),
        (Value::Date(i32::MIN), r#""-infinity""#),
        (Value::Time(0), r#""00:00:00""#),
        (Value::Time(45_005_250_000), r#""12:30:05.25""#),
        (Value::Time(86_399_999_999), r#""23:59:59.999999""#),
        (Value::Time(MICROS_PER_DAY), r#""24:00:00""#),
        (Value::Timestamp(0), r#""1970-01-01T00:00:00""#),
        (Value::Timestamp(-1), r#""1969-12-31T23:59:59.999999""#),
        (Value::Timestamp(i64::MAX), r#""infinity""#),
        (
            Value::TimestampTz(1_795_899_600_123_456),
            r#""2026-11-28T21:00:00.123456Z""#,
        ),
        (Value::TimestampTz(i64::MIN), r#""-infinity""#),
        (
            Value::Uuid([
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11,
            ]),
            r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#,
        ),
        (
            Value::Json(r#"{"a": [1, 2.5, "x"]}"#.into()),
            r#"{"a": [1, 2.5, "x"]}"#,
        ),
        (Value::Json("\"just a string\"".into()), "\"just a string\""),
        (Value::Json("null".into()), "null"),
        (
            Value::Json("{\r\n  \"a\": \"line\\nbreak\"\n}".into()),
            r#"{    "a": "line\nbreak" }"#,
        ),
        (Value::Other("(1,2)".into()), r#""(1,2)""#),
        (Value::Other("{1,2,3}".into()), r#""{1,2,3}""#),
    ];
    for (value, expected) in cases {
        let shown = format!("{value:?}");
        let text = value_json(value);
        assert_eq!(text, expected, "encoding {shown}");
        // Every encoding is itself valid JSON.
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{shown} encoded as invalid JSON {text}: {e}"));
    }
}

#[test]
fn floats_round_trip() {
    for f in [
        0.1,
        1e300,
        -1e-300,
        123456.789,
        f64::MIN_POSITIVE,
        1.0,
        1e21,
    ] {
        let text = value_json(Value::Float(f));
        assert_eq!(text.parse::<f64>().unwrap(), f, "{text}");
    }
}

#[test]
fn invalid_values_are_errors_naming_the_column() {
    let err = value_error(Value::Json("{not json".into()));
    assert!(err.contains("public.orders.v (json)"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(value_error(Value::Json(String::new())).contains("not valid JSON"));
    assert!(value_error(Value::Json("1 2".into())).contains("not valid JSON"));
    assert!(value_error(Value::Time(-1)).contains("outside"));
    assert!(value_error(Value::Time(MICROS_PER_DAY + 1)).contains("outside"));
}

#[test]
fn row_length_mismatch_is_an_error() {
    let e = event(Op::Insert, None, Some(vec![Value::Int(1)]));
    let err = encode_native_json(&e, &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string()
            .contains("has 1 values but the table has 2 columns"),
        "{err}"
    );
}

#[test]
fn column_names_are_escaped() {
    let table = Arc::new(TableSchema {
        columns: vec![column("we\"ird", "int4", true)],
        ..(*orders()).clone()
    });
    let e = ChangeEvent {
        table: Some(table),
        ..event(Op::Insert, None, Some(vec![Value::Int(1)]))
    };
    assert!(json(&e).contains(r#""after":{"we\"ird":1}"#));
}

#[test]
fn key_encoding() {
    let table = Arc::new(TableSchema {
        columns: vec![
            column("tenant", "text", true),
            column("id", "int8", true),
            column("body", "text", false),
        ],
        ..(*orders()).clone()
    });
    let e = ChangeEvent {
        table: Some(table.clone()),
        ..event(
            Op::Insert,
            None,
            Some(vec![
                Value::Text("acme".into()),
                Value::Int(42),
                Value::Text("x".into()),
            ]),
        )
    };
    let mut key = b"prefix:".to_vec();
    assert!(encode_key_json(&e, &mut key).unwrap());
    assert_eq!(key, br#"prefix:{"tenant":"acme","id":42}"#);

    // A delete takes the key from the old row.
    let delete = ChangeEvent {
        op: Op::Delete,
        before: Some(vec![Value::Text("acme".into()), Value::Int(7), Value::Null]),
        after: None,
        ..e.clone()
    };
    let mut key = Vec::new();
    assert!(encode_key_json(&delete, &mut key).unwrap());
    assert_eq!(key, br#"{"tenant":"acme","id":7}"#);

    // An unchanged (TOASTed) key column in the new row comes from the old one.
    let update = ChangeEvent {
        op: Op::Update,
        before: Some(vec![Value::Text("acme".into()), Value::Int(7), Value::Null]),
        after: Some(vec![
            Value::Unchanged,
            Value::Int(7),
            Value::Text("y".into()),
        ]),
        ..e.clone()
    };
    let mut key = Vec::new();
    assert!(encode_key_json(&update, &mut key).unwrap());
    assert_eq!(key, br#"{"tenant":"acme","id":7}"#);

    // No key columns: no key.
    let keyless = ChangeEvent {
        table: Some(Arc::new(TableSchema {
            columns: vec![column("body", "text", false)],
            ..(*table).clone()
        })),
        after: Some(vec![Value::Text("x".into())]),
        ..e
    };
    let mut key = Vec::new();
    assert!(!encode_key_json(&keyless, &mut key).unwrap());
    assert!(key.is_empty());
    assert!(json(&keyless).contains(r#""key":null"#));
}

#[test]
fn lsns_print_like_postgres() {
    let mut e = event(Op::Truncate, None, None);
    e.source.commit_lsn = Lsn(0x16_B374_D848);
    e.source.lsn = Lsn::ZERO;
    let text = json(&e);
    assert!(
        text.contains(r#""commit_lsn":"16/B374D848","lsn":"0/0""#),
        "{text}"
    );
    e.source.commit_lsn = Lsn(u64::MAX);
    assert!(json(&e).contains(r#""commit_lsn":"FFFFFFFF/FFFFFFFF""#));
    assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
}

fn date(days: i64) -> String {
    let mut out = Vec::new();
    calendar::write_timestamp(&mut out, days * MICROS_PER_DAY, false);
    let text = String::from_utf8(out).unwrap();
    text.strip_suffix("T00:00:00").unwrap().to_owned()
}

#[test]
fn calendar_known_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(59), (1970, 3, 1));
    // Leap years: divisible by 4, except centuries, except every 400 years.
    assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    assert_eq!(
        days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
        2
    );
    assert_eq!(
        days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28),
        1
    );
    assert_eq!(
        days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
        1
    );
    assert_eq!(
        days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
        2
    );
    assert_eq!(days_from_civil(2000, 1, 1), 10_957);
    assert_eq!(date(10_957), "2000-01-01");
    assert_eq!(date(days_from_civil(2000, 2, 29)), "2000-02-29");
    assert_eq!(date(days_from_civil(2026, 11, 28)), "2026-11-28");
    assert_eq!(date(days_from_civil(9999, 12, 31)), "9999-12-31");
    assert_eq!(date(days_from_civil(10000, 1, 1)), "+10000-01-01");
    // Postgres: '0001-01-01'::date - '1970-01-01'::date = -719162
    assert_eq!(days_from_civil(1, 1, 1), -719_162);
    assert_eq!(date(-719_162), "0001-01-01");
    // The day before 1 AD is 31 December 1 BC, year 0 in ISO numbering.
    assert_eq!(date(-719_163), "0000-12-31");
    // 15 March 44 BC (Postgres '0044-03-15 BC') is ISO year -43; 1 BC was a leap year.
    assert_eq!(date(days_from_civil(-43, 3, 15)), "-0043-03-15");
    assert_eq!(date(days_from_civil(0, 2, 29)), "0000-02-29");
    // Postgres's earliest date, 4714-11-24 BC (Julian day 0).
    assert_eq!(days_from_civil(-4713, 11, 24), -2_440_588);
    assert_eq!(date(-2_440_588), "-4713-11-24");
    // Postgres's latest date, 5874897-12-31.
    let mut out = Vec::new();
    calendar::write_date(&mut out, days_from_civil(5_874_897, 12, 31) as i32);
    assert_eq!(out, b"+5874897-12-31");
}

#[test]
fn calendar_round_trips_day_by_day() {
    // Across ±2000 years around 1970 and past Postgres's date range ends,
    // every day is the day after the previous one in the calendar.
    let ranges = [
        -800_000..800_000i64,
        -2_441_000..-2_440_000,
        2_145_000_000..2_147_000_000,
    ];
    for range in ranges {
        let mut previous = civil_from_days(range.start - 1);
        for days in range {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            let (py, pm, pd) = previous;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let next_month =
                d == 1 && ((y == py && m == pm + 1) || (y == py + 1 && m == 1 && pm == 12));
            assert!(next_day || next_month, "{previous:?} -> {:?}", (y, m, d));
            previous = (y, m, d);
        }
    }
}

#[test]
fn timestamps_with_fractions() {
    let ts = |micros: i64, utc: bool| {
        let mut out = Vec::new();
        calendar::write_timestamp(&mut out, micros, utc);
        String::from_utf8(out).unwrap()
    };
    let noon_2000 = days_from_civil(2000, 2, 29) * MICROS_PER_DAY + 12 * 3_600_000_000;
    assert_eq!(ts(noon_2000, false), "2000-02-29T12:00:00");
    assert_eq!(ts(noon_2000 + 1, true), "2000-02-29T12:00:00.000001Z");
    assert_eq!(ts(noon_2000 + 100_000, true), "2000-02-29T12:00:00.1Z");
    assert_eq!(ts(noon_2000 + 120_000, true), "2000-02-29T12:00:00.12Z");
    assert_eq!(ts(noon_2000 + 999_999, true), "2000-02-29T12:00:00.999999Z");
    // Before 1970 the time of day still counts forward from midnight.
    assert_eq!(ts(-1_500_000, true), "1969-12-31T23:59:58.5Z");
    let bc = days_from_civil(-43, 3, 15) * MICROS_PER_DAY + 3_723_000_004;
    assert_eq!(ts(bc, false), "-0043-03-15T01:02:03.000004");
    // The extremes of the representation stay well-formed.
    assert_eq!(ts(i64::MAX - 1, true), "+294247-01-10T04:00:54.775806Z");
    assert_eq!(ts(i64::MIN + 1, true), "-290308-12-21T19:59:05.224193Z");
}

#[test]
fn string_escaping_matches_serde_json() {
    // Escapes at every position of strings short and long enough to cross
    // the 8-byte scanning words, with multi-byte characters around them.
    let alphabet = [
        "a", "Z", " ", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "日", "🦀",
        "/", "~",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..40 {
        for _ in 0..50 {
            let mut s = String::new();
            for _ in 0..len {
                // xorshift: a fixed sequence, so a failure reproduces.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let mut out = Vec::new();
            super::json::write_str(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }
}

#[test]
fn cached_encoder_writes_the_same_text() {
    let mut encoder = super::JsonEncoder::new();
    let odd_names = Arc::new(TableSchema {
        schema: "my \"schema\"".into(),
        name: "tab\\le".into(),
        columns: vec![
            column("k\ney", "int8", true),
            column("naïve", "text", false),
        ],
        ..(*orders()).clone()
    });
    // Same id and version, different names: a different Arc is a different table.
    let renamed = Arc::new(TableSchema {
        columns: vec![column("id", "int8", true), column("state", "text", false)],
        ..(*orders()).clone()
    });
    let message = ChangeEvent {
        table: None,
        message: Some(LogicalMessage {
            prefix: "p".into(),
            content: vec![1, 2, 3],
        }),
        ..event(Op::Message, None, None)
    };
    let events = [
        event(
            Op::Insert,
            None,
            Some(vec![Value::Int(1), Value::Text("a".into())]),
        ),
        ChangeEvent {
            table: Some(odd_names),
            ..event(Op::Update, None, Some(vec![Value::Int(2), Value::Null]))
        },
        ChangeEvent {
            table: Some(renamed),
            ..event(Op::Delete, Some(vec![Value::Int(3), Value::Null]), None)
        },
        event(
            Op::Insert,
            None,
            Some(vec![Value::Int(4), Value::Text("b".into())]),
        ),
        event(Op::Truncate, None, None),
        message,
    ];
    for e in events.iter().chain(&events) {
        let (mut cached, mut plain) = (Vec::new(), Vec::new());
        encoder.encode(e, &mut cached).unwrap();
        encode_native_json(e, &mut plain).unwrap();
        assert_eq!(
            String::from_utf8(cached).unwrap(),
            String::from_utf8(plain).unwrap()
        );
        let (mut cached, mut plain) = (Vec::new(), Vec::new());
        assert_eq!(
            encoder.encode_key(e, &mut cached).unwrap(),
            encode_key_json(e, &mut plain).unwrap()
        );
        assert_eq!(cached, plain);
    }
    let bad = ChangeEvent {
        table: Some(Arc::new(TableSchema {
            columns: vec![column("v", "json", false)],
            ..(*orders()).clone()
        })),
        ..event(Op::Insert, None, Some(vec![Value::Json("{".into())]))
    };
    let mut out = b"kept".to_vec();
    assert!(encoder.encode(&bad, &mut out).is_err());
    assert_eq!(out, b"kept");
}
