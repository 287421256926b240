//! The admin HTTP endpoint: `/health`, `/status`, `/metrics`,
//! `/plugins` (`GET` lists them; `PUT /plugins/{name}` with a component as
//! the body deploys a new version of one, or with `?mode=shadow` runs it
//! beside the running version without delivering its output; `GET` and
//! `DELETE /plugins/{name}/shadow` report and discard that shadow, `POST
//! /plugins/{name}/promote` deploys it), and `POST /snapshots`
//! (`{"tables": ["schema.table", …], "where": "…"}` queues a snapshot of
//! those tables, read while the slot streams). `/` is the operator
//! console ([`crate::console`]), which reads `/status`, `/history` (the
//! last hour, a point a second) and `/dead-letters` (the newest ones).
//!
//! It stays up when the pipeline halts, so an operator (or an orchestrator's
//! probe) can see why.
//!
//! A deploy puts native-speed code into the data path, and `/status` quotes
//! row values (halt reasons, sink errors), so the endpoint defends itself:
//! every request must name an allowed host (a web page that rebinds its own
//! name to 127.0.0.1 gets refused), a browser page of another site may
//! change nothing (its browser says where it comes from), and with
//! `admin.token` set, deploys, `/status`, `/plugins`, `/history`,
//! `/dead-letters` and the reason part of `/health` need the bearer
//! token, as do snapshot requests. `/metrics`
//! and the bare state of `/health` stay open for probes, and the console's
//! page and script for the login form; none of them holds row values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::console;
use crate::reload::{DeployError, Deployer};
use crate::status::{State, Status};

/// How long an upload may take to arrive. 64 MiB needs well under a
/// second on any link an admin endpoint should be reached over.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the endpoint serves from, given by whoever starts it: the
/// pipeline's status, which it only reads, and the place the pipeline
/// publishes its deployer in once it has started (the endpoint is up
/// before that, to report a slow or failed start).
#[derive(Clone)]
pub struct AdminState {
    /// The pipeline's status.
    pub status: Arc<Status>,
    /// The pipeline's deployer, once it has started.
    pub deployer: Arc<OnceLock<Arc<Deployer>>>,
    /// The source's connection, where snapshot requests are queued.
    pub source: Option<weir_postgres::PostgresConfig>,
}

/// What the request handlers share.
struct Admin {
    status: Arc<Status>,
    deployer: Arc<OnceLock<Arc<Deployer>>>,
    source: Option<weir_postgres::PostgresConfig>,
    /// SHA-256 of the token: compared digest to digest, so the comparison
    /// takes the same time whatever the length or content of a guess.
    token: Option<[u8; 32]>,
    /// Host names requests may name, lower-case, without port.
    hosts: Vec<String>,
    max_body: usize,
    /// One deploy at a time, taken before the body is read, so a second
    /// upload is refused at once instead of buffered next to the first.
    deploying: tokio::sync::Semaphore,
}

/// Binds `admin.listen` and serves until `shutdown`. Returns the bound
/// address (useful when `listen` has port 0).
pub async fn serve(
    admin: &AdminConfig,
    serves: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(admin.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Admin {
        status: serves.status,
        deployer: serves.deployer,
        source: serves.source,
        token: admin.token.as_deref().map(digest),
        hosts: allowed_hosts(admin),
        max_body: admin.max_body_mib.saturating_mul(1 << 20),
        deploying: tokio::sync::Semaphore::new(1),
    });
    tokio::spawn(console::sample(state.status.clone(), shutdown.clone()));
    let protected = Router::new()
        .route("/status", get(status_json))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}", put(deploy))
        .route(
            "/plugins/{name}/shadow",
            get(shadow_report).delete(discard_shadow),
        )
        .route("/plugins/{name}/promote", post(promote))
        .route("/snapshots", post(request_snapshot))
        .route("/history", get(history))
        .route("/dead-letters", get(dead_letters))
        .route_layer(middleware::from_fn(not_stored))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new()
        .route("/", get(page))
        .route("/console/{file}", get(console_asset))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(protected)
        .layer(DefaultBodyLimit::max(state.max_body))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    Ok(addr)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The listen address, loopback names, and `admin.allowed_hosts`.
