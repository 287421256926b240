//! POSTing batches and sorting the answers into durable, retried and
//! refused.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use weir_codec::Encoder;
use weir_core::{Rejected, Sink, SinkError, SinkRecord};

use super::config::{IDEMPOTENCY_HEADER, redact_url};
use super::encode::{body, cut, encode_element, idempotency_key, signature};
use super::{Format, HttpSinkConfig};

/// Most bytes of an answer's body kept for an error message.
const BODY_EXCERPT_BYTES: usize = 512;
/// Most characters of an answer's body quoted in an error message.
const BODY_EXCERPT_CHARS: usize = 200;

/// A sink that POSTs each batch, in requests, to one URL.
///
/// Make it with [`HttpSink::new`]; see [`HttpSinkConfig`] for the requests.
pub struct HttpSink {
    name: String,
    url: Url,
    /// The URL for messages, without query or user info.
    shown_url: String,
    client: reqwest::Client,
    format: Format,
    max_records: usize,
    max_bytes: usize,
    timeout: Duration,
    signing: Option<Signing>,
    encoder: Encoder,
    /// The Debezium key, made on the way to the value and not sent.
    scratch: Vec<u8>,
    /// The encoded records of the batch being written, one after the other;
    /// reused from batch to batch.
    elements: Vec<u8>,
}

struct Signing {
    secret: Vec<u8>,
    signature_header: HeaderName,
    timestamp_header: HeaderName,
}

/// How one request ended, when it did not fail the batch.
enum Answer {
    Durable,
    /// The endpoint refused the request for good; the reason.
    Refused(String),
}

impl HttpSink {
    /// Checks the configuration and makes the HTTP client. Nothing is sent:
    /// a webhook endpoint may have no request that does no harm, so an
    /// endpoint that is down shows up at the first batch, which the
    /// pipeline retries.
    ///
    /// Fails with [`SinkError::Config`] when the configuration is invalid
    /// (every problem, as `sinks.NAME.field: message`) or `tls_ca_file`
    /// cannot be read as PEM certificates.
    pub fn new(name: &str, config: HttpSinkConfig) -> Result<HttpSink, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let url = Url::parse(&config.url).map_err(|e| SinkError::Config(e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            let key = HeaderName::from_bytes(key.as_bytes())
                .map_err(|e| SinkError::Config(format!("sinks.{name}.headers.{key:?}: {e}")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                SinkError::Config(format!("sinks.{name}.headers.{key:?}: not a header value"))
            })?;
            // Keeps the value out of reqwest's own Debug output.
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers);
        if let Some(file) = &config.tls_ca_file {
            let pem = std::fs::read(file).map_err(|e| {
                SinkError::Config(format!("sinks.{name}.tls_ca_file: cannot read {file}: {e}"))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SinkError::Config(format!(
                    "sinks.{name}.tls_ca_file: {file} is not PEM certificates: {e}"
                ))
            })?;
            if certs.is_empty() {
                return Err(SinkError::Config(format!(
                    "sinks.{name}.tls_ca_file: {file} holds no PEM certificate"
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| {
            SinkError::Config(format!("making the HTTP client: {}", error_chain(&e)))
        })?;
        let signing = match &config.secret {
            Some(secret) => Some(Signing {
                secret: secret.as_bytes().to_vec(),
                signature_header: header_name(&config.signature_header)?,
                timestamp_header: header_name(&config.timestamp_header)?,
            }),
            None => None,
        };
        tracing::info!(sink = name, url = %redact_url(&config.url), format = ?config.format, signed = signing.is_some(), "webhook sink ready");
        Ok(HttpSink {
            name: name.to_owned(),
            shown_url: redact_url(&config.url),
            url,
            client,
            format: config.format,
            max_records: config.max_batch_records,
            max_bytes: config.max_batch_bytes,
            timeout: config.timeout,
            signing,
            encoder: Encoder::new(config.encoding, config.debezium.as_ref()),
            scratch: Vec::new(),
            elements: Vec::new(),
        })
    }

    /// Sends one request; `Err` for an answer the pipeline retries (or
    /// treats as refused credentials).
    async fn post(&self, key: &str, body: Vec<u8>) -> Result<Answer, SinkError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, self.format.content_type())
            .header(IDEMPOTENCY_HEADER, key);
        if let Some(signing) = &self.signing {
            let timestamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string();
            let signed = signature(&signing.secret, &timestamp, &body);
            request = request
                .header(signing.timestamp_header.clone(), timestamp)
                .header(signing.signature_header.clone(), signed);
        }
        let url = &self.shown_url;
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error("POST", &e))?;
        let status = response.status();
        if status.is_success() {
            // Reading the answer to its end lets the connection be reused;
            // a broken answer after a 2xx status still made the records durable.
            let _ = response.bytes().await;
            return Ok(Answer::Durable);
        }
        let retry_after = retry_after(response.headers());
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(redact_url);
        let excerpt = body_excerpt(response).await;
        let said = if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        };
        let answered = format!("{url} answered {}{said}", describe_status(status));
        match status.as_u16() {
            300..=399 => Ok(Answer::Refused(format!(
                "{url} answered {} {}and redirects are not followed (a body must only go to \
                 the address the configuration names); set url to the final address",
                describe_status(status),
                location.map_or_else(String::new, |l| format!("(to {l}) "))
            ))),
            401 | 403 => Err(SinkError::Auth(format!(
                "{answered} (check the sink's headers, such as Authorization, and its secret)"
            ))),
            429 | 503 if retry_after.is_some() => Err(SinkError::Throttled {
                reason: answered,
                retry_after,
            }),
            429 => Err(SinkError::Throttled {
                reason: answered,
                retry_after: None,
            }),
            408 | 500..=599 => Err(SinkError::Transient(answered)),
            _ => Ok(Answer::Refused(answered)),
        }
    }

