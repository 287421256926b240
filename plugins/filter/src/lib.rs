//! A Weir transform that keeps the events of chosen tables whose row
//! matches a simple column predicate, and drops the rest.
//!
//! Configuration:
//!
//! * `tables`: comma-separated `schema.table` names to keep (`schema.*` for
//!   a whole schema). Empty or absent: every table.
//! * `where`: an optional predicate `column OP literal` with OP one of
//!   `=`, `!=` (or `<>`), `>`, `>=`, `<`, `<=`, for example
//!   `status = shipped`, `amount > 100`, `deleted != true`,
//!   `note = 'two words'`, `closed_at = null`. It is evaluated against the
//!   new row, or the old row of deletes. Numbers compare numerically,
//!   booleans as booleans, everything else as text.
//! * `messages`: `keep` (default) or `drop` logical decoding messages,
//!   which belong to no table.
//!
//! Events that do not have the predicate's column (truncates, tables without
//! it) and TOASTed values the UPDATE did not send are kept: the filter
//! cannot tell, and dropping data silently is the worse mistake.

use std::cmp::Ordering;

use weir_plugin_sdk::{Config, Event, Op, Outcome, TablePattern, Transform, Value};

/// Keeps events of the configured tables that match the predicate.
pub struct Filter {
    tables: Vec<TablePattern>,
    predicate: Option<Predicate>,
    keep_messages: bool,
}

