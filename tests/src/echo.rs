//! `EchoUpstream`: an in-process HTTP upstream that answers every request with a JSON description
//! of what it received, so tests can assert what Envoy forwarded.
//!
//! Request headers steer it: `x-echo-status: 503` answers with that status, `x-echo-delay-ms: 300`
//! waits that long before answering, `x-echo-content-type` and `x-echo-content-encoding` label the
//! (unchanged) JSON body with that type or encoding, `x-echo-cache-control` sets the answer's
//! `Cache-Control`, `x-echo-pad-bytes: 16384` adds a `"pad"` array of JSON records of about that
//! many bytes (a body of a realistic size and make-up, for compression). Every answer carries `x-upstream: <name>` and `x-echo-hit: <n>`, the count
//! of requests this upstream received so far (so a replayed answer shows an old count).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Request header: answer with this status code instead of 200.
pub const STATUS_HEADER: &str = "x-echo-status";
/// Request header: wait this many milliseconds before answering.
pub const DELAY_HEADER: &str = "x-echo-delay-ms";
/// Request header: label the answer with this content-type instead of application/json.
pub const CONTENT_TYPE_HEADER: &str = "x-echo-content-type";
/// Request header: label the answer with this content-encoding (the body stays as it is).
pub const CONTENT_ENCODING_HEADER: &str = "x-echo-content-encoding";
/// Request header: the answer's `Cache-Control`.
pub const CACHE_CONTROL_HEADER: &str = "x-echo-cache-control";
/// Request header: add a `"pad"` array of records to the answer, of about this many bytes.
pub const PAD_HEADER: &str = "x-echo-pad-bytes";
/// Response header: how many requests this upstream had received when it answered.
pub const HIT_HEADER: &str = "x-echo-hit";
/// Response header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-upstream";

/// Request bodies larger than this are answered with 413; tests never send that much.
const MAX_BODY: usize = 16 * 1024 * 1024;

struct Shared {
    name: String,
    hits: AtomicU64,
    /// The description of the last request received (what it answered with).
    last: std::sync::Mutex<Option<Value>>,
}

/// The echo application, for embedding (`echo-upstream` binary) or serving by [`EchoUpstream`].
pub fn router(name: &str) -> Router {
    router_with(Arc::new(Shared {
        name: name.to_string(),
        hits: AtomicU64::new(0),
        last: std::sync::Mutex::new(None),
    }))
}

fn router_with(shared: Arc<Shared>) -> Router {
    Router::new().fallback(echo).with_state(shared)
}

async fn echo(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let hit = shared.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header(DELAY_HEADER).and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header(STATUS_HEADER)
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut doc = json!({
        "upstream": shared.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    if let Some(n) = header(PAD_HEADER).and_then(|v| v.parse::<usize>().ok()) {
        doc["pad"] = pad(n.min(MAX_BODY));
    }
    if let Ok(mut last) = shared.last.lock() {
        *last = Some(doc.clone());
    }
    let mut resp = (status, Json(doc)).into_response();
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert(UPSTREAM_HEADER, v);
    }
    resp.headers_mut()
        .insert(HIT_HEADER, HeaderValue::from(hit));
    for (steer, name) in [
        (CACHE_CONTROL_HEADER, axum::http::header::CACHE_CONTROL),
        (CONTENT_TYPE_HEADER, axum::http::header::CONTENT_TYPE),
        (
            CONTENT_ENCODING_HEADER,
            axum::http::header::CONTENT_ENCODING,
        ),
    ] {
        if let Some(v) = header(steer).and_then(|v| HeaderValue::from_str(v).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// Records like a catalogue page (`{"id":7,"name":"item 7",…}`) until about `bytes` of JSON:
/// repetitive in its keys, varied in its values, as API answers are.
fn pad(bytes: usize) -> Value {
    let mut items = Vec::new();
    let mut size = 2;
    let mut i: u64 = 0;
    while size < bytes {
        let item = json!({
            "id": i,
            "name": format!("item {i}"),
            "price": (i * 7919) % 10_000,
            "in_stock": !i.is_multiple_of(3),
            "tags": [format!("t{}", i % 17), format!("c{}", (i * 31) % 101)],
        });
        size += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    Value::Array(items)
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// An echo server on a 127.0.0.1 port, served by the current tokio runtime.
pub struct EchoUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Option<Running>,
}

impl EchoUpstream {
    /// Starts an echo upstream called `name` on a free 127.0.0.1 port.
    pub async fn start(name: &str) -> EchoUpstream {
        Self::start_on("127.0.0.1:0".parse().expect("literal address"), name).await
    }

    /// Starts an echo upstream called `name` on `addr` (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr, name: &str) -> EchoUpstream {
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            hits: AtomicU64::new(0),
            last: std::sync::Mutex::new(None),
        });
        let mut up = EchoUpstream {
            shared,
            addr,
            running: None,
        };
        up.serve(listener);
        up
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let app = router_with(self.shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some(Running { shutdown: tx, task });
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:<port>`, as written in a gateway.yaml endpoint list.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far (including ones answered with an error status).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The last request received, as the JSON it answered with (`headers`, `path`, …).
    pub fn last_request(&self) -> Option<Value> {
        self.shared.last.lock().ok().and_then(|l| l.clone())
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops listening and closes idle connections; waits (up to 5 s) for in-flight requests.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            let abort = r.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), r.task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Starts serving again on the same port after [`stop`](Self::stop).
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind(self.addr).await;
        self.serve(listener);
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            r.task.abort();
        }
    }
}

/// Binds `addr`, retrying briefly: a port just released by `stop` may still be held for a moment.
async fn bind(addr: SocketAddr) -> TcpListener {
    crate::wait_for(
        &format!("the echo upstream to bind {addr}"),
        Duration::from_secs(5),
        async || TcpListener::bind(addr).await,
    )
    .await
}

/// Serves the echo app on an already-bound listener until the process ends (for the binary).
pub async fn serve_forever(listener: TcpListener, name: &str) -> std::io::Result<()> {
    axum::serve(listener, router(name)).await
}
