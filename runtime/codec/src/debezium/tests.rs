//! The Debezium envelope against the examples of Debezium's PostgreSQL
//! connector documentation (a `customers` table under the logical server
//! `PostgreSQL_server`), rewritten here as the JSON those examples show,
//! and against every type of the end-to-end types table.

use std::sync::Arc;

use serde_json::{Value as Json, json};
use weir_core::{
    ChangeEvent, Column, LogicalMessage, Lsn, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId,
    Value,
};

use super::*;

/// The processing time every test event is stamped with.
const NOW_MS: i64 = 1_559_033_904_863;

fn now() -> i64 {
    NOW_MS
}

fn column(name: &str, type_name: &str, type_modifier: i32, key: bool) -> Column {
    Column {
        name: name.into(),
        type_oid: 0,
        type_name: type_name.into(),
        type_modifier,
        key,
    }
}

/// Debezium's example table: `id SERIAL PRIMARY KEY`, three `varchar(255)`.
fn customers() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 16_390,
        version: 1,
        schema: "public".into(),
        name: "customers".into(),
        columns: vec![
            column("id", "int4", -1, true),
            column("first_name", "varchar", 259, false),
            column("last_name", "varchar", 259, false),
            column("email", "varchar", 259, false),
        ],
        replica_identity: ReplicaIdentity::Full,
    })
}

fn source() -> SourceInfo {
    SourceInfo {
        commit_lsn: Lsn(24_023_119),
        lsn: Lsn(24_023_128),
        xid: 555,
        commit_time_micros: 1_559_033_904_862_123,
        seq: 0,
        snapshot: Default::default(),
    }
}

fn anne(email: &str) -> Vec<Value> {
    vec![
        Value::Int(1),
        Value::Text("Anne".into()),
        Value::Text("Kretchmar".into()),
        Value::Text(email.into()),
    ]
}

fn event(op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
    ChangeEvent {
        op,
        table: Some(customers()),
        before,
        after,
        message: None,
        source: source(),
        txn: TxnId(1),
    }
}

fn config(schemas: bool) -> DebeziumConfig {
    DebeziumConfig {
        schemas,
        topic_prefix: "PostgreSQL_server".into(),
        database: "postgres".into(),
        ..DebeziumConfig::default()
    }
}

/// The key and value of `event`, parsed back.
fn encode_with(config: DebeziumConfig, event: &ChangeEvent) -> (Option<Json>, Json) {
    let mut encoder = DebeziumEncoder::new(config).with_clock(now);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let has_key = encoder.encode(event, &mut key, &mut value).unwrap();
    let value: Json = serde_json::from_slice(&value).expect("the value is JSON");
    let key = has_key.then(|| serde_json::from_slice(&key).expect("the key is JSON"));
    (key, value)
}

fn encode(schemas: bool, event: &ChangeEvent) -> (Option<Json>, Json) {
    encode_with(config(schemas), event)
}

/// `source` as the documentation shows it, with Weir's version.
fn expected_source() -> Json {
    json!({
        "version": concat!("weir-", env!("CARGO_PKG_VERSION")),
        "connector": "postgresql",
        "name": "PostgreSQL_server",
        "ts_ms": 1_559_033_904_862_i64,
        "snapshot": "false",
        "db": "postgres",
        "sequence": "[\"24023119\",\"24023128\"]",
        "schema": "public",
        "table": "customers",
        "txId": 555,
        "lsn": 24_023_128,
        "xmin": null
    })
}

fn expected_key_schema() -> Json {
    json!({
        "type": "struct",
        "name": "PostgreSQL_server.public.customers.Key",
        "optional": false,
        "fields": [{"field": "id", "type": "int32", "optional": false}]
    })
}

