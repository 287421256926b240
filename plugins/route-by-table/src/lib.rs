//! A Weir router that sends each table's events to the sinks configured for
//! it.
//!
//! Configuration (sink names are those of weir.toml; several may be given,
//! comma-separated, and the event goes to each):
//!
//! * `route.<schema>.<table>`: sinks for one table, e.g.
//!   `route.public.orders = kafka_main`.
//! * `route.<schema>.*`: sinks for the other tables of a schema.
//! * `route.*`: sinks for every other table.
//! * `default`: sinks for events no route matches, and for logical
//!   messages. Without it such events go nowhere.
//! * `topic`: the topic within the sink, a template with `{schema}`,
//!   `{table}` and `{op}` placeholders, e.g. `{schema}.{table}`; the
//!   router fills them in (`{op}` is `insert`, `update`, `delete`,
//!   `truncate` or `read`, the last for rows of an initial snapshot). Absent: each sink's default topic. Messages,
//!   which have no table, always go to the sinks' default topics.
//! * `topic.<schema>.<table>`: the topic template for one table.
//!
//! Any other key is refused, so a typo does not silently misroute.

use std::collections::HashMap;

use weir_plugin_sdk::{Config, Destination, Event, Op, Router, Table};

/// Routes events by their table.
pub struct RouteByTable {
    /// `schema.table`, `schema.*` or `*` to sinks.
    routes: HashMap<String, Vec<String>>,
    default: Vec<String>,
    topic: Option<String>,
    table_topics: HashMap<String, String>,
    /// Destinations already worked out, per table id and op.
    cache: HashMap<(u32, u8), Vec<Destination>>,
}

impl Router for RouteByTable {
    fn init(config: &Config) -> Result<Self, String> {
        let mut router = RouteByTable {
            routes: HashMap::new(),
            default: Vec::new(),
            topic: None,
            table_topics: HashMap::new(),
            cache: HashMap::new(),
        };
        for (key, value) in config.iter() {
            let sinks = || -> Result<Vec<String>, String> {
                let sinks: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if sinks.is_empty() {
                    Err(format!("config key `{key}`: name at least one sink"))
                } else {
                    Ok(sinks)
                }
            };
            if key == "default" {
                router.default = sinks()?;
            } else if key == "topic" {
                router.topic = Some(value.to_owned());
            } else if let Some(table) = key.strip_prefix("route.") {
                check_table_pattern(key, table, true)?;
                router.routes.insert(table.to_owned(), sinks()?);
            } else if let Some(table) = key.strip_prefix("topic.") {
                check_table_pattern(key, table, false)?;
                router
                    .table_topics
                    .insert(table.to_owned(), value.to_owned());
            } else {
                return Err(format!(
                    "unknown config key `{key}` (expected route.<schema>.<table>, route.*, default, topic or topic.<schema>.<table>)"
                ));
            }
        }
        Ok(router)
    }

    fn on_table(&mut self, table: &Table) {
        // A new version may have been renamed: forget what we worked out.
        self.cache.retain(|(id, _), _| *id != table.id());
    }

    fn route(&mut self, event: &Event<'_>) -> Vec<Destination> {
        let Some(table) = event.table() else {
            return self.default.iter().map(Destination::sink).collect();
        };
        let op = event.op();
        self.cache
            .entry((table.id(), op as u8))
            .or_insert_with(|| {
                destinations(
                    &self.routes,
                    &self.default,
                    self.topic.as_deref(),
                    &self.table_topics,
                    table,
                    op,
                )
            })
            .clone()
    }
}

fn check_table_pattern(key: &str, pattern: &str, wildcard_ok: bool) -> Result<(), String> {
    let ok = match pattern.split_once('.') {
        Some((schema, table)) => {
            !schema.is_empty()
                && !table.is_empty()
                && !schema.contains('*')
                && (table != "*" || wildcard_ok)
                && (table == "*" || !table.contains('*'))
        }
        None => pattern == "*" && wildcard_ok,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "config key `{key}`: expected <schema>.<table>{}",
            if wildcard_ok { ", <schema>.* or *" } else { "" }
        ))
    }
}

