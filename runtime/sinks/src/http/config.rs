//! Configuration of the `http` (webhook) sink, as written under `[sinks.NAME]`.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use weir_core::{Capabilities, Sink, SinkError};

use crate::Encoding;
use crate::registry::SinkSpec;

/// Settings of an `http` sink: every batch is POSTed to one URL.
///
/// ```toml
/// [sinks.hook]
/// type = "http"
/// url = "https://hooks.internal:8443/weir"
/// format = "ndjson"
/// secret = "${WEBHOOK_SECRET}"
/// headers = { "Authorization" = "Bearer ${HOOK_TOKEN}" }
/// tls_ca_file = "/etc/weir/internal-ca.pem"
/// ```
///
/// A batch is cut into requests of at most `max_batch_records` records and
/// `max_batch_bytes` bytes of body; each request carries an
/// `Idempotency-Key` made of the positions of its first and last record,
/// so a request sent again carries the same key. A 2xx answer makes the
/// request's records durable.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The endpoint, `http://` or `https://`. Requests are never redirected:
    /// a 3xx answer refuses the request's records, so write the final address.
    pub url: String,
    /// The body of a request: `"json"` (the default), one JSON array of the
    /// records, or `"ndjson"`, one record per line, each line ending in a
    /// newline.
    #[serde(default)]
    pub format: Format,
    /// How change events are encoded: `"json"`, the native JSON envelope
    /// (the default), or `"debezium"`, the value of Debezium's PostgreSQL
    /// connector events.
    #[serde(default)]
    pub encoding: Encoding,
    /// Settings of `encoding = "debezium"`, as a `[sinks.NAME.debezium]` table.
    pub debezium: Option<weir_codec::DebeziumConfig>,
    /// How long one request may take, from connecting to the end of the
    /// answer, before it fails (and the pipeline retries it). Default: `"30s"`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// How long connecting (TCP and TLS) may take. Default: `"10s"`.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Most records in one request. Default: 500.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// Most bytes of body in one request (a single larger record is sent
    /// alone). Default: 1048576 (1 MiB).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Extra headers of every request, such as
    /// `{ "Authorization" = "Bearer ${HOOK_TOKEN}" }`. Their values never
    /// appear in logs. The headers Weir sets itself (`Content-Type`,
    /// `Content-Length`, `Host`, `Idempotency-Key`, and the signature and
    /// timestamp headers) cannot be set here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Shared secret for an HMAC-SHA256 signature of every request; write
    /// `"${WEBHOOK_SECRET}"` rather than the secret. When set, each request
    /// carries `signature_header: sha256=HEX` and `timestamp_header: UNIX
    /// SECONDS`, where HEX is the lower-case hex HMAC-SHA256, keyed with
    /// the secret's UTF-8 bytes, of the timestamp's digits, a `.`, and the
    /// exact body bytes. Never logged.
    pub secret: Option<String>,
    /// The header of the signature. Default: `"X-Weir-Signature"`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// The header of the signed timestamp. Default: `"X-Weir-Timestamp"`.
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    /// PEM file of certificate authorities to trust for an `https://`
    /// endpoint (an internal CA), in addition to the system's trust store.
    pub tls_ca_file: Option<String>,
}

/// How the records of one request are laid out in its body.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON array, `[record,record,...]`, as `application/json`.
    #[default]
    Json,
    /// Newline-delimited JSON, one record per line, as `application/x-ndjson`.
    Ndjson,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_batch_records() -> usize {
    500
}

fn default_max_batch_bytes() -> usize {
    1 << 20
}

fn default_signature_header() -> String {
    "X-Weir-Signature".to_owned()
}

fn default_timestamp_header() -> String {
    "X-Weir-Timestamp".to_owned()
}

/// The header carrying a request's key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Headers the sink sets itself; the reason is shown when one is configured.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "idempotency-key",
];

impl HttpSinkConfig {
    /// A configuration posting to `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSinkConfig {
            url: url.into(),
            format: Format::default(),
            encoding: Encoding::default(),
            debezium: None,
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            max_batch_records: default_max_batch_records(),
            max_batch_bytes: default_max_batch_bytes(),
            headers: BTreeMap::new(),
            secret: None,
            signature_header: default_signature_header(),
            timestamp_header: default_timestamp_header(),
            tls_ca_file: None,
        }
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.encoding.validate(self.debezium.as_ref());
        match reqwest::Url::parse(&self.url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(format!(
                "url: the scheme must be http or https, not {:?}",
                url.scheme()
            )),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                problems.push("url: has no host".to_owned());
            }
            Ok(url) if self.tls_ca_file.is_some() && url.scheme() != "https" => problems
                .push("tls_ca_file: only used for an https:// url; the url is http://".to_owned()),
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "url: {:?} is not a URL: {e}",
                redact_url(&self.url)
            )),
        }
        for (field, timeout) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() {
                problems.push(format!("{field}: must be more than zero"));
            }
        }
        if self.max_batch_records == 0 {
            problems.push("max_batch_records: must be at least 1".to_owned());
        }
        if self.max_batch_bytes == 0 {
            problems.push("max_batch_bytes: must be at least 1".to_owned());
        }
        let signing = [
            ("signature_header", &self.signature_header),
            ("timestamp_header", &self.timestamp_header),
        ];
        for (field, name) in signing {
            if let Err(e) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
                problems.push(format!("{field}: {name:?} is not a valid header name: {e}"));
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problems.push(format!("{field}: {name:?} is set by weir"));
            }
        }
        if self
            .signature_header
            .eq_ignore_ascii_case(&self.timestamp_header)
        {
            problems.push("timestamp_header: must differ from signature_header".to_owned());
        }
        if self.secret.as_deref() == Some("") {
            problems.push(
                "secret: is empty (is the environment variable it names set to nothing?)"
                    .to_owned(),
            );
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!("headers.{name:?}: not a valid header name"));
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                problems.push(format!("headers.{name:?}: set by weir"));
            } else if self.secret.is_some()
                && signing.iter().any(|(_, h)| h.eq_ignore_ascii_case(name))
            {
                problems.push(format!(
                    "headers.{name:?}: set by weir when secret is set (the signature headers)"
                ));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                // The value may be a token: do not show it.
                problems.push(format!(
                    "headers.{name:?}: the value has characters a header cannot carry \
                     (control characters or non-ASCII)"
                ));
            }
        }
        if self.tls_ca_file.as_deref() == Some("") {
            problems.push("tls_ca_file: must not be empty".to_owned());
        }
        problems
    }
}

/// A URL for messages: without its user info and query, which may hold tokens.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let had_query = parsed.query().is_some();
            parsed.set_query(None);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let mut text = parsed.to_string();
            if had_query {
                text.push_str("?…");
            }
            text
        }
        Err(_) => match url.find(['?', '@']) {
            Some(i) => format!("{}…", &url[..i]),
            None => url.to_owned(),
        },
    }
}

/// The secret and header values may be credentials, so they are not shown.
impl fmt::Debug for HttpSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("format", &self.format)
            .field("encoding", &self.encoding)
            .field("debezium", &self.debezium)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_batch_records", &self.max_batch_records)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("signature_header", &self.signature_header)
            .field("timestamp_header", &self.timestamp_header)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl SinkSpec for HttpSinkConfig {
    fn validate(&self) -> Vec<String> {
        HttpSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_records: self.max_batch_records,
            max_batch_bytes: self.max_batch_bytes,
            needs_key: false,
            applies_state: false,
            accepts_raw: true,
        }
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::HttpSink::new(name, self.clone()).map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
