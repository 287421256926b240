//! A Weir transform that adds computed columns to the rows of chosen
//! tables.
//!
//! For each captured table it enriches, the plugin declares a table with
//! the same schema and name whose columns are the original ones followed
//! by the added ones, and delivers every change of the table as a change
//! of that declared table: sinks see the table with more columns.
//!
//! Configuration:
//!
//! * `add.<column> = "<function>(<arguments>)"` (at least one): adds
//!   `<column>`, computed by one of these functions:
//!
//!   | function | result | type |
//!   | --- | --- | --- |
//!   | `lower(col)`, `upper(col)` | the text of `col` in lower / upper case | `text` |
//!   | `length(col)` | characters of the text of `col`, bytes of a `bytea` | `int8` |
//!   | `sha256(col)` | hex SHA-256 of the text of `col` (of the bytes of a `bytea`) | `text` |
//!   | `email_domain(col)` | the part of `col` after its last `@`, lower case; NULL without one | `text` |
//!   | `concat(arg, ...)` | the texts of the arguments joined; an argument is a column or a `'literal'` (`''` for a quote) | `text` |
//!   | `commit_time()` | the transaction's commit time, ISO-8601 UTC as Weir's JSON envelope writes it (`2024-05-01T12:00:00.25Z`) | `text` |
//!   | `xid()` | the transaction's id | `int8` |
//!
//!   "The text of" a value is its text form: dates, times and timestamps
//!   as their raw numbers, `bytea` as `\x` hex (see the SDK's
//!   `Value::to_text`).
//! * `tables`: comma-separated `schema.table` (or `schema.*`) names to
//!   enrich. Empty or absent: every table.
//!
//! An unknown function, a wrong number of arguments, or a literal where a
//! column is expected refuses the plugin at `init`. A column the functions
//! name that an enriched table lacks, or an added column the table already
//! has, fails every change of that table with a message saying which.
//!
//! NULL in, NULL out: a function of a NULL column is NULL (for `concat`,
//! any NULL column makes the result NULL). A TOASTed value an UPDATE did
//! not send gives an unchanged result: the input did not change, so
//! neither did the output. Both the new and the old row are enriched; the
//! old row's columns outside the replica identity are NULL, and so are
//! their results. Truncates move to the declared table too; logical
//! messages and changes of other tables are kept as they are.
//!
//! Counter: `enriched` (changes delivered with added columns).

use std::collections::HashMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use weir_plugin_sdk::{
    Config, Event, Op, Outcome, Source, Table, TablePattern, Transform, Value, count,
};

/// Adds the configured columns to the configured tables.
pub struct Enrich {
    additions: Vec<Addition>,
    tables: Vec<TablePattern>,
    /// Per captured table id: the declared table, or why the table cannot
    /// be enriched.
    declared: HashMap<u32, Result<Table, String>>,
}

impl Transform for Enrich {
    fn init(config: &Config) -> Result<Self, String> {
        let mut additions: Vec<Addition> = Vec::new();
        for (key, value) in config.iter() {
            if key == "tables" {
                continue;
            }
            let Some(column) = key.strip_prefix("add.") else {
                return Err(format!(
                    "unknown config key `{key}` (expected add.<column> or tables)"
                ));
            };
            if column.is_empty() {
                return Err("config key `add.`: name the column to add".into());
            }
            if additions.iter().any(|a| a.column == column) {
                return Err(format!("config key `{key}` is given twice"));
            }
            let function =
                Function::parse(value).map_err(|e| format!("config key `{key}`: {e}"))?;
            additions.push(Addition {
                column: column.to_owned(),
                function,
                definition: value.trim().to_owned(),
            });
        }
        if additions.is_empty() {
            return Err("add at least one column: add.<column> = \"<function>(...)\"".into());
        }
        let tables = config
            .list("tables")
            .into_iter()
            .map(TablePattern::parse)
            .collect::<Result<_, _>>()?;
        Ok(Enrich {
            additions,
            tables,
            declared: HashMap::new(),
        })
    }

