use std::sync::Arc;
use std::time::Duration;

use weir_core::{
    ChangeEvent, Column, LogicalMessage, Op, RawMessage, ReplicaIdentity, SinkPayload, SinkRecord,
    SourceInfo, TableSchema, TxnId, Value,
};

use super::KafkaSinkConfig;
use crate::Encoding;
use weir_codec::{NameTemplate, TemplateUse};

use super::encode::check_topic_name;

fn expand(template: &str, record: &SinkRecord) -> String {
    let mut out = String::from("stale");
    NameTemplate::parse(template)
        .unwrap()
        .expand(record, &mut out)
        .unwrap();
    out
}

fn change(op: Op) -> SinkRecord {
    let table = Arc::new(TableSchema {
        id: 1,
        version: 1,
        schema: "public".into(),
        name: "orders".into(),
        columns: vec![Column {
            name: "id".into(),
            type_oid: 20,
            type_name: "int8".into(),
            type_modifier: -1,
            key: true,
        }],
        replica_identity: ReplicaIdentity::Default,
    });
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op,
            table: Some(table),
            before: None,
            after: Some(vec![Value::Int(1)]),
            message: None,
            source: SourceInfo::default(),
            txn: TxnId(1),
        })),
        txn: TxnId(1),
    }
}

fn message(prefix: &str) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op: Op::Message,
            table: None,
            before: None,
            after: None,
            message: Some(LogicalMessage {
                prefix: prefix.into(),
                content: vec![],
            }),
            source: SourceInfo::default(),
            txn: TxnId(1),
        })),
        txn: TxnId(1),
    }
}

#[test]
fn topic_templates_expand_per_event() {
    let insert = change(Op::Insert);
    assert_eq!(expand("{schema}.{table}", &insert), "public.orders");
    assert_eq!(expand("cdc-{table}-{op}s", &insert), "cdc-orders-inserts");
    assert_eq!(expand("fixed", &insert), "fixed");
    assert_eq!(expand("", &insert), "");
    assert_eq!(expand("{op}", &change(Op::Truncate)), "truncate");
    assert_eq!(expand("{prefix}", &insert), "");
    assert_eq!(expand("msg.{prefix}", &message("audit")), "msg.audit");
    assert_eq!(expand("{schema}.{table}", &message("audit")), ".");
    let raw = SinkRecord {
        topic: None,
        payload: SinkPayload::Raw(Arc::new(RawMessage {
            key: None,
            value: None,
            headers: vec![],
            source: SourceInfo::default(),
        })),
        txn: TxnId(1),
    };
    assert_eq!(expand("raw-{table}", &raw), "raw-");
}

#[test]
fn bad_templates_are_rejected() {
    let err = NameTemplate::parse("{schema}.{tabel}").unwrap_err();
    assert!(err.contains("unknown placeholder {tabel}"), "{err}");
    let err = NameTemplate::parse("x.{schema").unwrap_err();
    assert!(err.contains("unclosed"), "{err}");
}

