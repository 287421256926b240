//! The `sphinx` sink against a private searchd (Sphinx 2.2.11): the
//! conformance kit, changes end to end through the `weir` binary answered
//! by full-text queries, every type of the types table reaching its
//! closest attribute type, and the errors (searchd down at start, stopped
//! and back mid-run, a document it cannot take dead-lettered).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use weir_core::{Capabilities, Sink, TableSchema};
use weir_sinks::SinkSpec as _;
use weir_sinks::sphinx::{AttributeType, SphinxSinkConfig};
use weir_tests::conformance::{self, StateTarget};
use weir_tests::services::sphinx::{RtIndex, Searchd};
use weir_tests::*;

/// The kit's indexes: `name` and `note` are fields and string attributes.
fn kit_index(name: &str) -> [RtIndex; 2] {
    [
        RtIndex::new(name)
            .field("name")
            .field("note")
            .attr("string", "name")
            .attr("string", "note")
            .attr("bigint", "qty")
            .attr("string", "weir_nulls"),
        RtIndex::state_of(name),
    ]
}

fn kit_config(addr: &str) -> SphinxSinkConfig {
    let mut config = SphinxSinkConfig::new(addr);
    config.fields = vec!["name".into(), "note".into()];
    config.attributes = BTreeMap::from([
        ("name".into(), AttributeType::String),
        ("note".into(), AttributeType::String),
        ("qty".into(), AttributeType::Bigint),
    ]);
    config.nulls_attribute = Some("weir_nulls".into());
    config
}

struct Target {
    searchd: Searchd,
    config: SphinxSinkConfig,
}

impl StateTarget for Target {
    fn capabilities(&self) -> Capabilities {
        self.config.capabilities()
    }

    async fn open(&self) -> Box<dyn Sink> {
        self.config.build("search").await.expect("open the sphinx sink")
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        let rows = self
            .searchd
            .query(&format!(
                "SELECT id, name, qty, note, weir_nulls FROM {} LIMIT 1000",
                table.name
            ))
            .await
            .expect("read the index");
        rows.into_iter()
            .map(|r| {
                let nulls = r[4].clone().unwrap_or_default();
                let is_null = |c: &str| nulls.split(' ').any(|n| n == c);
                json!({
                    "id": r[0].as_deref().unwrap().parse::<i64>().unwrap(),
                    "name": r[1],
                    "qty": r[2].as_deref().unwrap().parse::<i64>().unwrap(),
                    "note": if is_null("note") { None } else { r[3].clone() },
                })
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kit_against_searchd() {
    let tag = conformance::new_tag();
    let indexes: Vec<RtIndex> = conformance::table_names(&tag)
        .iter()
        .flat_map(|t| kit_index(t))
        .collect();
    let searchd = Searchd::start(&indexes, 8 << 20);
    let config = kit_config(&searchd.addr);
    let target = Target { searchd, config };
    conformance::run_tagged(&target, &tag).await;
}
