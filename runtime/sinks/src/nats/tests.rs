use std::sync::Arc;

use weir_codec::{JsonEncoder, TemplateUse};
use weir_core::{ChangeEvent, Column, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId, Value};

use super::names::{
    KeyTemplate, check_subject, check_subject_template, covers, push_escaped, stream_subjects,
};
use super::row::{Row, row_json};
use super::{NatsMode, NatsSinkConfig};
use crate::registry::parse_sink;

/// Table `public."my table"`: text key columns `keys`, then `note`.
fn table(keys: &[&str]) -> TableSchema {
    let column = |name: &str, key: bool| Column {
        name: name.into(),
        type_oid: 25,
        type_name: "text".into(),
        type_modifier: -1,
        key,
    };
    TableSchema {
        id: 1,
        version: 1,
        schema: "public".into(),
        name: "my table".into(),
        columns: keys
            .iter()
            .map(|k| column(k, true))
            .chain([column("note", false)])
            .collect(),
        replica_identity: ReplicaIdentity::Default,
    }
}

fn event(id: Value, note: Value) -> ChangeEvent {
    ChangeEvent {
        op: Op::Update,
        table: Some(Arc::new(table(&["id"]))),
        before: None,
        after: Some(vec![id, note]),
        message: None,
        source: SourceInfo::default(),
        txn: TxnId(1),
    }
}

fn escaped(value: &str) -> String {
    let mut out = String::new();
    push_escaped(&mut out, value);
    out
}

#[test]
fn kv_keys_escape_every_value_into_legal_distinct_keys() {
    assert_eq!(escaped("abc-_/09"), "abc-_/09");
    assert_eq!(escaped("a.b c"), "a=2Eb=20c");
    assert_eq!(escaped("="), "=3D");
    assert_eq!(escaped(""), "=00");
    assert_eq!(escaped("é"), "=C3=A9");
    // `{key}` joins columns with ':', escaped too: never an extra token.
    let template = KeyTemplate::parse("{schema}.{table}.{key}").unwrap();
    let mut key = String::new();
    template
        .expand(&event(Value::Text("x.y:z".into()), Value::Null), &mut key)
        .unwrap();
    assert_eq!(key, "public.my=20table.x=2Ey=5C=3Az");
    template
        .prefix(&event(Value::Int(1), Value::Null), &mut key)
        .unwrap();
    assert_eq!(key, "public.my=20table.");
}

fn read(template: &str, keys: &[&str], key: &str) -> Option<Vec<String>> {
    KeyTemplate::parse(template)
        .unwrap()
        .read_key(&table(keys), key)
}

fn texts(values: &[&str]) -> Option<Vec<String>> {
    Some(values.iter().map(|v| (*v).to_owned()).collect())
}

#[test]
fn keys_read_back_as_key_texts() {
    let t = "{schema}.{table}.{key}";
    assert_eq!(read(t, &["id"], "public.my=20table.42"), texts(&["42"]));
    assert_eq!(
        read(t, &["id"], "public.my=20table.a=2Eb=20c"),
        texts(&["a.b c"])
    );
    assert_eq!(read(t, &["id"], "public.my=20table.=00"), texts(&[""]));
    assert_eq!(read(t, &["id"], "public.my=20table.a=3Ab"), None);
    assert_eq!(read(t, &["id"], "public.other.42"), None);
    assert_eq!(read(t, &["id"], "public.my=20table.4=32"), None);
    assert_eq!(
        read(t, &["a", "b"], "public.my=20table.x=5C=3Ay=3Az"),
        texts(&["x:y", "z"])
    );
    let t = "{table}.{key.b}.{key.a}";
    assert_eq!(read(t, &["a", "b"], "my=20table.2.1"), texts(&["1", "2"]));
    assert_eq!(read("{table}.{key.a}", &["a", "b"], "my=20table.1"), None);
    assert_eq!(
        read("{table}.{key.a}-{key.b}", &["a", "b"], "my=20table.1-2-3"),
        None
    );
    assert_eq!(
        read("{table}.{key.a}-{key.b}", &["a", "b"], "my=20table.1-2"),
        texts(&["1", "2"])
    );
}

#[test]
fn key_templates_must_name_the_row_after_its_table() {
    for (template, problem) in [
        ("{schema}.{table}", "has no {key}"),
        ("{key}.{table}", "must have {table} before {key}"),
        ("{table}.{op}.{key}", "uses {op}"),
        ("{table}..{key}", "empty token"),
        (".{table}.{key}", "empty token"),
        ("{table}:{key}", "contains ':'"),
        ("{table}={key}", "contains '='"),
        ("{tabel}.{key}", "unknown placeholder"),
    ] {
        let err = KeyTemplate::parse(template).unwrap_err();
        assert!(err.contains(problem), "{template}: {err}");
    }
    assert!(KeyTemplate::parse("cache/{table}.{key.id}").is_ok());
}