#[test]
fn topic_names_follow_kafka_rules() {
    for good in ["public.orders", "a", "A_b-c.9", &"x".repeat(249)] {
        assert!(check_topic_name(good).is_ok(), "{good}");
    }
    for bad in ["", ".", "..", "has space", "slash/y", "ü", &"x".repeat(250)] {
        assert!(check_topic_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn config_defaults_and_parsing() {
    let config: KafkaSinkConfig = toml::from_str(r#"brokers = "127.0.0.1:9092""#).unwrap();
    assert_eq!(config, KafkaSinkConfig::new("127.0.0.1:9092"));
    assert_eq!(config.topic_template(), "{schema}.{table}");
    assert_eq!(config.message_topic_template(), "weir.{prefix}");
    assert_eq!(config.raw_topic, "weir.raw");
    assert!(!config.create_topics);
    assert_eq!((config.partitions, config.replication_factor), (1, 1));
    assert_eq!(config.delivery_timeout, Duration::from_secs(30));
    assert_eq!(config.connect_timeout, Duration::from_secs(10));
    assert!(config.validate().is_empty());

    let config: KafkaSinkConfig = toml::from_str(
        r#"
        brokers = "k1:9092,k2:9092"
        topic = "cdc.{table}"
        create_topics = true
        partitions = 6
        replication_factor = 3
        delivery_timeout = "2m"
        connect_timeout = "500ms"
        properties = { "compression.type" = "lz4", "ssl.key.password" = "hunter2" }
        security_protocol = "sasl_ssl"
        sasl_mechanism = "SCRAM-SHA-512"
        sasl_username = "weir"
        sasl_password = "s3cret-pw"
        tls_ca_file = "ca.pem"
        "#,
    )
    .unwrap();
    assert!(config.validate().is_empty());
    assert_eq!(config.delivery_timeout, Duration::from_secs(120));
    assert_eq!(config.connect_timeout, Duration::from_millis(500));
    assert_eq!(config.properties["compression.type"], "lz4");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("s3cret-pw"), "{debug}");
    assert!(debug.contains("ssl.key.password"), "{debug}");
    assert!(
        debug.contains("sasl_password: Some(\"<redacted>\")"),
        "{debug}"
    );
    let client = config.client_config("events");
    assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(client.get("ssl.ca.location"), Some("ca.pem"));

    let err = toml::from_str::<KafkaSinkConfig>("brokers = \"x\"\ntopics = \"y\"").unwrap_err();
    assert!(err.to_string().contains("unknown field `topics`"), "{err}");
    let err = toml::from_str::<KafkaSinkConfig>("brokers = \"x\"\ndelivery_timeout = \"30\"")
        .unwrap_err();
    assert!(err.to_string().contains("like 500ms"), "{err}");
    assert!(toml::from_str::<KafkaSinkConfig>("topic = \"x\"").is_err());
}

#[test]
fn validation_lists_every_problem() {
    let mut config = KafkaSinkConfig::new(" ");
    config.topic = Some("{nope}".into());
    config.partitions = 0;
    config.replication_factor = -1;
    config.properties.insert("acks".into(), "1".into());
    config
        .properties
        .insert("enable.idempotence".into(), "false".into());
    config.delivery_timeout = Duration::ZERO;
    let problems = config.validate();
    for field in [
        "brokers:",
        "topic:",
        "partitions:",
        "replication_factor:",
        "properties.\"acks\"",
        "properties.\"enable.idempotence\"",
        "delivery_timeout:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} missing from {problems:?}"
        );
    }
}

#[tokio::test]
async fn connect_reports_every_config_problem_at_once() {
    let mut config = KafkaSinkConfig::new("127.0.0.1:9");
    config.partitions = 0;
    config.message_topic = Some("{x}".into());
    let Err(err) = super::KafkaSink::connect("events", config).await else {
        panic!("connected with an invalid configuration");
    };
    let text = err.to_string();
    assert!(matches!(err, weir_core::SinkError::Config(_)), "{err:?}");
    assert!(text.contains("sinks.events.partitions"), "{text}");
    assert!(text.contains("sinks.events.message_topic"), "{text}");
}

#[test]
fn templates_that_can_expand_to_an_invalid_topic_are_refused() {
    let check = |t: &str, used: TemplateUse| KafkaSinkConfig::check_topic_template(t, used);
    for (good, used) in [
        ("{schema}.{table}", TemplateUse::Change),
        ("{table}", TemplateUse::Change),
        ("cdc-{op}", TemplateUse::Change),
        ("weir.{prefix}", TemplateUse::Message),
        ("{op}", TemplateUse::Message),
        ("weir.raw", TemplateUse::Raw),
        ("dead-letters", TemplateUse::Raw),
    ] {
        assert!(
            check(good, used).is_ok(),
            "{good} for {used:?}: {:?}",
            check(good, used)
        );
    }
    for (bad, used, why) in [
        // The old default of message_topic: empty for a raw record.
        ("{prefix}", TemplateUse::Raw, "empty topic name"),
        ("{prefix}", TemplateUse::Message, "empty topic name"),
        ("{prefix}", TemplateUse::Change, "empty topic name"),
        ("{table}", TemplateUse::Raw, "empty topic name"),
        ("{schema}.{table}", TemplateUse::Message, "\".\""),
        ("", TemplateUse::Change, "empty topic name"),
        ("cdc/{table}", TemplateUse::Change, "'/'"),
        ("dead letters", TemplateUse::Raw, "' '"),
        ("{op}.{nope}", TemplateUse::Change, "unknown placeholder"),
    ] {
        let err = check(bad, used).expect_err(bad);
        assert!(err.contains(why), "{bad} for {used:?}: {err}");
    }
    let long = "x".repeat(250);
    assert!(check(&long, TemplateUse::Raw).unwrap_err().contains("249"));
}

#[test]
fn the_defaults_and_bad_templates_in_validation() {
    assert!(KafkaSinkConfig::new("k:9092").validate().is_empty());
    let mut config = KafkaSinkConfig::new("k:9092");
    config.message_topic = Some("{prefix}".into());
    config.raw_topic = "{table}".into();
    let problems = config.validate();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("message_topic: \"{prefix}\" can expand to an empty topic name"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("raw_topic: \"{table}\" can expand to an empty topic name"),
        "{problems:?}"
    );
}

#[test]
fn security_settings_are_checked_together() {
    let mut config = KafkaSinkConfig::new("k:9093");
    config.tls_ca_file = Some("ca.pem".into());
    config.sasl_username = Some("weir".into());
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("tls_ca_file: needs security_protocol")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sasl_username: needs security_protocol")),
        "{problems:?}"
    );

    let mut config = KafkaSinkConfig::new("k:9093");
    config.security_protocol = super::SecurityProtocol::SaslSsl;
    config.tls_cert_file = Some("client.pem".into());
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p
                .starts_with("sasl_mechanism: security_protocol \"sasl_ssl\" needs a mechanism")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("tls_cert_file: a client certificate needs its key")),
        "{problems:?}"
    );

    config.tls_key_file = Some("client.key".into());
    config.sasl_mechanism = Some("SCRAM-SHA-1".into());
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("sasl_mechanism: \"SCRAM-SHA-1\" is not one of"),
        "{problems:?}"
    );

    config.sasl_mechanism = Some("PLAIN".into());
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sasl_username: the mechanism needs a user name")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sasl_password: the mechanism needs a password")),
        "{problems:?}"
    );

    config.properties.insert("sasl.password".into(), "x".into());
    config
        .properties
        .insert("security.protocol".into(), "ssl".into());
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p == "properties.\"sasl.password\": set by weir; use sasl_password"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "properties.\"security.protocol\": set by weir; use security_protocol"),
        "{problems:?}"
    );
}

