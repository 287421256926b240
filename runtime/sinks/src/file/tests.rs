use std::sync::Arc;

use weir_core::{
    ChangeEvent, Column, Op, RawMessage, ReplicaIdentity, Sink, SinkError, SinkPayload, SinkRecord,
    SourceInfo, TableSchema, TxnId, Value,
};

use super::{FileSink, FileSinkConfig};
use crate::Encoding;

fn table(columns: &[(&str, &str)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 16385,
        version: 1,
        schema: "public".to_owned(),
        name: "every_type".to_owned(),
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, (name, type_name))| Column {
                name: (*name).to_owned(),
                type_oid: 0,
                type_name: (*type_name).to_owned(),
                type_modifier: -1,
                key: i == 0,
            })
            .collect(),
        replica_identity: ReplicaIdentity::Default,
    })
}

fn source(seq: u32) -> SourceInfo {
    SourceInfo {
        commit_lsn: "0/16B3748".parse().unwrap(),
        lsn: "0/16B3700".parse().unwrap(),
        xid: 123,
        commit_time_micros: 1_795_899_600_123_456,
        seq,
        snapshot: Default::default(),
    }
}

fn change(table: &Arc<TableSchema>, seq: u32, after: Vec<Value>) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op: Op::Insert,
            table: Some(table.clone()),
            before: None,
            after: Some(after),
            message: None,
            source: source(seq),
            txn: TxnId(1),
        })),
        txn: TxnId(1),
    }
}

fn raw(value: Option<&[u8]>) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Raw(Arc::new(RawMessage {
            key: None,
            value: value.map(<[u8]>::to_vec),
            headers: vec![],
            source: source(0),
        })),
        txn: TxnId(1),
    }
}

fn simple(seq: u32, id: i64) -> SinkRecord {
    change(&table(&[("id", "int8")]), seq, vec![Value::Int(id)])
}

fn open(path: &std::path::Path) -> FileSink {
    FileSink::open("audit", &FileSinkConfig::new(path.to_str().unwrap())).unwrap()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn writes_every_value_variant_as_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut sink = open(&path);
    let t = table(&[
        ("id", "int8"),
        ("nothing", "text"),
        ("toasted", "text"),
        ("flag", "bool"),
        ("ratio", "float8"),
        ("nan", "float8"),
        ("inf", "float4"),
        ("ninf", "float4"),
        ("price", "numeric"),
        ("name", "text"),
        ("blob", "bytea"),
        ("day", "date"),
        ("bc_day", "date"),
        ("forever", "date"),
        ("at", "time"),
        ("local", "timestamp"),
        ("instant", "timestamptz"),
        ("never", "timestamptz"),
        ("uid", "uuid"),
        ("doc", "jsonb"),
        ("spot", "point"),
    ]);
    let row = vec![
        Value::Int(42),
        Value::Null,
        Value::Unchanged,
        Value::Bool(true),
        Value::Float(0.5),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NEG_INFINITY),
        Value::Numeric("1234.5600".into()),
        Value::Text("Zoë \"Z\"\n\\".into()),
        Value::Bytes(b"\x00\x01hi".to_vec()),
        Value::Date(20_785),
        Value::Date(-735_160), // 15 March 44 BC
        Value::Date(i32::MIN),
        Value::Time(75_600_000_001),
        Value::Timestamp(951_825_600_000_000),
        Value::TimestampTz(-1),
        Value::TimestampTz(i64::MAX),
        Value::Uuid(*b"\x12\x34\x56\x78\x9a\xbc\xde\xf0\x0f\xed\xcb\xa9\x87\x65\x43\x21"),
        Value::Json("{\"tags\": [\"a\", \"b\"], \"n\": 1}".into()),
        Value::Other("(1,2)".into()),
    ];
    sink.write(&[change(&t, 0, row)]).await.unwrap();
    let expected = concat!(
        r#"{"op":"insert","schema":"public","table":"every_type","key":{"id":42},"before":null,"#,
        r#""after":{"id":42,"nothing":null,"toasted":{"$unchanged":true},"flag":true,"ratio":0.5,"#,
        r#""nan":"NaN","inf":"Infinity","ninf":"-Infinity","price":"1234.5600","#,
        r#""name":"Zoë \"Z\"\n\\","blob":"AAFoaQ==","day":"2026-11-28","bc_day":"-0043-03-15","#,
        r#""forever":"-infinity","at":"21:00:00.000001","local":"2000-02-29T12:00:00","#,
        r#""instant":"1969-12-31T23:59:59.999999Z","never":"infinity","#,
        r#""uid":"12345678-9abc-def0-0fed-cba987654321","doc":{"tags": ["a", "b"], "n": 1},"#,
        r#""spot":"(1,2)"},"#,
        r#""source":{"commit_lsn":"0/16B3748","lsn":"0/16B3700","xid":123,"#,
        r#""commit_time":"2026-11-28T21:00:00.123456Z","seq":0}}"#,
        "\n"
    );
    assert_eq!(read(&path), expected);
}

