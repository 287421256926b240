//! Entry points for the fuzz targets in the repository's `fuzz/` directory:
//! the code that reads what a server sends, fed bytes without a connection.
//! Hidden from the documentation and not a stable API.
//!
//! A pgoutput input is a sequence of messages, each a 4-byte big-endian
//! length and that many bytes (the last one takes whatever is left), so a
//! fuzzer can build a Relation message and then changes that use it. A
//! stream input is the raw bytes a server sends after CopyBothResponse.

use std::sync::Arc;

use weir_core::{Lsn, SourceItem};

use crate::error::PgError;
use crate::pgoutput::{Decoder, forget_schemas};
use crate::streamed::Streamed;

/// The database key of every fuzzing decoder. Schema versions live in a
/// process-wide registry keyed by it; each input starts by forgetting
/// them, so it decodes the same whatever ran before (libFuzzer replays
/// one input alone), and the registry does not grow without end.
const DB_KEY: &str = "fuzzing";

/// Splits a pgoutput input into its messages (see the module docs).
pub fn split_messages(mut data: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        let (message, rest) = rest.split_at(len.min(rest.len()));
        messages.push(message);
        data = rest;
    }
    messages
}

/// The inverse of [`split_messages`].
pub fn join_messages<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut data = Vec::new();
    for m in messages {
        let len = u32::try_from(m.len()).expect("a pgoutput message is under 4 GiB");
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(m);
    }
    data
}

/// Decodes a pgoutput input with one decoder, as one replication stream
/// with streaming on would, until the first error. Streamed transactions
/// past 4 KiB are spilled, so that path is fuzzed too.
pub fn decode_pgoutput(data: &[u8]) -> Result<Vec<SourceItem>, PgError> {
    forget_schemas(DB_KEY);
    let spill = std::env::temp_dir().join(format!("weir-fuzz-spill-{}", std::process::id()));
    let streamed = Streamed::open(spill, 4 << 10).map_err(PgError::Config)?;
    let mut decoder = Decoder::new(Arc::from(DB_KEY)).with_streaming(streamed);
    let mut out = Vec::new();
    for (i, message) in split_messages(data).into_iter().enumerate() {
        decoder.decode(Lsn(i as u64), message, &mut out)?;
        while decoder.replaying() {
            decoder.replay(64, &mut out)?;
        }
    }
    Ok(out)
}

