//! The `sphinx` sink: row changes applied to Sphinx 2.2 or Manticore
//! Search real-time indexes over SphinxQL (the MySQL protocol, text
//! queries only), so that the index answers what the table holds.
//!
//! ```toml
//! [sinks.search]
//! type = "sphinx"
//! address = "127.0.0.1:9306"
//! fields = ["title", "body"]
//! attributes = { title = "string", price = "float" }
//! ```
//!
//! # Documents
//!
//! Each row is one document of the index its change names (the router's
//! topic, else the `index` template, `{schema}_{table}` by default). Its document
//! id is the row's key when that is a single integer column above zero;
//! any other key (text, uuid, several columns, zero or negative integers)
//! gets the first 8 bytes of the SHA-256 of its `{key}` text, big-endian
//! (0 and `u64::MAX` are moved to 1 and `u64::MAX - 1`). Two keys of one
//! index share a hashed id with probability about n²/2⁶⁵ for n keys (one
//! in 37 million for a million keys); the state index stores each key's
//! text, so a collision is detected and the second key's changes are
//! refused (dead-lettered) rather than overwriting the first.
//!
//! `REPLACE INTO` writes whole documents: every configured column each
//! time. A column the table does not have is written as NULL.
//!
//! # Versions, tombstones and the state index
//!
//! Sphinx has no conditional writes, but Weir is the index's only writer.
//! Each index `I` has a state index `I_weir` (the suffix is configurable)
//! with one document per key: the key's text, the position (commit LSN and
//! sequence) of its last change, whether it was deleted, and the row's
//! columns as written (`weir_doc`, JSON). A batch reads the state of its
//! documents (one `SELECT … WHERE id IN (…)` per thousand ids), applies
//! each change only if no greater position is stored (equal positions are
//! written again, so replays are idempotent), then writes the main index
//! (`DELETE … WHERE id IN (…)`, multi-row `REPLACE`) and then the state
//! index. A crash between the two leaves the main index ahead of the state
//! index, which the replay repairs, since equal positions are rewritten.
//!
//! A delete removes the document from the main index, so searches never
//! see it, and leaves a tombstone in the state index that older replayed
//! writes respect. Tombstones cost one small document (key text and two
//! numbers) per deleted key, kept until the index is truncated; they can
//! be removed by hand (`DELETE FROM I_weir WHERE id IN (…)`) for keys
//! whose delete is older than the replication slot's confirmed position.
//!
//! Full-text fields are not stored by Sphinx 2.2, so `weir_doc` keeps the
//! values needed to rebuild a document: an unchanged TOAST value (which
//! Postgres does not send) takes the value the document was last written
//! with. It doubles the space of each document's text.
//!
//! A truncate runs `TRUNCATE RTINDEX` on both indexes (fast, whatever
//! their size) and stores its position as a watermark document in the
//! state index (id `u64::MAX`); changes older than it are skipped, and the
//! truncate itself is not repeated by a replay.
//!
//! Logical messages are ignored (counted as delivered); raw records and
//! keyless rows are refused (the pipeline dead-letters them).
//!
//! # Durability
//!
//! searchd answers an `INSERT`/`REPLACE`/`DELETE` once it has written it
//! to its binlog; set `binlog_flush = 1` in searchd's configuration to have
//! it fsynced before the answer, or a crash of the machine may lose the
//! last second.
//!
//! # Types
//!
//! | Postgres | attribute type | stored as |
//! | --- | --- | --- |
//! | int2, int4, int8 | `bigint` | the number (`uint`: 0..4294967295) |
//! | bool | `bool` | 0 or 1 (`bigint`/`uint` too) |
//! | float4, float8, numeric | `float` | 32-bit float; NaN and ±Infinity are refused |
//! | numeric | `string` | exact text; `bigint` if integral |
//! | text, varchar, char, name | field and/or `string` | the text |
//! | bytea | `string` | `\x` and hex |
//! | date | `timestamp` | Unix seconds at midnight UTC; before 1970 refused |
//! | timestamp, timestamptz | `timestamp` | Unix seconds (fraction dropped); before 1970 or after 2106 refused |
//! | date, time, timestamp(tz) | `string` | ISO 8601, as the JSON envelope writes them |
//! | uuid | `string` | canonical lower-case text |
//! | json, jsonb | `json` | the document (objects and arrays; Sphinx stores scalars as NULL) |
//! | anything else | `string` | Postgres's text form |
//!
//! Attributes have no NULL: a NULL is `''` or `0`, and `nulls_attribute`
//! lists the NULL columns. A value that does not fit its attribute type is
//! refused (dead-lettered) with the column's name, as is a document larger
//! than `max_statement_bytes`.
//!
//! # Verify
//!
//! `weir verify` reads the main index, which is what searches see: for
//! each source row, the document under the row's id (`SELECT id, …
//! WHERE id IN (…)`, a thousand ids a query) in the index the sink would
//! write it to, through the sink's own index names, ids and encoding.
//!
//! - A document absent from the main index is missing, even if the state
//!   index still has its version (it was removed behind Weir's back); one
//!   present for a row the source no longer has is extra, even if the
//!   state index holds its tombstone.
//! - Each attribute is compared with what the sink would write for the
//!   row, as searchd shows it: floats as the 32-bit float written, at
//!   the six decimals searchd prints (so values that differ only below
//!   that, or below a 32-bit float's precision, compare equal); JSON
//!   structurally, numbers to six decimals, objects and arrays only (a
//!   scalar is NULL in Sphinx); a JSON document searchd cannot print back
//!   (numbers near 1e300 overflow its buffer) is not compared. The nulls
//!   attribute is compared as a set of names.
//! - Full-text fields are not stored by Sphinx 2.2, so no field can be
//!   read back from the main index. A column that is only a field is
//!   compared with the copy Weir last wrote into the state index
//!   (`weir_doc`, reported as `COLUMN (weir_doc)`): that catches a change
//!   Weir never applied (a lost write, a dead-lettered update), not a
//!   document rewritten by hand in the main index. Declare a column as a
//!   field and a string attribute to have its text compared for real.
//! - A hashed id whose state document names another key is that key's
//!   document (the sink refuses the second key of a collision), so the
//!   row's own document is missing.
//!
//! Listing a table's keys pages the main index by id (`WHERE id > cursor
//! ORDER BY id LIMIT n`, at most 10000 a page), so each page costs searchd
//! a scan of the index's ids; the key of each id is the state index's
//! `weir_key`, or, for a document Weir did not write, the id itself when
//! the table's key is one integer column (else the key is unknown). An
//! index template with `{op}` or `{key}` cannot be verified: a row's
//! changes went to several indexes.

mod config;
mod encode;
mod readback;
mod sink;

#[cfg(test)]
mod tests;

pub use config::{AttributeType, SphinxSinkConfig};
pub use sink::SphinxSink;

use crate::registry::{SinkType, parse_as};

/// The `sphinx` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "sphinx",
    parse: parse_as::<SphinxSinkConfig>,
};
