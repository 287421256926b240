//! The operator console in a real headless Chromium against a running
//! pipeline with an admin token: without the token nothing loads; with it
//! the lag charts draw points, a dead letter shows with its error, a
//! snapshot started from the page moves its progress bar until it is
//! delivered, and promoting a shadow from the page changes the running
//! version. A screenshot of each page goes to the test artifacts
//! (`target/test-artifacts/console-*.png`, not committed).

use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, Locator};
use weir_tests::browser::Browser;
use weir_tests::*;

const TOKEN: &str = "console-test-token-8f2c";

/// What a script in the page returns.
async fn js(client: &Client, script: &str) -> Json {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// `expr` of the first element `css` matches (as `e`), if there is one
/// and it gives text.
async fn of_first(client: &Client, css: &str, expr: &str) -> Option<String> {
    let found = js(
        client,
        &format!("const e = document.querySelector({css:?}); return e ? {expr} : null;"),
    )
    .await;
    found.as_str().map(str::to_owned)
}

/// The text of the first element `css` matches, if any.
async fn text(client: &Client, css: &str) -> Option<String> {
    of_first(client, css, "e.textContent.trim()").await
}

/// An attribute of the first element `css` matches, if any.
async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    of_first(client, css, &format!("e.getAttribute({name:?})")).await
}

/// Whether the element `css` matches is shown (it and no ancestor hidden).
async fn shown(client: &Client, css: &str) -> bool {
    js(
        client,
        &format!(
            "const e = document.querySelector({css:?}); return !!e && e.getClientRects().length > 0;"
        ),
    )
    .await
    .as_bool()
    .unwrap_or(false)
}

/// The HTTP status the page's own `fetch` of `path` gets, with no token.
async fn fetched(client: &Client, path: &str) -> u64 {
    client
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1]; fetch({path:?}).then(r => done(r.status), e => done(String(e)));"
            ),
            vec![],
        )
        .await
        .expect("fetch from the page")
        .as_u64()
        .unwrap_or_default()
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

async fn type_into(client: &Client, css: &str, keys: &str) {
    let field = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} to type into: {e}"));
    field.clear().await.expect("clear the field");
    field.send_keys(keys).await.expect("type");
}

/// Inserts rows into `t`, ids from `first` up, one small transaction
/// every 20 ms, until dropped.
struct Writes(tokio::task::JoinHandle<()>);