/// librdkafka's configuration errors repeat the refused value; a secret
/// one must not reach the error (and so the log).
#[tokio::test]
async fn a_refused_secret_setting_is_not_repeated_in_the_error() {
    let mut config = KafkaSinkConfig::new("127.0.0.1:9");
    config.security_protocol = super::SecurityProtocol::SaslPlaintext;
    config.sasl_mechanism = Some("PLAIN".into());
    config.sasl_username = Some("weir".into());
    config.sasl_password = Some("pw-9f3e".into());
    // Not a number: librdkafka refuses it, and would show the value.
    config
        .properties
        .insert("ssl.key.password".into(), "key-pw-77".into());
    config.properties.insert(
        "sasl.kerberos.min.time.before.relogin".into(),
        "pw-9f3e".into(),
    );
    let Err(err) = super::KafkaSink::connect("events", config).await else {
        panic!("librdkafka took a non-numeric relogin time");
    };
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("sasl.kerberos.min.time.before.relogin"),
        "{text}"
    );
    assert!(!text.contains("pw-9f3e"), "{text}");
    assert!(!text.contains("key-pw-77"), "{text}");
}

#[test]
fn debezium_encoding_settings_and_default_topics() {
    let config: KafkaSinkConfig = toml::from_str(
        r#"
        brokers = "k:9092"
        encoding = "debezium"
        [debezium]
        topic_prefix = "dbserver1"
        schemas = false
        decimal_handling = "string"
        tombstones_on_delete = false
        "#,
    )
    .unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert_eq!(config.encoding, Encoding::Debezium);
    assert_eq!(config.topic_template(), "dbserver1.{schema}.{table}");
    assert_eq!(config.message_topic_template(), "dbserver1.message");
    let debezium = config.debezium.clone().unwrap();
    assert!(!debezium.schemas && !debezium.tombstones_on_delete);
    assert_eq!(
        debezium.decimal_handling,
        weir_codec::DecimalHandling::String
    );

    // `topic` still wins, and the default prefix is Debezium's "weir".
    let config: KafkaSinkConfig =
        toml::from_str("brokers = \"k:9092\"\nencoding = \"debezium\"\ntopic = \"cdc.{table}\"")
            .unwrap();
    assert_eq!(config.topic_template(), "cdc.{table}");
    assert_eq!(config.message_topic_template(), "weir.message");

    let config: KafkaSinkConfig =
        toml::from_str("brokers = \"k:9092\"\n[debezium]\ntopic_prefix = \"a b\"").unwrap();
    let problems = config.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("debezium: settings for encoding = \"debezium\"")),
        "{problems:?}"
    );
    let err = toml::from_str::<KafkaSinkConfig>(
        "brokers = \"k:9092\"\nencoding = \"debezium\"\n[debezium]\ndecimal_handling = \"exact\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("precise"), "{err}");
}
