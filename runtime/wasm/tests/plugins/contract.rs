//! What the host guarantees plugins (tables announced once per version) and
//! what it refuses from them (answers the contract does not allow, files
//! of the wrong world).

use weir_core::{ChangeEvent, Op};
use weir_wasm::{
    DirGrant, EmitPayload, Grants, NetworkGrant, Outcome, PluginError, RouterPlugin,
    TransformPlugin,
};

use crate::common::*;

fn probe(config: &[(&str, &str)]) -> TransformPlugin {
    TransformPlugin::load(engine(), spec("probe", "probe.wasm", config)).unwrap()
}

/// What the probe plugin reports for each event.
fn reports(outcomes: &[Outcome], batch: &[ChangeEvent]) -> Vec<String> {
    outcomes
        .iter()
        .zip(batch)
        .map(|(o, input)| {
            let Outcome::Replace(emits) = o else {
                panic!("{o:?}")
            };
            let EmitPayload::Raw(raw) = &emits[0].payload else {
                panic!("{o:?}")
            };
            // Raw messages carry the position of their input event.
            assert_eq!(raw.source, input.source);
            String::from_utf8(raw.value.clone().unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn tables_are_announced_once_per_version() {
    let mut instance = probe(&[]).instantiate().unwrap();
    let v1 = orders(1);
    let mut v2 = (*orders(2)).clone();
    v2.columns.pop();
    let v2 = std::sync::Arc::new(v2);
    let ev = |t: &std::sync::Arc<_>, seq| event(Op::Truncate, t, None, None, seq);

    let batch = [ev(&v1, 0), ev(&users(), 1), ev(&v1, 2), message(3)];
    assert_eq!(
        reports(&instance.process(&batch).unwrap(), &batch),
        [
            "public.orders v1 columns=5 announced=2",
            "crm.users v1 columns=2 announced=2",
            "public.orders v1 columns=5 announced=2",
            "message",
        ]
    );
    // Nothing new: nothing announced again.
    let batch = [ev(&v1, 4)];
    assert_eq!(
        reports(&instance.process(&batch).unwrap(), &batch),
        ["public.orders v1 columns=5 announced=2"]
    );
    // The schema changes in the middle of a batch: each event is seen with
    // the version it was written under.
    let batch = [ev(&v1, 5), ev(&v2, 6), ev(&v2, 7)];
    assert_eq!(
        reports(&instance.process(&batch).unwrap(), &batch),
        [
            "public.orders v1 columns=5 announced=2",
            "public.orders v2 columns=4 announced=3",
            "public.orders v2 columns=4 announced=3",
        ]
    );
    // A fresh instance starts with no tables.
    let mut fresh = probe(&[]).instantiate().unwrap();
    let batch = [ev(&v2, 8)];
    assert_eq!(
        reports(&fresh.process(&batch).unwrap(), &batch),
        ["public.orders v2 columns=4 announced=1"]
    );
}

fn contract_error(misbehave: &str) -> String {
    let mut instance = probe(&[("misbehave", misbehave)]).instantiate().unwrap();
    let batch = orders_batch(3);
    let err = instance.process(&batch).unwrap_err();
    assert!(matches!(err, PluginError::Contract { .. }), "{err:?}");
    assert!(!err.poisons_instance());
    // A contract error is about the answer, not the instance.
    assert!(!instance.is_poisoned());
    assert!(instance.process(&batch).is_err());
    err.to_string()
}

#[test]
fn answers_the_contract_forbids_are_refused() {
    let text = contract_error("extra-outcome");
    assert!(
        text.contains("plugin `probe`") && text.contains("returned 4 outcomes for a batch of 3"),
        "{text}"
    );
    let text = contract_error("short-row");
    assert!(
        text.contains("4 values for table public.orders (version 1), which has 5 columns"),
        "{text}"
    );
    assert!(text.contains("event 0"), "{text}");
    let text = contract_error("unknown-table");
    assert!(text.contains("table id 999999"), "{text}");
}

#[test]
fn init_errors_name_the_plugin() {
    let err = probe(&[("fail_init", "no thanks")])
        .instantiate()
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::Init { .. }), "{err:?}");
    assert_eq!(err.plugin(), Some("probe"));
    assert_eq!(
        err.to_string(),
        "plugin `probe` refused its configuration: no thanks"
    );
}

#[test]
fn components_of_the_wrong_world_are_refused() {
    let err = TransformPlugin::load(engine(), spec("routes", "route_by_table.wasm", &[]))
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, PluginError::Load { .. }), "{err:?}");
    assert!(text.contains("plugin `routes`"), "{text}");
    assert!(text.contains("route_by_table.wasm"), "{text}");
    assert!(
        text.contains("it is a router component (it exports `route`), not a transform"),
        "{text}"
    );

    let err = RouterPlugin::load(engine(), spec("pass", "passthrough.wasm", &[]))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("it is a transform component (it exports `process`), not a router"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = std::env::temp_dir().join(format!("weir-wasm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    // A core module (the smallest valid one) is not a component.
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.join("missing.wasm");

    for (path, why) in [
        (&junk, "not a WebAssembly file"),
        (&core, "it is a core WebAssembly module, not a component"),
        (&missing, "cannot read it"),
    ] {
        let spec = weir_wasm::PluginSpec::new("odd", path);
        let err = TransformPlugin::load(engine(), spec).err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, PluginError::Load { .. }), "{err:?}");
        assert!(
            text.contains("plugin `odd`") && text.contains(&path.display().to_string()),
            "{text}"
        );
        assert!(text.contains(why), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn components_that_want_the_network_are_refused() {
    let err = TransformPlugin::load(engine(), spec("net", "network.wasm", &[]))
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, PluginError::Load { .. }), "{err:?}");
    assert!(text.contains("it imports `wasi:sockets/"), "{text}");
    assert!(
        text.contains("grant it with `sandbox.network = true`"),
        "{text}"
    );

    // Granted, it loads.
    let granted = spec("net", "network.wasm", &[]).with_grants(Grants {
        network: NetworkGrant::Public,
        ..Grants::default()
    });
    TransformPlugin::load(engine(), granted).unwrap();
}

/// Connects from the `network` plugin's `init` to `target` under `grant`:
/// whether it got through, and the error if not.
fn connect_under(grant: NetworkGrant, target: &str) -> Result<(), String> {
    let spec = spec("net", "network.wasm", &[("connect", target)]).with_grants(Grants {
        network: grant,
        ..Grants::default()
    });
    let plugin = TransformPlugin::load(engine(), spec).unwrap();
    plugin.instantiate().map(drop).map_err(|e| {
        assert!(matches!(e, PluginError::Init { .. }), "{e:?}");
        e.to_string()
    })
}

fn only(rules: &[&str]) -> NetworkGrant {
    NetworkGrant::Only(rules.iter().map(|r| r.parse().unwrap()).collect())
}

#[test]
fn network_grants_keep_plugins_off_this_machine_unless_listed() {
    // A listener on loopback stands for the admin endpoint (and, for
    // the rule, for 169.254.169.254, which a test cannot listen on).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}");

    for grant in [
        NetworkGrant::Public,
        only(&["0.0.0.0/0", "::/0"]),
        only(&[&format!("127.0.0.1:{}", port.wrapping_add(1).max(1))]),
        only(&["10.0.0.0/8"]),
    ] {
        let err = connect_under(grant.clone(), &target)
            .expect_err(&format!("{grant:?} reached {target}"));
        assert!(err.contains("plugin `net`"), "{err}");
    }
    // The same through an IPv4-mapped IPv6 address.
    assert!(connect_under(NetworkGrant::Public, &format!("[::ffff:127.0.0.1]:{port}")).is_err());

    // Listed by address, network or name, it is reached.
    for grant in [
        only(&[&target]),
        only(&["127.0.0.0/8"]),
        only(&[&format!("localhost:{port}")]),
    ] {
        connect_under(grant.clone(), &target)
            .unwrap_or_else(|e| panic!("{grant:?} did not reach {target}: {e}"));
        listener.accept().unwrap();
    }
}

#[test]
fn components_that_want_files_need_a_granted_directory() {
    let err = TransformPlugin::load(engine(), spec("fs", "filesystem.wasm", &[]))
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("it imports `wasi:filesystem/"), "{text}");
    assert!(
        text.contains("grant directories with `sandbox.dirs`"),
        "{text}"
    );

    // Granted a directory, it reads from it, and only from it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lookup.txt"), "twelve bytes").unwrap();
    let grants = Grants {
        dirs: vec![DirGrant {
            host: dir.path().to_owned(),
            guest: "/data".into(),
            writable: false,
        }],
        ..Grants::default()
    };
    let reading = |path: &str| {
        let spec = spec("fs", "filesystem.wasm", &[("read", path)]).with_grants(grants.clone());
        TransformPlugin::load(engine(), spec).unwrap().instantiate()
    };
    reading("/data/lookup.txt").unwrap();
    let outside = reading("/etc/hostname").err().unwrap();
    assert!(
        matches!(outside, PluginError::Init { .. })
            && outside.to_string().contains("cannot read /etc/hostname"),
        "{outside}"
    );
}
