//! A Weir transform that hides the values of chosen columns, in both the
//! new and the old row, so sensitive data never reaches a sink.
//!
//! Configuration:
//!
//! * `columns` (required): comma-separated column names, masked in every
//!   table that has them.
//! * `mode`: `hash` (default) replaces a value with the hex SHA-256 of its
//!   text form (raw bytes for `bytea`), so equal values still join and
//!   group; `redact` replaces text with `***` and any other value with NULL,
//!   so the column keeps a type its sink can store.
//! * `salt`: with `hash`, a secret prefixed to every value before hashing,
//!   so hashes of guessable values (emails, phone numbers) cannot be looked
//!   up in a precomputed table.
//!
//! NULLs stay NULL, and TOASTed values the UPDATE did not send stay
//! unchanged: there is nothing to hide.

use sha2::{Digest, Sha256};
use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};

/// What replaces a masked value.
enum Mode {
    Hash { salt: String },
    Redact,
}

/// Masks the configured columns.
pub struct Mask {
    columns: Vec<String>,
    mode: Mode,
}

impl Transform for Mask {
    fn init(config: &Config) -> Result<Self, String> {
        let columns: Vec<String> = config
            .list("columns")
            .into_iter()
            .map(str::to_owned)
            .collect();
        if columns.is_empty() {
            return Err("config key `columns`: name at least one column to mask".into());
        }
        let salt = config.get("salt");
        let mode = match config.get("mode").unwrap_or("hash") {
            "hash" => Mode::Hash {
                salt: salt.unwrap_or_default().to_owned(),
            },
            "redact" if salt.is_some() => {
                return Err("config key `salt` only applies to mode = hash".into());
            }
            "redact" => Mode::Redact,
            other => {
                return Err(format!(
                    "config key `mode`: expected hash or redact, got {other:?}"
                ));
            }
        };
        Ok(Mask { columns, mode })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        for column in &self.columns {
            // Look before borrowing mutably: an event with nothing to hide
            // stays a plain `keep`, the cheapest outcome to deliver.
            if event.after(column).is_some_and(hides_something)
                && let Some(value) = event.after_mut(column)
            {
                *value = self.mask(value);
            }
            if event.before(column).is_some_and(hides_something)
                && let Some(value) = event.before_mut(column)
            {
                *value = self.mask(value);
            }
        }
        Outcome::Keep
    }
}

fn hides_something(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Unchanged)
}

impl Mask {
    fn mask(&self, value: &Value) -> Value {
        match &self.mode {
            Mode::Redact => match value {
                Value::Text(_) => Value::Text("***".into()),
                _ => Value::Null,
            },
            Mode::Hash { salt } => {
                let mut hasher = Sha256::new();
                hasher.update(salt.as_bytes());
                match value {
                    Value::Bytes(b) => hasher.update(b),
                    other => hasher.update(other.to_text().unwrap_or_default().as_bytes()),
                }
                Value::Text(hex(&hasher.finalize()))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

weir_plugin_sdk::export_transform!(Mask);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    fn users() -> Table {
        Table::new(1, "public", "users")
            .with_key("id", "int8")
            .with_column("email", "text")
            .with_column("pin", "int4")
    }

    fn run(config: &[(&str, &str)], change: wit::Change) -> wit::Outcome {
        let mut h = TransformHarness::<Mask>::new(config).unwrap();
        h.announce(&users());
        h.process_one(change)
    }

    fn only_change(outcome: &wit::Outcome) -> &wit::Change {
        let changes = testing::emitted_changes(testing::emits(outcome));
        assert_eq!(changes.len(), 1, "{outcome:?}");
        changes[0]
    }

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hashes_before_and_after() {
        let t = users();
        let out = run(
            &[("columns", "email, pin")],
            testing::update(
                &t,
                &[("id", 1.into()), ("email", "abc".into())],
                &[
                    ("id", 1.into()),
                    ("email", "abc".into()),
                    ("pin", 1234.into()),
                ],
            ),
        );
        let change = only_change(&out);
        let after = change.after.as_deref().unwrap();
        let before = change.before.as_deref().unwrap();
        assert_eq!(
            t.value(after, "email"),
            Some(&Value::Text(ABC_SHA256.into()))
        );
        assert_eq!(
            t.value(before, "email"),
            Some(&Value::Text(ABC_SHA256.into()))
        );
        assert_eq!(t.value(after, "id"), Some(&Value::Int(1)));
        let Some(Value::Text(pin)) = t.value(after, "pin") else {
            panic!("pin not hashed");
        };
        assert_eq!(pin.len(), 64);
        // The old row had no pin (NULL): still NULL.
        assert_eq!(t.value(before, "pin"), Some(&Value::Null));
    }

    #[test]
    fn salt_changes_the_hash() {
        let t = users();
        let insert = testing::insert(&t, &[("email", "abc".into())]);
        let out = run(&[("columns", "email"), ("salt", "pepper")], insert);
        let after = only_change(&out).after.as_deref().unwrap();
        let Some(Value::Text(h)) = t.value(after, "email") else {
            panic!("not hashed");
        };
        assert_eq!(h.len(), 64);
        assert_ne!(h, ABC_SHA256);
    }

    #[test]
    fn redacts_text_and_nulls_the_rest() {
        let t = users();
        let out = run(
            &[("columns", "email,pin"), ("mode", "redact")],
            testing::delete(
                &t,
                &[("id", 1.into()), ("email", "a@b".into()), ("pin", 7.into())],
            ),
        );
        let before = only_change(&out).before.as_deref().unwrap();
        assert_eq!(t.value(before, "email"), Some(&Value::Text("***".into())));
        assert_eq!(t.value(before, "pin"), Some(&Value::Null));
    }

    #[test]
    fn nothing_to_hide_is_a_plain_keep() {
        let t = users();
        let cases = [
            testing::insert(&t, &[("id", 1.into())]),
            testing::truncate(&t),
            testing::message("m", b"secret"),
            testing::update(
                &t,
                &[("id", 1.into())],
                &[("id", 1.into()), ("email", Value::Unchanged)],
            ),
        ];
        for change in cases {
            assert_eq!(run(&[("columns", "email")], change), wit::Outcome::Keep);
        }
    }

    #[test]
    fn rejects_bad_config() {
        for config in [
            &[][..],
            &[("columns", " , ")][..],
            &[("columns", "a"), ("mode", "blur")][..],
            &[("columns", "a"), ("mode", "redact"), ("salt", "x")][..],
        ] {
            assert!(TransformHarness::<Mask>::new(config).is_err(), "{config:?}");
        }
    }
}
