//! A Weir transform with the semantics of Debezium's outbox event router:
//! each row inserted into an outbox table becomes one message, built from
//! the row's columns and sent to a chosen sink, so a service publishes
//! events by writing them in the same transaction as its data.
//!
//! Configuration (column names are those of Debezium's outbox table):
//!
//! * `sink` (required): the sink the messages go to.
//! * `table`: the outbox table, `schema.table`; default `public.outbox`.
//! * `route_by`: the column whose value names the topic; default
//!   `aggregatetype`.
//! * `topic`: the topic template; default `outbox.event.{aggregatetype}`.
//!   `{<route_by>}` (and Debezium's `${routedByValue}`) is replaced by the
//!   value of the `route_by` column.
//! * `key_column`: the message key; default `aggregateid`.
//! * `payload_column`: the message body; default `payload`. `json`,
//!   `jsonb` and `text` values are sent as their UTF-8 text (JSON passes
//!   through unparsed), `bytea` as its bytes.
//! * `id_column`, `type_column`: sent as the headers `id` and `type`;
//!   defaults `id` and `type`.
//! * `additional_headers`: more columns (comma-separated) sent as headers
//!   named after the column.
//!
//! Any other key is refused, so a typo does not silently change messages.
//!
//! Every column named above must exist in the outbox table: a row of a
//! table without one fails (Weir's error policy decides what then happens)
//! with a message naming the column and its config key. A NULL route value
//! or id fails too: neither the topic nor the event id can be made up.
//! A NULL key or payload gives a message without key or body (a NULL
//! payload is a tombstone for compacted topics); a NULL `type` or
//! additional column leaves that header out. Values other than bytes are
//! sent as their text form.
//!
//! As in Debezium, updates of outbox rows are dropped with a warning (the
//! event was published when the row was inserted), and deletes are
//! dropped quietly: deleting rows right after inserting them keeps the
//! table small, and is the recommended pattern. Truncates of the outbox
//! table are dropped too. Rows of an initial snapshot (`read`) are
//! published like inserts. Changes of other tables and logical messages
//! are kept.
//!
//! Counters: `messages` (published), `skipped` (updates, deletes and
//! truncates of the outbox table), `failed` (rows that could not be
//! published).

use std::borrow::Cow;

use weir_plugin_sdk::{
    Config, Destination, Event, Op, Outcome, RawMessage, Transform, Value, count, log,
};

const KEYS: [&str; 9] = [
    "sink",
    "table",
    "route_by",
    "topic",
    "key_column",
    "payload_column",
    "id_column",
    "type_column",
    "additional_headers",
];

/// Turns outbox inserts into messages.
pub struct Outbox {
    sink: String,
    /// `schema.table`.
    table: String,
    route_by: String,
    topic: String,
    key_column: String,
    payload_column: String,
    id_column: String,
    type_column: String,
    additional_headers: Vec<String>,
}

