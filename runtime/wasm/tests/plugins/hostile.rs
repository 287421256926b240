//! Plugins that trap, loop forever and hoard memory: each fails its call
//! with the right error naming the plugin, the process stays up, the
//! culprit event is found, and a fresh instance carries on.

use std::time::{Duration, Instant};

use weir_core::ChangeEvent;
use weir_wasm::{Outcome, PluginError, TransformPlugin, find_failing_event};

use crate::common::*;

const CULPRIT: i64 = 42;

fn hostile(
    name: &str,
    file: &str,
    configure: impl FnOnce(weir_wasm::PluginSpec) -> weir_wasm::PluginSpec,
) -> TransformPlugin {
    let culprit = CULPRIT.to_string();
    let spec = configure(spec(name, file, &[("trap_on_id", culprit.as_str())]));
    TransformPlugin::load(engine(), spec).unwrap()
}

/// Checks the failure, the poisoning, the isolation and the recovery.
fn fails_then_recovers(plugin: &TransformPlugin, check: impl Fn(&PluginError)) {
    let batch = orders_batch(100);
    let mut instance = plugin.instantiate().unwrap();
    let err = instance.process(&batch).unwrap_err();
    check(&err);
    assert_eq!(err.plugin(), Some(plugin.name()));
    assert!(
        err.to_string()
            .contains(&format!("plugin `{}`", plugin.name())),
        "{err}"
    );
    assert!(err.poisons_instance());

    // The instance refuses further calls, saying why.
    assert!(instance.is_poisoned());
    let again = instance.process(&batch[..1]).unwrap_err();
    assert!(matches!(again, PluginError::Poisoned { .. }), "{again:?}");
    assert!(
        again.to_string().contains("create a fresh instance"),
        "{again}"
    );

    // The culprit is found by bisection on fresh instances, with the
    // error it fails with on its own.
    let (culprit, error) = find_failing_event(plugin, &batch).unwrap().unwrap();
    assert_eq!(culprit, CULPRIT as usize);
    check(&error);
    let innocent: Vec<ChangeEvent> = batch
        .iter()
        .filter(|e| e.source.seq != CULPRIT as u32)
        .cloned()
        .collect();
    assert!(find_failing_event(plugin, &innocent).unwrap().is_none());

    // A fresh instance carries on without the culprit.
    let mut fresh = plugin.instantiate().unwrap();
    assert_eq!(fresh.process(&innocent).unwrap(), vec![Outcome::Keep; 99]);
}

#[test]
fn a_trapping_plugin_fails_its_call() {
    let plugin = hostile("trap-test", "trap.wasm", |s| s);
    fails_then_recovers(&plugin, |err| {
        let PluginError::Trap { message, .. } = err else {
            panic!("expected a trap, got {err:?}");
        };
        // The plugin's panic message, from its stderr.
        assert!(message.contains("trap_on_id 42 matched"), "{message}");
    });
}

#[test]
fn a_looping_plugin_is_stopped_at_its_deadline() {
    let timeout = Duration::from_millis(200);
    let plugin = hostile("spin-test", "spin.wasm", |s| s.with_call_timeout(timeout));
    let started = Instant::now();
    let mut instance = plugin.instantiate().unwrap();
    let err = instance.process(&orders_batch(100)).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, PluginError::Timeout { after, .. } if after == timeout),
        "{err:?}"
    );
    // Generous: the point is that it stops, not how precisely.
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    fails_then_recovers(&plugin, |err| {
        assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
    });
}

#[test]
fn a_sleeping_plugin_is_stopped_at_its_deadline() {
    // `std::thread::sleep` waits in the host, where the epoch deadline
    // that stops a loop cannot reach: the blocking WASI calls end at the
    // deadline themselves, with the same error.
    let timeout = Duration::from_millis(300);
    let plugin = hostile("sleeper-test", "sleeper.wasm", |s| {
        s.with_call_timeout(timeout)
    });
    let started = Instant::now();
    let mut instance = plugin.instantiate().unwrap();
    let err = instance.process(&orders_batch(100)).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, PluginError::Timeout { after, .. } if after == timeout),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    fails_then_recovers(&plugin, |err| {
        assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
    });
}

#[test]
fn a_plugin_reading_stdin_gets_the_end_of_it_at_once() {
    let plugin = hostile("stdin-test", "sleeper.wasm", |s| {
        s.with_config("block_on", "stdin")
            .with_call_timeout(Duration::from_secs(30))
    });
    let started = Instant::now();
    let mut instance = plugin.instantiate().unwrap();
    let outcomes = instance.process(&orders_batch(100)).unwrap();
    assert_eq!(outcomes, vec![Outcome::Keep; 100]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_memory_bomb_hits_its_limit() {
    let limit = 16 << 20;
    let plugin = hostile("bomb-test", "memory_bomb.wasm", |s| {
        s.with_memory_limit(limit)
    });
    fails_then_recovers(&plugin, |err| {
        assert!(
            matches!(err, PluginError::MemoryLimit { limit: l, .. } if *l == limit),
            "{err:?}"
        );
        assert!(err.to_string().contains("16777216 bytes"), "{err}");
    });
}

#[test]
fn a_plugin_out_of_fuel_is_stopped() {
    // The spinning plugin loops forever on the culprit: fuel stops it long
    // before its (generous) deadline.
    let plugin = hostile("fuel-test", "spin.wasm", |s| {
        s.with_call_timeout(Duration::from_secs(60))
            .with_fuel(50_000_000)
    });
    let started = Instant::now();
    fails_then_recovers(&plugin, |err| {
        assert!(matches!(err, PluginError::OutOfFuel { .. }), "{err:?}");
        assert!(err.to_string().contains("fuel"), "{err}");
    });
    assert!(started.elapsed() < Duration::from_secs(60));
    // Fuel is per call: a metered plugin processes batch after batch.
    let mut instance = plugin.instantiate().unwrap();
    for _ in 0..3 {
        assert_eq!(
            instance.process(&orders_batch(40)).unwrap(),
            vec![Outcome::Keep; 40]
        );
    }
}