fn allowed_hosts(admin: &AdminConfig) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    // 0.0.0.0 names no host; a page could still use it to reach loopback.
    let ip = admin.listen.ip().to_string();
    if !admin.listen.ip().is_unspecified() && !hosts.contains(&ip) {
        hosts.push(ip);
    }
    for host in admin.allowed_hosts.iter().map(|h| normalize_host(h)) {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// A `Host` value as a bare lower-case name: port, IPv6 brackets and a
/// trailing dot removed.
fn normalize_host(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        // Only `:port` may follow the bracket; anything else stays in the
        // name and fails the check.
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => addr,
            Some((addr, port))
                if port.len() > 1
                    && port.starts_with(':')
                    && port[1..].chars().all(|c| c.is_ascii_digit()) =>
            {
                addr
            }
            _ => host,
        },
        // A bare IPv6 address has no port to remove.
        None if host.matches(':').count() > 1 => host,
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({"error": message.into()})),
    )
        .into_response()
}

/// Refuses requests whose `Host` (or absolute URI) names a host not
/// allowed: a DNS-rebinding page reaches 127.0.0.1 under its own name.
async fn check_host(Extract(admin): Extract<Arc<Admin>>, request: Request, next: Next) -> Response {
    let named = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)").to_owned())
        .into_iter()
        .chain(request.uri().authority().map(|a| a.host().to_owned()));
    let mut any = false;
    for host in named {
        any = true;
        let host = normalize_host(&host);
        // An address names no host a page could rebind: a page reaching
        // 127.0.0.1 through its own name sends that name. Probes and
        // scrapers reach a node by its address. 0.0.0.0 names no node, and
        // some browsers let a page reach loopback through it.
        let address = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified());
        if !admin.hosts.contains(&host) && !address {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "this endpoint does not answer to host {host:?} (allowed: {}); add the name to admin.allowed_hosts if it is yours",
                    admin.hosts.join(", ")
                ),
            );
        }
    }
    if !any {
        return error(StatusCode::BAD_REQUEST, "the request names no Host");
    }
    if let Some(site) = cross_site(&request) {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "a page from {site} may not deploy, promote, discard or snapshot here; use the console this endpoint serves, or a client that is no browser page"
            ),
        );
    }
    next.run(request).await
}

/// Where a request that changes something came from, when that is a page
/// of another site. Without a token a page anywhere could otherwise make
/// the browser send a body-less promote or a text "form" to 127.0.0.1: the
/// browser says who sends (`Sec-Fetch-Site`, `Origin`), tools say nothing.
fn cross_site(request: &Request) -> Option<String> {
    use axum::http::Method;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = text("origin");
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Some(origin.unwrap_or(site).to_owned());
    }
    let origin = origin?;
    let from = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = text("host").unwrap_or_default();
    (!from.eq_ignore_ascii_case(host)).then(|| origin.to_owned())
}

impl Admin {
    /// Whether the request carries the token, or none is configured.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| digest(token.trim()))
        else {
            return false;
        };
        // No early exit: every byte is compared.
        let diff = expected
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

async fn require_token(
    Extract(admin): Extract<Arc<Admin>>,
    request: Request,
    next: Next,
) -> Response {
    if admin.authorized(request.headers()) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this needs the admin token: send `Authorization: Bearer TOKEN` (admin.token)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"weir\""),
    );
    response
}

async fn health(Extract(admin): Extract<Arc<Admin>>, headers: HeaderMap) -> impl IntoResponse {
    let (code, text) = match admin.status.state() {
        State::Running | State::Starting => match admin.status.degraded() {
            Some((sink, failing)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("degraded: sink {sink} failing for {}s\n", failing.as_secs()),
            ),
            None => (StatusCode::OK, "ok\n".to_string()),
        },
        State::Halted(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("halted: {reason}\n"),
        ),
        State::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped\n".to_string()),
    };
    if admin.authorized(&headers) {
        return (code, text);
    }
    // A reason can quote the change that failed: without the token only
    // the state word before it is told.
    match text.split_once(':') {
        Some((state, _)) => (code, format!("{state}\n")),
        None => (code, text),
    }
}

