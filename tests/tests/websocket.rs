//! WebSocket routes (spec §8 `websocket: true`) through the whole gateway: a real WebSocket
//! client exchanges frames with a WebSocket echo upstream through an authenticated route; the
//! upgrade request is authenticated (401), checked for roles (403) and rate limited (429) like
//! any request; an upgrade on a route without `websocket: true` gets 403 JSON and never reaches
//! an upstream.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape};
use tests::wait_for_route;
use tests::ws::WsEchoUpstream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `path`, with `token` as a bearer token when given: the socket, or the
/// refusal's status and JSON body.
async fn open(port: u16, path: &str, token: Option<&str>) -> Result<Ws, (u16, serde_json::Value)> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .expect("request");
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", bearer(t).parse().expect("header"));
    }
    let connect = tokio_tungstenite::connect_async(req);
    match tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("Envoy answers the upgrade within 10s")
    {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101);
            Ok(ws)
        }
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or_else(|_| {
                panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&body))
            });
            Err((status, json))
        }
        Err(e) => panic!("upgrade to {path} failed at the transport level: {e}"),
    }
}

/// Sends `request` over a fresh connection and returns the status and everything after the
/// status line (headers and body), read until Envoy closes or 5 s pass.
async fn raw(port: u16, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&response);
                    // A keep-alive answer with a content-length is complete once its body is in.
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok());
                        if len.is_some_and(|n| body.len() >= n) {
                            break;
                        }
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

async fn echo(ws: &mut Ws, msg: Message) {
    ws.send(msg.clone()).await.expect("send");
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the echo arrives within 5s")
        .expect("the socket is open")
        .expect("a frame");
    assert_eq!(back, msg);
}

