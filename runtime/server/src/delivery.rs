//! Delivery to the sinks: opening them, one task per sink writing its
//! batches with retries, and setting aside the records a sink refuses for
//! good as dead letters.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_core::{
    Capabilities, Destination, RawMessage, Rejected, Sink, SinkError, SinkErrorKind, SinkPayload,
    SinkRecord,
};
use weir_sinks::retry::Backoff;

use crate::checkpoint::{Checkpointer, txn_runs};
use crate::config::Config;
use crate::halt::{HaltError, StartError, describe_record};
use crate::status::Status;

pub(crate) async fn open_sinks(config: &Config) -> Result<Vec<Box<dyn Sink>>, StartError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for (name, spec) in &config.sinks {
        sinks.push(spec.build(name).await.map_err(|error| StartError::Sink {
            sink: name.clone(),
            error,
        })?);
    }
    Ok(sinks)
}

/// Where a sink task sends the records its sink refused for good.
pub(crate) struct DeadLetters {
    pub(crate) destination: Destination,
    pub(crate) tx: mpsc::Sender<Vec<SinkRecord>>,
}

/// Writes batches to one sink, retrying while it is unavailable, and
/// reports each durable batch to the checkpointer. Records the sink
/// refuses for good, or that it cannot take at all (see
/// `weir_sinks::batch::refusal`), go to the dead-letter sink, or halt the pipeline.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn sink_task(
    mut sink: Box<dyn Sink>,
    caps: Capabilities,
    mut rx: mpsc::Receiver<Vec<SinkRecord>>,
    dead_letters: Option<DeadLetters>,
    checkpointer: Arc<Checkpointer>,
    status: Arc<Status>,
    max_backoff: Duration,
    abort: CancellationToken,
) -> Result<(), HaltError> {
    let name = sink.name().to_owned();
    let counters = &status.sinks[&name];
    // Coalescing small batches that queued up while the sink was busy
    // amortises the per-write fsync or delivery round trip.
    const COALESCE_RECORDS: usize = 16_384;
    let coalesce = COALESCE_RECORDS.min(caps.max_batch_records.max(1));
    let mut backoff = Backoff::new(Duration::from_millis(100), max_backoff);
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < coalesce {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        // Records the sink cannot take never reach it; the others are
        // written in chunks it can take, in order.
        let mut rejected: Vec<Rejected> = batch
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                weir_sinks::batch::refusal(record, caps).map(|reason| Rejected { index, reason })
            })
            .collect();
        let kept: Vec<usize> = if rejected.is_empty() {
            Vec::new()
        } else {
            let refused: HashSet<usize> = rejected.iter().map(|r| r.index).collect();
            (0..batch.len()).filter(|i| !refused.contains(i)).collect()
        };
        let screened: Vec<SinkRecord>;
        let writable: &[SinkRecord] = if rejected.is_empty() {
            &batch
        } else {
            screened = kept.iter().map(|&i| batch[i].clone()).collect();
            &screened
        };
        let mut offset = 0;
        for chunk in weir_sinks::batch::chunks(writable, caps) {
            let Some(refused) = write_chunk(&mut *sink, chunk, &status, &mut backoff, &abort).await
            else {
                return Ok(());
            };
            let refused = refused.map_err(|error| HaltError::Sink {
                sink: name.clone(),
                error,
            })?;
            let mut seen = HashSet::new();
            for r in refused {
                // A sink's report is checked, not trusted: an index out of
                // range or given twice would settle the wrong records.
                if r.index >= chunk.len() {
                    return Err(HaltError::Internal(format!(
                        "sink {name} reported record {} of a batch of {} as refused (a bug in the sink)",
                        r.index,
                        chunk.len()
                    )));
                }
                if !seen.insert(r.index) {
                    continue;
                }
                let at = offset + r.index;
                let index = if kept.is_empty() { at } else { kept[at] };
                rejected.push(Rejected {
                    index,
                    reason: r.reason,
                });
            }
            offset += chunk.len();
        }
        backoff.reset();
        if !rejected.is_empty() {
            rejected.sort_by_key(|r| r.index);
            let Some(letters) = &dead_letters else {
                let first = &rejected[0];
                return Err(HaltError::RecordRejected {
                    sink: name,
                    record: describe_record(&batch[first.index]),
                    reason: first.reason.clone(),
                });
            };
            if !send_dead_letters(&name, &batch, &rejected, letters, &checkpointer, &abort).await? {
                return Ok(());
            }
            counters
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        }
        counters.set_error(None);
        counters.recovered();
        counters
            .records
            .fetch_add((batch.len() - rejected.len()) as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        // A rejected record is settled by its dead letter, counted above.
        checkpointer.delivered(&batch)?;
        // Durable now: the console may show them as sent.
        status.dead_letters.delivered(&name, &batch);
    }
    sink.close()
        .await
        .map_err(|error| HaltError::Sink { sink: name, error })
}

