//! Binary mode against text mode: the same rows, streamed through two
//! slots, one with pgoutput's `binary` option and one without, must
//! decode to the same values, column by column. Text mode's values are
//! Postgres's own output functions' text, so this holds Weir's binary
//! printers (`interval_out`, `array_out`, `network_out`, … rewritten)
//! against the server itself.

use weir_core::Value;
use weir_postgres::{PgError, PostgresSource};

use crate::common::*;

const ZOO: &str = r#"
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'happy', 'a b', 'NULL');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN moods AS mood[];
CREATE DOMAIN label AS citext;
CREATE TYPE pair AS (a int, b text, c float8[], d mood);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE TABLE zoo (
    id int PRIMARY KEY,
    iv interval, ttz timetz, ip inet, cr cidr, mac macaddr, mac8 macaddr8, mo money,
    bt bit(4), vb varbit, ch "char", lsn pg_lsn, x xid, x8 xid8, ti tid,
    pt point, li line, ls lseg, bx box, pa path, pg polygon, ci circle,
    snap pg_snapshot, tsv tsvector, tsq tsquery, xm xml, jp jsonpath, rc refcursor,
    acl aclitem,
    a_i4 int4[], a_t text[], a_f8 float8[], a_f4 float4[], a_tz timestamptz[],
    a_ts timestamp[], a_d date[], a_n numeric[], a_by bytea[], a_u uuid[], a_b bool[],
    a_j jsonb[], a_iv interval[], a_bx box[], a_2d int8[], a_tm time[], a_ip inet[],
    a_i2 int2[], a_o oid[], a_c bpchar[], a_js json[],
    r4 int4range, r8 int8range, rn numrange, rts tsrange, rtz tstzrange, rd daterange,
    rf floatrange, m4 int4multirange, md datemultirange, a_r int4range[],
    e mood, ea mood[], dm moods, d posint, pr pair, pra pair[], ct citext, lb label,
    i2v int2vector, ov oidvector);
"#;

/// Row 1 holds ordinary values, row 2 the edges (empty, infinite,
/// extreme, needing quotes), row 3 NULL in every column but the key.
const ZOO_ROWS: &str = r#"
INSERT INTO zoo VALUES
(1, '1 year 2 mons -3 days 04:05:06.5', '04:05:06.789+05:30', '192.168.0.1/24',
 '10.1.0.0/16', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', -1234.56,
 B'1010', B'0101010101', 'a', '16/B374D848', '12345', '123456789012', '(1,2)',
 '(1.5,-2.25)', '{1,2,3}', '[(1,2),(3,4)]', '(3,4),(1,2)', '((1,2),(3,4),(5,6))',
 '((0,0),(1,0),(0,1))', '<(1,2),3>', '10:20:10,14,15',
 $$'a':1A,2 'b''c' 'd\\e':3C 'fat' 'rat':4D$$, 'a:A & !(b | c) <-> d:*B',
 '<a x="1">t &amp; u</a>', '$.a[*] ? (@ > 1)', 'cur', 'postgres=arwdDxt/postgres',
 '{1,-2,NULL,2147483647}', '{"a b","","NULL",NULL,"x\"y","a\\b","{}",",",é}',
 '{1.5,-0.1,1e+20,1.5e-07,123456789012345,1.234567890123456e+15,0.0001,1e-05,NaN,-Infinity}',
 '{1.1,1e+06,123456,-3.4028235e+38,1e-45}',
 '{"2024-02-29 12:34:56.789012+00","infinity","0044-03-15 12:00:00+00 BC","2000-01-01 00:00:00.5+00"}',
 '{"2024-02-29 12:34:56","-infinity","10000-01-01 00:00:00"}',
 '{2024-02-29,infinity,"4713-01-01 BC"}', '{12.30,NaN,-Infinity,0.000001,-1e-20}',
 '{"\\x00ff","\\x",NULL}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{t,f,NULL}',
 ARRAY['{"a": [1, "x\ty"]}', 'null', '"s p"']::jsonb[], '{"1 day","-00:00:01","00:00:00"}',
 ARRAY['(3,4),(1,2)'::box, '(1,1),(0,0)'], '{{1,2,3},{4,5,6}}', '{00:00,23:59:59.999999,24:00}',
 '{10.0.0.1,::1,fe80::/64}', '{-32768,32767}', '{0,4294967295}', '{"ab  ","",x}',
 ARRAY['{"k": "v"}', '[1,  2]']::json[],
 '[1,10)', '(,5]', '[1.5,)', '["2024-01-01 00:00:00","2024-01-02 00:00:00")',
 '["2020-01-01 00:00:00+00",)', '[2024-01-01,2024-12-31]', '(-1.5,2.5]',
 '{[1,3),[5,7)}', '{[2024-01-01,2024-02-01)}', '{"[1,2)",empty,"(,)"}',
 'a b', '{sad,"a b","NULL",NULL}', '{happy}', 7,
 ROW(1, 'a b', '{1.5,NULL}', 'happy'), ARRAY[ROW(2, '', NULL, 'sad')::pair, ROW(NULL, 'x"y', '{}', NULL)::pair],
 'MiXeD Case', 'lab el', '1 2 3', '1 4294967295'),