#[test]
fn subjects_are_checked_in_templates_and_once_filled_in() {
    assert!(check_subject_template("weir.{schema}.{table}", TemplateUse::Change).is_ok());
    for (template, used_for, problem) in [
        ("weir.*.{table}", TemplateUse::Change, "contains '*'"),
        ("weir.>", TemplateUse::Change, "contains '>'"),
        ("weir {table}", TemplateUse::Change, "contains ' '"),
        ("weir..{table}", TemplateUse::Change, "empty token"),
        ("weir.{prefix}", TemplateUse::Message, "empty token"),
        ("{table}", TemplateUse::Raw, "empty token"),
    ] {
        let err = check_subject_template(template, used_for).unwrap_err();
        assert!(err.contains(problem), "{template}: {err}");
    }
    assert!(check_subject("weir.public.t").is_ok());
    assert!(
        check_subject("weir.public.my table")
            .unwrap_err()
            .contains("' '")
    );
    assert!(
        check_subject("weir.public.")
            .unwrap_err()
            .contains("empty token")
    );
    assert!(check_subject("weir.a>b").is_err());
}

#[test]
fn a_created_stream_covers_every_template_without_overlap() {
    assert_eq!(
        stream_subjects(&["weir.{schema}.{table}", "weir.message", "weir.raw"]).unwrap(),
        ["weir.>"]
    );
    assert_eq!(
        stream_subjects(&["cdc.{table}", "msgs", "weir.raw"]).unwrap(),
        ["cdc.>", "msgs", "weir.raw"]
    );
    assert!(stream_subjects(&["{schema}.x"]).is_err());
    assert!(covers("weir.>", "weir.a.b"));
    assert!(covers("weir.*.b", "weir.a.b"));
    assert!(!covers("weir.*", "weir.a.b"));
    assert!(!covers("weir.>", "weir"));
}

#[test]
fn configuration_errors_name_their_field() {
    let section = |text: &str| parse_sink(text.parse().unwrap()).unwrap().validate();
    assert_eq!(
        section("type = \"nats\"\nurl = \"nats://x:4222\""),
        ["stream: mode \"jetstream\" needs the name of the stream the subjects belong to"]
    );
    let problems = section(
        "type = \"nats\"\nurl = \"\"\nmode = \"kv\"\nbucket = \"a.b\"\nkey = \"{key}\"\nstream = \"S\"\npassword = \"p\"",
    );
    let joined = problems.join("\n");
    for field in ["url:", "bucket:", "key:", "stream: only for mode", "user:"] {
        assert!(joined.contains(field), "{field} missing from {joined}");
    }
    let problems = section(
        "type = \"nats\"\nurl = \"x\"\nstream = \"S\"\ncreate_stream = true\nsubject = \"{table}.x\"",
    );
    assert!(
        problems.iter().any(|p| p.starts_with("create_stream:")),
        "{problems:?}"
    );
    let errs = parse_sink(
        "type = \"nats\"\nurl = \"x\"\nmode = \"kafka\""
            .parse()
            .unwrap(),
    )
    .unwrap_err();
    assert!(errs[0].starts_with("mode:"), "{errs:?}");
}

#[test]
fn debug_hides_secrets_and_capabilities_follow_the_mode() {
    use crate::registry::SinkSpec as _;
    let mut config = NatsSinkConfig::new("nats://x", NatsMode::Kv);
    config.user = Some("me".into());
    config.password = Some("hunter2".into());
    config.token = Some("tok3n".into());
    let text = format!("{config:?}");
    assert!(
        !text.contains("hunter2") && !text.contains("tok3n"),
        "{text}"
    );
    let caps = config.capabilities();
    assert!(caps.applies_state && caps.needs_key && !caps.accepts_raw);
    config.mode = NatsMode::Jetstream;
    assert_eq!(config.capabilities(), weir_core::Capabilities::LOG);
}

#[test]
fn unchanged_toast_values_are_kept_from_the_stored_row() {
    let mut encoder = JsonEncoder::new();
    let stored = Row::from_event(
        &event(Value::Int(1), Value::Text("long".into())),
        &mut encoder,
    )
    .unwrap();
    let update = event(Value::Int(1), Value::Unchanged);
    let mut row = Row::from_event(&update, &mut encoder).unwrap();
    row.keep_unchanged(&update, Some(&stored), None);
    assert_eq!(row_json(&row), br#"{"id":1,"note":"long"}"#);
    // Nothing stored: null rather than a marker.
    let mut row = Row::from_event(&update, &mut encoder).unwrap();
    row.keep_unchanged(&update, None, None);
    assert_eq!(row_json(&row), br#"{"id":1,"note":null}"#);
    assert_eq!(Row::parse(br#"{"id":1,"note":"long"}"#), Some(stored));
    assert_eq!(Row::parse(b"not json"), None);
}

#[test]
fn credentials_in_the_url_are_refused() {
    let spec = crate::parse_sink(
        "type = \"nats\"\nurl = \"nats://weir:s3cret@127.0.0.1:4222\"\nstream = \"S\"\n"
            .parse()
            .unwrap(),
    )
    .unwrap();
    let problems = spec.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("url: holds user info")),
        "{problems:?}"
    );
    assert!(!problems.join(" ").contains("s3cret"), "{problems:?}");
}
