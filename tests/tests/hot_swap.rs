//! Hot swap under load: while transactions stream in, the plugin is
//! replaced three times, by dropping a new file in place, by an invalid
//! component through the admin endpoint (refused; the running version
//! stays), and by another version through the admin endpoint. Every change
//! is processed by exactly one version, whole transactions by the same one,
//! in order, none lost and none duplicated.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_tests::*;

/// The running version of the plugin, once the pipeline reports it.
fn running_version(admin: u16) -> String {
    wait_for(Duration::from_secs(30), || {
        let plugins = http_json(&http_get(admin, "/plugins"));
        plugins["stamp"]["version"].as_str().map(str::to_owned)
    })
    .expect("the pipeline reports its plugin")
}

fn drop_in(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_are_replaced_under_load_at_transaction_boundaries() {
    let db = Arc::new(TestDb::new("hot_swap", "CREATE TABLE t (id int PRIMARY KEY, v text)").await);
    let admin = free_port();
    let plugins = tempfile::tempdir().unwrap();
    let path = plugins.path().join("stamp.wasm");
    std::fs::write(&path, stamp_version(0)).unwrap();
    let body = format!(
        "[[transforms]]\nname = \"stamp\"\npath = {path:?}\n\n[plugins]\npoll_interval = \"100ms\"\n\n[pipeline]\nmax_batch = 2\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    // Batches of two changes cut every transaction of three, so a swap
    // has a transaction in progress to wait for.
    let mut p = FilePipeline::start(&db, &["t"], "", &body);
    let v0 = running_version(admin);

    // The load: transactions of three rows each, committed one after the
    // other until told to stop.
    let load = StampLoad::start(db.clone(), 30);
    let progress = |n: usize| {
        wait_lines(&p.out, n, Duration::from_secs(60));
    };

    // 1. A new file dropped in place.
    progress(60);
    drop_in(&path, &stamp_version(1));
    let v1 = wait_for(Duration::from_secs(30), || {
        let v = running_version(admin);
        (v != v0).then_some(v)
    })
    .unwrap_or_else(|| panic!("the dropped-in version never took over:\n{}", p.weir.log()));

    // 2. An invalid component (it wants the network) through the endpoint:
    // refused, naming the import, and the running version stays.
    progress(150);
    let network = std::fs::read(plugin("network")).unwrap();
    let refused = http(admin, "PUT", "/plugins/stamp", &network);
    assert!(refused.starts_with("HTTP/1.1 422"), "{refused}");
    assert!(refused.contains("wasi:sockets/"), "{refused}");
    assert_eq!(running_version(admin), v1);
    let unknown = http(admin, "PUT", "/plugins/nope", &network);
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");

    // 3. Another version through the endpoint.
    progress(210);
    let deployed = http(admin, "PUT", "/plugins/stamp", &stamp_version(2));
    assert!(deployed.starts_with("HTTP/1.1 200"), "{deployed}");
    let answer = http_json(&deployed);
    assert_eq!(answer["previous"], v1.as_str());
    let v2 = answer["version"].as_str().unwrap().to_owned();
    wait_for(Duration::from_secs(30), || {
        (running_version(admin) == v2).then_some(())
    })
    .unwrap_or_else(|| panic!("the deployed version never took over:\n{}", p.weir.log()));
    // The file holds it too, so a restart runs it.
    assert_eq!(std::fs::read(&path).unwrap(), stamp_version(2));

    progress(300);
    let rows = load.stop().await;
    let lines = wait_lines(&p.out, rows, Duration::from_secs(60));
    let status = http_json(&http_get(admin, "/plugins"));
    assert_eq!(status["stamp"]["deploys"], 2, "{status}");
    assert_eq!(status["stamp"]["refused"], 1, "{status}");
    assert!(
        status["stamp"]["last_refusal"]
            .as_str()
            .unwrap()
            .contains("wasi:sockets"),
        "{status}"
    );
    p.stop_cleanly();

    // None lost, none duplicated, in commit order; each change carries
    // exactly one stamp; a transaction, one version; versions only move
    // forward; the invalid one never ran.
    let versions_in_order = stamp_versions_in_order(&lines);
    assert_eq!(
        versions_in_order,
        [0, 1, 2],
        "every version took over once, in order"
    );
}
