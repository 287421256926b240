//! `{{name}}`: a Weir transform.
//!
//! It normalises one text column of every table that has it (default
//! `email`): surrounding spaces are trimmed and letters lower-cased, so
//! `" Ada@Example.COM"` arrives as `"ada@example.com"`. NULLs, TOASTed
//! values an UPDATE did not send, and events without the column are
//! delivered as they are. The counter `normalised` counts changed values.
//!
//! Configuration (the `config` table of the plugin in weir.toml):
//!
//! * `column`: the column to normalise; default `email`.
//!
//! Replace this with your own logic: `process` sees one event at a time,
//! with its columns by name, and answers what becomes of it.

use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value, count};

/// Lower-cases and trims one text column.
pub struct Normalise {
    column: String,
}

impl Transform for Normalise {
    fn init(config: &Config) -> Result<Self, String> {
        let column = config.get("column").unwrap_or("email").trim();
        if column.is_empty() {
            return Err("config key `column`: name a column".into());
        }
        Ok(Normalise {
            column: column.to_owned(),
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        let Some(Value::Text(text)) = event.after(&self.column) else {
            return Outcome::Keep;
        };
        let normalised = text.trim().to_lowercase();
        // Only a real change is written back: an untouched event stays a
        // plain keep, the cheapest answer to deliver.
        if normalised != *text {
            count("normalised", 1);
            if let Err(e) = event.set(&self.column, normalised) {
                return Outcome::fail(e);
            }
        }
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(Normalise);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    fn users() -> Table {
        Table::new(16384, "public", "users")
            .with_key("id", "int8")
            .with_column("email", "text")
    }

    #[test]
    fn normalises_the_column_and_leaves_the_rest() {
        let mut h = TransformHarness::<Normalise>::new(&[]).unwrap();
        h.announce(&users());
        let out = h.process(vec![
            testing::insert(
                &users(),
                &[("id", 1.into()), ("email", " Ada@Example.COM ".into())],
            ),
            testing::insert(&users(), &[("id", 2.into()), ("email", "bob@x.org".into())]),
            testing::insert(&users(), &[("id", 3.into())]),
            testing::delete(&users(), &[("id", 1.into())]),
        ]);
        let changed = testing::emitted_changes(testing::emits(&out[0]));
        let after = changed[0].after.as_deref().unwrap();
        assert_eq!(
            users().value(after, "email"),
            Some(&Value::from("ada@example.com"))
        );
        assert_eq!(
            &out[1..],
            [wit::Outcome::Keep, wit::Outcome::Keep, wit::Outcome::Keep]
        );
        assert_eq!(h.counter("normalised"), 1);
    }

    #[test]
    fn the_column_is_configurable() {
        let contacts = Table::new(16390, "crm", "contacts").with_column("mail", "text");
        let mut h = TransformHarness::<Normalise>::new(&[("column", "mail")]).unwrap();
        h.announce(&contacts);
        let out = h.process_one(testing::insert(&contacts, &[("mail", "X@Y.Z".into())]));
        let changed = testing::emitted_changes(testing::emits(&out));
        assert_eq!(changed[0].after, Some(vec![Value::from("x@y.z")]));
        assert!(TransformHarness::<Normalise>::new(&[("column", " ")]).is_err());
    }
}
