//! The operator console: a page the admin endpoint serves at `/`, and the
//! one-a-second sampling of the pipeline's counters its charts draw.
//!
//! The page, its script and its style (`runtime/server/console/`) are built
//! into the binary: nothing is fetched from anywhere else, at run time or
//! ever. They hold no data: the script asks the token-protected endpoints
//! for everything it shows (`/status`, `/history`, `/dead-letters`,
//! `/plugins/NAME/shadow`) and acts through the same ones a script would
//! (`POST /snapshots`, `POST /plugins/NAME/promote`,
//! `DELETE /plugins/NAME/shadow`). The token lives in the tab's session
//! storage, and goes out only as a bearer header, never as a cookie, so
//! another site's page cannot act with it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::status::Status;

/// One built-in file: its content type and bytes.
pub struct Asset {
    /// The `Content-Type` to send.
    pub content_type: &'static str,
    /// What is served: the file as it was when the binary was built.
    pub body: &'static str,
}

/// The page at `/`.
pub const PAGE: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("../console/index.html"),
};

/// The file served at `/console/NAME`, if there is one.
pub fn asset(name: &str) -> Option<Asset> {
    match name {
        "console.js" => Some(Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("../console/console.js"),
        }),
        "console.css" => Some(Asset {
            content_type: "text/css; charset=utf-8",
            body: include_str!("../console/console.css"),
        }),
        _ => None,
    }
}

/// What the page may do: run its own script and style, talk to this
/// endpoint, and nothing else (no inline script, no other origin, no
/// framing), so a row value that slipped into the page as markup could
/// neither run nor send anything anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Records the status's counters in its history once a second until
/// `shutdown`.
pub async fn sample(status: Arc<Status>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(crate::history::INTERVAL);
    // After a stall, go on from now: a burst of readings a moment apart
    // would only draw spikes.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => status.history.record(status.reading()),
        }
    }
}

/// `GET /history?since=MS` as JSON: the points after `since`.
pub fn history_json(status: &Status, since_ms: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "interval_ms": crate::history::INTERVAL.as_millis() as u64,
        "capacity": crate::history::CAPACITY,
        "samples": status.history.points(since_ms),
    })
}