impl Transform for Outbox {
    fn init(config: &Config) -> Result<Self, String> {
        if let Some((key, _)) = config.iter().find(|(k, _)| !KEYS.contains(k)) {
            return Err(format!(
                "unknown config key `{key}` (expected one of {})",
                KEYS.join(", ")
            ));
        }
        let sink = config.require("sink")?.trim();
        if sink.is_empty() {
            return Err("config key `sink`: name the sink the messages go to".into());
        }
        let table = config.get("table").unwrap_or("public.outbox").trim();
        if !table
            .split_once('.')
            .is_some_and(|(s, t)| !s.is_empty() && !t.is_empty())
        {
            return Err(format!(
                "config key `table`: expected schema.table, got {table:?}"
            ));
        }
        let column = |key: &str, default: &str| -> Result<String, String> {
            let name = config.get(key).unwrap_or(default).trim();
            if name.is_empty() {
                Err(format!("config key `{key}`: name a column"))
            } else {
                Ok(name.to_owned())
            }
        };
        let route_by = column("route_by", "aggregatetype")?;
        let topic = config
            .get("topic")
            .map_or_else(|| format!("outbox.event.{{{route_by}}}"), str::to_owned);
        Ok(Outbox {
            sink: sink.to_owned(),
            table: table.to_owned(),
            topic,
            key_column: column("key_column", "aggregateid")?,
            payload_column: column("payload_column", "payload")?,
            id_column: column("id_column", "id")?,
            type_column: column("type_column", "type")?,
            additional_headers: config
                .list("additional_headers")
                .into_iter()
                .map(str::to_owned)
                .collect(),
            route_by,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if !event.is_table(&self.table) {
            return Outcome::Keep;
        }
        match event.op() {
            Op::Insert | Op::Read => match self.message(event) {
                Ok((topic, message)) => {
                    count("messages", 1);
                    Outcome::Emit(vec![
                        message.to(Destination::sink(&self.sink).with_topic(topic)),
                    ])
                }
                Err(e) => {
                    count("failed", 1);
                    Outcome::fail(format!("outbox table {}: {e}", self.table))
                }
            },
            Op::Update => {
                count("skipped", 1);
                log::warn(&format!(
                    "ignored an update of outbox row {} = {} in {}: only inserts are published",
                    self.id_column,
                    event
                        .value(&self.id_column)
                        .and_then(Value::to_text)
                        .unwrap_or(Cow::Borrowed("?")),
                    self.table
                ));
                Outcome::Drop
            }
            Op::Delete | Op::Truncate => {
                count("skipped", 1);
                Outcome::Drop
            }
            Op::Message => Outcome::Keep,
        }
    }
}

impl Outbox {
    /// The topic and message for an inserted outbox row.
    fn message(&self, event: &Event<'_>) -> Result<(String, RawMessage), String> {
        let column = |config_key: &str, name: &str| {
            event.after(name).ok_or_else(|| {
                format!("no column `{name}` (config key `{config_key}`) in the new row")
            })
        };
        let route = column("route_by", &self.route_by)?;
        let route = route
            .to_text()
            .ok_or_else(|| format!("column `{}` is NULL", self.route_by))?;
        let id = column("id_column", &self.id_column)?;
        let id = bytes(id).ok_or_else(|| format!("column `{}` is NULL", self.id_column))?;
        let key = bytes(column("key_column", &self.key_column)?);
        let payload = bytes(column("payload_column", &self.payload_column)?);
        let event_type = bytes(column("type_column", &self.type_column)?);

        let mut message = RawMessage::new(key, payload).with_header("id", id);
        if let Some(event_type) = event_type {
            message = message.with_header("type", event_type);
        }
        for name in &self.additional_headers {
            if let Some(value) = bytes(column("additional_headers", name)?) {
                message = message.with_header(name.as_str(), value);
            }
        }
        let topic = self
            .topic
            .replace(&format!("{{{}}}", self.route_by), &route)
            .replace("${routedByValue}", &route);
        Ok((topic, message))
    }
}

/// The bytes a value is sent as: `bytea` as it is, anything else as its
/// UTF-8 text form; `None` for NULL (and unchanged values, which inserts
/// never hold).
fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Bytes(b) => Some(b.clone()),
        other => other.to_text().map(|t| t.into_owned().into_bytes()),
    }
}