/// Reads a stream input through the replication reader's framing,
/// CopyData and keepalive handling and the decoder, until the end of the
/// data or the first error.
pub fn replay_stream(data: &[u8]) -> Result<Vec<SourceItem>, PgError> {
    forget_schemas(DB_KEY);
    crate::source::replay_stream(data, Arc::from(DB_KEY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_and_join() {
        let data = join_messages([b"B123".as_slice(), b"", b"C"]);
        assert_eq!(split_messages(&data), [b"B123".as_slice(), b"", b"C"]);
        // A length past the end takes the rest; a short length prefix ends it.
        assert_eq!(split_messages(b"\0\0\0\x09ab\0"), [b"ab\0".as_slice()]);
        assert!(split_messages(b"\0\0").is_empty());
    }
}

/// Records the seed corpus of the fuzz targets from the machine's Postgres.
#[cfg(test)]
mod capture {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use bytes::{BufMut, BytesMut};
    use tokio_postgres::{Client, NoTls};

    use super::*;
    use crate::config::PostgresConfig;
    use crate::conn::{Frame, ReplConn};

    const SETUP: &str = "
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
        CREATE TABLE kinds (
            id bigserial PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid,
            f4 float4, f8 float8, n numeric, t text, vc varchar(20), c char(3),
            by bytea, d date, tm time, ts timestamp, tstz timestamptz, u uuid,
            j json, jb jsonb, m mood, p posint, arr int4[], iv interval, ip inet);
        CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
        ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
        CREATE TABLE full_ident (a int, b text);
        ALTER TABLE full_ident REPLICA IDENTITY FULL;
        CREATE PUBLICATION fuzz_pub FOR ALL TABLES;";

    /// One transaction per statement list; the last one marks the end.
    const CHANGES: &[&str] = &[
        "INSERT INTO kinds (b, i2, i4, i8, o, f4, f8, n, t, vc, c, by, d, tm, ts, tstz, u, j, jb,
                            m, p, arr, iv, ip)
         VALUES (true, -32768, 2147483647, -9223372036854775808, 4294967295, 1.1, 3.141592653589793,
                 '-123456789012345678901234567890.123456789', 'héllo \"world\"', 'varchar', 'ab',
                 '\\x00ff10', '2024-02-29', '23:59:59.999999', '2024-02-29 12:34:56.789012',
                 '2024-02-29 12:34:56.789012+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                 '{\"a\":\n 1}', '{\"b\": [1, null, 2.5]}', 'happy', 7, '{1,2,NULL}',
                 '1 year 2 mons 3 days 04:05:06.789', '192.168.0.1/24')",
        "INSERT INTO kinds (f4, f8, n, d, ts, tstz) VALUES
             ('NaN', '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity'),
             ('Infinity', '1e-300', '0.00000000000000000001', '0044-03-15 BC',
              '0044-03-15 12:00:00 BC', '294276-12-31 23:59:59.999999+00'),
             (-0, 0, 'Infinity', '5874897-12-31', '294276-12-31 23:59:59.999999', '4713-01-01 00:00:00+00 BC');
         INSERT INTO kinds DEFAULT VALUES",
        "INSERT INTO toasty SELECT 1, string_agg(md5(g::text), ''), 1 FROM generate_series(1, 100) g",
        // A later transaction, so the TOASTed value arrives as unchanged.
        "UPDATE toasty SET small = 2 WHERE id = 1",
        "INSERT INTO full_ident VALUES (1, 'one'), (2, NULL);
         UPDATE full_ident SET b = 'uno' WHERE a = 1;
         DELETE FROM full_ident WHERE a = 2",
        "UPDATE kinds SET id = 100, t = 'moved' WHERE id = 1;
         DELETE FROM kinds WHERE id = 2",
        "SELECT pg_logical_emit_message(true, 'weir-fuzz', 'transactional');
         SELECT pg_logical_emit_message(false, 'weir-fuzz', '\\x00ff'::bytea);
         INSERT INTO full_ident VALUES (3, 'with a message')",
        "TRUNCATE kinds, full_ident RESTART IDENTITY CASCADE",
        "ALTER TABLE kinds ADD COLUMN extra text;
         INSERT INTO kinds (t, extra) VALUES ('after alter', 'new column')",
        "SELECT pg_logical_emit_message(true, 'weir-fuzz-end', '')",
    ];

    async fn connect(dbname: &str) -> Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(5432)
            .user("postgres")
            .dbname(dbname)
            .connect(NoTls)
            .await
            .expect("connecting to Postgres on 127.0.0.1:5432");
        tokio::spawn(conn);
        client
    }

    /// A frame as the server sent it: tag, length, body.
    fn raw(f: &Frame) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(f.tag);
        b.put_u32(4 + f.body.len() as u32);
        b.put_slice(&f.body);
        b.to_vec()
    }

    /// The pgoutput message inside an XLogData frame.
    fn xlog_message(f: &Frame) -> Option<&[u8]> {
        (f.tag == b'd' && f.body.first() == Some(&b'w')).then(|| &f.body[25..])
    }

    /// Streams `slot` until the end marker's commit and a keepalive after it.
    async fn record(cfg: &PostgresConfig, binary: bool) -> Vec<Frame> {
        let mut conn = ReplConn::connect(cfg).await.unwrap();
        conn.start_replication(&cfg.slot, Lsn::ZERO, &cfg.publication, binary, false)
            .await
            .unwrap();
        let mut frames = Vec::new();
        let mut ended = false;
        loop {
            let wait = if ended { 5 } else { 30 };
            let next = tokio::time::timeout(Duration::from_secs(wait), conn.reader.next_frame());
            let f = next.await.expect("the stream went quiet").unwrap();
            let marker = xlog_message(&f).is_some_and(|m| {
                m.first() == Some(&b'M') && m.windows(13).any(|w| w == b"weir-fuzz-end")
            });
            let keepalive = f.tag == b'd' && f.body.first() == Some(&b'k');
            ended |= marker;
            frames.push(f);
            if ended && keepalive {
                break;
            }
        }
        conn.close().await;
        frames
    }

    fn write(dir: &Path, name: &str, data: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }

    /// Writes, per transaction, the frames (stream corpus) and the pgoutput
    /// messages (pgoutput corpus), each preceded by every Relation and Type
    /// message seen before it so its changes decode; plus the whole stream.
    fn write_corpus(root: &Path, mode: &str, frames: &[Frame]) {
        let mut schema: Vec<&Frame> = Vec::new();
        let mut txn: Vec<&Frame> = Vec::new();
        let mut n = 0;
        for (i, f) in frames.iter().enumerate() {
            let Some(message) = xlog_message(f) else {
                // Keepalives and anything else that is not XLogData.
                write(
                    &root.join("frames"),
                    &format!("{mode}-frame-{i:03}"),
                    &raw(f),
                );
                continue;
            };
            let tag = message.first().copied();
            if txn.is_empty() && tag != Some(b'B') {
                if matches!(tag, Some(b'R' | b'Y')) {
                    schema.push(f);
                } else {
                    // A non-transactional logical message, between transactions.
                    write(
                        &root.join("pgoutput"),
                        &format!("{mode}-lone-{i:03}"),
                        &join_messages([message]),
                    );
                }
                continue;
            }
            txn.push(f);
            if tag == Some(b'C') {
                let all: Vec<&Frame> = schema.iter().chain(&txn).copied().collect();
                let stream: Vec<u8> = all.iter().flat_map(|f| raw(f)).collect();
                write(&root.join("frames"), &format!("{mode}-txn-{n:02}"), &stream);
                let messages = join_messages(all.iter().filter_map(|f| xlog_message(f)));
                write(
                    &root.join("pgoutput"),
                    &format!("{mode}-txn-{n:02}"),
                    &messages,
                );
                n += 1;
                // Relations sent inside this transaction stay known after it.
                schema.extend(txn.drain(..).filter(|f| {
                    matches!(xlog_message(f).and_then(|m| m.first()), Some(b'R' | b'Y'))
                }));
            }
        }
        let all: Vec<u8> = frames.iter().flat_map(raw).collect();
        write(&root.join("frames"), &format!("{mode}-all"), &all);
    }

    #[tokio::test]
    #[ignore = "needs Postgres on 127.0.0.1:5432 with wal_level=logical; rewrites fuzz/corpus"]
    async fn capture_seed_corpus() {
        let db = format!("weir_fuzz_capture_{:08x}", rand::random::<u32>());
        let admin = connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        let client = connect(&db).await;
        client.batch_execute(SETUP).await.unwrap();
        let cfg = |slot: &str| PostgresConfig {
            dbname: db.clone(),
            slot: slot.to_owned(),
            publication: "fuzz_pub".into(),
            ..PostgresConfig::default()
        };
        let slots = [format!("{db}_text"), format!("{db}_binary")];
        for slot in &slots {
            let mut conn = ReplConn::connect(&cfg(slot)).await.unwrap();
            conn.create_logical_slot(slot).await.unwrap();
            conn.close().await;
        }
        for sql in CHANGES {
            client
                .batch_execute(&format!("BEGIN; {sql}; COMMIT"))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus"));
        for (slot, binary) in slots.iter().zip([false, true]) {
            let frames = record(&cfg(slot), binary).await;
            // The capture must decode cleanly, or it seeds nothing useful.
            let stream: Vec<u8> = frames.iter().flat_map(raw).collect();
            let items = replay_stream(&stream).unwrap();
            assert!(items.len() > 20, "{} items", items.len());
            write_corpus(&root, if binary { "binary" } else { "text" }, &frames);
        }
        drop(client);
        for slot in &slots {
            admin
                .execute("SELECT pg_drop_replication_slot($1)", &[slot])
                .await
                .unwrap();
        }
        admin
            .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await
            .unwrap();
    }
}
