//! Table patterns: the one grammar configuration uses to name tables
//! (routes, plugin filters).
//!
//! ```text
//! pattern  = part [ "." part ]       one part: a table in `public`
//! part     = piece { piece }
//! piece    = bare | quoted
//! bare     = { lower-case letter | 0-9 | _ | $ | * }   `*`: any run of characters
//! quoted   = '"' { any but '"' | '""' } '"'   taken as written, `*` too
//! ```
//!
//! Bare names follow Postgres: an unquoted name is lower case, so a bare
//! capital is refused instead of silently matching nothing; a name with
//! capitals, dots or other characters is written in double quotes
//! (`"Sales"."Q1.orders"`), and pieces can be joined (`"Order"*`). A lone
//! `*` matches every table of every schema.

use std::fmt;
use std::str::FromStr;

/// A pattern matching tables by schema and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePattern {
    text: String,
    schema: Vec<Piece>,
    table: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// Any run of characters, also none.
    Any,
}

/// Why a table pattern does not parse; says where and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} is not a table pattern: {reason}")]
pub struct TablePatternError {
    pattern: String,
    reason: String,
}

impl TablePattern {
    /// Parses `text` (see the module documentation for the grammar).
    pub fn parse(text: &str) -> Result<TablePattern, TablePatternError> {
        let fail = |reason: String| TablePatternError {
            pattern: text.to_owned(),
            reason,
        };
        let mut parts: Vec<Vec<Piece>> = vec![Vec::new()];
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let part = parts.last_mut().expect("never empty");
            match c {
                '.' => {
                    if part.is_empty() {
                        return Err(fail(format!("nothing before the dot at byte {at}")));
                    }
                    if parts.len() == 2 {
                        return Err(fail(format!(
                            "a second dot at byte {at}; write schema.table, and quote a name that holds a dot (\"my.table\")"
                        )));
                    }
                    parts.push(Vec::new());
                }
                '"' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '"')) if chars.next_if(|&(_, c)| c == '"').is_some() => {
                                name.push('"')
                            }
                            Some((_, '"')) => break,
                            Some((_, c)) => name.push(c),
                            None => {
                                return Err(fail(format!(
                                    "the quote at byte {at} is never closed"
                                )));
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(fail(format!("an empty quoted name at byte {at}")));
                    }
                    push_literal(part, &name);
                }
                '*' => {
                    if part.last() != Some(&Piece::Any) {
                        part.push(Piece::Any);
                    }
                }
                c if (c.is_alphabetic() && !c.is_uppercase())
                    || c.is_ascii_digit()
                    || c == '_'
                    || c == '$' =>
                {
                    push_literal(part, c.encode_utf8(&mut [0; 4]));
                }
                c if c.is_uppercase() => {
                    return Err(fail(format!(
                        "{c:?} at byte {at} is a capital, and an unquoted name is lower case in Postgres; quote the name to match its capitals (\"{c}...\")"
                    )));
                }
                c => {
                    return Err(fail(format!(
                        "{c:?} at byte {at} cannot appear in an unquoted name; quote the name (\"...\")"
                    )));
                }
            }
        }
        let last = parts.last().expect("never empty");
        if last.is_empty() {
            return Err(fail(if parts.len() == 2 {
                "nothing after the dot; write schema.table (schema.* for every table of a schema)"
                    .into()
            } else {
                "it is empty; write schema.table, or table for one in public".into()
            }));
        }
        let (schema, table) = match (parts.pop(), parts.pop()) {
            (Some(table), Some(schema)) => (schema, table),
            (Some(table), None) if table == [Piece::Any] => (vec![Piece::Any], table),
            (Some(table), None) => (vec![Piece::Literal("public".into())], table),
            (None, _) => unreachable!("never empty"),
        };
        Ok(TablePattern {
            text: text.to_owned(),
            schema,
            table,
        })
    }

    /// Whether the table `schema.table` matches.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        matches(&self.schema, schema) && matches(&self.table, table)
    }

    /// The one table the pattern names, when it has no wildcard.
    pub fn exact(&self) -> Option<(&str, &str)> {
        match (&self.schema[..], &self.table[..]) {
            ([Piece::Literal(s)], [Piece::Literal(t)]) => Some((s, t)),
            _ => None,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn push_literal(part: &mut Vec<Piece>, s: &str) {
    match part.last_mut() {
        Some(Piece::Literal(l)) => l.push_str(s),
        _ => part.push(Piece::Literal(s.to_owned())),
    }
}

fn matches(pieces: &[Piece], name: &str) -> bool {
    match pieces.split_first() {
        None => name.is_empty(),
        Some((Piece::Literal(l), rest)) => name
            .strip_prefix(l.as_str())
            .is_some_and(|r| matches(rest, r)),
        Some((Piece::Any, [])) => true,
        Some((Piece::Any, rest)) => name
            .char_indices()
            .map(|(i, _)| i)
            .chain([name.len()])
            .any(|i| matches(rest, &name[i..])),
    }
}

impl FromStr for TablePattern {
    type Err = TablePatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TablePattern::parse(s)
    }
}

/// Configuration names tables as strings; a bad one fails with the
/// parse error, which the configuration loader places by key and line.
impl<'de> serde::Deserialize<'de> for TablePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        TablePattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TablePattern {
        TablePattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(s: &str) -> String {
        TablePattern::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn schema_and_table() {
        let orders = p("sales.orders");
        assert!(orders.matches("sales", "orders"));
        assert!(!orders.matches("public", "orders"));
        assert!(!orders.matches("sales", "orders2"));
        assert_eq!(orders.exact(), Some(("sales", "orders")));
        assert_eq!(orders.to_string(), "sales.orders");
    }

    #[test]
    fn a_bare_table_is_in_public() {
        let orders = p("orders");
        assert!(orders.matches("public", "orders"));
        assert!(!orders.matches("sales", "orders"));
        assert_eq!(orders.exact(), Some(("public", "orders")));
    }

    #[test]
    fn wildcards_in_either_part() {
        assert!(p("public.*").matches("public", "anything"));
        assert!(!p("public.*").matches("sales", "anything"));
        assert!(p("*.orders").matches("sales", "orders"));
        assert!(!p("*.orders").matches("sales", "orders_old"));
        let mid = p("s*.ord*s");
        assert!(mid.matches("sales", "orders"));
        assert!(mid.matches("s", "ords"));
        assert!(!mid.matches("sales", "order"));
        assert!(p("order_*").matches("public", "order_2024"));
        assert!(!p("order_*").matches("sales", "order_2024"));
        assert_eq!(p("public.*").exact(), None);
    }

    #[test]
    fn a_lone_star_matches_every_schema() {
        assert!(p("*").matches("public", "t"));
        assert!(p("*").matches("sales", "t"));
        assert!(p("*.*").matches("sales", "t"));
    }

    #[test]
    fn quoted_names_hold_capitals_dots_and_stars_as_written() {
        let q = p("\"Sales\".\"Q1.orders\"");
        assert!(q.matches("Sales", "Q1.orders"));
        assert!(!q.matches("sales", "q1.orders"));
        assert_eq!(q.exact(), Some(("Sales", "Q1.orders")));
        // A quoted star is a star, not a wildcard.
        assert!(p("\"a*\"").matches("public", "a*"));
        assert!(!p("\"a*\"").matches("public", "ab"));
        // A doubled quote is a quote.
        assert!(p("\"say \"\"hi\"\"\"").matches("public", "say \"hi\""));
        // Quoted and bare pieces join.
        let joined = p("\"Order\"*");
        assert!(joined.matches("public", "Order_2024"));
        assert!(!joined.matches("public", "order_2024"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        assert!(err("").contains("empty"), "{}", err(""));
        assert!(err("a.b.c").contains("second dot"), "{}", err("a.b.c"));
        assert!(err(".t").contains("nothing before the dot"));
        assert!(err("s.").contains("nothing after the dot"));
        assert!(err("\"open").contains("never closed"));
        assert!(err("\"\"").contains("empty quoted name"));
        let capital = err("public.Orders");
        assert!(
            capital.contains("capital") && capital.contains("quote"),
            "{capital}"
        );
        assert!(
            err("my-table").contains("'-' at byte 2"),
            "{}",
            err("my-table")
        );
        assert!(err("a b").contains("quote the name"));
        assert!(err("x.y.z").starts_with("\"x.y.z\" is not a table pattern"));
    }
}