/// Answers that hold row values stay out of caches: a shared browser's
/// history must not show them after the tab is closed.
async fn not_stored(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// A built-in file of the console, under its security policy.
fn served(asset: console::Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                console::CONTENT_SECURITY_POLICY,
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        asset.body,
    )
        .into_response()
}

async fn page() -> Response {
    served(console::PAGE)
}

async fn console_asset(Path(file): Path<String>) -> Response {
    match console::asset(&file) {
        Some(asset) => served(asset),
        None => error(
            StatusCode::NOT_FOUND,
            format!("the console has no file {file:?}"),
        ),
    }
}

async fn history(
    Extract(admin): Extract<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let since = match query.get("since").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "since must be milliseconds since the Unix epoch, as the points' t",
            );
        }
    };
    axum::Json(console::history_json(&admin.status, since)).into_response()
}

async fn dead_letters(Extract(admin): Extract<Arc<Admin>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        admin.status.dead_letters.json(),
    )
}

async fn status_json(Extract(admin): Extract<Arc<Admin>>) -> impl IntoResponse {
    axum::Json(admin.status.snapshot())
}

async fn metrics(Extract(admin): Extract<Arc<Admin>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        admin.status.metrics(),
    )
}

async fn plugins(Extract(admin): Extract<Arc<Admin>>) -> impl IntoResponse {
    axum::Json(admin.status.plugins.snapshot())
}

/// The body is taken last, by hand: the permit and the declared length are
/// checked before a byte of it is read.
async fn deploy(
    Extract(admin): Extract<Arc<Admin>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let shadow = match query.get("mode").map(String::as_str) {
        None | Some("run") => false,
        Some("shadow") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown deploy mode {other:?}: use ?mode=shadow, or no mode to deploy"),
            );
        }
    };
    let Ok(_deploying) = admin.deploying.try_acquire() else {
        return error(
            StatusCode::CONFLICT,
            "another deploy is in progress; send this one again once it has finished",
        );
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the component is larger than admin.max_body_mib ({} MiB)",
                admin.max_body >> 20
            ),
        )
    };
    let Some(deployer) = admin.deployer.get() else {
        return not_running();
    };
    if let Err(e) = deployer.ready_for(&name) {
        return deploy_error(e);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > admin.max_body as u64) {
        return too_large();
    }
    // Reads at most `max_body` bytes (`DefaultBodyLimit`), also when no
    // length was declared, and within a time limit: an upload that
    // trickles in would otherwise hold the one deploy permit for ever.
    let body = match tokio::time::timeout(UPLOAD_TIMEOUT, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
        Ok(Err(e)) => return e.into_response(),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the component did not arrive within {}s",
                    UPLOAD_TIMEOUT.as_secs()
                ),
            );
        }
    };
    if shadow {
        return match deployer.deploy_shadow(&name, body).await {
            Ok(deployed) => (
                StatusCode::OK,
                axum::Json(serde_json::json!({
                    "plugin": deployed.plugin,
                    "shadow": deployed.version,
                    "running": deployed.previous,
                    "state": format!("validated; runs beside the running version from the next transaction boundary, delivering nothing; see GET /plugins/{name}/shadow"),
                })),
            )
                .into_response(),
            Err(e) => deploy_error(e),
        };
    }
    deployed(deployer.deploy(&name, body).await)
}

fn deployed(result: Result<crate::reload::Deployed, DeployError>) -> Response {
    match result {
        Ok(deployed) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "plugin": deployed.plugin,
                "version": deployed.version,
                "previous": deployed.previous,
                "state": "validated; takes over at the next transaction boundary",
            })),
        )
            .into_response(),
        Err(e) => deploy_error(e),
    }
}

/// The answer while the pipeline has not started (and has no deployer).
fn not_running() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the pipeline is not running yet",
    )
}

