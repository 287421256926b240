//! Unit tests of the `postgres` sink that need no server: configuration,
//! names, value texts, and which records a batch skips.

use weir_core::{Lsn, Position, Value};

use super::config::{PostgresSinkConfig, TableTemplate};
use super::encode::{bc_form, column_text, quote_name};
use super::sink::{Progress, plan};
use crate::registry::parse_sink;

fn pos(lsn: u64, seq: u32) -> Position {
    Position {
        commit_lsn: Lsn(lsn),
        seq,
    }
}

fn skipped(positions: &[Position], stored: Option<Progress>, start: Option<Progress>) -> Vec<bool> {
    plan(positions, stored, start)
        .decisions
        .iter()
        .map(|d| d.skip)
        .collect()
}

#[test]
fn config_parses_validates_and_hides_the_password() {
    let spec = parse_sink(
        "type = \"postgres\"\ndatabase = \"d\"\npassword = \"hunter2\"\n"
            .parse()
            .unwrap(),
    )
    .unwrap();
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let caps = spec.capabilities();
    assert!(caps.applies_state && caps.needs_key && !caps.accepts_raw);
    assert_eq!(caps.max_batch_records, 5000);
    let shown = format!("{spec:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("<redacted>"),
        "{shown}"
    );

    let mut bad = PostgresSinkConfig::new("");
    bad.table = "a.b.{table}".into();
    bad.progress_table = "x.".into();
    bad.max_batch_records = 0;
    bad.sslmode = weir_postgres::SslMode::VerifyFull;
    let problems = bad.validate();
    for field in [
        "database:",
        "table:",
        "progress_table:",
        "max_batch_records:",
        "sslrootcert:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} {problems:?}"
        );
    }
    let errs = parse_sink(
        "type = \"postgres\"\ndatabase = \"d\"\ntabel = \"x\""
            .parse()
            .unwrap(),
    )
    .unwrap_err();
    assert!(errs[0].contains("unknown field `tabel`"), "{errs:?}");
}

#[test]
fn table_templates_split_at_the_dot_outside_placeholders() {
    let t = TableTemplate::parse("{schema}.{table}").unwrap();
    assert!(t.schema.is_some());
    let t = TableTemplate::parse("mirror_{table}").unwrap();
    assert!(t.schema.is_none());
    assert!(TableTemplate::parse("{key}").unwrap_err().contains("{key}"));
    assert!(TableTemplate::parse("{key.id}").is_err());
    assert!(
        TableTemplate::parse("a.b.c")
            .unwrap_err()
            .contains("more than one")
    );
    assert!(
        TableTemplate::parse(".t")
            .unwrap_err()
            .contains("empty schema")
    );
    assert!(
        TableTemplate::parse("{prefix}")
            .unwrap_err()
            .contains("empty table")
    );
    assert_eq!(
        quote_name(Some("My \"S\""), "t.x"),
        "\"My \"\"S\"\"\".\"t.x\""
    );
}

#[test]
fn values_take_the_forms_postgres_reads_back() {
    assert_eq!(column_text(&Value::Null), None);
    assert_eq!(column_text(&Value::Unchanged), None);
    assert_eq!(column_text(&Value::Date(i32::MAX)).unwrap(), "infinity");
    assert_eq!(
        column_text(&Value::Timestamp(i64::MIN)).unwrap(),
        "-infinity"
    );
    assert_eq!(
        column_text(&Value::TimestampTz(1_500_000)).unwrap(),
        "1970-01-01T00:00:01.5Z"
    );
    assert_eq!(bc_form("-0043-03-15".into()), "0044-03-15 BC");
    assert_eq!(
        bc_form("-0043-03-15T12:00:00".into()),
        "0044-03-15T12:00:00 BC"
    );
    assert_eq!(
        bc_form("0000-01-01T00:00:00Z".into()),
        "0001-01-01T00:00:00Z BC"
    );
    assert_eq!(bc_form("0001-01-01".into()), "0001-01-01");
    assert_eq!(bc_form("12345-01-01".into()), "12345-01-01");
    assert_eq!(bc_form("-infinity".into()), "-infinity");
}

#[test]
fn records_at_or_before_the_stored_position_are_skipped() {
    let stored = Some(Progress {
        position: pos(20, 1),
        taken: 1,
    });
    let batch = [pos(10, 0), pos(20, 0), pos(20, 1), pos(20, 2), pos(30, 0)];
    assert_eq!(
        skipped(&batch, stored, None),
        [true, true, true, false, false]
    );
    let latest = plan(&batch, stored, None).latest;
    assert_eq!(
        latest,
        Some(Progress {
            position: pos(30, 0),
            taken: 1
        })
    );
    assert_eq!(skipped(&batch, None, None), [false; 5]);
    // An old batch leaves the stored position where it was.
    let latest = plan(&[pos(1, 0)], stored, None).latest;
    assert_eq!(latest, stored);
}

fn run(position: Position, taken: u64) -> Option<Progress> {
    Some(Progress { position, taken })
}

#[test]
fn records_sharing_a_position_are_counted_across_batches() {
    // Three records at one position, the batch ending after the second.
    let p = pos(50, 4);
    let first = plan(&[pos(50, 3), p, p], None, None);
    assert_eq!(first.latest, run(p, 2));
    assert_eq!(first.end, run(p, 2));
    // The next batch continues the delivery: its first record at `p` is the third.
    assert_eq!(
        skipped(&[p, pos(60, 0)], first.latest, first.end),
        [false, false]
    );
    let second = plan(&[p], first.latest, first.end);
    assert_eq!(second.latest, run(p, 3));
    // A replay after a crash starts at the transaction: the first two at
    // `p` were applied, the third was not.
    assert_eq!(
        skipped(&[pos(50, 3), p, p, p], first.latest, None),
        [true, true, true, false]
    );
}

