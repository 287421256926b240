//! One change seen through its table: columns by name.

use crate::Table;
use crate::wit::{Change, Destination, Emit, LogicalMessage, Op, Payload, Source, Value};

/// A change as a plugin sees it: the row values reachable by column name.
///
/// Changes made through [`set`](Event::set), [`after_mut`](Event::after_mut)
/// and friends are delivered when the plugin answers [`Outcome::Keep`] or
/// [`Outcome::Route`].
#[derive(Clone, Debug)]
pub struct Event<'t> {
    change: Change,
    table: Option<&'t Table>,
    modified: bool,
}

/// Why [`Event::set`] could not set a value: there is no such row.
fn no_row(which: &str, op: Op) -> String {
    format!("a {op:?} event has no {which} row")
}

impl<'t> Event<'t> {
    /// Sees `change` through `table`, the table its `table` id refers to
    /// (`None` for messages).
    pub fn new(change: Change, table: Option<&'t Table>) -> Self {
        Event {
            change,
            table,
            modified: false,
        }
    }

    /// What happened.
    pub fn op(&self) -> Op {
        self.change.op
    }

    /// The table, `None` for logical messages.
    pub fn table(&self) -> Option<&'t Table> {
        self.table
    }

    /// The table's schema (namespace) name, such as `public`.
    pub fn schema(&self) -> Option<&'t str> {
        self.table.map(Table::schema)
    }

    /// The table's name.
    pub fn table_name(&self) -> Option<&'t str> {
        self.table.map(Table::name)
    }

    /// Whether this is a change to the table `schema.name`.
    pub fn is_table(&self, qualified: &str) -> bool {
        self.table.is_some_and(|t| t.is(qualified))
    }

    /// Where in the WAL the change comes from.
    pub fn source(&self) -> &Source {
        &self.change.source
    }

    /// The message of an [`Op::Message`] event.
    pub fn message(&self) -> Option<&LogicalMessage> {
        self.change.message.as_ref()
    }

    /// The new row's value of `column`: `None` when there is no new row
    /// (deletes, truncates, messages) or no such column.
    pub fn after(&self, column: &str) -> Option<&Value> {
        self.table?.value(self.change.after.as_deref()?, column)
    }

    /// The old row's value of `column`. Which columns the old row holds
    /// depends on the table's REPLICA IDENTITY (usually just the key).
    pub fn before(&self, column: &str) -> Option<&Value> {
        self.table?.value(self.change.before.as_deref()?, column)
    }

    /// The value of `column` in the new row, or in the old row when there is
    /// no new one (deletes): the row the event is about.
    pub fn value(&self, column: &str) -> Option<&Value> {
        if self.change.after.is_some() {
            self.after(column)
        } else {
            self.before(column)
        }
    }

    /// The new row's value of `column`, to change in place.
    pub fn after_mut(&mut self, column: &str) -> Option<&mut Value> {
        let index = self.table?.column_index(column)?;
        let value = self.change.after.as_mut()?.get_mut(index)?;
        self.modified = true;
        Some(value)
    }

    /// The old row's value of `column`, to change in place.
    pub fn before_mut(&mut self, column: &str) -> Option<&mut Value> {
        let index = self.table?.column_index(column)?;
        let value = self.change.before.as_mut()?.get_mut(index)?;
        self.modified = true;
        Some(value)
    }

    /// Sets `column` of the new row.
    pub fn set(&mut self, column: &str, value: impl Into<Value>) -> Result<(), String> {
        let op = self.op();
        if self.change.after.is_none() {
            return Err(no_row("new", op));
        }
        let table = self.table;
        let slot = self
            .after_mut(column)
            .ok_or_else(|| no_column(table, column))?;
        *slot = value.into();
        Ok(())
    }

    /// Sets `column` of the old row.
    pub fn set_before(&mut self, column: &str, value: impl Into<Value>) -> Result<(), String> {
        let op = self.op();
        if self.change.before.is_none() {
            return Err(no_row("old", op));
        }
        let table = self.table;
        let slot = self
            .before_mut(column)
            .ok_or_else(|| no_column(table, column))?;
        *slot = value.into();
        Ok(())
    }

    /// The new row as `(column, value)` pairs; empty without a new row.
    pub fn after_columns(&self) -> impl Iterator<Item = (&str, &Value)> {
        row_columns(self.table, self.change.after.as_deref())
    }

    /// The old row as `(column, value)` pairs; empty without an old row.
    pub fn before_columns(&self) -> impl Iterator<Item = (&str, &Value)> {
        row_columns(self.table, self.change.before.as_deref())
    }

    /// Whether the plugin changed any value.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The change, rows positional, as the contract carries it.
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// Takes the (possibly modified) change out of the view.
    pub fn into_change(self) -> Change {
        self.change
    }

    /// A copy of the (possibly modified) change to deliver to
    /// `destination`, or where the router decides when `None`.
    pub fn to_emit(&self, destination: Option<Destination>) -> Emit {
        Emit {
            destination,
            payload: Payload::Change(self.change.clone()),
        }
    }

    /// The (possibly modified) change, to deliver where the router decides;
    /// add a destination with [`Emit::to`].
    pub fn into_emit(self) -> Emit {
        Emit::change(self.change)
    }

    /// A copy of the (possibly modified) change as a change of `table`,
    /// usually a table the plugin declared with extra columns
    /// ([`Table::declare`]); deliver it with [`into_emit`](Event::into_emit).
    ///
    /// Each row is rebuilt in `table`'s column order, values taken by
    /// column name; columns this event's table does not have are NULL
    /// until set with [`set`](Event::set) or [`set_before`](Event::set_before).
    /// Op, source and message are kept.
    pub fn to_table<'d>(&self, table: &'d Table) -> Event<'d> {
        let from = self.table;
        let rebuild = |row: &Option<Vec<Value>>| {
            let row = row.as_deref()?;
            Some(
                table
                    .columns()
                    .iter()
                    .map(|c| {
                        from.and_then(|f| f.value(row, &c.name))
                            .cloned()
                            .unwrap_or(Value::Null)
                    })
                    .collect(),
            )
        };
        let change = Change {
            op: self.change.op,
            table: table.id(),
            before: rebuild(&self.change.before),
            after: rebuild(&self.change.after),
            message: self.change.message.clone(),
            source: self.change.source,
        };
        Event {
            change,
            table: Some(table),
            modified: true,
        }
    }
}