/// Writes one chunk until it is durable, waiting between tries as the
/// error's kind decides ([`Backoff::after`]). `Some(Ok(refused))` once it
/// is (but for the refused records, indexes into `chunk`), `Some(Err(_))`
/// for an error that is not retried, `None` when stopping.
async fn write_chunk(
    sink: &mut dyn Sink,
    chunk: &[SinkRecord],
    status: &Status,
    backoff: &mut Backoff,
    abort: &CancellationToken,
) -> Option<Result<Vec<Rejected>, SinkError>> {
    let counters = &status.sinks[sink.name()];
    loop {
        // A leader whose lease lapsed writes nothing more (see `[ha]`).
        if !status.may_deliver() {
            tracing::warn!(sink = %sink.name(), "the leadership lease is no longer trusted; not writing");
            abort.cancel();
            return None;
        }
        let written = tokio::select! {
            written = sink.write(chunk) => written,
            _ = abort.cancelled() => return None,
        };
        let error = match written {
            Ok(()) => return Some(Ok(Vec::new())),
            Err(SinkError::Rejected(list)) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return Some(Ok(list));
            }
            Err(error) => error,
        };
        counters.errors.fetch_add(1, Ordering::Relaxed);
        let Some(wait) = backoff.after(&error) else {
            counters.failing();
            return Some(Err(error));
        };
        let kind = error.kind();
        if kind == SinkErrorKind::Auth {
            tracing::error!(sink = %sink.name(), error = %error, retry_in = ?wait, "the sink refused Weir's credentials; retrying until an operator fixes them");
        } else {
            tracing::warn!(sink = %sink.name(), error = %error, kind = ?kind, retry_in = ?wait, "sink write failed; retrying the batch");
        }
        counters.set_error(Some(error.to_string()));
        counters.failing();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = abort.cancelled() => return None,
        }
    }
}

/// Hands the dead letters of `rejected` records to the dead-letter sink,
/// counted for the checkpointer before the originals are settled, so their
/// transactions are acknowledged only once the dead letters are durable.
/// `false` when stopping.
async fn send_dead_letters(
    sink: &str,
    batch: &[SinkRecord],
    rejected: &[Rejected],
    letters: &DeadLetters,
    checkpointer: &Checkpointer,
    abort: &CancellationToken,
) -> Result<bool, HaltError> {
    let records: Vec<SinkRecord> = rejected
        .iter()
        .map(|r| {
            let record = &batch[r.index];
            tracing::warn!(
                sink,
                record = %describe_record(record),
                error = %r.reason,
                dead_letter_sink = %letters.destination.sink,
                "sent a record the sink refused to the dead-letter sink"
            );
            Ok(SinkRecord {
                topic: letters.destination.topic.clone(),
                payload: SinkPayload::Raw(Arc::new(sink_dead_letter(sink, &r.reason, record)?)),
                txn: record.txn,
            })
        })
        .collect::<Result<_, HaltError>>()?;
    checkpointer.update(|t| {
        for (txn, n) in txn_runs(&records) {
            t.dispatched(txn, n)?;
        }
        Ok(())
    })?;
    tokio::select! {
        sent = letters.tx.send(records) => {
            if sent.is_err() {
                if abort.is_cancelled() {
                    return Ok(false);
                }
                return Err(HaltError::Internal(format!(
                    "the dead-letter sink {} stopped while sink {sink} had dead letters for it",
                    letters.destination.sink
                )));
            }
        }
        _ = abort.cancelled() => return Ok(false),
    }
    Ok(true)
}

/// The dead letter of a record a sink refused. A change becomes a JSON
/// document naming the sink and the error, with the change in the native
/// envelope, keyed like the change; a raw record keeps its key, value and
/// headers. Either way the headers `weir.sink` and `weir.error` say why.
fn sink_dead_letter(sink: &str, error: &str, record: &SinkRecord) -> Result<RawMessage, HaltError> {
    let mut headers = vec![
        ("weir.sink".to_owned(), sink.as_bytes().to_vec()),
        ("weir.error".to_owned(), error.as_bytes().to_vec()),
    ];
    let event = match &record.payload {
        SinkPayload::Raw(m) => {
            headers.extend(m.headers.iter().cloned());
            return Ok(RawMessage {
                key: m.key.clone(),
                value: m.value.clone(),
                headers,
                source: m.source,
            });
        }
        SinkPayload::Change(event) => event,
    };
    crate::dead_letter::letter(&[("sink", sink), ("error", error)], headers, event)
        .map_err(|e| HaltError::Internal(format!("cannot encode a dead letter: {e}")))
}