    fn on_table(&mut self, table: &Table) {
        // A new version may have been renamed out of the configured tables.
        self.declared.remove(&table.id());
        if self.enriches(table) {
            self.declared.insert(table.id(), self.declare(table));
        }
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if event.op() == Op::Message {
            return Outcome::Keep;
        }
        let Some(declared) = event.table().and_then(|t| self.declared.get(&t.id())) else {
            return Outcome::Keep;
        };
        let declared = match declared {
            Ok(table) => table,
            Err(e) => return Outcome::fail(e.clone()),
        };
        let source = *event.source();
        let after: Vec<Value> = self
            .additions
            .iter()
            .map(|a| a.function.apply(|c| event.after(c), &source))
            .collect();
        let before: Vec<Value> = self
            .additions
            .iter()
            .map(|a| a.function.apply(|c| event.before(c), &source))
            .collect();
        let mut enriched = event.to_table(declared);
        let has_after = enriched.change().after.is_some();
        let has_before = enriched.change().before.is_some();
        for ((addition, new), old) in self.additions.iter().zip(after).zip(before) {
            // The declared table has every added column, so neither fails.
            if has_after && let Err(e) = enriched.set(&addition.column, new) {
                return Outcome::fail(e);
            }
            if has_before && let Err(e) = enriched.set_before(&addition.column, old) {
                return Outcome::fail(e);
            }
        }
        count("enriched", 1);
        Outcome::Emit(vec![enriched.into_emit()])
    }
}

impl Enrich {
    fn enriches(&self, table: &Table) -> bool {
        self.tables.is_empty()
            || self
                .tables
                .iter()
                .any(|n| n.matches(table.schema(), table.name()))
    }

    /// Declares `table` with the added columns, after checking that it has
    /// every column the functions read and none of those they add.
    fn declare(&self, table: &Table) -> Result<Table, String> {
        let mut declared = table.clone();
        for addition in &self.additions {
            let problem = if table.column_index(&addition.column).is_some() {
                Some(format!(
                    "table {} already has a column `{}`",
                    table.qualified_name(),
                    addition.column
                ))
            } else {
                addition
                    .function
                    .columns()
                    .find(|c| table.column_index(c).is_none())
                    .map(|c| format!("table {} has no column `{c}`", table.qualified_name()))
            };
            if let Some(problem) = problem {
                return Err(format!(
                    "add.{} = {}: {problem}",
                    addition.column, addition.definition
                ));
            }
            declared = declared.with_column(&addition.column, addition.function.type_name());
        }
        Ok(declared.declare())
    }
}

/// One configured `add.<column>`.
struct Addition {
    column: String,
    function: Function,
    /// The configured text, for messages.
    definition: String,
}

/// An argument of `concat`.
#[derive(Debug, PartialEq)]
enum Arg {
    Column(String),
    Literal(String),
}

#[derive(Debug, PartialEq)]
enum Function {
    Lower(String),
    Upper(String),
    Length(String),
    Sha256(String),
    EmailDomain(String),
    Concat(Vec<Arg>),
    CommitTime,
    Xid,
}

const FUNCTIONS: &str = "lower, upper, length, sha256, email_domain, concat, commit_time, xid";