weir_plugin_sdk::export_transform!(Outbox);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::log::Level;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Emit, Payload, Table, wit};

    /// Debezium's outbox table.
    fn outbox() -> Table {
        Table::new(16400, "public", "outbox")
            .with_key("id", "uuid")
            .with_column("aggregatetype", "varchar")
            .with_column("aggregateid", "varchar")
            .with_column("type", "varchar")
            .with_column("payload", "jsonb")
            .with_column("tenant", "text")
    }

    fn orders() -> Table {
        Table::new(16500, "public", "orders").with_key("id", "int8")
    }

    const ID: &str = "5e3b6a3c-7d1f-4c2e-9f00-0a1b2c3d4e5f";

    fn row(payload: Value) -> Vec<(&'static str, Value)> {
        vec![
            ("id", Value::Uuid(ID.into())),
            ("aggregatetype", "order".into()),
            ("aggregateid", "42".into()),
            ("type", "OrderCreated".into()),
            ("payload", payload),
            ("tenant", "acme".into()),
        ]
    }

    fn harness(config: &[(&str, &str)]) -> TransformHarness<Outbox> {
        let mut h = TransformHarness::<Outbox>::new(config).unwrap();
        h.announce(&outbox());
        h.announce(&orders());
        h
    }

    fn only_message(outcome: &wit::Outcome) -> (&Emit, &RawMessage) {
        let emits = testing::emits(outcome);
        assert_eq!(emits.len(), 1, "{outcome:?}");
        match &emits[0].payload {
            Payload::Raw(raw) => (&emits[0], raw),
            Payload::Change(_) => panic!("a change, not a message: {outcome:?}"),
        }
    }

    fn header<'a>(message: &'a RawMessage, name: &str) -> Option<&'a [u8]> {
        message
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn an_insert_becomes_a_message_as_debezium_makes_it() {
        let mut h = harness(&[("sink", "kafka")]);
        let json = r#"{"orderId": 42, "total": "9.90"}"#;
        let out = h.process_one(testing::insert(&outbox(), &row(Value::Json(json.into()))));
        let (emit, message) = only_message(&out);
        assert_eq!(
            emit.destination,
            Some(Destination::sink("kafka").with_topic("outbox.event.order"))
        );
        assert_eq!(message.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(message.value.as_deref(), Some(json.as_bytes()));
        assert_eq!(header(message, "id"), Some(ID.as_bytes()));
        assert_eq!(header(message, "type"), Some(&b"OrderCreated"[..]));
        assert_eq!(message.headers.len(), 2);
        assert_eq!(h.counter("messages"), 1);
    }

    #[test]
    fn text_and_bytea_payloads_and_snapshot_rows() {
        let mut h = harness(&[("sink", "kafka")]);
        let out = h.process(vec![
            testing::insert(&outbox(), &row("plain text".into())),
            testing::read(&outbox(), &row(Value::Bytes(vec![0, 159, 255]))),
            testing::insert(&outbox(), &row(Value::Null)),
        ]);
        assert_eq!(
            only_message(&out[0]).1.value.as_deref(),
            Some(&b"plain text"[..])
        );
        assert_eq!(
            only_message(&out[1]).1.value.as_deref(),
            Some(&[0, 159, 255][..])
        );
        // A NULL payload is a message without a body: a tombstone.
        assert_eq!(only_message(&out[2]).1.value, None);
        assert_eq!(h.counter("messages"), 3);
    }

    #[test]
    fn columns_topic_and_headers_are_configurable() {
        let table = Table::new(7, "events", "out")
            .with_key("event_id", "int8")
            .with_column("stream", "text")
            .with_column("entity", "text")
            .with_column("kind", "text")
            .with_column("body", "bytea")
            .with_column("tenant", "text")
            .with_column("trace", "text");
        let mut h = TransformHarness::<Outbox>::new(&[
            ("sink", "nats"),
            ("table", "events.out"),
            ("route_by", "stream"),
            ("topic", "app.{stream}.v1"),
            ("key_column", "entity"),
            ("payload_column", "body"),
            ("id_column", "event_id"),
            ("type_column", "kind"),
            ("additional_headers", "tenant, trace"),
        ])
        .unwrap();
        h.announce(&table);
        let out = h.process_one(testing::insert(
            &table,
            &[
                ("event_id", 9.into()),
                ("stream", "billing".into()),
                ("entity", "inv-1".into()),
                ("kind", Value::Null),
                ("body", Value::Bytes(b"{}".to_vec())),
                ("tenant", "acme".into()),
                ("trace", Value::Null),
            ],
        ));
        let (emit, message) = only_message(&out);
        assert_eq!(
            emit.destination,
            Some(Destination::sink("nats").with_topic("app.billing.v1"))
        );
        assert_eq!(message.key.as_deref(), Some(&b"inv-1"[..]));
        let headers: Vec<_> = message.headers.iter().map(|(n, _)| n.as_str()).collect();
        // NULL type and trace: no such headers.
        assert_eq!(headers, ["id", "tenant"]);
        assert_eq!(header(message, "id"), Some(&b"9"[..]));
    }

    #[test]
    fn debeziums_placeholder_works_too() {
        let mut h = harness(&[("sink", "k"), ("topic", "${routedByValue}.events")]);
        let out = h.process_one(testing::insert(&outbox(), &row(Value::Json("{}".into()))));
        assert_eq!(
            only_message(&out).0.destination,
            Some(Destination::sink("k").with_topic("order.events"))
        );
    }

    #[test]
    fn updates_and_deletes_are_dropped_and_other_tables_kept() {
        let mut h = harness(&[("sink", "kafka")]);
        let key = [("id", Value::Uuid(ID.into()))];
        let out = h.process(vec![
            testing::update(&outbox(), &key, &row(Value::Json("{}".into()))),
            testing::delete(&outbox(), &key),
            testing::truncate(&outbox()),
            testing::insert(&orders(), &[("id", 1.into())]),
            testing::message("outbox", b"{}"),
        ]);
        assert_eq!(
            out,
            [
                wit::Outcome::Drop,
                wit::Outcome::Drop,
                wit::Outcome::Drop,
                wit::Outcome::Keep,
                wit::Outcome::Keep
            ]
        );
        assert_eq!(h.counter("skipped"), 3);
        assert_eq!(h.counter("messages"), 0);
        // Only the update is worth a warning.
        assert_eq!(h.logs().len(), 1);
        let (level, line) = &h.logs()[0];
        assert_eq!(*level, Level::Warn);
        assert!(line.contains(ID) && line.contains("update"), "{line}");
    }

    #[test]
    fn rows_without_what_a_message_needs_fail() {
        let mut h = harness(&[("sink", "kafka")]);
        let mut no_route = row(Value::Json("{}".into()));
        no_route[1].1 = Value::Null;
        let mut no_id = row(Value::Json("{}".into()));
        no_id[0].1 = Value::Null;
        let thin = Table::new(16400, "public", "outbox")
            .with_version(2)
            .with_key("id", "uuid")
            .with_column("aggregatetype", "text")
            .with_column("aggregateid", "text")
            .with_column("type", "text");
        let mut outcomes = h.process(vec![
            testing::insert(&outbox(), &no_route),
            testing::insert(&outbox(), &no_id),
        ]);
        h.announce(&thin);
        outcomes.push(h.process_one(testing::insert(
            &thin,
            &[
                ("id", Value::Uuid(ID.into())),
                ("aggregatetype", "x".into()),
            ],
        )));
        let messages: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                wit::Outcome::Fail(f) => {
                    assert!(!f.retryable);
                    f.message.as_str()
                }
                other => panic!("not a failure: {other:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            [
                "outbox table public.outbox: column `aggregatetype` is NULL",
                "outbox table public.outbox: column `id` is NULL",
                "outbox table public.outbox: no column `payload` (config key `payload_column`) in the new row",
            ]
        );
        assert_eq!(h.counter("failed"), 3);
    }

    #[test]
    fn rejects_bad_config() {
        for config in [
            &[][..],
            &[("sink", " ")][..],
            &[("sink", "k"), ("table", "outbox")][..],
            &[("sink", "k"), ("payload_column", "")][..],
            &[("sink", "k"), ("route.by", "x")][..],
        ] {
            assert!(
                TransformHarness::<Outbox>::new(config).is_err(),
                "{config:?}"
            );
        }
        let err = TransformHarness::<Outbox>::new(&[("sink", "k"), ("tabel", "a.b")])
            .err()
            .unwrap();
        assert!(err.contains("unknown config key `tabel`"), "{err}");
    }
}
