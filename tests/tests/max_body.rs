//! Request-body limits (spec §8 `max_body`) as a client and an upstream see them: an oversized
//! body gets 413 with the JSON error body (§3) and never reaches the upstream, with or without a
//! content-length, over HTTP/1.1 and HTTP/2; a route's own limit overrides the gateway's.

use std::time::Duration;

use tests::{free_port, sotw_and_delta, wait_for_route, EchoUpstream, Stack, XdsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

sotw_and_delta!(max_body);

/// The gateway's limit; small so that the test sends little.
const GATEWAY_LIMIT: usize = 1024;
/// The `upload` route's own limit.
const UPLOAD_LIMIT: usize = 64 * 1024;

async fn max_body(mode: XdsMode) {
    let echo = EchoUpstream::start("echo").await;
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  echo: {{ endpoints: [{echo}] }}
gateways:
  edge:
    max_body: 1KiB
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - {{ name: upload, match: {{ prefix: /upload }}, service: echo, auth: none, max_body: 64KiB }}
      - {{ name: small, match: {{ prefix: / }}, service: echo, auth: none }}
"#,
        echo = echo.endpoint(),
    );
    let stack = Stack::start(mode, &yaml).await;
    let c = stack.client(port);
    wait_for_route(&c, "/small", 200).await;

    // Up to the limit: forwarded whole.
    let r = c.post("/small").body("a".repeat(GATEWAY_LIMIT)).ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(GATEWAY_LIMIT));

    // One byte more: 413 JSON from Envoy, and the upstream never sees the request.
    let hits = echo.hits();
    let r = c
        .post("/small")
        .header("x-request-id", "too-large-1")
        .body("a".repeat(GATEWAY_LIMIT + 1))
        .ok()
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{r:?}"
    );
    assert_eq!(r.json()["error"], "payload_too_large", "{r:?}");
    assert_eq!(r.json()["request_id"], "too-large-1", "{r:?}");
    assert_eq!(
        echo.hits(),
        hits,
        "an oversized request reached the upstream"
    );

    // The route's own limit overrides the gateway's: a larger body passes, a body over the
    // route's limit does not.
    let r = c.post("/upload").body("b".repeat(32 * 1024)).ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(32 * 1024));
    let hits = echo.hits();
    let r = c
        .post("/upload")
        .body("b".repeat(UPLOAD_LIMIT + 1))
        .ok()
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"], "payload_too_large", "{r:?}");
    assert_eq!(echo.hits(), hits);

    // Chunked, without a content-length: under the limit forwarded, over it refused before
    // the upstream sees anything (the abuse case a content-length check alone would miss).
    let (status, body) = chunked_post(port, "/small", 4, 200).await;
    assert_eq!(status, 200, "{body}");
    let hits = echo.hits();
    let (status, body) = chunked_post(port, "/small", 8, 512).await;
    assert_eq!(status, 413, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(json["error"], "payload_too_large", "{body}");
    assert_eq!(
        echo.hits(),
        hits,
        "a chunked oversized request reached the upstream"
    );

    // HTTP/2: a body sent as one DATA frame that ends the stream is the piece Envoy's buffer
    // filter never counts, so without the gateway's own count a body of up to limit + 16 KiB
    // would pass. With and without a content-length, in one frame or in several.
    for declared in [true, false] {
        let (status, _) = h2_post(port, "/small", &[GATEWAY_LIMIT], declared).await;
        assert_eq!(
            status, 200,
            "h2 {GATEWAY_LIMIT} bytes, content-length: {declared}"
        );
        for frames in [
            vec![GATEWAY_LIMIT + 1],
            vec![2000],
            vec![16_000],
            vec![512; 8],
        ] {
            let hits = echo.hits();
            let (status, body) = h2_post(port, "/small", &frames, declared).await;
            assert_eq!(
                status, 413,
                "h2 frames {frames:?}, content-length: {declared}: {body}"
            );
            if !body.is_empty() {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                assert_eq!(json["error"], "payload_too_large", "{body}");
            }
            assert_eq!(
                echo.hits(),
                hits,
                "an oversized HTTP/2 request reached the upstream: {frames:?}"
            );
        }
    }
    // The route's own limit holds on HTTP/2 as well.
    let (status, _) = h2_post(port, "/upload", &[16_000, 16_000], true).await;
    assert_eq!(status, 200);
    let hits = echo.hits();
    let (status, _) = h2_post(port, "/upload", &[16_000; 5], false).await;
    assert_eq!(status, 413);
    assert_eq!(echo.hits(), hits);
}

/// POSTs over cleartext HTTP/2 (prior knowledge), one DATA frame per entry of `frames` (the
/// last one ending the stream), with a content-length when `declared`; returns the status and
/// whatever body arrived before Envoy reset the stream.
async fn h2_post(port: u16, path: &str, frames: &[usize], declared: bool) -> (u16, String) {
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.expect("h2 ready");
        let mut req = http::Request::post(format!("http://127.0.0.1:{port}{path}"));
        if declared {
            req = req.header("content-length", frames.iter().sum::<usize>().to_string());
        }
        let (response, mut send) = client
            .send_request(req.body(()).expect("request"), false)
            .expect("send headers");
        for (i, n) in frames.iter().enumerate() {
            let last = i + 1 == frames.len();
            send.reserve_capacity(*n);
            // Envoy may already have answered and reset the stream; its answer is still there.
            if send
                .send_data(bytes::Bytes::from("h".repeat(*n)), last)
                .is_err()
            {
                break;
            }
        }
        let response = response.await.expect("a response before the reset");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        (status, String::from_utf8_lossy(&text).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("Envoy answers an HTTP/2 request within 10s")
}

/// POSTs `chunks` chunks of `size` bytes with `Transfer-Encoding: chunked` over a raw HTTP/1.1
/// connection (the test client always sends a content-length) and returns the status and body.
async fn chunked_post(port: u16, path: &str, chunks: usize, size: usize) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\
         content-type: text/plain\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..chunks {
        request.extend_from_slice(format!("{size:x}\r\n{}\r\n", "c".repeat(size)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        // Envoy may answer 413 and close before reading everything; what it answered is still
        // there to read.
        let _ = stream.write_all(&request).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("Envoy answers a chunked request within 10s")
        .expect("connects to Envoy");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(body)
        }
        Some((_, body)) => body.to_string(),
        None => String::new(),
    };
    (status, body)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
