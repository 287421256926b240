//! The `clickhouse` sink: keeps one ClickHouse table per source table up
//! to date, over the HTTP interface (tested against ClickHouse 18.16).
//!
//! ```toml
//! [sinks.analytics]
//! type = "clickhouse"
//! url = "http://127.0.0.1:8123"
//! database = "cdc"
//! ```
//!
//! # Tables
//!
//! A source table `public.orders` goes to `cdc.public_orders` (the
//! `database` and `table` templates; a route's `topic` replaces `table`;
//! each table holds one source table). When it is
//! missing and `create_tables` is on (the default), the sink makes it:
//!
//! ```sql
//! CREATE TABLE cdc.public_orders (id Int64, status Nullable(String), …,
//!     _weir_deleted UInt8, _weir_version UInt64)
//! ENGINE = ReplacingMergeTree(_weir_version) ORDER BY (id)
//! ```
//!
//! An existing table is checked: every source column must be there with
//! the type below, the engine must be a `ReplacingMergeTree` on
//! `_weir_version` and the sort key must be the source key; anything else
//! stops the sink with an error naming the column. A column added at the
//! source needs an `ALTER TABLE … ADD COLUMN` (the error says which), after
//! which the pipeline goes on by itself.
//!
//! Read the current rows with
//! `SELECT … FROM cdc.public_orders FINAL WHERE _weir_deleted = 0`.
//!
//! # Versions and guarantees
//!
//! Every row carries `_weir_version`, the change's position: the commit
//! LSN in the upper 48 bits, the place in the transaction in the lower 16
//! (saturating at 65,535; a commit LSN beyond `FFFF/FFFFFFFF`, 256 TiB of
//! WAL, stops the sink rather than go backwards). `ReplacingMergeTree`
//! keeps the row with the greatest version of each key, and the last one
//! inserted among equal versions, so a replay after a crash or a late retry
//! never brings an older row back: with at-least-once delivery the table
//! converges to exactly the source's state. `FINAL` applies that at read
//! time; merges apply it on disk, in the background.
//!
//! A delete is written as a row with `_weir_deleted = 1`, the key and the
//! delete's version (other columns NULL): the tombstone that keeps an older
//! replayed insert from bringing the row back. Tombstones are never
//! removed by the sink: each deleted key costs one row until an operator
//! removes old ones (`ALTER TABLE … DELETE WHERE _weir_deleted = 1`), which
//! is safe for tombstones older than the slot's confirmed position. A
//! primary-key change writes a tombstone for the old key and the new row.
//!
//! A truncate writes a tombstone, at the truncate's version, for every row
//! older than it (`INSERT … SELECT key, 1, version FROM t FINAL WHERE …`):
//! it is versioned like a delete, so a replayed older insert stays hidden
//! and a replayed truncate leaves newer rows alone. It costs a scan of the
//! table and one tombstone per live row (merges then keep only the
//! tombstone of each key). `TRUNCATE TABLE` is not used: ClickHouse 18.16
//! removes the parts from disk only later, and a server restart in between
//! brings every truncated row back.
//! Logical messages are ignored (they count as delivered); raw records are
//! refused before the sink.
//!
//! An update that left a TOASTed value unchanged keeps the stored one: the
//! sink reads the current values of those rows (`SELECT … FINAL`) before
//! the insert, or takes them from an earlier change in the same batch.
//!
//! A batch is written when ClickHouse answers 200 to its inserts; how
//! durable that is, is ClickHouse's business (18.16 writes the part to
//! disk before answering but does not fsync it: replicate the table for
//! more). Each table's rows of a batch (the last change of each key) go in
//! one `INSERT … FORMAT JSONEachRow`, which ClickHouse writes whole or not
//! at all.
//!
//! # Types
//!
//! | Postgres | ClickHouse | notes |
//! |---|---|---|
//! | `bool` | `UInt8` | 0 or 1 |
//! | `int2`, `int4`, `int8`, `oid` | `Int16`, `Int32`, `Int64`, `UInt32` | |
//! | `float4`, `float8` | `Float32`, `Float64` | NaN and ±Infinity kept |
//! | `numeric` | `String` | exact text: `Decimal` holds 38 digits at most, and no NaN or Infinity |
//! | `text`, `varchar`, `char`, `name` | `String` | |
//! | `bytea` | `String` | the bytes themselves |
//! | `date` | `Date` | 1970-01-01 to 2105-12-31 only (18.16's range); other dates refuse the record |
//! | `timestamp`, `timestamptz` | `Int64` | microseconds since 1970-01-01 (UTC); 18.16 has no `DateTime64`, and `DateTime` holds seconds from 1970 to 2105; ±infinity are the Int64 extremes |
//! | `time` | `Int64` | microseconds since midnight |
//! | `uuid` | `UUID` | |
//! | `json`, `jsonb` | `String` | the JSON text |
//! | arrays, `interval`, `inet`, enums, others | `String` | Postgres's text form |
//!
//! Key columns are the `ORDER BY` and never `Nullable`; every other column
//! is `Nullable(T)`, since the source does not say which hold NULL. A value
//! a column cannot hold (a date out of range, a transform's text in an
//! integer column) refuses its record alone, naming the column, for the
//! dead-letter sink; so does a value ClickHouse itself fails to read.
//!
//! # Errors
//!
//! Connection failures, timeouts and server errors are transient (the
//! pipeline retries); "too many parts" and "too many queries" slow it
//! down; an unknown user, a wrong password or a read-only user is an
//! authentication error (retried slowly); an unknown table or database, or
//! a table of the wrong shape, stops the pipeline.
//!
//! # Verify
//!
//! [`ClickHouseReadback`] (`weir verify`) checks each table as the sink
//! does (never making one) and reads a batch's rows of it in one query
//! (another per 128 KiB of key literals): `SELECT … FROM t FINAL WHERE
//! _weir_deleted = 0 AND (key) IN (…)`. `FINAL` keeps each key's newest
//! version, and 18.16 filters after it (never as a `PREWHERE`), so a
//! tombstoned key is not held; `_weir_version` and `_weir_deleted` are
//! never compared. Columns are read as the sink's lookup of unchanged
//! TOAST values reads them, without loss (`String` as `hex()`, `Date` as
//! its day number, others with `toString()`), turned back into values and
//! encoded with the sink's JSONEachRow encoder, then compared with the
//! encoder's JSON for the record's value. ClickHouse's own JSON output is
//! not used: it turns NaN and infinities into `null`, is not JSON for
//! bytes that are not UTF-8, and quotes 64-bit integers unless a setting
//! says otherwise, which a read-only user may not change (with this, one
//! will do). Where two JSON texts hold one stored value, the stored value
//! is compared:
//!
//! * `String`: the bytes, however escaped (text and `bytea` are escaped
//!   differently);
//! * `Float32`, `Float64`: the number, however written (`3` and `3.0`; a
//!   `Float32` as ClickHouse rounds it, so `0.1` is `0.1`), NaN equal to
//!   NaN;
//! * `UUID`: in either case (ClickHouse prints lower case).
//!
//! Differences show both sides in the sink's JSON (`null` for NULL); a
//! value the sink cannot write (a date past 2105) shows as a difference
//! saying so.
//!
//! Listing keys runs `SELECT key FROM t FINAL WHERE _weir_deleted = 0 AND
//! (key) > (cursor) ORDER BY key LIMIT n`, the cursor being the last key
//! as the lookup reads it, in JSON. 18.16 cannot read a `FINAL` table in
//! key order, so each such query reads the table from the cursor on: the
//! readback fetches 50,000 keys at a time and serves pages from them. A
//! key maps back to the text Postgres prints, by the source column's type
//! (`bool` as `t` or `f`, a `timestamptz` as `2024-02-29 11:14:15.5+00`,
//! `bytea` as `\x…`); a `String` key that is not UTF-8 in a text column
//! has no source key.

mod config;
mod encode;
mod readback;
mod sink;

#[cfg(test)]
mod tests;

pub use config::ClickHouseSinkConfig;
pub use readback::ClickHouseReadback;
pub use sink::ClickHouseSink;

use crate::registry::{SinkType, parse_as};

/// The `clickhouse` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "clickhouse",
    parse: parse_as::<ClickHouseSinkConfig>,
};
