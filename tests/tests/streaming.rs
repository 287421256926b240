//! Weir with `source.streaming = true`, killed with SIGKILL while a large
//! transaction is being streamed to it before its commit, then started
//! again: the transaction arrives once it commits, whole and exactly
//! once, without its rolled-back savepoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_tests::*;

/// The spill directories under `base` and the files in each.
fn spills(base: &Path) -> Vec<(PathBuf, usize)> {
    let Ok(dirs) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    dirs.flatten()
        .map(|d| {
            let files = std::fs::read_dir(d.path()).map_or(0, |f| f.count());
            (d.path(), files)
        })
        .collect()
}

fn wait_for_spill(base: &Path, not_in: Option<&Path>, weir: &WeirProcess) -> PathBuf {
    wait_for(Duration::from_secs(120), || {
        spills(base)
            .into_iter()
            .find(|(d, files)| *files > 0 && Some(d.as_path()) != not_in)
            .map(|(d, _)| d)
    })
    .unwrap_or_else(|| panic!("no streamed transaction was spilled:\n{}", weir.log()))
}

fn insert(from: i64, to: i64) -> String {
    format!("INSERT INTO big SELECT g, 'row ' || g FROM generate_series({from}, {to}) g")
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_inside_a_streamed_transaction_then_restart_delivers_it_exactly_once() {
    let db = TestDb::new(
        "streaming",
        "CREATE TABLE big (id bigint PRIMARY KEY, note text NOT NULL)",
    )
    .await;
    // The walsender streams a transaction past 64 kB of changes.
    db.exec(&format!(
        "ALTER DATABASE {} SET logical_decoding_work_mem = '64kB'",
        db.name
    ))
    .await;
    let spill = tempfile::tempdir().unwrap();
    let p = FilePipeline::start(
        &db,
        &["big"],
        &format!(
            "streaming = true\nstreaming_memory_mib = 1\nspill_dir = {:?}\n",
            spill.path()
        ),
        &passthrough(),
    );
    let (out, config, mut weir) = (p.out.clone(), p.config.clone(), p.weir);

    db.exec(&format!("BEGIN; {}", insert(1, 30000))).await;
    let first = wait_for_spill(spill.path(), None, &weir);
    weir.kill9();
    weir = WeirProcess::start(&config, &[]);
    // The walsender streams the open transaction again, from its start,
    // to the new process; the killed one's directory is cleared away.
    wait_for_spill(spill.path(), Some(&first), &weir);
    assert!(!first.exists(), "the killed process's spill is removed");
    db.exec(&format!(
        "{}; SAVEPOINT s; {}; ROLLBACK TO SAVEPOINT s; COMMIT",
        insert(30001, 40000),
        insert(50001, 60000)
    ))
    .await;
    psql(&db.name, "INSERT INTO big VALUES (-1, 'end')").unwrap();

    let lines = wait_for(Duration::from_secs(120), || {
        let lines = read_jsonl(&out);
        lines
            .iter()
            .any(|l| l["after"]["id"] == -1)
            .then_some(lines)
    })
    .unwrap_or_else(|| panic!("the end marker never arrived:\n{}", weir.log()));
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for l in &lines {
        assert_eq!(l["op"], "insert", "{l}");
        *seen.entry(l["after"]["id"].as_i64().unwrap()).or_default() += 1;
    }
    let want: Vec<i64> = (1..=40000).chain([-1]).collect();
    let mut got: Vec<i64> = seen.keys().copied().collect();
    got.sort_unstable();
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(got.len(), sorted.len(), "rolled back or missing rows");
    assert_eq!(got, sorted);
    assert!(
        seen.values().all(|&n| n == 1),
        "{} rows delivered twice",
        seen.values().filter(|&&n| n > 1).count()
    );
    assert!(weir.is_running(), "weir died:\n{}", weir.log());
}
