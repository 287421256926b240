//! A webhook receiver for the `http` sink's tests: a real HTTP/1.1 server
//! (axum) on a free loopback port, in its own thread and runtime, that
//! records every request and answers as the test tells it to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Its body, exactly as sent.
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub status: u16,
}

impl Received {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header.
    pub fn key(&self) -> &str {
        self.header("idempotency-key")
            .unwrap_or_else(|| panic!("a request without Idempotency-Key: {self:?}"))
    }

    /// The body's records: the elements of a JSON array, or the lines of NDJSON.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(&self.body).expect("a UTF-8 body");
        if self.header("content-type") == Some("application/x-ndjson") {
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        } else {
            match serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")) {
                serde_json::Value::Array(items) => items,
                other => panic!("not a JSON array: {other}"),
            }
        }
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Extra headers of the answer.
    pub headers: Vec<(String, String)>,
    /// The answer's body.
    pub body: String,
}

impl Reply {
    /// An answer with `status` and `body` and no extra header.
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    /// `self` with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Reply>,
    /// Answers for requests whose body holds a text, before the script.
    rules: Vec<(Vec<u8>, Reply)>,
    default: Option<Reply>,
}

/// The running receiver; stopped (and its thread joined) on drop.
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Receiver {
    /// Starts a receiver on a free port, answering 200 until told otherwise.
    pub fn start() -> Receiver {
        let mut receiver = Receiver {
            port: 0,
            shared: Arc::default(),
            server: None,
        };
        receiver.serve(0);
        receiver
    }

    /// The URL of the webhook endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn serve(&mut self, port: u16) {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind the webhook receiver to port {port}: {e}"));
        std_listener.set_nonblocking(true).unwrap();
        self.port = std_listener.local_addr().unwrap().port();
        let shared = Arc::clone(&self.shared);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = axum::Router::new().fallback(answer).with_state(shared);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        self.server = Some((stop_tx, thread));
    }

    /// Stops listening (the port is refused) until [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.server.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// Listens again on the same port.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "the receiver is running");
        let port = self.port;
        self.serve(port);
    }

    /// Answers the next requests with `replies`, in order, before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().unwrap().script.extend(replies);
    }

    /// Answers every request whose body holds `needle` with `reply`.
    pub fn answer_containing(&self, needle: &str, reply: Reply) {
        self.shared
            .lock()
            .unwrap()
            .rules
            .push((needle.as_bytes().to_vec(), reply));
    }

    /// Answers every request not scripted with `reply` (200 when `None`).
    pub fn set_default(&self, reply: Option<Reply>) {
        self.shared.lock().unwrap().default = reply;
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Waits until `done` holds for the requests received, or panics after
    /// `timeout` with `context()`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
        context: impl FnOnce() -> String,
    ) -> Vec<Received> {
        crate::wait_for(timeout, || {
            let received = self.received();
            done(&received).then_some(received)
        })
        .unwrap_or_else(|| {
            panic!(
                "the webhook receiver did not get what was expected within {timeout:?}; it got \
                 {} requests\n{}",
                self.received().len(),
                context()
            )
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut shared = shared.lock().unwrap();
    let ruled = shared
        .rules
        .iter()
        .find(|(needle, _)| body.windows(needle.len()).any(|w| w == &needle[..]))
        .map(|(_, reply)| reply.clone());
    let reply = match ruled.or_else(|| shared.script.pop_front()) {
        Some(reply) => reply,
        None => shared
            .default
            .clone()
            .unwrap_or_else(|| Reply::new(200, "")),
    };
    shared.received.push(Received {
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: reply.status,
    });
    let mut response = (
        StatusCode::from_u16(reply.status).expect("a valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}