#[test]
fn a_replay_that_ends_inside_the_stored_run_is_continued_from_where_it_ended() {
    // Five records at `p`; three were applied before a crash.
    let p = pos(80, 2);
    let stored = run(p, 3);
    // The replay's first batch ends after the second of them: both skipped,
    // the stored progress stays, and the batch ended at ordinal 2, not 3.
    let replay = plan(&[pos(80, 1), p, p], stored, None);
    assert_eq!(
        replay.decisions.iter().map(|d| d.skip).collect::<Vec<_>>(),
        [true, true, true]
    );
    assert_eq!(replay.latest, stored);
    assert_eq!(replay.end, run(p, 2));
    // Its next batch holds the third (applied: skipped) to the fifth.
    let next = plan(&[p, p, p, pos(90, 0)], replay.latest, replay.end);
    assert_eq!(
        next.decisions.iter().map(|d| d.skip).collect::<Vec<_>>(),
        [true, false, false, false]
    );
    assert_eq!(next.latest, run(pos(90, 0), 1));
}

#[test]
fn sqlstates_say_who_is_at_fault() {
    use super::sink::{Kind, sqlstate_kind};
    for (code, kind) in [
        ("08006", Kind::Transient),
        ("57P01", Kind::Transient),
        ("40P01", Kind::Transient),
        ("28P01", Kind::Auth),
        ("42501", Kind::Auth),
        ("42P01", Kind::Config),
        ("42703", Kind::Config),
        ("42P10", Kind::Config),
        ("23505", Kind::Record),
        ("23514", Kind::Record),
        ("22P02", Kind::Record),
        ("22001", Kind::Record),
    ] {
        assert_eq!(sqlstate_kind(code), kind, "{code}");
    }
}

#[test]
fn a_replay_that_reaches_the_stored_position_later_skips_it() {
    // The stored position is seq 8; this sink's last batch (a replay, all
    // skipped) ended at seq 2, and the next one starts at seq 3, a new
    // position, so its run starts afresh: record 8 was applied before the
    // crash and must be skipped again, the ones after it applied.
    let stored = Some(Progress {
        position: pos(70, 8),
        taken: 1,
    });
    let batch: Vec<Position> = (3..12).map(|s| pos(70, s)).collect();
    let skips = skipped(&batch, stored, run(pos(70, 2), 1));
    assert_eq!(skips[..6], [true; 6]);
    assert_eq!(skips[6..], [false; 3]);
}

#[test]
fn neighbouring_changes_of_one_shape_run_as_one_statement() {
    use std::collections::HashMap;
    use weir_core::{Column, ReplicaIdentity, TableSchema};

    use super::statements::{Params, Target, coalesce, delete, truncate, upsert};

    let column = |name: &str, key: bool| Column {
        name: name.into(),
        type_oid: 25,
        type_name: "text".into(),
        type_modifier: -1,
        key,
    };
    let table = TableSchema {
        id: 1,
        version: 1,
        schema: "public".into(),
        name: "t".into(),
        columns: vec![column("id", true), column("v", false)],
        replica_identity: ReplicaIdentity::Default,
    };
    let target = Target {
        sql: "public.t".into(),
        display: "public.t".into(),
        columns: HashMap::from([
            ("id".into(), "pg_catalog.int8".into()),
            ("v".into(), "pg_catalog.text".into()),
        ]),
    };
    let mut shapes = HashMap::new();
    let row = |id: i64, v: Value| vec![Value::Int(id), v];
    let mut up = |id, v| upsert(&target, &table, &row(id, v), &mut shapes).unwrap();
    let steps = vec![
        up(1, Value::Text("a".into())),
        up(2, Value::Text("b".into())),
        // The same key again: a new statement, so that it runs after.
        up(1, Value::Text("c".into())),
        // Another shape (the TOASTed value left out).
        up(3, Value::Unchanged),
        truncate(&target),
        delete(&target, &table, &row(4, Value::Null), &mut shapes).unwrap(),
        delete(&target, &table, &row(5, Value::Null), &mut shapes).unwrap(),
    ];
    let (merged, owner) = coalesce(steps, vec![0, 1, 2, 3, 4, 5, 5]);
    assert_eq!(owner, [0, 2, 3, 4, 5]);
    let shape: Vec<(String, usize)> = merged
        .iter()
        .map(|s| match &s.params {
            Params::Row(p) => (s.sql.clone(), p.len()),
            Params::Columns(c) => (s.sql.clone(), c[0].len()),
        })
        .collect();
    assert!(
        shape[0].0.contains("unnest($1::text[], $2::text[])"),
        "{shape:?}"
    );
    assert_eq!(shape[0].1, 2);
    assert!(shape[1].0.contains("VALUES ($1"), "{shape:?}");
    assert!(shape[2].0.contains("DO NOTHING"), "{shape:?}");
    assert!(shape[3].0.starts_with("TRUNCATE"), "{shape:?}");
    assert!(
        shape[4]
            .0
            .starts_with("DELETE FROM public.t AS weir_target USING unnest($1::text[])"),
        "{shape:?}"
    );
    assert_eq!(shape[4].1, 2);
    match &merged[0].params {
        Params::Columns(c) => assert_eq!(
            c,
            &[
                vec![Some("1".to_owned()), Some("2".to_owned())],
                vec![Some("a".to_owned()), Some("b".to_owned())]
            ]
        ),
        Params::Row(_) => panic!("not merged"),
    }
}
