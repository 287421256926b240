//! Unit tests of the `sphinx` sink that need no server: configuration,
//! document ids, quoting and type conversion.

use std::sync::Arc;

use weir_core::{
    ChangeEvent, Column, Lsn, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId, Value,
};

use super::config::AttributeType;
use super::encode::{Cell, WATERMARK_ID, cell, document_id, hash_id, quote};
use crate::registry::parse_sink;

fn event(keys: &[(&str, &str)], values: Vec<Value>) -> ChangeEvent {
    let columns = keys
        .iter()
        .map(|(name, ty)| Column {
            name: (*name).to_owned(),
            type_oid: 0,
            type_name: (*ty).to_owned(),
            type_modifier: -1,
            key: true,
        })
        .collect();
    ChangeEvent {
        op: Op::Insert,
        table: Some(Arc::new(TableSchema {
            id: 1,
            version: 1,
            schema: "public".into(),
            name: "t".into(),
            columns,
            replica_identity: ReplicaIdentity::Default,
        })),
        before: None,
        after: Some(values),
        message: None,
        source: SourceInfo {
            commit_lsn: Lsn(1),
            lsn: Lsn(1),
            xid: 1,
            commit_time_micros: 0,
            seq: 0,
            snapshot: Default::default(),
        },
        txn: TxnId(1),
    }
}

#[test]
fn positive_integer_keys_are_ids_and_others_are_hashed() {
    let e = event(&[("id", "int8")], vec![Value::Int(42)]);
    let id = document_id(&e, e.after.as_ref().unwrap()).unwrap();
    assert_eq!((id.id, id.key.as_str()), (42, "42"));

    for values in [vec![Value::Int(0)], vec![Value::Int(-5)]] {
        let e = event(&[("id", "int8")], values);
        let id = document_id(&e, e.after.as_ref().unwrap()).unwrap();
        assert_eq!(id.id, hash_id(&id.key));
    }
    let e = event(
        &[("a", "text"), ("b", "text")],
        vec![Value::Text("x:y".into()), Value::Text("z".into())],
    );
    let id = document_id(&e, e.after.as_ref().unwrap()).unwrap();
    assert_eq!(id.key, "x\\:y:z");
    // The first 8 bytes of SHA-256("x\:y:z"), big-endian: stable across
    // versions, as ids already in an index depend on it.
    assert_eq!(id.id, hash_id("x\\:y:z"));
    assert_ne!(hash_id("a"), hash_id("b"));
    assert_eq!(hash_id("abc"), 0xba78_16bf_8f01_cfea);
    assert_ne!(hash_id("abc"), WATERMARK_ID);
}

#[test]
fn strings_are_escaped_with_backslashes() {
    let mut out = String::new();
    quote("it's a \\ test", &mut out);
    assert_eq!(out, "'it\\'s a \\\\ test'");
}

#[test]
fn values_fit_their_attribute_types_or_say_why_not() {
    let ok = |v: Value, ty| cell("c", &v, Some(ty)).unwrap();
    assert_eq!(
        ok(Value::Int(-3), AttributeType::Bigint),
        Cell::Number("-3".into())
    );
    assert_eq!(
        ok(Value::Bool(true), AttributeType::Bool),
        Cell::Number("1".into())
    );
    assert_eq!(
        ok(Value::Float(1.5), AttributeType::Float),
        Cell::Number("1.5".into())
    );
    assert_eq!(
        ok(Value::Float(3.0e38), AttributeType::Float),
        Cell::Number("300000000000000000000000000000000000000.0".into())
    );
    assert_eq!(
        ok(Value::Int(-2), AttributeType::Float),
        Cell::Number("-2.0".into())
    );
    assert_eq!(
        ok(Value::Date(1), AttributeType::Timestamp),
        Cell::Number("86400".into())
    );
    assert_eq!(
        ok(Value::TimestampTz(1_500_000), AttributeType::Timestamp),
        Cell::Number("1".into())
    );
    assert_eq!(ok(Value::Null, AttributeType::Bigint), Cell::Null);
    assert_eq!(
        ok(Value::Uuid([0; 16]), AttributeType::String),
        Cell::Text("00000000-0000-0000-0000-000000000000".into())
    );
    let err = cell("born", &Value::Date(-1), Some(AttributeType::Timestamp)).unwrap_err();
    assert!(err.starts_with("column born: 1969-12-31"), "{err}");
    let err = cell("n", &Value::Text("abc".into()), Some(AttributeType::Bigint)).unwrap_err();
    assert!(err.contains("not a 64-bit integer"), "{err}");
    assert!(cell("f", &Value::Float(f64::NAN), Some(AttributeType::Float)).is_err());
    assert!(cell("u", &Value::Int(-1), Some(AttributeType::Uint)).is_err());
}

#[test]
fn configuration_errors_name_their_field() {
    let spec = parse_sink(
        "type = \"sphinx\"\naddress = \"127.0.0.1:9306\"\nfields = [\"title\"]\nattributes = { price = \"float\" }"
            .parse()
            .unwrap(),
    )
    .unwrap();
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let caps = spec.capabilities();
    assert!(caps.applies_state && caps.needs_key && !caps.accepts_raw);

    let spec = parse_sink(
        "type = \"sphinx\"\naddress = \"nowhere\"\nindex = \"{table}-x\"\nfields = [\"id\", \"a b\"]\nnulls_attribute = \"a b\"\nmax_statement_bytes = 10"
            .parse()
            .unwrap(),
    )
    .unwrap();
    let problems = spec.validate();
    for field in [
        "address:",
        "index:",
        "fields[1]:",
        "fields: `id`",
        "nulls_attribute:",
        "max_statement_bytes:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} in {problems:?}"
        );
    }

    let errs = parse_sink(
        "type = \"sphinx\"\naddress = \"h:1\"\nattributes = { a = \"int\" }"
            .parse()
            .unwrap(),
    )
    .unwrap_err();
    assert!(errs[0].starts_with("attributes.a"), "{errs:?}");
    assert!(
        spec.check_topic("{schema}_{table}", weir_codec::TemplateUse::Change)
            .is_ok()
    );
    assert!(
        spec.check_topic("x.{table}", weir_codec::TemplateUse::Change)
            .is_err()
    );
}
