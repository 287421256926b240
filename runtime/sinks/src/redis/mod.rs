//! The `redis` sink: rows as keys (`mode = "cache"`) or records as stream
//! entries (`mode = "stream"`), a whole batch in one pipeline.
//!
//! ```toml
//! [sinks.cache]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//! format = "hash"
//! ```
//!
//! # Cache mode
//!
//! Each row is one key, named by the `key` template
//! (`{schema}:{table}:{key}`), holding the row: a JSON object
//! (`format = "json"`, values as in the native envelope) or a hash of its
//! columns as text (`format = "hash"`; a NULL column has no field).
//!
//! Every write runs in one Lua script (`EVALSHA`, loaded once per
//! connection and again when the server lost it) that compares the
//! record's [`Position`](weir_core::Position) with the row's stored version
//! and applies the write unless a later one was applied: a replay after a
//! crash or a late retry never puts an older row over a newer one.
//!
//! * Versions: in `hash` format the `_weir_version` field of the row's hash;
//!   in `json` format the key `{version_prefix}{row key}`.
//! * A delete removes the row and leaves a tombstone, the version in
//!   `{version_prefix}{row key}`, expiring after `tombstone_ttl` (default a
//!   day): until then an older write of that row is refused. One small key
//!   per deleted row is the cost; after expiry, a replay older than the
//!   tombstone could bring the row back, which needs a replay that old.
//! * An unchanged TOAST value keeps the stored one: in `hash` format its
//!   field is left alone; in `json` format the script cuts the stored JSON
//!   into its members' raw texts and copies the kept ones byte for byte
//!   (never decoding them, so an `int8` past 2^53 stays exact). When the
//!   row was never stored, the kept column is left out of the object.
//! * A key change (an update whose old key differs) deletes the old key
//!   and writes the new one, both guarded by the update's position.
//! * A truncate `SCAN`s the whole keyspace for the table's keys (the
//!   expansion of the key template up to its first key placeholder), and
//!   removes those written before it, in chunks; then it keeps the
//!   truncate's position in `{version_prefix}{table part}` (one key per
//!   truncated table, kept forever) so that older writes are refused. SCAN
//!   walks every key of the database: its cost grows with the database,
//!   not the table.
//! * Logical messages are ignored (counted as delivered); raw records are
//!   refused (`accepts_raw = false`), as are keyless rows (`needs_key`).
//!
//! # Stream mode
//!
//! Each record is one `XADD` to the stream the `stream` template names
//! (`weir:{schema}:{table}`), with the fields `op`, `schema`, `table`,
//! `commit_lsn`, `key` (the row's key as JSON) and `value` (the encoded
//! event); a raw record has `op = "raw"`, its own `key`, `value` and
//! `header.NAME` fields. The entry id is `COMMIT_LSN-N`, `N` being the
//! change's place in its transaction times 2^32 plus the record's place
//! among the records made from that change: ids grow in commit order, and
//! a replayed record gets its old id, which Redis refuses as not above the
//! stream's last: the sink counts that as already written, so a replay adds
//! no duplicate.
//!
//! # Verify
//!
//! `weir verify` reads cache mode back (a [`Readback`](weir_core::Readback),
//! over a connection of its own, opened as the sink's is): one pipeline per
//! batch of records, a `GET` (json) or `HGETALL` (hash) of each row's key,
//! named by the same key template the write uses (the route's topic, else
//! `key`), and an `EXISTS` for a key the source no longer has.
//!
//! * Compared: in `json` format, the stored object member by member as
//!   JSON values, against the object the sink would write: member order,
//!   spacing and number spelling do not matter; integers are compared
//!   exactly (an `int8` past 2^53 is not rounded), other numbers as
//!   doubles. In `hash` format, each field's text against the field the
//!   sink would write; a NULL column is an absent field. A member or field
//!   that is no column of the table is a difference too, and a key of
//!   another type, or a string that is no JSON object, differs as a whole
//!   (column `(value)`).
//! * Not compared: the versions (`_weir_version`, the `{version_prefix}…`
//!   keys) and expiry times. A tombstone is no row; with `ttl` set, a row
//!   the cache let expire reads as missing, as it would for a reader.
//! * Keys: a `SCAN` of the whole keyspace with the table's pattern (the
//!   truncate's), about `limit` keys examined per step and at most 32
//!   steps per page, so a page can hold fewer keys than asked; its cost
//!   grows with the database, not the table, and `SCAN` may list a key
//!   twice. Version and truncate keys are left out. Each name is read back
//!   through the template into the key columns' texts (`{key}` split at
//!   its unescaped `:`s); a name that reads back as no key of the table, or
//!   as several (two key placeholders with nothing between them), is
//!   listed without one.
//!
//! # Durability
//!
//! A batch is acknowledged when Redis has replied to every command in it.
//! Whether it survives a Redis crash is Redis's own setting: `appendonly
//! yes` with `appendfsync always` for every write, `everysec` for up to a
//! second lost, RDB snapshots only for more.
//!
//! # Type mapping (cache mode)
//!
//! | Postgres | `json` format | `hash` format |
//! |---|---|---|
//! | NULL | `null` | no field |
//! | `bool` | `true`/`false` | `true`/`false` |
//! | integers | number | digits |
//! | `float4`, `float8` | number; `"NaN"`, `"Infinity"` | shortest text; `NaN`, `Infinity` |
//! | `numeric` | string as Postgres prints it | as Postgres prints it |
//! | text types | string | the text |
//! | `bytea` | base64 string | `\x` and hex |
//! | `date`, `time`, `timestamp`, `timestamptz` | ISO 8601 string (`Z` for `timestamptz`) | the same text |
//! | `uuid` | string | lower-case text |
//! | `json`, `jsonb` | embedded document | its text |
//! | others | string, Postgres's text | Postgres's text |

mod config;
mod readback;
mod sink;

#[cfg(test)]
mod tests;

pub use config::{Format, Mode, RedisSinkConfig};
pub use sink::RedisSink;

use crate::registry::{SinkType, parse_as};

/// The `redis` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "redis",
    parse: parse_as::<RedisSinkConfig>,
};