fn no_column(table: Option<&Table>, column: &str) -> String {
    match table {
        Some(t) => format!("table {}.{} has no column `{column}`", t.schema(), t.name()),
        None => format!("the event has no table, so no column `{column}`"),
    }
}

fn row_columns<'a>(
    table: Option<&'a Table>,
    row: Option<&'a [Value]>,
) -> impl Iterator<Item = (&'a str, &'a Value)> {
    let columns = table.map(Table::columns).unwrap_or_default();
    columns
        .iter()
        .map(|c| c.name.as_str())
        .zip(row.unwrap_or_default())
}

/// What a transform answers for one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Deliver the event, with any changes made to it, where the router
    /// sends it.
    Keep,
    /// Deliver nothing for this event.
    Drop,
    /// Deliver the event, with any changes made to it, to each of these
    /// destinations (none: deliver nowhere).
    Route(Vec<Destination>),
    /// Deliver these instead of the event (zero or more).
    Emit(Vec<Emit>),
    /// The event cannot be processed; the pipeline's error policy decides
    /// what happens (dead-letter, stop, retry).
    Fail {
        /// What went wrong, for the operator.
        message: String,
        /// Whether the same event might succeed later.
        retryable: bool,
    },
}

impl Outcome {
    /// Deliver the event, with any changes made to it, to `destination`
    /// only: a sink name (`"audit"`) or a [`Destination`] with a topic.
    pub fn route_to(destination: impl Into<Destination>) -> Self {
        Outcome::Route(vec![destination.into()])
    }

    /// A failure that retrying will not fix.
    pub fn fail(message: impl Into<String>) -> Self {
        Outcome::Fail {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that may go away if the event is tried again later.
    pub fn retry_later(message: impl Into<String>) -> Self {
        Outcome::Fail {
            message: message.into(),
            retryable: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn orders() -> Table {
        Table::new(7, "public", "orders")
            .with_key("id", "int8")
            .with_column("status", "text")
    }

    #[test]
    fn reads_and_writes_by_name() {
        let table = orders();
        let change = testing::update(
            &table,
            &[("id", 1.into())],
            &[("id", 1.into()), ("status", "new".into())],
        );
        let mut event = Event::new(change, Some(&table));
        assert_eq!(event.op(), Op::Update);
        assert_eq!(event.after("status"), Some(&Value::Text("new".into())));
        assert_eq!(event.before("id"), Some(&Value::Int(1)));
        assert_eq!(event.before("status"), Some(&Value::Null));
        assert_eq!(event.after("nope"), None);
        assert!(!event.is_modified());
        event.set("status", "paid").unwrap();
        assert!(event.is_modified());
        assert_eq!(event.value("status"), Some(&Value::Text("paid".into())));
        assert!(
            event
                .set("nope", 1)
                .unwrap_err()
                .contains("no column `nope`")
        );
        let names: Vec<_> = event.after_columns().map(|(n, _)| n).collect();
        assert_eq!(names, ["id", "status"]);
    }

    #[test]
    fn deletes_have_no_new_row() {
        let table = orders();
        let mut event = Event::new(testing::delete(&table, &[("id", 9.into())]), Some(&table));
        assert_eq!(event.after("id"), None);
        assert_eq!(event.value("id"), Some(&Value::Int(9)));
        assert!(event.set("status", "x").unwrap_err().contains("no new row"));
        assert_eq!(event.after_columns().count(), 0);
    }

    #[test]
    fn to_table_moves_values_by_name() {
        let table = orders();
        let mut event = Event::new(
            testing::update(
                &table,
                &[("id", 1.into())],
                &[("id", 1.into()), ("status", "new".into())],
            ),
            Some(&table),
        );
        event.set("status", "paid").unwrap();
        // Reordered, without `id`, with a new column.
        let other = Table::new(99, "public", "orders")
            .with_column("note", "text")
            .with_column("status", "text");
        let mut moved = event.to_table(&other);
        assert_eq!(moved.change().table, 99);
        assert_eq!(moved.op(), Op::Update);
        assert_eq!(moved.source(), event.source());
        assert_eq!(moved.change().after, Some(vec![Value::Null, "paid".into()]));
        assert_eq!(moved.change().before, Some(vec![Value::Null, Value::Null]));
        moved.set("note", "by name").unwrap();
        assert_eq!(moved.after("note"), Some(&"by name".into()));
        // The original is untouched.
        assert_eq!(event.after("id"), Some(&Value::Int(1)));

        let message = Event::new(testing::message("p", b"x"), None).to_table(&other);
        assert_eq!(message.change().after, None);
        assert_eq!(message.message().map(|m| m.prefix.as_str()), Some("p"));
        assert_eq!(
            Outcome::route_to("audit"),
            Outcome::Route(vec![Destination::sink("audit")])
        );
    }
}