impl Transform for Filter {
    fn init(config: &Config) -> Result<Self, String> {
        let tables = config
            .list("tables")
            .into_iter()
            .map(TablePattern::parse)
            .collect::<Result<_, _>>()?;
        let predicate = match config.get("where").map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(Predicate::parse(text)?),
        };
        let keep_messages = match config.get("messages").unwrap_or("keep") {
            "keep" => true,
            "drop" => false,
            other => {
                return Err(format!(
                    "config key `messages`: expected keep or drop, got {other:?}"
                ));
            }
        };
        Ok(Filter {
            tables,
            predicate,
            keep_messages,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if self.keeps(event) {
            Outcome::Keep
        } else {
            Outcome::Drop
        }
    }
}

impl Filter {
    fn keeps(&self, event: &Event<'_>) -> bool {
        if event.op() == Op::Message {
            return self.keep_messages;
        }
        let table_ok = self.tables.is_empty()
            || event
                .table()
                .is_some_and(|t| self.tables.iter().any(|n| n.matches(t.schema(), t.name())));
        if !table_ok {
            return false;
        }
        match &self.predicate {
            None => true,
            Some(p) => event.value(&p.column).is_none_or(|v| p.matches(v)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn holds(self, ordering: Option<Ordering>) -> bool {
        match (self, ordering) {
            // Incomparable values (NaN, a number against a word) are unequal.
            (CmpOp::Ne, None) => true,
            (_, None) => false,
            (CmpOp::Eq, Some(o)) => o.is_eq(),
            (CmpOp::Ne, Some(o)) => o.is_ne(),
            (CmpOp::Gt, Some(o)) => o.is_gt(),
            (CmpOp::Ge, Some(o)) => o.is_ge(),
            (CmpOp::Lt, Some(o)) => o.is_lt(),
            (CmpOp::Le, Some(o)) => o.is_le(),
        }
    }
}

/// `column OP literal`.
#[derive(Debug)]
struct Predicate {
    column: String,
    op: CmpOp,
    /// The literal's text, quotes removed.
    literal: String,
    /// An unquoted `null`.
    literal_is_null: bool,
    /// The literal as a number, when it is one.
    number: Option<f64>,
    integer: Option<i64>,
    boolean: Option<bool>,
}

impl Predicate {
    fn parse(text: &str) -> Result<Self, String> {
        let err = |why: &str| {
            format!(
                "config key `where`: {why} in {text:?} (expected `column OP value`, OP one of = != <> > >= < <=)"
            )
        };
        let at = text
            .find(['=', '!', '<', '>'])
            .ok_or_else(|| err("no operator"))?;
        let (column, rest) = text.split_at(at);
        let column = column.trim();
        if column.is_empty() || column.contains(char::is_whitespace) {
            return Err(err("bad column name"));
        }
        let (op, rest) = [
            ("!=", CmpOp::Ne),
            ("<>", CmpOp::Ne),
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("=", CmpOp::Eq),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .into_iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (op, r)))
        .ok_or_else(|| err("unknown operator"))?;
        let raw = rest.trim();
        if raw.is_empty() {
            return Err(err("no value"));
        }
        let quoted = raw.len() >= 2
            && ((raw.starts_with('\'') && raw.ends_with('\''))
                || (raw.starts_with('"') && raw.ends_with('"')));
        let literal = if quoted { &raw[1..raw.len() - 1] } else { raw };
        let literal_is_null = !quoted && literal.eq_ignore_ascii_case("null");
        Ok(Predicate {
            column: column.to_owned(),
            op,
            literal: literal.to_owned(),
            literal_is_null,
            number: literal.parse().ok(),
            integer: literal.parse().ok(),
            boolean: match literal.to_ascii_lowercase().as_str() {
                "true" | "t" => Some(true),
                "false" | "f" => Some(false),
                _ => None,
            },
        })
    }

    fn matches(&self, value: &Value) -> bool {
        let ordering = match value {
            // The value was not sent: we cannot tell, so keep the event.
            Value::Unchanged => return true,
            Value::Null => {
                return match self.op {
                    CmpOp::Eq => self.literal_is_null,
                    CmpOp::Ne => !self.literal_is_null,
                    _ => false,
                };
            }
            _ if self.literal_is_null => return self.op == CmpOp::Ne,
            Value::Boolean(b) => self.boolean.map(|l| b.cmp(&l)),
            Value::Int(i) | Value::Time(i) | Value::Timestamp(i) | Value::Timestamptz(i) => {
                self.compare_int(*i)
            }
            Value::Date(d) => self.compare_int(i64::from(*d)),
            Value::Float(f) => self.number.and_then(|l| f.partial_cmp(&l)),
            Value::Numeric(s) => match (s.parse::<f64>().ok(), self.number) {
                (Some(n), Some(l)) => n.partial_cmp(&l),
                _ => Some(s.as_str().cmp(&self.literal)),
            },
            Value::Text(s) | Value::Uuid(s) | Value::Json(s) | Value::Other(s) => {
                Some(s.as_str().cmp(&self.literal))
            }
            Value::Bytes(b) => Some(b.as_slice().cmp(self.literal.as_bytes())),
        };
        self.op.holds(ordering)
    }

    fn compare_int(&self, i: i64) -> Option<Ordering> {
        match (self.integer, self.number) {
            (Some(l), _) => Some(i.cmp(&l)),
            (None, Some(l)) => (i as f64).partial_cmp(&l),
            (None, None) => None,
        }
    }
}

weir_plugin_sdk::export_transform!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    fn orders() -> Table {
        Table::new(1, "public", "orders")
            .with_key("id", "int8")
            .with_column("status", "text")
            .with_column("amount", "numeric")
            .with_column("deleted", "bool")
    }

    fn users() -> Table {
        Table::new(2, "crm", "users").with_key("id", "int8")
    }

    fn harness(config: &[(&str, &str)]) -> TransformHarness<Filter> {
        let mut h = TransformHarness::new(config).unwrap();
        h.announce(&orders());
        h.announce(&users());
        h
    }

    fn order(status: &str, amount: &str, deleted: bool) -> wit::Change {
        testing::insert(
            &orders(),
            &[
                ("id", 1.into()),
                ("status", status.into()),
                ("amount", Value::Numeric(amount.into())),
                ("deleted", deleted.into()),
            ],
        )
    }

    fn kept(outcomes: Vec<wit::Outcome>) -> Vec<bool> {
        outcomes
            .into_iter()
            .map(|o| match o {
                wit::Outcome::Keep => true,
                wit::Outcome::Drop => false,
                other => panic!("unexpected outcome {other:?}"),
            })
            .collect()
    }

    #[test]
    fn keeps_only_listed_tables() {
        let mut h = harness(&[("tables", "public.orders")]);
        let out = h.process(vec![
            order("new", "1", false),
            testing::insert(&users(), &[("id", 1.into())]),
            testing::truncate(&users()),
            testing::message("m", b""),
        ]);
        assert_eq!(kept(out), [true, false, false, true]);

        let mut h = harness(&[("tables", "crm.*"), ("messages", "drop")]);
        let out = h.process(vec![
            order("new", "1", false),
            testing::insert(&users(), &[("id", 1.into())]),
            testing::message("m", b""),
        ]);
        assert_eq!(kept(out), [false, true, false]);
    }

    #[test]
    fn text_predicate() {
        let mut h = harness(&[("where", "status = shipped")]);
        let out = h.process(vec![
            order("shipped", "1", false),
            order("new", "1", false),
            testing::truncate(&orders()),
            testing::insert(&users(), &[("id", 1.into())]),
            testing::delete(&orders(), &[("id", 1.into())]),
        ]);
        // Truncates and tables without `status` are kept; the delete's old
        // row has a NULL status (key-only identity), which is not `shipped`.
        assert_eq!(kept(out), [true, false, true, true, false]);
    }

    #[test]
    fn numeric_and_boolean_predicates() {
        let mut h = harness(&[("where", "amount > 100")]);
        let out = h.process(vec![
            order("a", "100", false),
            order("a", "100.01", false),
            order("a", "NaN", false),
        ]);
        assert_eq!(kept(out), [false, true, false]);

        let mut h = harness(&[("where", "deleted != true")]);
        let out = h.process(vec![order("a", "1", true), order("a", "1", false)]);
        assert_eq!(kept(out), [false, true]);

        let mut h = harness(&[("where", "id <= 1")]);
        let out = h.process(vec![
            order("a", "1", true),
            testing::insert(&users(), &[("id", 2.into())]),
        ]);
        assert_eq!(kept(out), [true, false]);
    }

    #[test]
    fn null_quotes_and_unchanged() {
        let mut h = harness(&[("where", "status = null")]);
        let null_status = testing::insert(&orders(), &[("id", 1.into())]);
        assert_eq!(
            kept(h.process(vec![null_status.clone(), order("x", "1", false)])),
            [true, false]
        );

        let mut h = harness(&[("where", "status != 'two words'")]);
        assert_eq!(
            kept(h.process(vec![order("two words", "1", false), null_status])),
            [false, true]
        );

        let mut h = harness(&[("where", "status = shipped")]);
        let toasted = testing::update(
            &orders(),
            &[("id", 1.into())],
            &[("id", 1.into()), ("status", Value::Unchanged)],
        );
        assert_eq!(kept(h.process(vec![toasted])), [true]);
    }

    #[test]
    fn rejects_bad_config() {
        for (key, value) in [
            ("where", "status shipped"),
            ("where", "= shipped"),
            ("where", "status ="),
            ("tables", "orders"),
            ("messages", "maybe"),
        ] {
            let err = TransformHarness::<Filter>::new(&[(key, value)])
                .err()
                .unwrap();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
    }
}
