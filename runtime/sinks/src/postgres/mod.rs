//! The `postgres` sink: applies row changes to tables of another Postgres
//! database (a replica, an analytics copy), each batch in one transaction,
//! exactly once.
//!
//! ```toml
//! [sinks.replica]
//! type = "postgres"
//! host = "replica.internal"
//! database = "analytics"
//! table = "{schema}.{table}"
//! ```
//!
//! # What a batch does
//!
//! One target transaction per [`write`](weir_core::Sink::write): an insert
//! or update becomes `INSERT … ON CONFLICT (key columns) DO UPDATE SET …`
//! (columns whose value is an unchanged TOAST value are left out, so the
//! target keeps its own), a delete `DELETE … WHERE key = …`, an update that
//! changes the key deletes the old key and upserts the new one (first moving
//! the old row to the new key in place when it carries unchanged TOAST
//! values, which only the old row holds), a truncate
//! `TRUNCATE` (instant, whatever the table's size; it takes an ACCESS
//! EXCLUSIVE lock until the batch commits). Neighbouring upserts (or
//! deletes) of one table and one set of columns, with different keys, run
//! as one statement over `unnest` of text arrays, so that a backlog of
//! inserts costs one statement per run rather than per row; a refused row
//! makes the batch run again row by row, each in a savepoint, to find it.
//! Logical messages change nothing and count as delivered. `write` returns once `COMMIT` has
//! returned, with `synchronous_commit = on` for the session. A batch may
//! hold many source transactions (Weir catching up: one commit for all of
//! them, up to `max_batch_records`) or part of one (a large source
//! transaction split across batches).
//!
//! # Exactly once
//!
//! The same transaction stores the sink's position in `progress_table`
//! (`sink` → commit LSN, sequence, and how many records at that very
//! position were taken, since several records may share one). Every batch
//! first reads that row (`FOR UPDATE`) and skips the records at or before
//! it, so a batch written again after a crash, or a late retry, changes
//! nothing, and an older version can never overwrite a newer one or bring
//! back a deleted row. No tombstones are needed: the one progress row per
//! sink is all the bookkeeping. A source transaction split over batches
//! is safe because each batch commits its part with the position of its
//! last record; a replay starts again at the transaction's first record,
//! and the part already committed is skipped by position.
//!
//! The guarantee holds for one writer per sink name: two Weirs writing as
//! the same sink serialise on the progress row but would skip each
//! other's changes.
//!
//! # Names and types
//!
//! The target table comes from the `table` template (or the route's
//! `topic`), split at its `.` into schema and table, each quoted as an
//! identifier. Values are sent as text parameters cast to the target
//! column's type (`$1::pg_catalog.int4`, without the column's modifier so that
//! `varchar(n)` and `numeric(p,s)` check on assignment rather than
//! truncate), in the forms of [`weir_codec::write_text`]:
//!
//! | source value                 | text sent                                |
//! |------------------------------|------------------------------------------|
//! | bool, integers, numeric      | `true`, `42`, `-1.50`, `NaN`, `Infinity` |
//! | float4/8                     | shortest round-trip digits, `NaN`, `±Infinity` |
//! | text, varchar, char, name    | as is                                    |
//! | bytea                        | `\x` and hex                             |
//! | date, timestamp(tz)          | ISO 8601 (`T`, `Z`), `±infinity`, `BC` before year 1 |
//! | time, uuid, json, jsonb      | ISO time, canonical uuid, the JSON text  |
//! | any other type (inet, interval, arrays, enums…) | Postgres's own text output |
//!
//! With `create_tables`, a missing table is created with the source's
//! columns and types (built-in types with their modifiers; other types by
//! their source name, which must exist in the target) and the key as
//! primary key. Columns added to the source later are not added.
//!
//! # Errors
//!
//! A refused connection or a lost one is transient (the pipeline retries
//! the batch: nothing of it was committed, or all of it was, and the
//! position tells which); refused credentials or permissions are an
//! authentication error; a missing table or column, or a key without a
//! unique index for `ON CONFLICT`, is a configuration error naming it. A
//! value or row the target refuses (a constraint, a type) fails the
//! transaction; the sink then applies the batch again record by record,
//! each in a savepoint, and reports the refused ones as rejected (to the
//! dead-letter sink) while the rest commits, still exactly once.
//!
//! # Verify
//!
//! [`PostgresReadback`] (`weir verify`) compares in the target itself, over
//! a read-only session of its own with the sink's text settings. Per
//! batch, one statement per target table and set of columns unnests the
//! records' texts (as the sink sends them), casts each to the column's
//! type as the sink's write does, and `LEFT JOIN`s the table on the key
//! columns; per record it returns whether the key is held and, per column,
//! whether `target.col IS NOT DISTINCT FROM` the cast value (so `42.5`
//! sent to a `numeric(12,3)` is the `42.500` stored), with the target's
//! `col::text` only where it is not. A type without an equality operator
//! (`json`, `xml`, `point`, arrays of them, composite types) compares by
//! its text output, so a `json` value with other spacing differs (`json`
//! keeps its text; `jsonb` compares by value). Differences show the text
//! sent and the target's text, NULL as `NULL`.
//!
//! Only the columns the sink writes count: target columns the source has
//! not got are not compared, and `progress_table` is bookkeeping. A value
//! the target's type refuses (which the sink's write dead-letters) fails
//! only its record, which shows that column differing (or `Missing`, for a
//! key). A `table` template or route topic with `{op}` spreads a source
//! table over a table per kind of change, and cannot be verified.
//!
//! Listing keys is keyset pagination over the source's key columns
//! (`WHERE (k…) > (cursor) ORDER BY k… LIMIT n`: an index range scan, so
//! each page costs its own rows, when the target's primary key is the
//! source's, as `create_tables` makes it; a full sort per page when the
//! target has no index on those columns), the cursor being the
//! last key's texts as JSON; each key comes back as Postgres prints it
//! (its type's output, under the sink's settings: `t`, `ab   ` for a
//! `char(5)`, `2024-02-29 11:14:15+00`), named `id=42`.

mod config;
mod encode;
mod readback;
mod session;
mod sink;
mod statements;

#[cfg(test)]
mod tests;

pub use config::PostgresSinkConfig;
pub use readback::PostgresReadback;
pub use sink::PostgresSink;

use crate::registry::{SinkType, parse_as};

/// The `postgres` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "postgres",
    parse: parse_as::<PostgresSinkConfig>,
};