impl Writes {
    fn start(db: Arc<TestDb>, first: i64) -> Writes {
        Writes(tokio::spawn(async move {
            for id in first.. {
                db.exec(&format!("INSERT INTO t VALUES ({id}, 'w{id}')"))
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

impl Drop for Writes {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn authed(admin: u16, method: &str, path: &str, body: &[u8]) -> String {
    let bearer = format!("Bearer {TOKEN}");
    http_with(admin, method, path, &[("Authorization", &bearer)], body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_lag_dead_letters_snapshots_and_promotes_a_shadow() {
    let db = Arc::new(
        TestDb::new(
            "console",
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             CREATE TABLE big (id int PRIMARY KEY, pad text); \
             INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(1, 60000) i; \
             ANALYZE big",
        )
        .await,
    );
    let admin = free_port();
    let plugins = tempfile::tempdir().unwrap();
    let stamp = plugins.path().join("stamp.wasm");
    std::fs::write(&stamp, stamp_version(0)).unwrap();
    let dlq = plugins.path().join("dlq.jsonl");
    // The trap plugin fails on the row with id -5; its dead letter goes to
    // a file. Snapshots read a page (about 35 rows of `big`) per chunk, one
    // chunk at a time, so the bar has many steps to show.
    let body = format!(
        "[[transforms]]\nname = \"trapper\"\npath = {:?}\non_failure = \"dead-letter\"\nconfig = {{ trap_on_id = \"-5\" }}\n\n\
         [[transforms]]\nname = \"stamp\"\npath = {stamp:?}\n\n\
         [dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = {TOKEN:?}\n",
        plugin("trap"),
    );
    let p = FilePipeline::start(
        &db,
        &["t", "big"],
        "snapshot = \"never\"\nsnapshot_workers = 1\nsnapshot_chunk_pages = 1\n",
        &body,
    );
    wait_for(Duration::from_secs(60), || {
        authed(admin, "GET", "/status", b"")
            .contains("\"state\":\"running\"")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the pipeline never ran:\n{}", p.weir.log()));

    let browser = Browser::start().await;
    let c = &browser.client;
    let base = format!("http://127.0.0.1:{admin}/");
    let log = || format!("weir:\n{}\nchromedriver:\n{}", p.weir.log(), browser.log());

    // Without the token: the login form and nothing else.
    c.goto(&base).await.expect("open the console");
    eventually(Duration::from_secs(10), || async {
        shown(c, "#login").await.then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no login form\n{}", log()));
    assert!(
        !shown(c, "#app").await,
        "the console showed without a token"
    );
    let state = text(c, "#pipeline-state").await.unwrap_or_default();
    assert!(
        !state.chars().any(char::is_alphabetic),
        "a state showed without a token: {state}"
    );
    assert_eq!(
        js(
            c,
            "return document.querySelectorAll('#sinks tr[data-sink]').length"
        )
        .await,
        0
    );
    for path in ["/status", "/history", "/dead-letters", "/plugins"] {
        assert_eq!(
            fetched(c, path).await,
            401,
            "{path} answered without a token"
        );
    }
    browser.screenshot("console-login").await;
    type_into(c, "#token", "not-the-token").await;
    click(c, "#login-submit").await;
    eventually(Duration::from_secs(10), || async {
        text(c, "#login-error")
            .await
            .filter(|t| t.contains("wrong token"))
    })
    .await
    .unwrap_or_else(|| panic!("a wrong token was not called wrong\n{}", log()));
    assert!(!shown(c, "#app").await);

    // With it: the overview, fed by changes.
    type_into(c, "#token", TOKEN).await;
    click(c, "#login-submit").await;
    eventually(Duration::from_secs(10), || async {
        shown(c, "#app").await.then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the token did not open the console\n{}", log()));
    let writes = Writes::start(db.clone(), 0);
    let state = eventually(Duration::from_secs(20), || async {
        text(c, "#pipeline-state")
            .await
            .filter(|s| s == "streaming")
    })
    .await;
    assert_eq!(state.as_deref(), Some("streaming"), "{}", log());
    // A point a second; the slot is read every second (status_interval).
    for chart in ["#chart-changes", "#chart-lag"] {
        let points = eventually(Duration::from_secs(30), || async {
            attr(c, chart, "data-points")
                .await
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n >= 3)
        })
        .await;
        assert!(points.is_some(), "{chart} drew no points\n{}", log());
    }
    let rate = eventually(Duration::from_secs(20), || async {
        text(c, "#sinks tr[data-sink=\"out\"] .rate")
            .await
            .filter(|r| r.chars().any(|ch| ('1'..='9').contains(&ch)))
    })
    .await;
    assert!(
        rate.is_some(),
        "the file sink showed no records/s\n{}",
        log()
    );
    assert!(
        text(c, "#acked-lsn")
            .await
            .unwrap_or_default()
            .contains('/')
    );
    assert!(
        text(c, "#server-lsn")
            .await
            .unwrap_or_default()
            .contains('/')
    );
    drop(writes);
    browser.screenshot("console-overview").await;

    // A change the trapper fails on shows as a dead letter with its error,
    // its markup as text.
    db.exec("INSERT INTO t VALUES (-5, 'poison<img src=x onerror=\"window.hit=1\">')")
        .await;
    c.goto(&format!("{base}#dead-letters")).await.unwrap();
    let letter = eventually(Duration::from_secs(30), || async {
        text(c, "#dead-letter-list .dead-letter").await
    })
    .await
    .unwrap_or_else(|| panic!("no dead letter shown\n{}", log()));
    assert!(letter.contains("trapper"), "{letter}");
    let error = text(c, "#dead-letter-list .dead-letter .error")
        .await
        .unwrap_or_default();
    assert!(
        !error.is_empty(),
        "the dead letter shows no error: {letter}"
    );
    let event = text(c, "#dead-letter-list .dead-letter pre.event")
        .await
        .unwrap_or_default();
    assert!(
        event.contains("poison<img src=x"),
        "the event is not shown as text: {letter}"
    );
    assert_eq!(
        js(
            c,
            "return document.querySelectorAll('#dead-letter-list img').length + (window.hit || 0)"
        )
        .await,
        0,
        "a row value became markup"
    );
    browser.screenshot("console-dead-letters").await;

    // A snapshot started from the page: its bar moves, then fills.
    c.goto(&format!("{base}#snapshots")).await.unwrap();
    type_into(c, "#snapshot-tables", "public.big").await;
    click(c, "#snapshot-submit").await;
    let answer = eventually(Duration::from_secs(20), || async {
        text(c, "#snapshot-result").await.filter(|t| !t.is_empty())
    })
    .await
    .unwrap_or_default();
    assert!(
        answer.contains("Snapshot request"),
        "the snapshot request was not taken: {answer}\n{}",
        log()
    );
    type_into(c, "#snapshot-search", "big").await;
    let row = "#snapshot-list .snapshot-row[data-table=\"public.big\"]";
    let bar = format!("{row}[data-rows]");
    let mut seen = Vec::<u64>::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut delivered = None;
    while delivered.is_none() && tokio::time::Instant::now() < deadline {
        if let Some(rows) = attr(c, &bar, "data-rows")
            .await
            .and_then(|r| r.parse::<u64>().ok())
        {
            if seen.last() != Some(&rows) {
                seen.push(rows);
            }
            let state = text(c, row).await.unwrap_or_default();
            if rows == 60_000 && state.contains("delivered") {
                delivered = Some(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        delivered.is_some(),
        "the snapshot never showed as delivered; rows seen {seen:?}\n{}",
        log()
    );
    let between = seen.iter().filter(|r| **r > 0 && **r < 60_000).count();
    assert!(
        between >= 1,
        "the bar did not move while the snapshot ran: rows seen {seen:?}"
    );
    let fill = js(
        c,
        &format!(
            "const f = document.querySelector({:?}); return f ? f.getBoundingClientRect().width / f.parentElement.getBoundingClientRect().width : null;",
            format!("{row} .fill")
        ),
    )
    .await;
    assert!(
        fill.as_f64().is_some_and(|f| f > 0.99),
        "a delivered bar is not full: {fill}"
    );
    browser.screenshot("console-snapshots").await;

    // A shadow deployed beside the running version, promoted from the page.
    let running = http_json(&authed(admin, "GET", "/plugins", b""))["stamp"]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployed = authed(
        admin,
        "PUT",
        "/plugins/stamp?mode=shadow",
        &stamp_version(7),
    );
    let shadow = http_json(&deployed)["shadow"]
        .as_str()
        .unwrap_or_else(|| panic!("shadow deploy refused: {deployed}"))
        .to_owned();
    assert_ne!(shadow, running);
    c.goto(&format!("{base}#plugins")).await.unwrap();
    let card = ".plugin[data-plugin=\"stamp\"]";
    let writes = Writes::start(db.clone(), 1_000_000);
    let sample = eventually(Duration::from_secs(60), || async {
        let version = text(c, &format!("{card} .shadow-version")).await?;
        let samples = js(
            c,
            &format!(
                "return document.querySelectorAll({:?}).length",
                format!("{card} .sample")
            ),
        )
        .await;
        (version == shadow && samples.as_u64() > Some(0)).then_some(())
    })
    .await;
    assert!(
        sample.is_some(),
        "the shadow and its samples are not shown\n{}",
        log()
    );
    let sides = text(c, &format!("{card} .sample"))
        .await
        .unwrap_or_default();
    assert!(
        sides.contains("weir-stamp:007") && sides.contains("weir-stamp:000"),
        "a sample does not show both versions' answers: {sides}"
    );
    browser.screenshot("console-plugins").await;
    click(c, &format!("{card} button.promote")).await;
    let promoted = eventually(Duration::from_secs(60), || async {
        text(c, &format!("{card} .version"))
            .await
            .filter(|v| *v == shadow)
    })
    .await;
    assert!(
        promoted.is_some(),
        "the page never showed the promoted version\n{}",
        log()
    );
    drop(writes);
    let now = http_json(&authed(admin, "GET", "/plugins", b""));
    assert_eq!(now["stamp"]["version"], shadow.as_str());
    assert!(now["stamp"]["shadow"].is_null(), "{now}");

    // Logging out forgets the token.
    click(c, "#logout").await;
    eventually(Duration::from_secs(10), || async {
        shown(c, "#login").await.then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("logging out did not return to the login form\n{}", log()));
    assert!(
        js(c, "return sessionStorage.getItem('weir.token')")
            .await
            .is_null()
    );
    assert_eq!(
        js(
            c,
            "return document.querySelectorAll('#sinks tr[data-sink], .dead-letter, .plugin').length"
        )
        .await,
        0,
        "data stayed in the page after logging out"
    );
    browser.close().await;
}

/// Without `admin.token` the console opens at once; with two thousand
/// tables the snapshot list keeps only the rows in view in the page, and
/// the search box finds any one of them.
#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_tables_scroll_and_search_with_only_the_rows_in_view_drawn() {
    const TABLES: usize = 2000;
    let db = TestDb::new(
        "console_wide",
        &format!(
            "CREATE SCHEMA wide; DO $$ BEGIN FOR i IN 0..{} LOOP \
             EXECUTE format('CREATE TABLE wide.t%s (id int PRIMARY KEY)', lpad(i::text, 4, '0')); \
             END LOOP; END $$",
            TABLES - 1
        ),
    )
    .await;
    let admin = free_port();
    let p = FilePipeline::start(
        &db,
        &["wide.*"],
        "snapshot = \"initial\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
    );
    wait_for(Duration::from_secs(240), || {
        let status = http_json(&http_get(admin, "/status"));
        let tables = status["snapshot"]["tables"].as_array()?;
        (tables.len() == TABLES && status["snapshot"]["state"] == "delivered").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the snapshot of {TABLES} tables never finished:\n{}",
            p.weir.log()
        )
    });

    let browser = Browser::start().await;
    let c = &browser.client;
    let log = || format!("weir:\n{}\nchromedriver:\n{}", p.weir.log(), browser.log());
    c.goto(&format!("http://127.0.0.1:{admin}/#snapshots"))
        .await
        .unwrap();
    let rows = "#snapshot-list .snapshot-row";
    let drawn = eventually(Duration::from_secs(20), || async {
        let n = js(
            c,
            &format!("return document.querySelectorAll({rows:?}).length"),
        )
        .await;
        n.as_u64().filter(|n| *n > 0)
    })
    .await
    .unwrap_or_else(|| panic!("no snapshot rows drawn\n{}", log()));
    assert!(
        drawn < 200,
        "{drawn} rows in the page for {TABLES} tables: the list draws rows out of view"
    );
    let count = text(c, "#snapshot-count").await.unwrap_or_default();
    assert!(
        count
            .replace([',', ' ', '\u{a0}', '\u{202f}'], "")
            .contains("2000"),
        "the count does not say {TABLES}: {count}"
    );
    // The last table, scrolled to.
    js(
        c,
        "const l = document.getElementById('snapshot-list'); l.scrollTop = l.scrollHeight; l.dispatchEvent(new Event('scroll')); return null;",
    )
    .await;
    let last = format!("{rows}[data-table=\"wide.t{:04}\"]", TABLES - 1);
    eventually(Duration::from_secs(10), || async {
        shown(c, &last).await.then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "scrolling to the end does not show the last table\n{}",
            log()
        )
    });
    // One table, searched for.
    type_into(c, "#snapshot-search", "t1234").await;
    let found = eventually(Duration::from_secs(10), || async {
        let tables = js(
            c,
            &format!(
                "return Array.from(document.querySelectorAll({rows:?})).map(r => r.dataset.table)"
            ),
        )
        .await;
        (tables == serde_json::json!(["wide.t1234"])).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "the search did not find exactly wide.t1234\n{}",
        log()
    );
    browser.screenshot("console-many-tables").await;
    browser.close().await;
}