impl Function {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (name, rest) = text
            .split_once('(')
            .ok_or_else(|| format!("expected <function>(<arguments>), got {text:?}"))?;
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("expected `)` at the end of {text:?}"))?;
        let name = name.trim();
        let args = parse_args(inner)?;
        let column = |args: Vec<Arg>| -> Result<String, String> {
            match <[Arg; 1]>::try_from(args) {
                Ok([Arg::Column(c)]) => Ok(c),
                Ok([Arg::Literal(_)]) => Err(format!("{name}() takes a column, not a literal")),
                Err(args) => Err(format!(
                    "{name}() takes one column, got {} arguments",
                    args.len()
                )),
            }
        };
        let none = |args: Vec<Arg>, f: Function| {
            if args.is_empty() {
                Ok(f)
            } else {
                Err(format!("{name}() takes no arguments"))
            }
        };
        match name {
            "lower" => column(args).map(Function::Lower),
            "upper" => column(args).map(Function::Upper),
            "length" => column(args).map(Function::Length),
            "sha256" => column(args).map(Function::Sha256),
            "email_domain" => column(args).map(Function::EmailDomain),
            "concat" if args.is_empty() => Err("concat() takes at least one argument".into()),
            "concat" => Ok(Function::Concat(args)),
            "commit_time" => none(args, Function::CommitTime),
            "xid" => none(args, Function::Xid),
            other => Err(format!(
                "unknown function `{other}` (expected one of {FUNCTIONS})"
            )),
        }
    }

    /// The columns the function reads.
    fn columns(&self) -> impl Iterator<Item = &str> {
        let (one, args): (Option<&str>, &[Arg]) = match self {
            Function::Lower(c)
            | Function::Upper(c)
            | Function::Length(c)
            | Function::Sha256(c)
            | Function::EmailDomain(c) => (Some(c), &[]),
            Function::Concat(args) => (None, args),
            Function::CommitTime | Function::Xid => (None, &[]),
        };
        one.into_iter().chain(args.iter().filter_map(|a| match a {
            Arg::Column(c) => Some(c.as_str()),
            Arg::Literal(_) => None,
        }))
    }

    fn type_name(&self) -> &'static str {
        match self {
            Function::Length(_) | Function::Xid => "int8",
            _ => "text",
        }
    }

    /// The function's value for a row whose columns `column` looks up.
    fn apply<'r>(&self, column: impl Fn(&str) -> Option<&'r Value>, source: &Source) -> Value {
        let text = |c: &str, f: &dyn Fn(&str) -> Option<String>| match column(c) {
            Some(Value::Unchanged) => Value::Unchanged,
            Some(v) => v.to_text().and_then(|t| f(&t)).into(),
            None => Value::Null,
        };
        match self {
            Function::Lower(c) => text(c, &|t| Some(t.to_lowercase())),
            Function::Upper(c) => text(c, &|t| Some(t.to_uppercase())),
            Function::EmailDomain(c) => text(c, &|t| {
                t.rsplit_once('@')
                    .map(|(_, domain)| domain.trim().to_lowercase())
                    .filter(|d| !d.is_empty())
            }),
            Function::Length(c) => match column(c) {
                Some(Value::Bytes(b)) => Value::Int(len(b.len())),
                Some(Value::Unchanged) => Value::Unchanged,
                Some(v) => v
                    .to_text()
                    .map_or(Value::Null, |t| Value::Int(len(t.chars().count()))),
                None => Value::Null,
            },
            Function::Sha256(c) => match column(c) {
                Some(Value::Bytes(b)) => Value::Text(sha256_hex(b)),
                Some(Value::Unchanged) => Value::Unchanged,
                Some(v) => v
                    .to_text()
                    .map_or(Value::Null, |t| Value::Text(sha256_hex(t.as_bytes()))),
                None => Value::Null,
            },
            Function::Concat(args) => {
                let mut out = String::new();
                let mut unchanged = false;
                for arg in args {
                    match arg {
                        Arg::Literal(l) => out.push_str(l),
                        Arg::Column(c) => match column(c) {
                            Some(Value::Unchanged) => unchanged = true,
                            Some(v) => match v.to_text() {
                                Some(t) => out.push_str(&t),
                                None => return Value::Null,
                            },
                            None => return Value::Null,
                        },
                    }
                }
                if unchanged {
                    Value::Unchanged
                } else {
                    Value::Text(out)
                }
            }
            Function::CommitTime => Value::Text(iso8601(source.commit_time_micros)),
            Function::Xid => Value::Int(source.xid.into()),
        }
    }
}