/// The row schema; Weir knows no NOT NULL, so the names and email, which
/// the documentation's table declares NOT NULL, are optional here.
fn expected_row_schema(field: &str) -> Json {
    json!({
        "type": "struct",
        "fields": [
            {"type": "int32", "optional": false, "field": "id"},
            {"type": "string", "optional": true, "field": "first_name"},
            {"type": "string", "optional": true, "field": "last_name"},
            {"type": "string", "optional": true, "field": "email"}
        ],
        "optional": true,
        "name": "PostgreSQL_server.public.customers.Value",
        "field": field
    })
}

fn expected_value_schema() -> Json {
    json!({
        "type": "struct",
        "fields": [
            expected_row_schema("before"),
            expected_row_schema("after"),
            {
                "type": "struct",
                "fields": [
                    {"type": "string", "optional": false, "field": "version"},
                    {"type": "string", "optional": false, "field": "connector"},
                    {"type": "string", "optional": false, "field": "name"},
                    {"type": "int64", "optional": false, "field": "ts_ms"},
                    {"type": "string", "optional": true, "name": "io.debezium.data.Enum",
                     "version": 1, "parameters": {"allowed": "true,last,false,incremental"},
                     "default": "false", "field": "snapshot"},
                    {"type": "string", "optional": false, "field": "db"},
                    {"type": "string", "optional": true, "field": "sequence"},
                    {"type": "string", "optional": false, "field": "schema"},
                    {"type": "string", "optional": false, "field": "table"},
                    {"type": "int64", "optional": true, "field": "txId"},
                    {"type": "int64", "optional": true, "field": "lsn"},
                    {"type": "int64", "optional": true, "field": "xmin"}
                ],
                "optional": false,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source"
            },
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"}
        ],
        "optional": false,
        "name": "PostgreSQL_server.public.customers.Envelope"
    })
}

