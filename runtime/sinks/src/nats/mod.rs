//! The `nats` sink: records to a JetStream stream (a log, deduplicated by
//! position) or rows to a KV bucket (a cache, guarded by position).
//!
//! ```toml
//! [sinks.events]
//! type = "nats"
//! url = "nats://127.0.0.1:4222"
//! stream = "WEIR"
//! create_stream = true
//! ```
//!
//! # `mode = "jetstream"` (the default)
//!
//! Each record is one message on a subject (`subject`, `message_subject`
//! or `raw_subject`, or the router's topic, with placeholders filled in).
//! The batch is published pipelined, and `write` returns once the stream
//! has acknowledged every message (a PubAck); a missing or negative
//! acknowledgement fails the batch, which the pipeline writes again.
//!
//! Every message carries `Nats-Msg-Id: SINK:COMMIT_LSN:SEQ:N` (the sink's
//! name, the record's position, and `N` counting the records that share a
//! position), so the stream drops a message it already holds. That works
//! only within the stream's duplicate window (2 minutes unless the stream
//! says otherwise): a replay of records older than the window, after a long
//! outage, stores them again. Delivery is at-least-once; consumers that
//! must not see a duplicate compare `weir.commit_lsn` and the envelope's
//! `source.seq`. A publish that fails while later ones succeed (a server
//! restarting between them) is published again with the batch, so within
//! one subject order holds except across such a failure.
//!
//! Headers: `weir.op`, `weir.schema`, `weir.table` (`weir.prefix` for a
//! logical message), `weir.commit_lsn`, `weir.lsn`, `weir.xid`. The body
//! is the native JSON envelope. A raw record's body is its value and its
//! headers follow Weir's. A record whose filled-in subject is illegal (a
//! space, a `*` or `>`, an empty token), whose header cannot be a NATS
//! header, or that is larger than the server's `max_payload` or the
//! stream's `max_msg_size` is refused on its own (dead letter).
//!
//! # `mode = "kv"`
//!
//! Each row is one key of a KV bucket (`key`, default
//! `{schema}.{table}.{key}`, every filled-in value escaped: ASCII letters,
//! digits, `-`, `_` and `/` kept, every other byte as `=XX`, an empty value
//! as `=00`; so `public.orders.42`, and a text key `a.b c` makes
//! `a=2Eb=20c`). The value is the row as a JSON object in column order,
//! values as in the envelope's `after`; the header `Weir-Position` holds
//! the change's position as 24 hex digits.
//!
//! Every write is guarded: the sink reads the key's latest entry, applies
//! the change only if the stored position is not greater, and writes with
//! `Nats-Expected-Last-Subject-Sequence` set to the revision it read, so
//! a write never lands over an entry it has not seen. A lost race fails
//! the batch, and the retry reads again. A delete is a KV delete marker
//! (`KV-Operation: DEL`, what `kv del` writes) that also carries
//! `Weir-Position`: KV clients see the key as deleted, and an older replayed
//! write sees the position and leaves it. Tombstones cost one small
//! message per deleted key (its subject and headers, about 100 bytes)
//! and are kept for as long as the bucket keeps entries: Weir never
//! removes them (`kv purge`, or a bucket `max_age`, would, at the price of
//! the guard for that key).
//!
//! Unchanged TOAST values keep the stored column. A key change deletes the
//! old key (a tombstone at the change's position) and writes the new one.
//! A truncate lists the table's keys (an ordered, headers-only consumer on
//! the keys starting with what the template puts before `{key}`, only those
//! subjects when that ends with `.`, else every key of the bucket) and
//! writes a tombstone over each one written before it: one read and one
//! write per key of the table. Logical messages are ignored (counted as
//! delivered). Raw records are refused.
//!
//! # Verify
//!
//! `weir verify` reads kv mode back (a [`Readback`](weir_core::Readback)),
//! over a connection of its own opened as the sink's is, except that it
//! never creates the bucket.
//!
//! * Each record's key, made by the same template and escapes as the
//!   write's, has its latest entry read (64 reads in flight); a delete or
//!   purge marker is no row. Compared: the entry's JSON object member by
//!   member as JSON values, against the row the sink would write: member
//!   order, spacing and number spelling do not matter, integers are
//!   compared exactly (an `int8` past 2^53 is not rounded), other numbers
//!   as doubles. A member that is no column of the table is a difference;
//!   a value that is no JSON object differs as a whole (column `(value)`).
//!   Not compared: the `Weir-Position` header and the entry's revision.
//! * Keys: the headers-only listing a truncate uses (the table's subjects,
//!   or the whole bucket filtered when the template's text before `{key}`
//!   does not end with `.`), leaving out delete markers. With one entry
//!   per key (buckets the sink creates, and the KV default) every entry
//!   is a key's latest, so a page starts at the stream sequence after the
//!   previous page's last (the cursor) and each key's headers are read
//!   once. A bucket with more history lists each key's latest entry from
//!   the start for every page, skipping those at or before the cursor: its
//!   cost grows with the square of the number of pages. Each key is
//!   unescaped and split back into the key columns' texts; one that reads
//!   back as no key of the table, or as several, is listed without one.
//!
//! | Postgres | KV value (JSON) |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | `int2`, `int4`, `int8`, `oid` | number |
//! | `float4`, `float8` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `numeric` | string, as Postgres prints it |
//! | text types | string |
//! | `bytea` | string, base64 |
//! | `date`, `time`, `timestamp`, `timestamptz` | ISO 8601 strings (`timestamptz` in UTC with `Z`) |
//! | `uuid` | string |
//! | `json`, `jsonb` | the document itself |
//! | anything else | string, Postgres's text form |

mod config;
mod names;
mod readback;
mod row;
mod sink;

#[cfg(test)]
mod tests;

pub use config::{NatsMode, NatsSinkConfig};
pub use sink::{NatsSink, POSITION_HEADER};

use crate::registry::{SinkType, parse_as};

/// The `nats` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "nats",
    parse: parse_as::<NatsSinkConfig>,
};
