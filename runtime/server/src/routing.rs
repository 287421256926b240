//! Routing by configuration rules: which sinks (and topics) a change goes to
//! when no router plugin decides.

use std::borrow::Cow;

use weir_core::{ChangeEvent, Destination, TablePattern};

use crate::config::RouteConfig;

/// Compiled `[[routes]]` rules.
#[derive(Debug)]
pub struct RouteRules {
    rules: Vec<Rule>,
    all_sinks: Vec<Destination>,
}

#[derive(Debug)]
struct Rule {
    patterns: Vec<TablePattern>,
    destinations: Vec<Destination>,
}

impl RouteRules {
    /// Rules from the configuration; `sinks` are all configured sink names,
    /// used when there are no rules at all.
    pub fn new(routes: &[RouteConfig], sinks: impl IntoIterator<Item = String>) -> Self {
        RouteRules {
            rules: routes
                .iter()
                .map(|r| Rule {
                    patterns: r.tables.clone(),
                    destinations: r
                        .sinks
                        .iter()
                        .map(|s| Destination {
                            sink: s.clone(),
                            topic: r.topic.clone(),
                        })
                        .collect(),
                })
                .collect(),
            all_sinks: sinks
                .into_iter()
                .map(|sink| Destination { sink, topic: None })
                .collect(),
        }
    }

    /// Where `event` goes. Without rules, to every sink; with rules, to the
    /// sinks of every matching rule (each sink once, first rule's topic wins).
    pub fn route(&self, event: &ChangeEvent) -> Cow<'_, [Destination]> {
        if self.rules.is_empty() {
            return Cow::Borrowed(&self.all_sinks);
        }
        let mut out: Vec<Destination> = Vec::new();
        for rule in &self.rules {
            if rule.patterns.is_empty() || in_tables(&rule.patterns, event) {
                for d in &rule.destinations {
                    if !out.iter().any(|o| o.sink == d.sink) {
                        out.push(d.clone());
                    }
                }
            }
        }
        Cow::Owned(out)
    }

    /// Where something without a table (a raw message a plugin made
    /// without choosing a destination) goes: every sink when there are no
    /// rules, else the sinks of rules that match every table.
    pub fn route_untabled(&self) -> Cow<'_, [Destination]> {
        if self.rules.is_empty() {
            return Cow::Borrowed(&self.all_sinks);
        }
        let mut out: Vec<Destination> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.patterns.is_empty()) {
            for d in &rule.destinations {
                if !out.iter().any(|o| o.sink == d.sink) {
                    out.push(d.clone());
                }
            }
        }
        Cow::Owned(out)
    }
}

/// Whether `event` is a change of a table one of `patterns` matches; a
/// change of no table (a logical message) matches none.
pub fn in_tables(patterns: &[TablePattern], event: &ChangeEvent) -> bool {
    event
        .table
        .as_ref()
        .is_some_and(|t| patterns.iter().any(|p| p.matches(&t.schema, &t.name)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_core::{Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId};

    use super::*;

    fn event(schema: &str, table: &str) -> ChangeEvent {
        ChangeEvent {
            op: Op::Insert,
            table: Some(Arc::new(TableSchema {
                id: 1,
                version: 1,
                schema: schema.into(),
                name: table.into(),
                columns: vec![],
                replica_identity: ReplicaIdentity::Default,
            })),
            before: None,
            after: Some(vec![]),
            message: None,
            source: SourceInfo::default(),
            txn: TxnId(1),
        }
    }

    fn route(tables: &[&str], sinks: &[&str], topic: Option<&str>) -> RouteConfig {
        RouteConfig {
            tables: tables.iter().map(|s| s.parse().unwrap()).collect(),
            sinks: sinks.iter().map(|s| s.to_string()).collect(),
            topic: topic.map(str::to_owned),
        }
    }

    fn sinks_of(d: Cow<'_, [Destination]>) -> Vec<String> {
        d.iter().map(|d| d.sink.clone()).collect()
    }

    #[test]
    fn without_rules_everything_goes_everywhere() {
        let r = RouteRules::new(&[], ["a".to_string(), "b".to_string()]);
        assert_eq!(sinks_of(r.route(&event("public", "x"))), ["a", "b"]);
    }

    #[test]
    fn rules_match_by_pattern_and_accumulate() {
        let r = RouteRules::new(
            &[
                route(&["public.orders"], &["kafka"], Some("{schema}.{table}")),
                route(&["public.*"], &["file"], None),
                route(&["audit.*"], &["kafka"], None),
                route(&["items"], &["items"], None),
            ],
            [],
        );
        let d = r.route(&event("public", "orders"));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].topic.as_deref(), Some("{schema}.{table}"));
        assert_eq!(sinks_of(r.route(&event("public", "users"))), ["file"]);
        assert_eq!(sinks_of(r.route(&event("audit", "log"))), ["kafka"]);
        assert_eq!(
            sinks_of(r.route(&event("public", "items"))),
            ["file", "items"]
        );
        assert!(r.route(&event("other", "t")).is_empty());
    }

    #[test]
    fn patterns_match_tables_in_either_part() {
        let r = RouteRules::new(
            &[
                route(&["*.orders"], &["orders"], None),
                route(&["public.ord*"], &["ord"], None),
                route(&["\"Sales\".*"], &["sales"], None),
                route(&["*"], &["all"], None),
            ],
            [],
        );
        assert_eq!(
            sinks_of(r.route(&event("sales", "orders"))),
            ["orders", "all"]
        );
        assert_eq!(
            sinks_of(r.route(&event("public", "orders"))),
            ["orders", "ord", "all"]
        );
        assert_eq!(sinks_of(r.route(&event("Sales", "q1"))), ["sales", "all"]);
        assert_eq!(sinks_of(r.route(&event("sales", "q1"))), ["all"]);
    }
}
