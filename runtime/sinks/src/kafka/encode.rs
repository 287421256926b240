//! What a record becomes in Kafka: topic, key, value and headers.

use rdkafka::message::{Header, OwnedHeaders};
use weir_core::{Op, SinkPayload, SinkRecord};

use weir_codec::{EncodeError, Encoder, NameTemplate, TemplateUse, write_lsn};

/// Checks that a topic template cannot expand to an invalid topic name for
/// records of kind `used_for`: its own text must be legal, and it must not
/// rest only on placeholders that can be empty. What a record fills in can
/// still be illegal (a table named `a b`); that record is refused on its own.
pub(crate) fn check_topic_template(
    template: &NameTemplate,
    used_for: TemplateUse,
) -> Result<(), String> {
    let shortest = template.shortest(used_for);
    if shortest.is_empty() {
        let why = match used_for {
            TemplateUse::Change => "a row change has no {prefix}",
            TemplateUse::Message => {
                "a logical message has no {schema}, {table} or {key}, and its {prefix} may be empty"
            }
            TemplateUse::Raw => {
                "a raw record (a plugin's own bytes, a dead letter) has no schema, table, \
                 op, prefix or key to fill in"
            }
        };
        return Err(format!(
            "can expand to an empty topic name ({why}); add fixed text, like \"cdc.\" or \"weir.raw\""
        ));
    }
    if shortest == "." || shortest == ".." {
        return Err(format!(
            "can expand to {shortest:?}, which is not a valid topic name"
        ));
    }
    let text = template.fixed_text();
    if let Some(c) = text.chars().find(|c| !is_topic_char(*c)) {
        return Err(format!(
            "contains {c:?}; Kafka allows only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    if text.len() > 249 {
        return Err("is longer than Kafka's limit of 249 characters".to_owned());
    }
    Ok(())
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a topic name against Kafka's rules, so that a bad template gives
/// a clear message instead of a broker error per record.
pub(crate) fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid topic name"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name {name:?} is longer than Kafka's limit of 249 characters"
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_topic_char(*c)) {
        return Err(format!(
            "topic name {name:?} contains {c:?}; Kafka allows only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A message's key and value, either of which may be absent, and whether
/// a tombstone (the same key, no value) follows it.
pub(crate) struct KeyValue<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) tombstone: bool,
}

/// Encodes a record's key and value: for a change event into the two
/// buffers (replacing their content), for a raw record by borrowing its bytes.
pub(crate) fn encode_key_value<'a>(
    record: &'a SinkRecord,
    encoder: &mut Encoder,
    key_buf: &'a mut Vec<u8>,
    value_buf: &'a mut Vec<u8>,
) -> Result<KeyValue<'a>, EncodeError> {
    match &record.payload {
        SinkPayload::Change(event) => {
            let encoded = encoder.encode(event, key_buf, value_buf)?;
            Ok(KeyValue {
                key: encoded.has_key.then_some(&key_buf[..]),
                value: Some(&value_buf[..]),
                tombstone: encoded.tombstone,
            })
        }
        SinkPayload::Raw(message) => Ok(KeyValue {
            key: message.key.as_deref(),
            value: message.value.as_deref(),
            tombstone: false,
        }),
    }
}

/// The headers of a record: `weir.commit_lsn`, `weir.lsn`, `weir.xid`,
/// then for a change event `weir.op` and `weir.schema`/`weir.table` (or
/// `weir.prefix` for a logical message), and for a raw record its own
/// headers. `scratch` is reused for the number formatting.
pub(crate) fn headers(record: &SinkRecord, scratch: &mut Vec<u8>) -> OwnedHeaders {
    let source = record.source();
    let extra = match &record.payload {
        SinkPayload::Change(_) => 3,
        SinkPayload::Raw(m) => m.headers.len(),
    };
    let mut headers = OwnedHeaders::new_with_capacity(3 + extra);
    scratch.clear();
    write_lsn(scratch, source.commit_lsn);
    headers = headers.insert(Header {
        key: "weir.commit_lsn",
        value: Some(&scratch[..]),
    });
    scratch.clear();
    write_lsn(scratch, source.lsn);
    headers = headers.insert(Header {
        key: "weir.lsn",
        value: Some(&scratch[..]),
    });
    headers = headers.insert(Header {
        key: "weir.xid",
        value: Some(itoa::Buffer::new().format(source.xid)),
    });
    match &record.payload {
        SinkPayload::Change(event) => {
            headers = headers.insert(Header {
                key: "weir.op",
                value: Some(event.op.as_str()),
            });
            if let Some(table) = &event.table {
                headers = headers
                    .insert(Header {
                        key: "weir.schema",
                        value: Some(table.schema.as_str()),
                    })
                    .insert(Header {
                        key: "weir.table",
                        value: Some(table.name.as_str()),
                    });
            }
            if event.op == Op::Message
                && let Some(message) = &event.message
            {
                headers = headers.insert(Header {
                    key: "weir.prefix",
                    value: Some(message.prefix.as_str()),
                });
            }
        }
        SinkPayload::Raw(message) => {
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: Some(value.as_slice()),
                });
            }
        }
    }
    headers
}