const ROUTES: &str = r#"      - name: chat
        match: { prefix: /ws }
        service: chat
        auth: [main, partners]
        websocket: true
        timeout: 0s
      - name: ops-chat
        match: { prefix: /ops-ws }
        service: chat
        auth: main
        require: { roles: [ops] }
        websocket: true
      - name: api
        match: { prefix: /api }
        service: api
        auth: main
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_authenticated_limited_and_only_on_their_routes() {
    let chat = WsEchoUpstream::start().await;
    let mut shape = Shape::new("{ free: 3/minute, pro: 1000/minute }", ROUTES);
    shape.services_extra = format!("  chat: {{ endpoints: [{}] }}\n", chat.endpoint());
    let gw = Full::start(&shape, None).await;
    let port = gw.ports.http;
    let c = gw.stack.client(port);
    wait_for_route(&c, "/api/ready", 401).await;

    // Authenticated: 101, then frames both ways, text and binary, several times.
    let alice = token("alice", "pro");
    let mut ws = open(port, "/ws/room", Some(&alice))
        .await
        .expect("upgraded");
    for i in 0..3 {
        echo(&mut ws, Message::text(format!("hello {i}"))).await;
        echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255, i])).await;
    }
    // Quiet for longer than nothing but the gateway's stream idle timeout allows: still open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    echo(&mut ws, Message::text("still there")).await;
    ws.close(None).await.expect("close");
    // The upstream got the upgrade with the verified identity and without the token.
    let ups = chat.upgrades();
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0].path, "/ws/room");
    assert_eq!(ups[0].header("x-user-id"), Some("alice"), "{ups:?}");
    assert_eq!(ups[0].header("x-client-plan"), Some("pro"), "{ups:?}");
    assert_eq!(ups[0].header("authorization"), None, "{ups:?}");
    assert!(ups[0].header("sec-websocket-key").is_some(), "{ups:?}");

    // An API key is a credential for the upgrade too.
    let mut req = format!("ws://127.0.0.1:{port}/ws/keyed")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-api-key", gw.partner_key.parse().expect("header"));
    let (mut keyed, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded with a key");
    echo(&mut keyed, Message::text("by key")).await;
    assert_eq!(
        chat.upgrades().last().and_then(|u| u.header("x-api-key")),
        None
    );

    // Without credentials, with a bad token, or lacking a role: refused before the upstream.
    let before = chat.upgrades().len();
    let (status, body) = open(port, "/ws/room", None).await.expect_err("refused");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, _) = open(port, "/ws/room", Some("not.a.token"))
        .await
        .expect_err("refused");
    assert_eq!(status, 401);
    let (status, body) = open(port, "/ops-ws/room", Some(&alice))
        .await
        .expect_err("refused");
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // An upgrade on a route without `websocket: true`: 403 JSON, even with good credentials,
    // and neither upstream sees it.
    let api_hits = gw.upstream.hits();
    let (status, body) = open(port, "/api/ws", Some(&alice))
        .await
        .expect_err("refused");
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert_eq!(gw.upstream.hits(), api_hits);
    assert_eq!(chat.upgrades().len(), before);

    // Abuse: a spelling variant is the same upgrade, refused the same way; an `Upgrade` header
    // without the `upgrade` connection token is a plain request, not a tunnel.
    let (status, body) = raw(
        port,
        &format!("GET /api/ws HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", bearer(&alice)),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let (status, body) = raw(
        port,
        &format!("GET /api/ws HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\nupgrade: websocket\r\nconnection: close\r\n\r\n", bearer(&alice)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("\"upgrade\""),
        "the upstream saw an upgrade: {body}"
    );
    assert_eq!(gw.upstream.hits(), api_hits + 1);

    // The plan's limit counts upgrades: three for a free client, then 429 with its JSON body.
    let bob = token("bob", "free");
    for _ in 0..3 {
        let mut ws = open(port, "/ws/room", Some(&bob))
            .await
            .expect("within the limit");
        echo(&mut ws, Message::text("hi")).await;
        let _ = ws.close(None).await;
    }
    let (status, body) = open(port, "/ws/room", Some(&bob))
        .await
        .expect_err("limited");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_requests", "{body}");
    assert_eq!(chat.upgrades().len(), before + 3);

    // The socket opened before stays usable: the limit applies to upgrades, not frames.
    echo(&mut keyed, Message::text("after the limit")).await;
}

/// A gateway that limits bodies and compresses: neither may hold or alter a WebSocket. Envoy's
/// buffer filter would wait forever for the end of an upgrade's body, and frames larger than
/// `max_body` are not a request body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_routes_ignore_max_body_and_compression() {
    let chat = WsEchoUpstream::start().await;
    let api = tests::EchoUpstream::start("echo").await;
    let port = tests::free_port();
    let yaml = format!(
        r#"version: 1
services:
  chat: {{ endpoints: [{chat}] }}
  echo: {{ endpoints: [{echo}] }}
gateways:
  edge:
    max_body: 1KiB
    compression: {{ min_bytes: 16 }}
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - {{ name: chat, match: {{ prefix: /ws }}, service: chat, auth: none, websocket: true, timeout: 0s }}
      - {{ name: api, match: {{ prefix: /api }}, service: echo, auth: none }}
"#,
        chat = chat.endpoint(),
        echo = api.endpoint(),
    );
    let stack = tests::Stack::start(tests::XdsMode::Sotw, &yaml).await;
    wait_for_route(&stack.client(port), "/api/ready", 200).await;

    let mut req = format!("ws://127.0.0.1:{port}/ws/big")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("accept-encoding", "gzip, br, zstd".parse().expect("header"));
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("upgraded within 10s (not held by the buffer filter)")
    .expect("upgraded");
    assert_eq!(resp.headers().get("content-encoding"), None);
    // Frames far over the gateway's 1 KiB body limit, both ways, unchanged.
    let big = "x".repeat(64 * 1024);
    echo(&mut ws, Message::text(big.clone())).await;
    echo(&mut ws, Message::binary(big.into_bytes())).await;
    ws.close(None).await.expect("close");

    // Other routes keep the limit.
    let r = stack
        .client(port)
        .post("/api/x")
        .body("y".repeat(2048))
        .ok()
        .await;
    assert_eq!(r.status, 413, "{r:?}");
}