(2, '-178000000 years', '00:00:00-00:00:15', '::ffff:1.2.3.4', '::/0', '00:00:00:00:00:00',
 'ff:ff:ff:ff:ff:ff:ff:ff', 92233720368547758.07, B'0000', B'', '', '0/0', '0',
 '18446744073709551615', '(4294967295,65535)', '(-0,1e+300)', '{0,-1,0}',
 '[(0,0),(0,0)]', '(0,0),(0,0)', '[(1e-300,5)]', '((1,1))', '<(0,0),0>', '1:1:',
 '', '', '', '"a"', '', NULL,
 '[0:1]={1,2}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
 '{}', '{}', '{}', '{}', '{}', '{}', '{}',
 'empty', '[-9223372036854775808,9223372036854775807)', '(,)', '(,)', '(,)',
 '[-infinity,infinity)', 'empty', '{}', '{}', '{}',
 'NULL', '{}', '{}', 2147483647, ROW(NULL, NULL, NULL, NULL), '{}', '', '', '', '');
INSERT INTO zoo (id) VALUES (3);
"#;

/// Two sources on one database, text and binary, prepared before any row
/// is written.
async fn text_and_binary(db: &TestDb, tables: &[&str]) -> (PostgresSource, PostgresSource) {
    let text = PostgresSource::prepare(db.config(&db.slot(), tables))
        .await
        .unwrap();
    let mut binary = db.config(&db.slot(), tables);
    binary.binary = true;
    let binary = PostgresSource::prepare(binary).await.unwrap();
    (text, binary)
}

/// The `after` rows of the next `n` transactions.
async fn rows(run: &mut Running, n: usize) -> Vec<Vec<Value>> {
    run.txns(n)
        .await
        .iter()
        .flat_map(|t| t.changes.iter().map(|c| c.after.clone().unwrap()))
        .collect()
}

