//! Finding the plugin components, and building events to feed them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use weir_core::{
    ChangeEvent, Column, LogicalMessage, Lsn, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId,
    Value,
};
use weir_wasm::{PluginEngine, PluginSpec};

/// The directory holding the plugin components, built on first use.
fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("WEIR_PLUGINS_DIR") {
            return PathBuf::from(dir);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new("bash")
            .arg(root.join("scripts/build-plugins"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("cannot run scripts/build-plugins");
        assert!(
            status.success(),
            "scripts/build-plugins failed; run it by hand to see why (it needs `rustup target add wasm32-wasip2`)"
        );
        root.join("plugins/target/wasm32-wasip2/release")
    })
}

/// The path of the component `file` (e.g. `route_by_table.wasm`).
pub fn wasm(file: &str) -> PathBuf {
    let path = plugins_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: build the plugins with scripts/build-plugins",
        path.display()
    );
    path
}

/// One engine for the whole test binary, as in the server.
pub fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new().expect("engine"))
}

/// A spec for component `file`, named `name`, with `config`.
pub fn spec(name: &str, file: &str, config: &[(&str, &str)]) -> PluginSpec {
    config
        .iter()
        .fold(PluginSpec::new(name, wasm(file)), |s, (k, v)| {
            s.with_config(*k, *v)
        })
        .with_call_timeout(Duration::from_secs(10))
}

fn column(name: &str, type_name: &str, key: bool) -> Column {
    Column {
        name: name.into(),
        type_oid: 0,
        type_name: type_name.into(),
        type_modifier: -1,
        key,
    }
}

/// `public.orders` at `version`: id, status, amount, email, customer.
pub fn orders(version: u32) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 16_384,
        version,
        schema: "public".into(),
        name: "orders".into(),
        columns: vec![
            column("id", "int8", true),
            column("status", "text", false),
            column("amount", "numeric", false),
            column("email", "text", false),
            column("customer", "uuid", false),
        ],
        replica_identity: ReplicaIdentity::Default,
    })
}

/// `crm.users`: id, email.
pub fn users() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 16_400,
        version: 1,
        schema: "crm".into(),
        name: "users".into(),
        columns: vec![column("id", "int8", true), column("email", "text", false)],
        replica_identity: ReplicaIdentity::Full,
    })
}

pub const CUSTOMER: [u8; 16] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\x10\x32\x54\x76\x98\xba\xdc\xfe";

fn source(seq: u32) -> SourceInfo {
    SourceInfo {
        commit_lsn: Lsn(0x1_0000),
        lsn: Lsn(0x100 + u64::from(seq)),
        xid: 900,
        commit_time_micros: 1_700_000_000_000_000,
        seq,
        snapshot: Default::default(),
    }
}

/// An order row.
pub fn order_row(id: i64, status: &str, amount: &str) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text(status.into()),
        Value::Numeric(amount.into()),
        Value::Text(format!("buyer{id}@example.com")),
        Value::Uuid(CUSTOMER),
    ]
}

/// An event of `table` in transaction 7.
pub fn event(
    op: Op,
    table: &Arc<TableSchema>,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    seq: u32,
) -> ChangeEvent {
    ChangeEvent {
        op,
        table: Some(table.clone()),
        before,
        after,
        message: None,
        source: source(seq),
        txn: TxnId(7),
    }
}

/// An INSERT into `public.orders` (version 1).
pub fn insert_order(id: i64, status: &str, amount: &str) -> ChangeEvent {
    event(
        Op::Insert,
        &orders(1),
        None,
        Some(order_row(id, status, amount)),
        id as u32,
    )
}

/// A logical decoding message.
pub fn message(seq: u32) -> ChangeEvent {
    ChangeEvent {
        op: Op::Message,
        table: None,
        before: None,
        after: None,
        message: Some(LogicalMessage {
            prefix: "app".into(),
            content: b"hello".to_vec(),
        }),
        source: source(seq),
        txn: TxnId(7),
    }
}

/// `n` order inserts with ids 0..n, sharing one table schema.
pub fn orders_batch(n: i64) -> Vec<ChangeEvent> {
    let table = orders(1);
    (0..n)
        .map(|id| {
            event(
                Op::Insert,
                &table,
                None,
                Some(order_row(id, "new", "10")),
                id as u32,
            )
        })
        .collect()
}