/// How a plugin's shadow version compares with its running version.
async fn shadow_report(Extract(admin): Extract<Arc<Admin>>, Path(name): Path<String>) -> Response {
    if let Some(report) = admin.status.plugins.shadow(&name) {
        return axum::Json(report.report()).into_response();
    }
    // The deployer words the answer, naming the configured plugins when
    // `name` is none of them.
    match admin.deployer.get() {
        Some(deployer) => deploy_error(
            deployer
                .knows(&name)
                .err()
                .unwrap_or(DeployError::NoShadow { name }),
        ),
        None => not_running(),
    }
}

async fn discard_shadow(Extract(admin): Extract<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let Some(deployer) = admin.deployer.get() else {
        return not_running();
    };
    match deployer.discard(&name).await {
        Ok(version) => axum::Json(serde_json::json!({
            "plugin": name,
            "discarded": version,
        }))
        .into_response(),
        Err(e) => deploy_error(e),
    }
}

async fn promote(Extract(admin): Extract<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let Ok(_deploying) = admin.deploying.try_acquire() else {
        return error(
            StatusCode::CONFLICT,
            "another deploy is in progress; send this one again once it has finished",
        );
    };
    match admin.deployer.get() {
        Some(deployer) => deployed(deployer.promote(&name).await),
        None => not_running(),
    }
}

/// The body of `POST /snapshots`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    /// `schema.table` (or `table`, in `public`), each in the publication.
    tables: Vec<String>,
    /// Only the rows matching this SQL condition.
    #[serde(rename = "where")]
    filter: Option<String>,
}

/// Queues a snapshot in the source database (so it survives restarts) and
/// wakes the source to take it.
async fn request_snapshot(Extract(admin): Extract<Arc<Admin>>, body: Bytes) -> Response {
    let request: SnapshotRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be {{\"tables\": [\"schema.table\", …], \"where\": \"…\" (optional)}}: {e}"
                ),
            );
        }
    };
    let Some(source) = &admin.source else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no source is configured");
    };
    match weir_postgres::snapshot::request(source, &request.tables, request.filter.as_deref()).await
    {
        Ok(id) => {
            let progress = admin.status.snapshot_progress();
            progress.queue(id, &request.tables);
            progress.wake();
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({
                    "request": id,
                    "tables": request.tables,
                    "where": request.filter,
                    "state": "queued; read while streaming (see /status)",
                })),
            )
                .into_response()
        }
        Err(weir_postgres::PgError::Config(message)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn deploy_error(e: DeployError) -> Response {
    let code = match e {
        DeployError::UnknownPlugin { .. } => StatusCode::NOT_FOUND,
        DeployError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DeployError::Waiting { .. } => StatusCode::SERVICE_UNAVAILABLE,
        DeployError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        DeployError::NoShadow { .. } => StatusCode::NOT_FOUND,
        DeployError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut r = Request::builder().method(method).uri("/plugins/p/promote");
        for (name, value) in headers {
            r = r.header(*name, *value);
        }
        r.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn pages_of_other_sites_change_nothing() {
        let host = ("host", "127.0.0.1:9187");
        let ok = |m, h: &[(&str, &str)]| cross_site(&request(m, h)).is_none();
        assert!(ok("POST", &[host]), "a tool sends no origin");
        assert!(ok("GET", &[host, ("sec-fetch-site", "cross-site")]));
        assert!(ok(
            "POST",
            &[
                host,
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://127.0.0.1:9187")
            ]
        ));
        assert!(ok("DELETE", &[host, ("origin", "http://127.0.0.1:9187")]));
        assert!(!ok(
            "POST",
            &[
                host,
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example")
            ]
        ));
        assert!(!ok("POST", &[host, ("sec-fetch-site", "same-site")]));
        assert!(!ok("PUT", &[host, ("origin", "http://localhost:9187")]));
        assert!(!ok("POST", &[host, ("origin", "null")]));
    }

    #[test]
    fn host_names_lose_port_brackets_and_case() {
        assert_eq!(normalize_host("LocalHost:9187"), "localhost");
        assert_eq!(normalize_host("[::1]:9187"), "::1");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("weir.example.com.:80"), "weir.example.com");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("[::1]evil"), "[::1]evil");
        assert_eq!(normalize_host("[::1]:"), "[::1]:");
    }
}
