//! What the pipeline does to a batch before a sink sees it, by the sink's
//! [`Capabilities`]: records it cannot take are refused (and then
//! dead-lettered or halt the pipeline), and the rest is cut into runs it
//! can take.

use weir_core::{Capabilities, Op, SinkPayload, SinkRecord};

/// Why a sink with capabilities `caps` cannot take `record` at all, or
/// `None` when it can.
pub fn refusal(record: &SinkRecord, caps: Capabilities) -> Option<String> {
    match &record.payload {
        SinkPayload::Raw(_) if !caps.accepts_raw => Some(
            "a raw record (bytes a plugin made) cannot be applied by this sink, which writes \
             row changes; route raw records to a log sink (file, Kafka)"
                .to_owned(),
        ),
        SinkPayload::Change(e)
            if caps.needs_key
                && matches!(e.op, Op::Insert | Op::Update | Op::Delete | Op::Read)
                && e.key_values().is_empty() =>
        {
            let table = e
                .table
                .as_ref()
                .map_or_else(String::new, |t| format!("{}.{}", t.schema, t.name));
            Some(format!(
                "table {table} has no key columns, and this sink keeps one entry per row, so \
                 it needs a key: give the table a primary key (or REPLICA IDENTITY USING INDEX), \
                 or route its changes to a log sink"
            ))
        }
        _ => None,
    }
}

/// `batch` cut into runs within `caps`' record and byte limits, in order.
/// A record larger than the byte limit goes alone.
pub fn chunks(batch: &[SinkRecord], caps: Capabilities) -> Vec<&[SinkRecord]> {
    let max_records = caps.max_batch_records.max(1);
    if batch.is_empty() {
        return Vec::new();
    }
    if batch.len() <= max_records && caps.max_batch_bytes == usize::MAX {
        return vec![batch];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, record) in batch.iter().enumerate() {
        let size = if caps.max_batch_bytes == usize::MAX {
            0
        } else {
            record.estimated_size()
        };
        if i > start
            && (i - start >= max_records || bytes.saturating_add(size) > caps.max_batch_bytes)
        {
            out.push(&batch[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    if start < batch.len() {
        out.push(&batch[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_core::{
        ChangeEvent, Column, RawMessage, ReplicaIdentity, SourceInfo, TableSchema, TxnId, Value,
    };

    use super::*;

    fn change(op: Op, keyed: bool, text: &str) -> SinkRecord {
        let table = Arc::new(TableSchema {
            id: 1,
            version: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![Column {
                name: "v".into(),
                type_oid: 25,
                type_name: "text".into(),
                type_modifier: -1,
                key: keyed,
            }],
            replica_identity: ReplicaIdentity::Default,
        });
        let row = Some(vec![Value::Text(text.into())]);
        SinkRecord {
            topic: None,
            payload: SinkPayload::Change(Arc::new(ChangeEvent {
                op,
                table: Some(table),
                before: None,
                after: if op == Op::Truncate { None } else { row },
                message: None,
                source: SourceInfo::default(),
                txn: TxnId(1),
            })),
            txn: TxnId(1),
        }
    }

    fn raw() -> SinkRecord {
        SinkRecord {
            topic: None,
            payload: SinkPayload::Raw(Arc::new(RawMessage {
                key: None,
                value: Some(b"x".to_vec()),
                headers: vec![],
                source: SourceInfo::default(),
            })),
            txn: TxnId(1),
        }
    }

    const STATE: Capabilities = Capabilities {
        max_batch_records: 2,
        max_batch_bytes: usize::MAX,
        needs_key: true,
        applies_state: true,
        accepts_raw: false,
    };

    #[test]
    fn a_state_sink_refuses_keyless_rows_and_raw_records_only() {
        assert_eq!(refusal(&change(Op::Insert, true, "a"), STATE), None);
        let why = refusal(&change(Op::Update, false, "a"), STATE).unwrap();
        assert!(why.contains("public.t has no key columns"), "{why}");
        // A truncate names no row, so it needs no key.
        assert_eq!(refusal(&change(Op::Truncate, false, "a"), STATE), None);
        assert!(refusal(&raw(), STATE).unwrap().contains("raw record"));
        assert_eq!(refusal(&raw(), Capabilities::LOG), None);
        assert_eq!(
            refusal(&change(Op::Delete, false, "a"), Capabilities::LOG),
            None
        );
    }

    #[test]
    fn batches_are_cut_by_records_and_bytes_in_order() {
        let batch: Vec<SinkRecord> = (0..5)
            .map(|i| change(Op::Insert, true, &"x".repeat(i * 100)))
            .collect();
        let lens = |chunks: Vec<&[SinkRecord]>| chunks.iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(lens(chunks(&batch, Capabilities::LOG)), [5]);
        assert_eq!(lens(chunks(&batch, STATE)), [2, 2, 1]);
        let bytes = Capabilities {
            max_batch_bytes: 400,
            ..Capabilities::LOG
        };
        // Sizes are 72, 172, 272, 372, 472: the last is over the limit and goes alone.
        assert_eq!(lens(chunks(&batch, bytes)), [2, 1, 1, 1]);
        let total: usize = chunks(&batch, bytes).iter().map(|c| c.len()).sum();
        assert_eq!(total, batch.len());
        assert!(chunks(&[], STATE).is_empty());
    }
}
