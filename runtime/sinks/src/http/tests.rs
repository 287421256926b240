use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use weir_codec::Encoder;
use weir_core::{
    ChangeEvent, Column, Lsn, Op, Position, RawMessage, ReplicaIdentity, SinkError, SinkPayload,
    SinkRecord, SourceInfo, TableSchema, TxnId, Value,
};

use super::encode::{body, cut, encode_element, idempotency_key, signature};
use super::sink::{excerpt, retry_after};
use super::{Format, HttpSink, HttpSinkConfig};
use crate::Encoding;
use crate::registry::parse_sink;

fn section(text: &str) -> toml::Table {
    text.parse().unwrap()
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

fn change(seq: u32, id: i64) -> SinkRecord {
    let table = Arc::new(TableSchema {
        id: 16385,
        version: 1,
        schema: "public".to_owned(),
        name: "t".to_owned(),
        columns: vec![Column {
            name: "id".to_owned(),
            type_oid: 20,
            type_name: "int8".to_owned(),
            type_modifier: -1,
            key: true,
        }],
        replica_identity: ReplicaIdentity::Default,
    });
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op: Op::Insert,
            table: Some(table),
            before: None,
            after: Some(vec![Value::Int(id)]),
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

fn element(record: &SinkRecord, format: Format) -> Result<String, String> {
    let mut out = b"kept".to_vec();
    let result = encode_element(
        record,
        format,
        &mut Encoder::new(Encoding::Json, None),
        &mut Vec::new(),
        &mut out,
    );
    match result {
        Ok(()) => Ok(String::from_utf8(out[4..].to_vec()).unwrap()),
        Err(e) => {
            assert_eq!(out, b"kept", "a refused element left bytes behind");
            Err(e)
        }
    }
}

#[test]
fn the_section_reads_with_defaults_and_every_field() {
    let spec = parse_sink(section(
        "type = \"http\"\nurl = \"http://127.0.0.1:8080/hook\"",
    ))
    .unwrap();
    let config = spec.as_any().downcast_ref::<HttpSinkConfig>().unwrap();
    assert_eq!(config, &HttpSinkConfig::new("http://127.0.0.1:8080/hook"));
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let caps = spec.capabilities();
    assert_eq!(
        (
            caps.max_batch_records,
            caps.max_batch_bytes,
            caps.applies_state,
            caps.needs_key,
            caps.accepts_raw
        ),
        (500, 1 << 20, false, false, true)
    );

    let spec = parse_sink(section(
        "type = \"http\"\nurl = \"https://hooks.example/x\"\nformat = \"ndjson\"\nencoding = \"json\"\n\
         timeout = \"5s\"\nconnect_timeout = \"2s\"\nmax_batch_records = 10\nmax_batch_bytes = 4096\n\
         headers = { Authorization = \"Bearer abc\" }\nsecret = \"s3cret\"\n\
         signature_header = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\ntls_ca_file = \"ca.pem\"",
    ))
    .unwrap();
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let config = spec.as_any().downcast_ref::<HttpSinkConfig>().unwrap();
    assert_eq!(config.format, Format::Ndjson);
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(spec.capabilities().max_batch_records, 10);
    assert_eq!(spec.capabilities().max_batch_bytes, 4096);

    let errs = parse_sink(section(
        "type = \"http\"\nurl = \"http://x\"\nformat = \"xml\"",
    ))
    .unwrap_err();
    assert!(
        errs[0].starts_with("format: unknown variant `xml`"),
        "{errs:?}"
    );
    let errs = parse_sink(section("type = \"http\"\nurl = \"http://x\"\nurls = 1")).unwrap_err();
    assert!(errs[0].contains("unknown field `urls`"), "{errs:?}");
}

#[test]
fn validate_lists_every_problem_by_field() {
    let mut config = HttpSinkConfig::new("ftp://example.com/x");
    config.timeout = Duration::ZERO;
    config.max_batch_records = 0;
    config.max_batch_bytes = 0;
    config.secret = Some(String::new());
    config
        .headers
        .insert("Idempotency-Key".into(), "mine".into());
    config.headers.insert("Bad Name".into(), "x".into());
    config
        .headers
        .insert("X-Token".into(), "line\nbreak-secret".into());
    config.signature_header = "X-Same".into();
    config.timestamp_header = "x-same".into();
    let problems = config.validate();
    let expected = [
        "url: the scheme must be http or https, not \"ftp\"",
        "timeout: must be more than zero",
        "max_batch_records: must be at least 1",
        "max_batch_bytes: must be at least 1",
        "timestamp_header: must differ from signature_header",
        "secret: is empty",
        "headers.\"Bad Name\": not a valid header name",
        "headers.\"Idempotency-Key\": set by weir",
        "headers.\"X-Token\": the value has characters",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, start) in problems.iter().zip(expected) {
        assert!(problem.starts_with(start), "{problem:?} vs {start:?}");
    }
    assert!(!problems.iter().any(|p| p.contains("break-secret")));

    let mut config = HttpSinkConfig::new("http://example.com/x");
    config.tls_ca_file = Some("ca.pem".into());
    config.secret = Some("k".into());
    config.headers.insert("x-weir-signature".into(), "v".into());
    assert_eq!(
        config.validate(),
        [
            "tls_ca_file: only used for an https:// url; the url is http://",
            "headers.\"x-weir-signature\": set by weir when secret is set (the signature headers)"
        ]
    );
    assert!(
        HttpSinkConfig::new("not a url").validate()[0]
            .starts_with("url: \"not a url\" is not a URL")
    );
}

#[test]
fn debug_shows_no_secret_header_value_or_url_token() {
    let mut config = HttpSinkConfig::new("https://user:pw@hooks.example/x?token=tok123");
    config.secret = Some("the-secret".into());
    config
        .headers
        .insert("Authorization".into(), "Bearer bearer-token".into());
    let shown = format!("{config:?}");
    for hidden in ["the-secret", "bearer-token", "tok123", "pw@", "user"] {
        assert!(!shown.contains(hidden), "{hidden} in {shown}");
    }
    assert!(shown.contains("Authorization"), "{shown}");
    assert!(shown.contains("https://hooks.example/x?…"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn elements_of_changes_and_raw_records() {
    let json = element(&change(0, 7), Format::Json).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["after"]["id"], 7);
    assert_eq!(parsed["source"]["commit_lsn"], "0/16B3748");

    assert_eq!(
        element(&raw(Some(b" {\"a\": [1, 2]} ")), Format::Json).unwrap(),
        " {\"a\": [1, 2]} "
    );
    let refused = element(&raw(Some(b"{\"a\":")), Format::Json).unwrap_err();
    assert!(refused.contains("not JSON"), "{refused}");
    assert!(refused.contains("ndjson"), "{refused}");
    assert_eq!(element(&raw(None), Format::Json).unwrap(), "null");

    assert_eq!(
        element(&raw(Some(b"plain text\r\n")), Format::Ndjson).unwrap(),
        "plain text"
    );
    assert_eq!(
        element(&raw(Some(b"not json {")), Format::Ndjson).unwrap(),
        "not json {"
    );
    let refused = element(&raw(Some(b"two\nlines")), Format::Ndjson).unwrap_err();
    assert!(refused.contains("newline (at byte 3)"), "{refused}");
}

#[test]
fn requests_are_cut_by_records_and_bytes_the_same_way_every_time() {
    let spans: Vec<_> = [10usize, 10, 10, 10, 10]
        .iter()
        .scan(0, |at, len| {
            let span = *at..*at + len;
            *at += len;
            Some(span)
        })
        .collect();
    assert_eq!(cut(&spans, Format::Json, 2, usize::MAX), [0..2, 2..4, 4..5]);
    let whole = cut(&spans, Format::Json, 100, usize::MAX);
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0], 0..5);
    // `[a,b]` is 23 bytes: three do not fit in 30, two do.
    assert_eq!(cut(&spans, Format::Json, 100, 23), [0..2, 2..4, 4..5]);
    assert_eq!(
        cut(&spans, Format::Json, 100, 22),
        [0..1, 1..2, 2..3, 3..4, 4..5]
    );
    // NDJSON: 11 bytes a line.
    assert_eq!(cut(&spans, Format::Ndjson, 100, 33), [0..3, 3..5]);
    // A record larger than the limit goes alone.
    assert_eq!(
        cut(&spans, Format::Ndjson, 100, 5),
        [0..1, 1..2, 2..3, 3..4, 4..5]
    );
    assert!(cut(&[], Format::Json, 10, 10).is_empty());
    // The bodies are exactly as long as the cut assumed.
    let elements = vec![b'1'; 50];
    assert_eq!(body(&elements, &spans[0..2], Format::Json).len(), 23);
    assert_eq!(body(&elements, &spans[0..3], Format::Ndjson).len(), 33);
}

#[test]
fn bodies_are_an_array_or_lines() {
    let elements = b"{\"a\":1}{\"b\":2}".to_vec();
    let spans = [0..7, 7..14];
    assert_eq!(
        body(&elements, &spans, Format::Json),
        b"[{\"a\":1},{\"b\":2}]"
    );
    assert_eq!(
        body(&elements, &spans, Format::Ndjson),
        b"{\"a\":1}\n{\"b\":2}\n"
    );
}

#[test]
fn the_key_orders_and_names_both_ends() {
    let at = |lsn: u64, seq: u32| Position {
        commit_lsn: Lsn(lsn),
        seq,
    };
    assert_eq!(
        idempotency_key(at(0x16B_3748, 0), at(0x16B_3748, 2)),
        "00000000016B374800000000-00000000016B374800000002"
    );
    assert_eq!(
        idempotency_key(at(u64::MAX, u32::MAX), at(u64::MAX, u32::MAX)).len(),
        49
    );
}

#[test]
fn signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed with another implementation (Python's hmac module).
    assert_eq!(
        signature(b"topsecret", "1700000000", b"[{\"a\":1}]"),
        "sha256=313d59fc57168c885cde089b34d3b524e11c6a45fdb33d403ba81ea76e04f366"
    );
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let with = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    };
    assert_eq!(with("7"), Some(Duration::from_secs(7)));
    assert_eq!(with(" 0 "), Some(Duration::ZERO));
    let later = SystemTime::now() + Duration::from_secs(120);
    let wait = with(&httpdate::fmt_http_date(later)).unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    assert_eq!(with("soon"), None);
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

#[test]
fn excerpts_are_one_short_line() {
    assert_eq!(excerpt(b"  bad\nrequest\t "), "bad request");
    let long = excerpt(&[b'x'; 1000]);
    assert_eq!(long.chars().count(), 201);
    assert!(long.ends_with('…'));
    assert_eq!(excerpt(b""), "");
}

#[test]
fn a_bad_ca_file_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let mut config = HttpSinkConfig::new("https://hooks.example/x");
    config.tls_ca_file = Some(missing.to_str().unwrap().to_owned());
    let Err(err) = HttpSink::new("hook", config.clone()) else {
        panic!("made a sink with a missing CA file");
    };
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("sinks.hook.tls_ca_file: cannot read"),
        "{err}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    config.tls_ca_file = Some(junk.to_str().unwrap().to_owned());
    let Err(err) = HttpSink::new("hook", config) else {
        panic!("made a sink with a CA file holding no certificate");
    };
    assert!(err.to_string().contains("junk.pem"), "{err}");

    let Err(err) = HttpSink::new("hook", HttpSinkConfig::new("http://")) else {
        panic!("made a sink without a host");
    };
    assert!(
        err.to_string()
            .starts_with("invalid configuration: sinks.hook.url"),
        "{err}"
    );
}

#[test]
fn debezium_elements_are_the_debezium_value() {
    let spec = crate::parse_sink(section(
        "type = \"http\"\nurl = \"http://127.0.0.1:1/x\"\nencoding = \"debezium\"\n[debezium]\nschemas = false\n",
    ))
    .unwrap();
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let config = spec
        .as_any()
        .downcast_ref::<super::HttpSinkConfig>()
        .unwrap();
    let mut encoder = Encoder::new(config.encoding, config.debezium.as_ref());
    let mut out = Vec::new();
    encode_element(
        &change(0, 7),
        Format::Json,
        &mut encoder,
        &mut Vec::new(),
        &mut out,
    )
    .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["op"], "c", "{value}");
    assert_eq!(value["after"]["id"], 7, "{value}");
    assert_eq!(value["source"]["connector"], "postgresql", "{value}");
    let mismatched = crate::parse_sink(section(
        "type = \"http\"\nurl = \"http://127.0.0.1:1/x\"\n[debezium]\nschemas = false\n",
    ))
    .unwrap();
    assert!(
        mismatched.validate()[0].starts_with("debezium:"),
        "{:?}",
        mismatched.validate()
    );
}