/// Splits `a, 'b, c', d` into a column, a literal and a column.
fn parse_args(text: &str) -> Result<Vec<Arg>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            if args.is_empty() {
                return Ok(args);
            }
            return Err(format!(
                "an argument is missing after the last comma in {text:?}"
            ));
        }
        let arg = if chars.next_if_eq(&'\'').is_some() {
            let mut literal = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.next_if_eq(&'\'').is_some() => literal.push('\''),
                    Some('\'') => break,
                    Some(c) => literal.push(c),
                    None => return Err(format!("unterminated literal in {text:?}")),
                }
            }
            Arg::Literal(literal)
        } else {
            let mut column = String::new();
            while let Some(c) = chars.next_if(|&c| c != ',') {
                column.push(c);
            }
            let column = column.trim();
            if column.is_empty() || column.contains(['\'', '(', ')']) {
                return Err(format!("expected a column or a 'literal' in {text:?}"));
            }
            Arg::Column(column.to_owned())
        };
        args.push(arg);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(args),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected `{c}` in {text:?}")),
        }
    }
}

fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// `micros` since the Unix epoch as ISO-8601 UTC, written as Weir's JSON
/// envelope writes timestamps: the fraction without trailing zeros, none
/// when whole.
fn iso8601(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`: exact for every `i64` day count that fits a year).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

weir_plugin_sdk::export_transform!(Enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Transaction, wit};

    fn users() -> Table {
        Table::new(16384, "public", "users")
            .with_key("id", "int8")
            .with_column("email", "text")
            .with_column("first", "text")
            .with_column("last", "text")
            .with_column("avatar", "bytea")
    }

    fn orders() -> Table {
        Table::new(16390, "public", "orders").with_key("id", "int8")
    }

    /// The harness, the users table announced, and the one change the
    /// outcome delivers with its (declared) table.
    fn run(config: &[(&str, &str)], changes: Vec<wit::Change>) -> Vec<(wit::Change, Table)> {
        let mut h = TransformHarness::<Enrich>::new(config).unwrap();
        h.announce(&users());
        h.process(changes)
            .iter()
            .map(|outcome| {
                let changes = testing::emitted_changes(testing::emits(outcome));
                assert_eq!(changes.len(), 1, "{outcome:?}");
                let table = h.table(changes[0].table).expect("a declared table");
                (changes[0].clone(), table)
            })
            .collect()
    }

    fn after<'a>(delivered: &'a (wit::Change, Table), column: &str) -> &'a Value {
        let (change, table) = delivered;
        table
            .value(change.after.as_deref().expect("a new row"), column)
            .unwrap_or_else(|| panic!("no column {column}"))
    }

    fn before<'a>(delivered: &'a (wit::Change, Table), column: &str) -> &'a Value {
        let (change, table) = delivered;
        table
            .value(change.before.as_deref().expect("an old row"), column)
            .unwrap_or_else(|| panic!("no column {column}"))
    }

    const CONFIG: [(&str, &str); 7] = [
        ("add.email_lower", "lower(email)"),
        ("add.shout", "upper(first)"),
        ("add.domain", "email_domain(email)"),
        ("add.name", "concat(first, ' ', last, '''s')"),
        ("add.email_len", "length(email)"),
        ("add.email_hash", "sha256(email)"),
        ("add.avatar_len", "length(avatar)"),
    ];

    #[test]
    fn adds_computed_columns_through_a_declared_table() {
        let delivered = run(
            &CONFIG,
            vec![testing::insert(
                &users(),
                &[
                    ("id", 1.into()),
                    ("email", "Ada@Example.COM".into()),
                    ("first", "Ada".into()),
                    ("last", "Lovelace".into()),
                    ("avatar", Value::Bytes(vec![1, 2, 3])),
                ],
            )],
        );
        let (change, table) = &delivered[0];
        assert_eq!(change.op, Op::Insert);
        assert_ne!(table.id(), users().id());
        assert_eq!(table.qualified_name(), "public.users");
        let names: Vec<_> = table.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "email",
                "first",
                "last",
                "avatar",
                "email_lower",
                "shout",
                "domain",
                "name",
                "email_len",
                "email_hash",
                "avatar_len"
            ]
        );
        assert_eq!(table.columns()[9].type_name, "int8");
        assert_eq!(table.columns()[8].type_name, "text");
        let d = &delivered[0];
        assert_eq!(after(d, "email"), &Value::from("Ada@Example.COM"));
        assert_eq!(after(d, "email_lower"), &Value::from("ada@example.com"));
        assert_eq!(after(d, "shout"), &Value::from("ADA"));
        assert_eq!(after(d, "domain"), &Value::from("example.com"));
        assert_eq!(after(d, "name"), &Value::from("Ada Lovelace's"));
        assert_eq!(after(d, "email_len"), &Value::Int(15));
        assert_eq!(after(d, "avatar_len"), &Value::Int(3));
        // sha256("Ada@Example.COM"), as `printf %s Ada@Example.COM | sha256sum`.
        assert_eq!(
            after(d, "email_hash"),
            &Value::from("4f6c16a23bae84d4bdd2793ad23b9c9629f97075d9027c685f2bdb7900346eda")
        );
    }

    #[test]
    fn null_in_null_out_and_unchanged_stays_unchanged() {
        let delivered = run(
            &CONFIG,
            vec![testing::update(
                &users(),
                &[("id", 1.into())],
                &[
                    ("id", 1.into()),
                    ("email", "no-at-sign".into()),
                    ("first", "Ada".into()),
                    ("last", Value::Null),
                    ("avatar", Value::Unchanged),
                ],
            )],
        );
        let d = &delivered[0];
        assert_eq!(after(d, "domain"), &Value::Null);
        assert_eq!(after(d, "name"), &Value::Null);
        assert_eq!(after(d, "avatar_len"), &Value::Unchanged);
        assert_eq!(after(d, "shout"), &Value::from("ADA"));
        // The old row holds only the key: its computed columns are NULL.
        assert_eq!(before(d, "id"), &Value::Int(1));
        assert_eq!(before(d, "email_lower"), &Value::Null);
        assert_eq!(before(d, "email_len"), &Value::Null);
    }

    #[test]
    fn deletes_enrich_the_old_row_and_truncates_move_too() {
        let delivered = run(
            &[("add.domain", "email_domain(email)")],
            vec![
                testing::delete(
                    &users(),
                    &[("id", 1.into()), ("email", "x@Corp.example".into())],
                ),
                testing::truncate(&users()),
            ],
        );
        assert_eq!(
            before(&delivered[0], "domain"),
            &Value::from("corp.example")
        );
        assert_eq!(delivered[0].0.after, None);
        let (truncate, table) = &delivered[1];
        assert_eq!(truncate.op, Op::Truncate);
        assert_eq!(truncate.table, table.id());
        assert_ne!(truncate.table, users().id());
    }

    #[test]
    fn transaction_functions() {
        let txn = Transaction {
            xid: 4242,
            commit_lsn: 0x1_0000,
            // 2023-11-14T22:13:20.123456Z
            commit_time_micros: 1_700_000_000_123_456,
        };
        let changes =
            testing::in_transaction(&txn, vec![testing::insert(&users(), &[("id", 1.into())])]);
        let delivered = run(
            &[("add.at", "commit_time()"), ("add.tx", " xid( ) ")],
            changes,
        );
        assert_eq!(
            after(&delivered[0], "at"),
            &Value::from("2023-11-14T22:13:20.123456Z")
        );
        assert_eq!(after(&delivered[0], "tx"), &Value::Int(4242));
    }

    #[test]
    fn iso8601_in_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(iso8601(951_782_400_250_000), "2000-02-29T00:00:00.25Z");
        assert_eq!(
            iso8601(4_102_444_799_000_001),
            "2099-12-31T23:59:59.000001Z"
        );
    }

    #[test]
    fn only_configured_tables_and_no_messages() {
        let mut h =
            TransformHarness::<Enrich>::new(&[("add.x", "xid()"), ("tables", "public.users")])
                .unwrap();
        h.announce(&users());
        h.announce(&orders());
        assert_eq!(h.declared_tables().len(), 1);
        let out = h.process(vec![
            testing::insert(&orders(), &[("id", 1.into())]),
            testing::message("m", b""),
            testing::insert(&users(), &[("id", 1.into())]),
        ]);
        assert_eq!(out[0], wit::Outcome::Keep);
        assert_eq!(out[1], wit::Outcome::Keep);
        assert_eq!(testing::emitted_changes(testing::emits(&out[2])).len(), 1);
        assert_eq!(h.counter("enriched"), 1);
    }

    #[test]
    fn tables_missing_a_column_fail_with_a_clear_message() {
        let mut h = TransformHarness::<Enrich>::new(&[
            ("add.domain", "email_domain(mail)"),
            ("add.id", "xid()"),
        ])
        .unwrap();
        h.announce(&users());
        h.announce(&orders());
        let out = h.process(vec![
            testing::insert(&users(), &[("id", 1.into())]),
            testing::insert(&orders(), &[("id", 1.into())]),
        ]);
        let messages: Vec<_> = out
            .iter()
            .map(|o| match o {
                wit::Outcome::Fail(f) => f.message.as_str(),
                other => panic!("not a failure: {other:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            [
                "add.domain = email_domain(mail): table public.users has no column `mail`",
                "add.domain = email_domain(mail): table public.orders has no column `mail`",
            ]
        );
        // With the function fixed, the added column collides with `id`.
        let mut h = TransformHarness::<Enrich>::new(&[("add.id", "xid()")]).unwrap();
        h.announce(&orders());
        let out = h.process_one(testing::insert(&orders(), &[("id", 1.into())]));
        assert!(
            matches!(&out, wit::Outcome::Fail(f)
                if f.message == "add.id = xid(): table public.orders already has a column `id`"),
            "{out:?}"
        );
        assert!(h.declared_tables().is_empty());
    }

    #[test]
    fn parses_functions_and_refuses_bad_ones() {
        assert_eq!(
            Function::parse("concat( a ,'x, ''y''',b)"),
            Ok(Function::Concat(vec![
                Arg::Column("a".into()),
                Arg::Literal("x, 'y'".into()),
                Arg::Column("b".into()),
            ]))
        );
        for (text, error) in [
            ("lowercase(a)", "unknown function `lowercase`"),
            ("lower(a, b)", "lower() takes one column, got 2 arguments"),
            ("lower()", "lower() takes one column, got 0 arguments"),
            ("upper('a')", "upper() takes a column, not a literal"),
            ("xid(a)", "xid() takes no arguments"),
            ("concat()", "concat() takes at least one argument"),
            ("concat(a,)", "missing after the last comma"),
            ("concat('a)", "unterminated literal"),
            ("concat('a' b)", "unexpected `b`"),
            ("lower(a", "expected `)`"),
            ("email", "expected <function>(<arguments>)"),
        ] {
            let e = Function::parse(text).unwrap_err();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn rejects_bad_config() {
        for (config, error) in [
            (&[][..], "add at least one column"),
            (&[("tables", "public.users")][..], "add at least one column"),
            (
                &[("add.x", "nope(a)")][..],
                "config key `add.x`: unknown function `nope`",
            ),
            (&[("add.x", "xid()"), ("add.x", "xid()")][..], "given twice"),
            (
                &[("add.x", "xid()"), ("tables", "users")][..],
                "expected schema.table",
            ),
            (
                &[("add.x", "xid()"), ("columns", "a")][..],
                "unknown config key `columns`",
            ),
            (&[("add.", "xid()")][..], "name the column"),
        ] {
            let e = TransformHarness::<Enrich>::new(config).err().unwrap();
            assert!(e.contains(error), "{config:?}: {e}");
        }
    }
}
