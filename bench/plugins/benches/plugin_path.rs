//! The cost of the WASM plugin path, per event, against a native in-process
//! passthrough; and what instantiating and (re)loading a plugin costs, with
//! and without the precompiled-code cache.
// criterion's macros generate undocumented functions.
#![allow(missing_docs)]
//!
//! ```sh
//! scripts/build-plugins && scripts/build-polyglot-plugins
//! cargo bench -p weir-bench
//! ```
//!
//! Events are INSERTs into a 10-column table (int8, int4, numeric, text,
//! varchar, timestamptz, bool, float8, uuid, int8), as the replication
//! benchmark's table, in batches of 1 000 (the pipeline's batches are up to
//! 4 096). Each iteration processes one whole batch; criterion reports the
//! time per batch and, through `Throughput::Elements`, per event.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_core::{
    ChangeEvent, Column, Lsn, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId, Value,
};
use weir_wasm::{Outcome, PluginEngine, PluginSpec, TransformPlugin};

const BATCH: usize = 1_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A component: `rust/NAME` from plugins/target/wasm32-wasip2, or
/// `polyglot/NAME` from plugins/target/polyglot.
fn component(which: &str) -> PathBuf {
    let (dir, name) = which.split_once('/').expect("kind/name");
    let path = match dir {
        "rust" => root().join("plugins/target/wasm32-wasip2/release"),
        _ => root().join("plugins/target/polyglot"),
    }
    .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins and scripts/build-polyglot-plugins",
        path.display()
    );
    path
}

fn table() -> Arc<TableSchema> {
    let column = |name: &str, type_name: &str, key: bool| Column {
        name: name.into(),
        type_oid: 0,
        type_name: type_name.into(),
        type_modifier: -1,
        key,
    };
    Arc::new(TableSchema {
        id: 16_384,
        version: 1,
        schema: "public".into(),
        name: "bench".into(),
        columns: vec![
            column("id", "int8", true),
            column("account", "int4", false),
            column("amount", "numeric", false),
            column("note", "text", false),
            column("status", "varchar", false),
            column("created_at", "timestamptz", false),
            column("active", "bool", false),
            column("score", "float8", false),
            column("ref", "uuid", false),
            column("version", "int8", false),
        ],
        replica_identity: ReplicaIdentity::Default,
    })
}

fn batch() -> Vec<ChangeEvent> {
    let table = table();
    (0..BATCH as i64)
        .map(|i| ChangeEvent {
            op: Op::Insert,
            table: Some(table.clone()),
            before: None,
            after: Some(vec![
                Value::Int(i),
                Value::Int(i % 977),
                Value::Numeric(format!("{}.{:02}", i % 10_000, i % 100)),
                Value::Text(format!("note number {i} with some words in it")),
                Value::Text("shipped".into()),
                Value::TimestampTz(1_764_000_000_000_000 + i),
                Value::Bool(i % 2 == 0),
                Value::Float(i as f64 * 0.5),
                Value::Uuid([(i % 251) as u8; 16]),
                Value::Int(1),
            ]),
            message: None,
            source: SourceInfo {
                commit_lsn: Lsn(0x1_0000_0000),
                lsn: Lsn(0x1_0000_0000 + i as u64),
                xid: 4242,
                commit_time_micros: 1_764_000_000_000_000,
                seq: i as u32,
                snapshot: Default::default(),
            },
            txn: TxnId(1),
        })
        .collect()
}

/// The native baseline: what a passthrough compiled into Weir would cost,
/// called through a trait object per batch as the processor would.
trait NativeTransform {
    fn process(&mut self, batch: &[ChangeEvent]) -> Vec<Outcome>;
}

struct NativePassthrough;

impl NativeTransform for NativePassthrough {
    fn process(&mut self, batch: &[ChangeEvent]) -> Vec<Outcome> {
        batch.iter().map(|_| Outcome::Keep).collect()
    }
}

fn spec(which: &str) -> PluginSpec {
    PluginSpec::new(which.replace('/', "-"), component(which))
        .with_call_timeout(Duration::from_secs(60))
        .with_memory_limit(256 << 20)
}

fn per_event(c: &mut Criterion) {
    let batch = batch();
    let engine = PluginEngine::new().unwrap();
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut native: Box<dyn NativeTransform> = Box::new(NativePassthrough);
    group.bench_function("native_passthrough", |b| {
        b.iter(|| black_box(native.process(black_box(&batch))))
    });
    for which in [
        "rust/passthrough",
        "polyglot/py_passthrough",
        "polyglot/js_passthrough",
    ] {
        let plugin = TransformPlugin::load(&engine, spec(which)).unwrap();
        let mut instance = plugin.instantiate().unwrap();
        assert_eq!(instance.process(&batch).unwrap().len(), BATCH);
        group.bench_function(BenchmarkId::new("wasm", which), |b| {
            b.iter(|| black_box(instance.process(black_box(&batch)).unwrap()))
        });
    }
    group.finish();
}

fn instantiate(c: &mut Criterion) {
    let engine = PluginEngine::new().unwrap();
    let mut group = c.benchmark_group("instantiate");
    for which in [
        "rust/passthrough",
        "polyglot/py_passthrough",
        "polyglot/js_passthrough",
    ] {
        let plugin = TransformPlugin::load(&engine, spec(which)).unwrap();
        group.bench_function(which, |b| {
            b.iter(|| black_box(plugin.instantiate().unwrap()))
        });
    }
    group.finish();
}

/// Loading a component as a reload does (compile, validate, instantiate
/// and `init`), by a fresh engine each time so no in-memory copy helps:
/// without a cache directory (compiled from scratch) and with a warm one
/// (compiled code read from disk).
fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    let cache = tempfile::tempdir().unwrap();
    for which in [
        "rust/passthrough",
        "polyglot/py_passthrough",
        "polyglot/js_passthrough",
    ] {
        let load = |engine: &PluginEngine| {
            let plugin = TransformPlugin::load(engine, spec(which)).unwrap();
            black_box(plugin.instantiate().unwrap());
        };
        // Warm the cache once.
        load(&PluginEngine::with_cache_dir(cache.path()).unwrap());
        group.bench_function(BenchmarkId::new("cached", which), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || PluginEngine::with_cache_dir(cache.path()).unwrap(),
                    load,
                )
            })
        });
        group.bench_function(BenchmarkId::new("compiled", which), |b| {
            b.iter_custom(|iters| timed(iters, || PluginEngine::new().unwrap(), load))
        });
    }
    group.finish();
}

/// Times `run` on `iters` fresh engines, leaving engine creation out.
fn timed(iters: u64, make: impl Fn() -> PluginEngine, run: impl Fn(&PluginEngine)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let engine = make();
        let start = Instant::now();
        run(&engine);
        total += start.elapsed();
    }
    total
}

criterion_group!(benches, per_event, instantiate, reload);
criterion_main!(benches);