fn assert_same(text: &[Vec<Value>], binary: &[Vec<Value>], names: &[String]) {
    assert_eq!(text.len(), binary.len());
    for (t, b) in text.iter().zip(binary) {
        assert_eq!(t.len(), b.len());
        for (i, (tv, bv)) in t.iter().zip(b).enumerate() {
            let same = match (tv, bv) {
                (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                _ => tv == bv,
            };
            assert!(
                same,
                "row {:?}, column {}: text mode {tv:?}, binary mode {bv:?}",
                t[0], names[i]
            );
        }
    }
}

/// Every built-in type Weir prints, arrays of most of them, ranges and
/// multiranges, enums, domains over arrays and extension types, a
/// composite and an array of it, `citext`, and `aclitem` (no binary form:
/// pgoutput sends its text even in binary mode); then a column of a type
/// created while streaming, which binary mode looks up on the way.
#[tokio::test(flavor = "multi_thread")]
async fn binary_mode_prints_every_type_as_text_mode_does() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(ZOO).await.unwrap();
    let (text, binary) = text_and_binary(&db, &["zoo"]).await;
    c.batch_execute(ZOO_ROWS).await.unwrap();
    let mut text = Running::spawn(text);
    let mut binary = Running::spawn(binary);
    let (t, b) = (text.txn().await, binary.txn().await);
    let names: Vec<String> = t.changes[0]
        .table
        .as_ref()
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let after = |txn: &Txn| -> Vec<Vec<Value>> {
        txn.changes
            .iter()
            .map(|c| c.after.clone().unwrap())
            .collect()
    };
    let (t_rows, b_rows) = (after(&t), after(&b));
    assert_same(&t_rows, &b_rows, &names);
    // A few values as Postgres prints them, so that equal is also right.
    let col = |name: &str| names.iter().position(|n| n == name).unwrap();
    let row1 = &b_rows[0];
    assert_eq!(
        row1[col("iv")],
        Value::Other("1 year 2 mons -3 days +04:05:06.5".into())
    );
    assert_eq!(row1[col("mo")], Value::Other("-$1,234.56".into()));
    assert_eq!(row1[col("e")], Value::Other("a b".into()));
    assert_eq!(
        row1[col("pr")],
        Value::Other(r#"(1,"a b","{1.5,NULL}",happy)"#.into())
    );
    assert_eq!(row1[col("d")], Value::Int(7));
    assert_eq!(b_rows[2][col("iv")], Value::Null);

    // A type made while both stream: binary mode looks it up when the
    // Relation message naming it arrives.
    c.batch_execute(
        "CREATE TYPE later AS ENUM ('x', 'y z');
         CREATE TYPE later_pair AS (l later, n numeric);
         ALTER TABLE zoo ADD COLUMN l later[], ADD COLUMN lp later_pair;
         INSERT INTO zoo (id, l, lp) VALUES (4, '{x,\"y z\"}', ROW('y z', 1.50));",
    )
    .await
    .unwrap();
    let (t, b) = (rows(&mut text, 1).await, rows(&mut binary, 1).await);
    let mut names = names;
    names.extend(["l".to_owned(), "lp".to_owned()]);
    assert_same(&t, &b, &names);
    assert_eq!(t[0][names.len() - 2], Value::Other(r#"{x,"y z"}"#.into()));
    assert_eq!(
        t[0][names.len() - 1],
        Value::Other(r#"("y z",1.50)"#.into())
    );
    text.stop().await.unwrap();
    binary.stop().await.unwrap();
}

/// A small xorshift generator: the same values on every run.
struct Bits(u64);

impl Bits {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Floats of every magnitude (random bit patterns, which cover the
/// exponent range evenly) printed inside arrays and points, where binary
/// mode writes their shortest text itself.
#[tokio::test(flavor = "multi_thread")]
async fn binary_mode_prints_floats_as_postgres_does() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE floats (id int PRIMARY KEY, a8 float8[], a4 float4[], p point)")
        .await
        .unwrap();
    let (text, binary) = text_and_binary(&db, &["floats"]).await;
    let mut bits = Bits(0x9e37_79b9_7f4a_7c15);
    let insert = c
        .prepare("INSERT INTO floats VALUES ($1, $2, $3, point($4, $5))")
        .await
        .unwrap();
    const ROWS: i32 = 1500;
    c.batch_execute("BEGIN").await.unwrap();
    for id in 0..ROWS {
        let a8: Vec<f64> = (0..8).map(|_| f64::from_bits(bits.next())).collect();
        let a4: Vec<f32> = (0..8).map(|_| f32::from_bits(bits.next() as u32)).collect();
        let (x, y) = (f64::from_bits(bits.next()), f64::from_bits(bits.next()));
        c.execute(&insert, &[&id, &a8, &a4, &x, &y]).await.unwrap();
    }
    c.batch_execute("COMMIT").await.unwrap();
    let mut text = Running::spawn(text);
    let mut binary = Running::spawn(binary);
    let (t, b) = (rows(&mut text, 1).await, rows(&mut binary, 1).await);
    assert_eq!(t.len(), ROWS as usize);
    let names = ["id", "a8", "a4", "p"].map(str::to_owned);
    assert_same(&t, &b, &names);
    text.stop().await.unwrap();
    binary.stop().await.unwrap();
}

/// An extension type whose binary form Weir cannot print (`hstore`):
/// binary mode refuses to start, naming the column; a column of it added
/// while streaming stops the stream with the same error, before any of
/// its changes is delivered; text mode streams it.
#[tokio::test(flavor = "multi_thread")]
async fn binary_mode_refuses_a_column_it_cannot_decode() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE EXTENSION hstore;
         CREATE TABLE kv (id int PRIMARY KEY, h hstore);
         CREATE TABLE later (id int PRIMARY KEY)",
    )
    .await
    .unwrap();
    let mut cfg = db.config(&db.slot(), &["kv"]);
    cfg.binary = true;
    let Err(err) = PostgresSource::prepare(cfg).await else {
        panic!("binary mode started with a column of hstore");
    };
    let msg = err.to_string();
    assert!(matches!(err, PgError::Config(_)), "{err:?}");
    assert!(
        msg.contains("column public.kv.h is of type public.hstore") && msg.contains("hstore_send"),
        "{msg}"
    );
    assert!(msg.contains("source.binary = false"), "{msg}");

    // Text mode has the value's text.
    let text = PostgresSource::prepare(db.config(&db.slot(), &["kv"]))
        .await
        .unwrap();
    let mut cfg = db.config(&db.slot(), &["later"]);
    cfg.binary = true;
    // A publication of its own, without kv.
    cfg.publication = format!("{}_later", db.publication);
    let binary = Running::start(cfg).await;
    for step in [
        "INSERT INTO kv VALUES (1, 'a=>1')",
        "INSERT INTO later VALUES (1)",
        "ALTER TABLE later ADD COLUMN h hstore[]",
        "INSERT INTO later VALUES (2, ARRAY['b=>2'::hstore])",
    ] {
        c.batch_execute(step).await.unwrap();
    }
    let mut text = Running::spawn(text);
    let t = rows(&mut text, 1).await;
    assert_eq!(t[0][1], Value::Other(r#""a"=>"1""#.into()));
    text.stop().await.unwrap();
    // The stream stops at the Relation message describing the new column
    // (the row before it may or may not have been handed on by then).
    let err = binary.failure().await;
    let msg = err.to_string();
    assert!(
        msg.contains("column public.later.h is of type public._hstore")
            && msg.contains("its part public.hstore is sent by hstore_send"),
        "{msg}"
    );
}