fn destinations(
    routes: &HashMap<String, Vec<String>>,
    default: &[String],
    topic: Option<&str>,
    table_topics: &HashMap<String, String>,
    table: &Table,
    op: Op,
) -> Vec<Destination> {
    let qualified = table.qualified_name();
    let sinks = routes
        .get(&qualified)
        .or_else(|| routes.get(&format!("{}.*", table.schema())))
        .or_else(|| routes.get("*"))
        .map_or(default, Vec::as_slice);
    let topic = table_topics
        .get(&qualified)
        .map(String::as_str)
        .or(topic)
        .map(|template| {
            template
                .replace("{schema}", table.schema())
                .replace("{table}", table.name())
                .replace("{op}", op_name(op))
        });
    sinks
        .iter()
        .map(|sink| Destination {
            sink: sink.clone(),
            topic: topic.clone(),
        })
        .collect()
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Delete => "delete",
        Op::Truncate => "truncate",
        Op::Message => "message",
        Op::Read => "read",
    }
}

weir_plugin_sdk::export_router!(RouteByTable);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, RouterHarness};

    fn orders() -> Table {
        Table::new(1, "public", "orders").with_key("id", "int8")
    }
    fn users() -> Table {
        Table::new(2, "public", "users").with_key("id", "int8")
    }
    fn audit() -> Table {
        Table::new(3, "audit", "log").with_key("id", "int8")
    }

    fn harness(config: &[(&str, &str)]) -> RouterHarness<RouteByTable> {
        let mut h = RouterHarness::new(config).unwrap();
        for t in [orders(), users(), audit()] {
            h.announce(&t);
        }
        h
    }

    fn to(sink: &str, topic: Option<&str>) -> Destination {
        Destination {
            sink: sink.into(),
            topic: topic.map(Into::into),
        }
    }

    #[test]
    fn routes_tables_schemas_and_defaults() {
        let mut h = harness(&[
            ("route.public.orders", "kafka_main, file_copy"),
            ("route.audit.*", "audit_log"),
            ("default", "file_out"),
        ]);
        let routes = h.route(vec![
            testing::insert(&orders(), &[]),
            testing::insert(&users(), &[]),
            testing::delete(&audit(), &[]),
            testing::message("m", b""),
        ]);
        assert_eq!(
            routes,
            vec![
                vec![to("kafka_main", None), to("file_copy", None)],
                vec![to("file_out", None)],
                vec![to("audit_log", None)],
                vec![to("file_out", None)],
            ]
        );
    }

    #[test]
    fn star_route_and_topic_templates() {
        let mut h = harness(&[
            ("route.*", "kafka"),
            ("topic", "{schema}.{table}.{op}"),
            ("topic.public.users", "people"),
        ]);
        let routes = h.route(vec![
            testing::insert(&orders(), &[]),
            testing::delete(&orders(), &[]),
            testing::read(&orders(), &[]),
            testing::insert(&users(), &[]),
            testing::message("m", b""),
        ]);
        assert_eq!(
            routes,
            vec![
                vec![to("kafka", Some("public.orders.insert"))],
                vec![to("kafka", Some("public.orders.delete"))],
                vec![to("kafka", Some("public.orders.read"))],
                vec![to("kafka", Some("people"))],
                vec![],
            ]
        );
    }

    #[test]
    fn a_renamed_table_is_routed_by_its_new_name() {
        let mut h = harness(&[("route.public.orders", "a"), ("route.public.orders2", "b")]);
        assert_eq!(
            h.route_one(testing::insert(&orders(), &[])),
            [to("a", None)]
        );
        let renamed = Table::new(1, "public", "orders2")
            .with_version(2)
            .with_key("id", "int8");
        h.announce(&renamed);
        assert_eq!(h.route_one(testing::insert(&renamed, &[])), [to("b", None)]);
    }

    #[test]
    fn rejects_bad_config() {
        for config in [
            &[("rout.public.orders", "a")][..],
            &[("route.orders", "a")][..],
            &[("route.public.orders", " ")][..],
            &[("topic.*", "x")][..],
            &[("route.pub*.x", "a")][..],
        ] {
            assert!(
                RouterHarness::<RouteByTable>::new(config).is_err(),
                "{config:?}"
            );
        }
    }
}