    fn request_error(&self, action: &str, e: &reqwest::Error) -> SinkError {
        let url = &self.shown_url;
        let chain = error_chain(e);
        if e.is_timeout() {
            SinkError::Transient(format!(
                "{action} {url} got no complete answer within {:?} (timeout): {chain}",
                self.timeout
            ))
        } else if e.is_connect() {
            SinkError::Transient(format!("cannot connect to {url}: {chain}"))
        } else if e.is_builder() {
            SinkError::Config(format!("cannot make a request to {url}: {chain}"))
        } else {
            SinkError::Transient(format!("{action} {url} failed: {chain}"))
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, SinkError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| SinkError::Config(format!("{name:?} is not a header name: {e}")))
}

/// `404 Not Found`, or the bare code for one without a reason phrase.
fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// An error with its causes: reqwest's own message alone ("error sending
/// request") does not say what went wrong. The URL is left out (it may hold
/// a token); the caller names the endpoint.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let part = match c.downcast_ref::<reqwest::Error>() {
            Some(r) => RequestErrorText(r).to_string(),
            None => c.to_string(),
        };
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// A reqwest error's own text without its URL.
struct RequestErrorText<'a>(&'a reqwest::Error);

impl std::fmt::Display for RequestErrorText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() {
            "sending or reading a body failed"
        } else if e.is_decode() {
            "the answer could not be read"
        } else if e.is_builder() {
            "the request could not be made"
        } else if e.is_request() {
            "sending the request failed"
        } else {
            "the request failed"
        };
        f.write_str(kind)
    }
}

/// How long a `Retry-After` header asks to wait: seconds, or an HTTP date
/// (a date in the past means now).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of an answer's body, as one line of text for a message.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    excerpt(&bytes)
}

/// `bytes` as at most [`BODY_EXCERPT_CHARS`] characters on one line.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_EXCERPT_BYTES)]);
    let flat: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > BODY_EXCERPT_CHARS || bytes.len() > BODY_EXCERPT_BYTES {
        let cut: String = flat.chars().take(BODY_EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.elements.clear();
        let mut spans: Vec<Range<usize>> = Vec::with_capacity(batch.len());
        let mut indexes: Vec<usize> = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            let start = self.elements.len();
            match encode_element(
                record,
                self.format,
                &mut self.encoder,
                &mut self.scratch,
                &mut self.elements,
            ) {
                Ok(()) => {
                    spans.push(start..self.elements.len());
                    indexes.push(index);
                }
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        // A failure after earlier requests succeeded fails the whole batch,
        // and the pipeline sends those again: with the same keys, since the
        // cut depends only on the records.
        for request in cut(&spans, self.format, self.max_records, self.max_bytes) {
            let first = batch[indexes[request.start]].source().position();
            let last = batch[indexes[request.end - 1]].source().position();
            let key = idempotency_key(first, last);
            let body = body(&self.elements, &spans[request.clone()], self.format);
            match self.post(&key, body).await? {
                Answer::Durable => {}
                Answer::Refused(reason) => {
                    rejected.extend(indexes[request].iter().map(|&index| Rejected {
                        index,
                        reason: reason.clone(),
                    }));
                }
            }
        }
        if rejected.is_empty() {
            return Ok(());
        }
        rejected.sort_by_key(|r| r.index);
        Err(SinkError::Rejected(rejected))
    }
}