/// Compares key by key, so that a failure names the field that differs.
fn assert_fields(got: &Json, want: &Json, path: &str) {
    match (got, want) {
        (Json::Object(g), Json::Object(w)) => {
            let mut gk: Vec<_> = g.keys().collect();
            let mut wk: Vec<_> = w.keys().collect();
            gk.sort();
            wk.sort();
            assert_eq!(gk, wk, "fields of {path}");
            for (k, wv) in w {
                assert_fields(&g[k], wv, &format!("{path}.{k}"));
            }
        }
        (Json::Array(g), Json::Array(w)) => {
            assert_eq!(g.len(), w.len(), "length of {path}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_fields(gv, wv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

#[test]
fn create_event_matches_the_documentation() {
    let insert = event(Op::Insert, None, Some(anne("annek@noanswer.org")));
    let payload = json!({
        "before": null,
        "after": {"id": 1, "first_name": "Anne", "last_name": "Kretchmar",
                  "email": "annek@noanswer.org"},
        "source": expected_source(),
        "op": "c",
        "ts_ms": NOW_MS
    });

    let (key, value) = encode(true, &insert);
    assert_fields(
        &key.unwrap(),
        &json!({"schema": expected_key_schema(), "payload": {"id": 1}}),
        "key",
    );
    assert_fields(
        &value,
        &json!({"schema": expected_value_schema(), "payload": payload}),
        "value",
    );

    // schemas.enable=false: the payloads alone.
    let (key, value) = encode(false, &insert);
    assert_fields(&key.unwrap(), &json!({"id": 1}), "key");
    assert_fields(&value, &payload, "value");
}

#[test]
fn update_event_matches_the_documentation() {
    let update = event(
        Op::Update,
        Some(anne("annek@noanswer.org")),
        Some(anne("noreply@example.com")),
    );
    let (key, value) = encode(true, &update);
    assert_eq!(key.unwrap()["payload"], json!({"id": 1}));
    assert_fields(&value["schema"], &expected_value_schema(), "schema");
    assert_fields(
        &value["payload"],
        &json!({
            "before": {"id": 1, "first_name": "Anne", "last_name": "Kretchmar",
                       "email": "annek@noanswer.org"},
            "after": {"id": 1, "first_name": "Anne", "last_name": "Kretchmar",
                      "email": "noreply@example.com"},
            "source": expected_source(),
            "op": "u",
            "ts_ms": NOW_MS
        }),
        "payload",
    );

    // REPLICA IDENTITY DEFAULT: no old row, as in Debezium.
    let (_, value) = encode(false, &event(Op::Update, None, Some(anne("x@y.z"))));
    assert_eq!(value["before"], Json::Null);
    assert_eq!(value["op"], "u");
}

#[test]
fn delete_event_matches_the_documentation() {
    // REPLICA IDENTITY DEFAULT: the old row carries the key only.
    let before = vec![Value::Int(1), Value::Null, Value::Null, Value::Null];
    let delete = event(Op::Delete, Some(before), None);
    let payload = json!({
        "before": {"id": 1, "first_name": null, "last_name": null, "email": null},
        "after": null,
        "source": expected_source(),
        "op": "d",
        "ts_ms": NOW_MS
    });
    for schemas in [true, false] {
        let (key, value) = encode(schemas, &delete);
        let (key, value) = if schemas {
            assert_fields(&value["schema"], &expected_value_schema(), "schema");
            assert_fields(
                &key.as_ref().unwrap()["schema"],
                &expected_key_schema(),
                "key schema",
            );
            (key.unwrap()["payload"].clone(), value["payload"].clone())
        } else {
            (key.unwrap(), value)
        };
        assert_eq!(key, json!({"id": 1}));
        assert_fields(&value, &payload, "payload");
    }
}

#[test]
fn the_encoder_object_asks_for_a_tombstone_after_deletes_only() {
    let delete = event(Op::Delete, Some(anne("a@b.c")), None);
    let insert = event(Op::Insert, None, Some(anne("a@b.c")));
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut encoder = crate::Encoder::new(crate::Encoding::Debezium, None);
    let done = encoder.encode(&delete, &mut key, &mut value).unwrap();
    assert_eq!(
        done,
        crate::Encoded {
            has_key: true,
            tombstone: true
        }
    );
    assert!(
        !encoder
            .encode(&insert, &mut key, &mut value)
            .unwrap()
            .tombstone
    );

    let off = DebeziumConfig {
        tombstones_on_delete: false,
        ..DebeziumConfig::default()
    };
    let mut encoder = crate::Encoder::new(crate::Encoding::Debezium, Some(&off));
    assert!(
        !encoder
            .encode(&delete, &mut key, &mut value)
            .unwrap()
            .tombstone
    );
    // The native envelope has no tombstones.
    let mut encoder = crate::Encoder::new(crate::Encoding::Json, None);
    let done = encoder.encode(&delete, &mut key, &mut value).unwrap();
    assert!(done.has_key && !done.tombstone);
}

#[test]
fn truncate_has_no_key_and_op_t() {
    let truncate = event(Op::Truncate, None, None);
    let (key, value) = encode(false, &truncate);
    assert_eq!(key, None);
    assert_fields(
        &value,
        &json!({"before": null, "after": null, "source": expected_source(), "op": "t",
                "ts_ms": NOW_MS}),
        "payload",
    );
}

#[test]
fn snapshot_reads_are_op_r() {
    let (_, value) = encode(false, &event(Op::Read, None, Some(anne("a@b.c"))));
    assert_eq!(value["op"], "r");
    assert_eq!(value["source"]["snapshot"], "true");
    for (kind, says) in [
        (SnapshotKind::Initial, "true"),
        (SnapshotKind::Last, "last"),
        (SnapshotKind::Incremental, "incremental"),
    ] {
        let mut read = event(Op::Read, None, Some(anne("a@b.c")));
        read.source.snapshot = kind;
        let (_, value) = encode(false, &read);
        assert_eq!(value["source"]["snapshot"], says, "{kind:?}");
    }
    // A change from the stream is never a snapshot's, whatever its mark.
    let mut insert = event(Op::Insert, None, Some(anne("a@b.c")));
    insert.source.snapshot = SnapshotKind::Last;
    assert_eq!(encode(false, &insert).1["source"]["snapshot"], "false");
}

#[test]
fn logical_messages_are_op_m() {
    let message = ChangeEvent {
        op: Op::Message,
        table: None,
        before: None,
        after: None,
        message: Some(LogicalMessage {
            prefix: "audit".into(),
            content: b"hello".to_vec(),
        }),
        source: source(),
        txn: TxnId(1),
    };
    let (key, value) = encode(false, &message);
    assert_eq!(key, Some(json!({"prefix": "audit"})));
    let mut source = expected_source();
    source["schema"] = json!("");
    source["table"] = json!("");
    assert_fields(
        &value,
        &json!({"op": "m", "ts_ms": NOW_MS, "source": source,
                "message": {"prefix": "audit", "content": "aGVsbG8="}}),
        "payload",
    );
    let (key, value) = encode(true, &message);
    let key = key.unwrap();
    assert_eq!(
        key["schema"]["name"],
        "io.debezium.connector.postgresql.MessageKey"
    );
    assert_eq!(key["payload"], json!({"prefix": "audit"}));
    assert_eq!(
        value["schema"]["name"],
        "io.debezium.connector.postgresql.MessageValue"
    );
    let fields: Vec<&str> = value["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["op", "ts_ms", "source", "message"]);
    assert_eq!(value["payload"]["message"]["content"], "aGVsbG8=");
}

#[test]
fn unchanged_toast_is_the_unavailable_placeholder() {
    let table = Arc::new(TableSchema {
        columns: vec![
            column("id", "int4", -1, true),
            column("body", "text", -1, false),
            column("blob", "bytea", -1, false),
            column("doc", "jsonb", -1, false),
        ],
        ..(*customers()).clone()
    });
    let update = ChangeEvent {
        table: Some(table),
        after: Some(vec![
            Value::Int(1),
            Value::Unchanged,
            Value::Unchanged,
            Value::Unchanged,
        ]),
        ..event(Op::Update, None, None)
    };
    let (_, value) = encode(false, &update);
    assert_eq!(
        value["after"],
        json!({"id": 1, "body": "__debezium_unavailable_value",
               "blob": "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==",
               "doc": "__debezium_unavailable_value"})
    );
}

/// The end-to-end types table (`tests/tests/types_roundtrip.rs`), as the
/// Postgres decoder hands its rows over.
fn typed() -> Arc<TableSchema> {
    let c = column;
    Arc::new(TableSchema {
        id: 1,
        version: 1,
        schema: "public".into(),
        name: "typed".into(),
        columns: vec![
            c("id", "int4", -1, true),
            c("b", "bool", -1, false),
            c("i2", "int2", -1, false),
            c("i4", "int4", -1, false),
            c("i8", "int8", -1, false),
            c("f4", "float4", -1, false),
            c("f8", "float8", -1, false),
            c("n", "numeric", -1, false),
            // numeric(12,3): ((12 << 16) | 3) + 4.
            c("n2", "numeric", (12 << 16 | 3) + 4, false),
            c("t", "text", -1, false),
            c("vc", "varchar", 24, false),
            c("bp", "bpchar", 9, false),
            c("nm", "name", -1, false),
            c("by", "bytea", -1, false),
            c("d", "date", -1, false),
            c("tm", "time", -1, false),
            c("ts", "timestamp", -1, false),
            c("tstz", "timestamptz", -1, false),
            c("u", "uuid", -1, false),
            c("j", "json", -1, false),
            c("jb", "jsonb", -1, false),
            c("addr", "inet", -1, false),
            c("span", "interval", -1, false),
            c("arr", "_int4", -1, false),
        ],
        replica_identity: ReplicaIdentity::Default,
    })
}

fn typed_row(values: Vec<Value>) -> ChangeEvent {
    ChangeEvent {
        table: Some(typed()),
        after: Some(values),
        ..event(Op::Insert, None, None)
    }
}

const UUID: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

/// Row 1 of the types table.
fn row_one() -> ChangeEvent {
    typed_row(vec![
        Value::Int(1),
        Value::Bool(true),
        Value::Int(-32768),
        Value::Int(2_147_483_647),
        Value::Int(i64::MAX),
        Value::Float(1.5),
        Value::Float(-2.25e300),
        Value::Numeric("-12345678901234567890.123456789".into()),
        Value::Numeric("42.500".into()),
        Value::Text("héllo \"quoted\"\n\ttab \\ done".into()),
        Value::Text("abc".into()),
        Value::Text("ab   ".into()),
        Value::Text("a_name".into()),
        Value::Bytes(vec![0, 0xff, 0x10]),
        Value::Date(19_782),
        Value::Time(47_655_123_456),
        Value::Timestamp(1_709_212_455_500_000),
        Value::TimestampTz(1_709_205_255_123_000),
        Value::Uuid(UUID),
        Value::Json(r#"{"a": [1, 2.5, "x"]}"#.into()),
        Value::Json(r#"{"b": {"c": null}, "d": [true]}"#.into()),
        Value::Other("10.1.2.3/24".into()),
        Value::Other("1 day 02:00:03".into()),
        Value::Other("{1,2,3}".into()),
    ])
}

/// `(field, Connect type, semantic name)` of each column of the types table.
const TYPED_SCHEMA: &[(&str, &str, Option<&str>)] = &[
    ("id", "int32", None),
    ("b", "boolean", None),
    ("i2", "int16", None),
    ("i4", "int32", None),
    ("i8", "int64", None),
    ("f4", "float", None),
    ("f8", "double", None),
    ("n", "struct", Some("io.debezium.data.VariableScaleDecimal")),
    ("n2", "bytes", Some("org.apache.kafka.connect.data.Decimal")),
    ("t", "string", None),
    ("vc", "string", None),
    ("bp", "string", None),
    ("nm", "string", None),
    ("by", "bytes", None),
    ("d", "int32", Some("io.debezium.time.Date")),
    ("tm", "int64", Some("io.debezium.time.MicroTime")),
    ("ts", "int64", Some("io.debezium.time.MicroTimestamp")),
    ("tstz", "string", Some("io.debezium.time.ZonedTimestamp")),
    ("u", "string", Some("io.debezium.data.Uuid")),
    ("j", "string", Some("io.debezium.data.Json")),
    ("jb", "string", Some("io.debezium.data.Json")),
    ("addr", "string", None),
    ("span", "string", None),
    ("arr", "string", None),
];

#[test]
fn every_type_has_debeziums_schema() {
    let (key, value) = encode(true, &row_one());
    assert_eq!(
        key.unwrap()["schema"]["fields"],
        json!([{"type": "int32", "optional": false, "field": "id"}])
    );
    let after = &value["schema"]["fields"][1];
    assert_eq!(after["field"], "after");
    assert_eq!(after["name"], "PostgreSQL_server.public.typed.Value");
    let fields = after["fields"].as_array().unwrap();
    assert_eq!(fields.len(), TYPED_SCHEMA.len());
    for (got, (field, ty, name)) in fields.iter().zip(TYPED_SCHEMA) {
        assert_eq!(got["field"], *field);
        assert_eq!(got["type"], *ty, "type of {field}");
        assert_eq!(got["name"].as_str(), *name, "name of {field}");
        assert_eq!(got["optional"], *field != "id", "optional of {field}");
        if name.is_some() {
            assert_eq!(got["version"], 1, "version of {field}");
        }
    }
    assert_eq!(
        fields[8]["parameters"],
        json!({"scale": "3", "connect.decimal.precision": "12"})
    );
    assert_eq!(
        fields[7]["fields"],
        json!([{"type": "int32", "optional": false, "field": "scale"},
               {"type": "bytes", "optional": false, "field": "value"}])
    );
}

#[test]
fn every_type_has_debeziums_value() {
    let (_, value) = encode(false, &row_one());
    assert_fields(
        &value["after"],
        &json!({
            "id": 1, "b": true, "i2": -32768, "i4": 2_147_483_647, "i8": i64::MAX,
            "f4": 1.5, "f8": -2.25e300,
            // -12345678901234567890123456789 as two's complement, scale 9.
            "n": {"scale": 9, "value": "2BvkzblBNk6Rxn7r"},
            // 42500 = 0x00A604.
            "n2": "AKYE",
            "t": "héllo \"quoted\"\n\ttab \\ done", "vc": "abc", "bp": "ab   ", "nm": "a_name",
            "by": "AP8Q",
            "d": 19_782,
            "tm": 47_655_123_456_i64,
            "ts": 1_709_212_455_500_000_i64,
            "tstz": "2024-02-29T11:14:15.123Z",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "j": r#"{"a": [1, 2.5, "x"]}"#,
            "jb": r#"{"b": {"c": null}, "d": [true]}"#,
            "addr": "10.1.2.3/24", "span": "1 day 02:00:03", "arr": "{1,2,3}"
        }),
        "after",
    );

    // Row 2: every column but the key null.
    let mut nulls = vec![Value::Null; TYPED_SCHEMA.len()];
    nulls[0] = Value::Int(2);
    let (_, value) = encode(false, &typed_row(nulls));
    let after = value["after"].as_object().unwrap();
    assert_eq!(after["id"], 2);
    assert!(
        after
            .iter()
            .filter(|(k, _)| *k != "id")
            .all(|(_, v)| v.is_null())
    );

    // Rows 3 to 5: the extremes (the numeric NaN and Infinity are below).
    let mut row = vec![Value::Null; TYPED_SCHEMA.len()];
    row[0] = Value::Int(3);
    row[5] = Value::Float(f64::NAN);
    row[6] = Value::Float(f64::INFINITY);
    row[8] = Value::Numeric("0.000".into());
    row[13] = Value::Bytes(Vec::new());
    row[14] = Value::Date(i32::MIN);
    row[15] = Value::Time(0);
    row[16] = Value::Timestamp(i64::MAX);
    row[17] = Value::TimestampTz(i64::MIN);
    row[18] = Value::Uuid([0; 16]);
    let (_, value) = encode(false, &typed_row(row));
    let after = &value["after"];
    assert_eq!(after["f4"], "NaN");
    assert_eq!(after["f8"], "Infinity");
    assert_eq!(after["n2"], "AA==");
    assert_eq!(after["by"], "");
    assert_eq!(after["d"], i32::MIN);
    assert_eq!(after["tm"], 0);
    assert_eq!(after["ts"], i64::MAX);
    assert_eq!(after["tstz"], "-infinity");
    assert_eq!(after["u"], "00000000-0000-0000-0000-000000000000");

    let mut row = vec![Value::Null; TYPED_SCHEMA.len()];
    row[0] = Value::Int(4);
    row[5] = Value::Float(f64::NEG_INFINITY);
    row[6] = Value::Float(1e-300);
    row[7] = Value::Numeric("0.000000000000000000001".into());
    row[14] = Value::Date(-735_160);
    row[15] = Value::Time(86_399_999_999);
    row[16] = Value::Timestamp(-63_517_780_800_000_000);
    row[17] = Value::TimestampTz(1);
    let (_, value) = encode(false, &typed_row(row));
    let after = &value["after"];
    assert_eq!(after["f4"], "-Infinity");
    assert_eq!(after["f8"], 1e-300);
    assert_eq!(after["n"], json!({"scale": 21, "value": "AQ=="}));
    assert_eq!(after["d"], -735_160);
    assert_eq!(after["tm"], 86_399_999_999_i64);
    assert_eq!(after["ts"], -63_517_780_800_000_000_i64);
    assert_eq!(after["tstz"], "1970-01-01T00:00:00.000001Z");

    let mut row = vec![Value::Null; TYPED_SCHEMA.len()];
    row[0] = Value::Int(5);
    row[14] = Value::Date(2_932_896);
    row[16] = Value::Timestamp(946_684_800_000_000);
    let (_, value) = encode(false, &typed_row(row));
    assert_eq!(value["after"]["d"], 2_932_896);
    assert_eq!(value["after"]["ts"], 946_684_800_000_000_i64);
}

fn decimal_config(mode: DecimalHandling) -> DebeziumConfig {
    DebeziumConfig {
        decimal_handling: mode,
        ..config(true)
    }
}

#[test]
fn each_decimal_mode() {
    let (_, value) = encode_with(decimal_config(DecimalHandling::String), &row_one());
    assert_eq!(
        value["payload"]["after"]["n"],
        "-12345678901234567890.123456789"
    );
    assert_eq!(value["payload"]["after"]["n2"], "42.500");
    let fields = &value["schema"]["fields"][1]["fields"];
    assert_eq!(
        fields[7],
        json!({"type": "string", "optional": true, "field": "n"})
    );
    assert_eq!(
        fields[8],
        json!({"type": "string", "optional": true, "field": "n2"})
    );

    let (_, value) = encode_with(decimal_config(DecimalHandling::Double), &row_one());
    assert_eq!(value["payload"]["after"]["n"], -1.2345678901234567e19);
    assert_eq!(value["payload"]["after"]["n2"], 42.5);
    let fields = &value["schema"]["fields"][1]["fields"];
    assert_eq!(
        fields[7],
        json!({"type": "double", "optional": true, "field": "n"})
    );

    // NaN and the infinities (rows 3 and 5) exist in the string and
    // double modes only.
    for (text, double) in [("NaN", "NaN"), ("Infinity", "Infinity")] {
        let mut row = vec![Value::Null; TYPED_SCHEMA.len()];
        row[0] = Value::Int(3);
        row[7] = Value::Numeric(text.into());
        let event = typed_row(row);
        let (_, value) = encode_with(decimal_config(DecimalHandling::String), &event);
        assert_eq!(value["payload"]["after"]["n"], text);
        let (_, value) = encode_with(decimal_config(DecimalHandling::Double), &event);
        assert_eq!(value["payload"]["after"]["n"], double);
        let mut encoder = DebeziumEncoder::new(config(true));
        let (mut key, mut value) = (b"kept".to_vec(), b"kept".to_vec());
        let err = encoder.encode(&event, &mut key, &mut value).unwrap_err();
        assert!(
            err.to_string().contains("column public.typed.n (numeric)")
                && err.to_string().contains("decimal_handling = \"string\""),
            "{err}"
        );
        // Nothing half-written is left behind.
        assert_eq!((&key[..], &value[..]), (&b"kept"[..], &b"kept"[..]));
    }
}

#[test]
fn decimals_are_minimal_twos_complement() {
    let bytes = |text: &str, scale: Option<i32>| {
        let (negative, digits) = unscaled(text, scale).unwrap();
        twos_complement(negative, &digits)
    };
    assert_eq!(bytes("0", None), [0x00]);
    assert_eq!(bytes("1", None), [0x01]);
    assert_eq!(bytes("-1", None), [0xff]);
    assert_eq!(bytes("127", None), [0x7f]);
    assert_eq!(bytes("128", None), [0x00, 0x80]);
    assert_eq!(bytes("-128", None), [0x80]);
    assert_eq!(bytes("-129", None), [0xff, 0x7f]);
    assert_eq!(bytes("255", None), [0x00, 0xff]);
    assert_eq!(bytes("-0.00", None), [0x00]);
    // -12.5 at scale 2 is -1250 = 0xFB1E.
    assert_eq!(bytes("-12.5", Some(2)), [0xfb, 0x1e]);
    // Extra zeros beyond the scale are dropped, other digits refused.
    assert_eq!(bytes("1.500", Some(1)), [0x0f]);
    assert!(unscaled("1.55", Some(1)).is_err());
    // numeric(5,-2): 12300 is 123 unscaled.
    assert_eq!(bytes("12300", Some(-2)), [0x7b]);
}

#[test]
fn time_precision_follows_the_declared_precision() {
    let table = Arc::new(TableSchema {
        columns: vec![
            column("id", "int4", -1, true),
            column("t3", "time", 3, false),
            column("ts0", "timestamp", 0, false),
            column("ts6", "timestamp", 6, false),
        ],
        ..(*customers()).clone()
    });
    let ev = ChangeEvent {
        table: Some(table),
        after: Some(vec![
            Value::Int(1),
            Value::Time(1_500_000),
            Value::Timestamp(-1_500),
            Value::Timestamp(-1_500),
        ]),
        ..event(Op::Insert, None, None)
    };
    let (_, value) = encode(true, &ev);
    let fields = &value["schema"]["fields"][1]["fields"];
    assert_eq!(fields[1]["name"], "io.debezium.time.Time");
    assert_eq!(fields[1]["type"], "int32");
    assert_eq!(fields[2]["name"], "io.debezium.time.Timestamp");
    assert_eq!(fields[3]["name"], "io.debezium.time.MicroTimestamp");
    let after = &value["payload"]["after"];
    assert_eq!(after["t3"], 1_500);
    // Before 1970 the milliseconds round down, as Java's floorDiv does.
    assert_eq!(after["ts0"], -2);
    assert_eq!(after["ts6"], -1_500);
}

#[test]
fn values_that_do_not_fit_the_column_are_errors() {
    let mut row = vec![Value::Null; TYPED_SCHEMA.len()];
    row[0] = Value::Int(1);
    row[2] = Value::Int(40_000);
    let mut encoder = DebeziumEncoder::new(config(true));
    let err = encoder
        .encode(&typed_row(row), &mut Vec::new(), &mut Vec::new())
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "column public.typed.i2 (int2): an integer value cannot be written as Debezium's int16"
        ),
        "{err}"
    );
}

#[test]
fn schema_names_are_avro_safe_and_settings_are_checked() {
    let table = Arc::new(TableSchema {
        schema: "my-schema".into(),
        name: "1st table".into(),
        ..(*customers()).clone()
    });
    let ev = ChangeEvent {
        table: Some(table),
        ..event(Op::Insert, None, Some(anne("a@b.c")))
    };
    let (key, value) = encode_with(
        DebeziumConfig {
            topic_prefix: "dbserver-1".into(),
            ..config(true)
        },
        &ev,
    );
    assert_eq!(
        key.unwrap()["schema"]["name"],
        "dbserver_1.my_schema._st_table.Key"
    );
    assert_eq!(
        value["schema"]["name"],
        "dbserver_1.my_schema._st_table.Envelope"
    );
    // source.name keeps the prefix as written.
    assert_eq!(value["payload"]["source"]["name"], "dbserver-1");

    let bad = DebeziumConfig {
        topic_prefix: "a b".into(),
        ..DebeziumConfig::default()
    };
    assert_eq!(
        crate::Encoding::Debezium.validate(Some(&bad)),
        [
            "debezium.topic_prefix: \"a b\" contains ' '; use ASCII letters, digits, '.', '_' and '-', as it starts Kafka topic names"
        ]
    );
    assert_eq!(
        crate::Encoding::Json
            .validate(Some(&DebeziumConfig::default()))
            .len(),
        1
    );
    assert!(crate::Encoding::Debezium.validate(None).is_empty());
    let parsed: DebeziumConfig = serde_json::from_str(r#"{"schemas": false}"#).unwrap();
    assert_eq!(
        parsed,
        DebeziumConfig {
            schemas: false,
            ..DebeziumConfig::default()
        }
    );
    assert!(serde_json::from_str::<DebeziumConfig>(r#"{"schema": false}"#).is_err());
    assert_eq!(
        DebeziumConfig::default().default_topic(),
        "weir.{schema}.{table}"
    );
}