#[tokio::test]
async fn appends_batches_in_order_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut sink = open(&path);
    sink.write(&[simple(0, 1), simple(1, 2)]).await.unwrap();
    sink.write(&[]).await.unwrap();
    sink.close().await.unwrap();
    drop(sink);
    let mut sink = open(&path);
    sink.write(&[simple(2, 3)]).await.unwrap();
    let ids: Vec<i64> = read(&path)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["after"]["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[tokio::test]
async fn raw_records_are_written_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.txt");
    let mut sink = open(&path);
    sink.write(&[
        raw(Some(b"plain")),
        raw(Some(b"already a line\n")),
        raw(None),
        raw(Some(b"{\"not\":\"checked\"")),
    ])
    .await
    .unwrap();
    assert_eq!(read(&path), "plain\nalready a line\n{\"not\":\"checked\"\n");
}

#[tokio::test]
async fn torn_last_line_is_cut_off_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":3,\"tor").unwrap();
    let mut sink = open(&path);
    assert_eq!(read(&path), "{\"a\":1}\n{\"a\":2}\n");
    sink.write(&[raw(Some(b"{\"a\":3}"))]).await.unwrap();
    assert_eq!(read(&path), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");

    // A file with no complete line at all is emptied.
    std::fs::write(&path, "{\"partial").unwrap();
    open(&path);
    assert_eq!(read(&path), "");

    // An intact file is left alone.
    std::fs::write(&path, "x\n").unwrap();
    open(&path);
    assert_eq!(read(&path), "x\n");
}

#[tokio::test]
async fn torn_tail_longer_than_one_read_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut content = "first\n".repeat(3);
    let kept = content.len();
    content.push_str(&"x".repeat(200_000));
    std::fs::write(&path, &content).unwrap();
    open(&path);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), kept as u64);
}

#[test]
fn missing_directory_is_a_config_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("out.jsonl");
    let Err(err) = FileSink::open("audit", &FileSinkConfig::new(path.to_str().unwrap())) else {
        panic!("opened a file in a missing directory");
    };
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(!dir.path().join("no-such-dir").exists());
}

#[test]
fn a_directory_as_path_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) = FileSink::open("audit", &FileSinkConfig::new(dir.path().to_str().unwrap()))
    else {
        panic!("opened a directory as the file");
    };
    assert!(matches!(err, SinkError::Io(_)), "{err:?}");
    assert!(
        err.to_string().contains(dir.path().to_str().unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn an_unencodable_record_fails_the_batch_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut sink = open(&path);
    let t = table(&[("id", "int8"), ("doc", "json")]);
    let bad = change(&t, 1, vec![Value::Int(1), Value::Json("{oops".into())]);
    let err = sink.write(&[simple(0, 1), bad]).await.unwrap_err();
    assert!(matches!(err, SinkError::Encode(_)), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("every_type.doc"), "{text}");
    assert_eq!(read(&path), "");
}

#[tokio::test]
async fn stdout_mode_writes() {
    // Durability is not testable on stdout; check only that it works.
    let mut sink = FileSink::open("console", &FileSinkConfig::new("-")).unwrap();
    sink.write(&[simple(0, 1)]).await.unwrap();
    sink.close().await.unwrap();
    assert_eq!(sink.name(), "console");
}

#[test]
fn config_from_toml() {
    let config: FileSinkConfig = toml::from_str(r#"path = "/tmp/x.jsonl""#).unwrap();
    assert_eq!(config, FileSinkConfig::new("/tmp/x.jsonl"));
    let config: FileSinkConfig = toml::from_str("path = \"-\"\nencoding = \"json\"").unwrap();
    assert_eq!(config.encoding, Encoding::Json);
    let err = toml::from_str::<FileSinkConfig>("path = \"x\"\nencodng = \"json\"").unwrap_err();
    assert!(err.to_string().contains("unknown field `encodng`"), "{err}");
    let err = toml::from_str::<FileSinkConfig>("path = \"x\"\nencoding = \"avro\"").unwrap_err();
    assert!(err.to_string().contains("unknown variant `avro`"), "{err}");
    assert!(toml::from_str::<FileSinkConfig>("").is_err());
    assert_eq!(FileSinkConfig::new("").validate().len(), 1);
    assert!(matches!(
        FileSink::open("x", &FileSinkConfig::new("")),
        Err(SinkError::Config(_))
    ));
}

#[tokio::test]
async fn debezium_encoding_writes_one_value_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dbz.jsonl");
    let config: FileSinkConfig = toml::from_str(&format!(
        "path = {:?}\nencoding = \"debezium\"\n[debezium]\nschemas = false\ntopic_prefix = \"srv\"",
        path.to_str().unwrap()
    ))
    .unwrap();
    assert!(config.validate().is_empty());
    let mut sink = FileSink::open("audit", &config).unwrap();
    sink.write(&[simple(0, 7), simple(1, 8)]).await.unwrap();
    let text = read(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["after"], serde_json::json!({"id": 7}));
    assert_eq!(lines[1]["after"], serde_json::json!({"id": 8}));
    assert_eq!(lines[0]["op"], "c");
    assert_eq!(lines[0]["source"]["name"], "srv");
    assert_eq!(lines[0]["source"]["table"], "every_type");

    let mut json_with_debezium = FileSinkConfig::new("x");
    json_with_debezium.debezium = Some(weir_codec::DebeziumConfig::default());
    assert_eq!(json_with_debezium.validate().len(), 1);
}
