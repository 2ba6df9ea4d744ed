//! `WsEchoUpstream`: an in-process WebSocket upstream (RFC 6455 over HTTP/1.1) that echoes every
//! text and binary frame back and records each upgrade request it accepted, so tests can assert
//! what Envoy forwarded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// An upgrade request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub path: String,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Upgrade {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A WebSocket echo server on a free 127.0.0.1 port, served by the current tokio runtime until
/// dropped.
pub struct WsEchoUpstream {
    addr: SocketAddr,
    upgrades: Arc<Mutex<Vec<Upgrade>>>,
    task: JoinHandle<()>,
}

impl WsEchoUpstream {
    pub async fn start() -> WsEchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let upgrades = Arc::new(Mutex::new(Vec::new()));
        let seen = upgrades.clone();
        let task = tokio::spawn(serve(listener, seen));
        WsEchoUpstream {
            addr,
            upgrades,
            task,
        }
    }

    /// `127.0.0.1:<port>`, as written in a gateway.yaml endpoint list.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Every upgrade accepted so far.
    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.upgrades.lock().expect("lock").clone()
    }
}

/// Accepts WebSocket upgrades on `listener` until it fails, echoing every text and binary frame
/// back on each socket and recording each upgrade in `seen` (the demo's `echo-upstream
/// --ws-listen` and [`WsEchoUpstream`]).
pub async fn serve(listener: TcpListener, seen: Arc<Mutex<Vec<Upgrade>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            // tungstenite's callback type; see `record`.
            #[allow(clippy::result_large_err)]
            let callback = |req: &Request, resp: Response| record(&seen, req, resp);
            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
                echo(ws).await;
            }
        });
    }
}

/// [`serve`] without recording upgrades (a long-running demo would keep them forever).
pub async fn serve_forever(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                echo(ws).await;
            }
        });
    }
}

/// Sends every text and binary frame back until the client closes (pings are answered by the
/// library).
async fn echo(mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            text_or_binary => {
                if ws.send(text_or_binary).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Records an upgrade request. The signature is tungstenite's handshake callback; its error is a
/// response to send instead, which this upstream never does.
#[allow(clippy::result_large_err)]
fn record(
    seen: &Mutex<Vec<Upgrade>>,
    req: &Request,
    resp: Response,
) -> Result<Response, ErrorResponse> {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), v)
        })
        .collect();
    seen.lock().expect("lock").push(Upgrade {
        path: req.uri().path().to_string(),
        headers,
    });
    Ok(resp)
}

impl Drop for WsEchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
