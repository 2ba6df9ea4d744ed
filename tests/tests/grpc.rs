//! `grpc` on routes (spec §9) through a real Envoy, authz-service and a real tonic gRPC upstream
//! (tests/protos, compiled by tests/build.rs): `transcode` maps REST/JSON GET and POST requests
//! to gRPC methods by their `google.api.http` annotations and a gRPC error to its HTTP status
//! with a JSON body; auth applies to the transcoded request; bad JSON, an unknown JSON field or
//! query parameter and an unmapped path are refused without a call; an edit of the descriptor
//! file (a new method) is applied. `web: true` carries gRPC-Web frames over HTTP/1.1 to the
//! same upstream and back, trailers included, in binary mode and in text mode (base64 frames).

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape};
use tests::grpc_demo::{pb, GrpcUpstream, DESCRIPTOR_V1, DESCRIPTOR_V2};
use tests::{wait_for, wait_for_route, HttpClient, CONVERGE_TIMEOUT};

fn routes(descriptor: &Path) -> String {
    format!(
        r#"      - name: rest
        match: {{ prefix: /v1/ }}
        service: greeter
        auth: main
        rate_limit: none
        request_headers: {{ set: {{ x-route: rest }} }}
        grpc: {{ transcode: {{ descriptor: {}, services: [demo.Greeter] }} }}
      - name: web
        match: {{ prefix: /demo.Greeter/ }}
        service: greeter
        auth: main
        rate_limit: none
        request_headers: {{ set: {{ x-route: web }} }}
        grpc: {{ web: true }}
"#,
        descriptor.display()
    )
}

struct Setup {
    gw: Full,
    grpc: GrpcUpstream,
    client: HttpClient,
    descriptor: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let grpc = GrpcUpstream::start().await;
    let dir = tempfile::Builder::new()
        .prefix("gateway-grpc-")
        .tempdir()
        .expect("tempdir");
    let descriptor = dir.path().join("demo.fds.bin");
    std::fs::write(&descriptor, DESCRIPTOR_V1).expect("write the descriptor set");
    let mut shape = Shape::new(
        "{ free: 100/minute, pro: 100/minute }",
        &routes(&descriptor),
    );
    shape.services_extra = format!(
        "  greeter: {{ endpoints: [{}], protocol: grpc }}\n",
        grpc.endpoint()
    );
    let gw = Full::start(&shape, None).await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/v1/hello/ada", 401).await;
    Setup {
        gw,
        grpc,
        client,
        descriptor,
        _dir: dir,
    }
}

fn alice() -> String {
    bearer(&token("alice", "pro"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_json_is_transcoded_to_grpc_and_errors_to_http_statuses() {
    let s = start().await;
    let alice = alice();

    // GET with a path variable and a query parameter bound to request fields.
    let before = s.grpc.calls();
    let r = s
        .client
        .get("/v1/hello/ada?greeting=hi")
        .header("authorization", &alice)
        .header("x-client-id", "mallory")
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["message"], "hi, ada");
    assert_eq!(s.grpc.calls(), before + 1);
    // The upstream sees the verified identity, never the client's copy.
    let seen = r.json()["seenHeaders"]
        .as_array()
        .expect("seenHeaders")
        .clone();
    assert!(
        seen.iter().any(|h| h == "x-client-id=alice"),
        "verified identity reaches the upstream: {seen:?}"
    );
    assert!(
        !seen.iter().any(|h| h == "x-client-id=mallory"),
        "a client's identity header never does: {seen:?}"
    );
    // The transcoded call (path `/demo.Greeter/SayHello`) stays on the REST route, whose
    // policies applied, instead of being matched again (to the gRPC-Web route here).
    assert!(
        seen.iter().any(|h| h == "x-route=rest"),
        "the REST route's own work is done: {seen:?}"
    );

    // POST with the whole body as the request message.
    let r = s
        .client
        .post("/v1/items")
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .body(json!({ "name": "box", "count": 3 }).to_string())
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        &json!({ "name": "box", "count": 3, "id": "item-box" })
    );

    // gRPC errors become HTTP statuses with the status as JSON.
    for (name, status, code) in [("fail", 404, 5), ("forbidden", 403, 7)] {
        let r = s
            .client
            .post("/v1/items")
            .header("authorization", &alice)
            .header("content-type", "application/json")
            .body(json!({ "name": name }).to_string())
            .ok()
            .await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        assert_eq!(r.json()["code"], code, "{name}: {}", r.body);
        assert!(r.json()["message"].is_string(), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_routes_refuse_without_calling_the_upstream() {
    let s = start().await;
    let alice = alice();
    let before = s.grpc.calls();

    // Auth applies to the transcoded route.
    let r = s.client.get("/v1/hello/ada").ok().await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = s
        .client
        .post("/v1/items")
        .header("content-type", "application/json")
        .body(r#"{"name":"box"}"#)
        .ok()
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Bad JSON, a wrong type, an unknown query parameter: 400, no call.
    for body in [r#"{"name":"#, r#"{"count":"many"}"#, "[1, 2]"] {
        let r = s
            .client
            .post("/v1/items")
            .header("authorization", &alice)
            .header("content-type", "application/json")
            .body(body)
            .ok()
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let r = s
        .client
        .get("/v1/hello/ada?colour=red")
        .header("authorization", &alice)
        .ok()
        .await;
    assert_eq!(r.status, 400, "unknown query parameter: {}", r.body);

    // A path no annotation maps is not sent to the gRPC upstream as plain HTTP.
    let r = s
        .client
        .get("/v1/nothing/here")
        .header("authorization", &alice)
        .ok()
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        s.grpc.calls(),
        before,
        "no refused request reached the upstream"
    );

    // An unknown body field: Envoy's transcoder has no option to refuse it (it drops it), so
    // the documented behaviour is pinned here: the call is made without it.
    let r = s
        .client
        .post("/v1/items")
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .body(r#"{"name":"box","colour":"red"}"#)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        &json!({ "name": "box", "count": 0, "id": "item-box" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_descriptor_file_is_applied() {
    let s = start().await;
    let alice = alice();
    let r = s
        .client
        .get("/v1/bye/ada")
        .header("authorization", &alice)
        .ok()
        .await;
    assert_eq!(r.status, 404, "SayBye is not in demo.proto: {}", r.body);

    std::fs::write(&s.descriptor, DESCRIPTOR_V2).expect("rewrite the descriptor set");
    wait_for("SayBye to be transcoded", CONVERGE_TIMEOUT, async || {
        let r = s
            .client
            .get("/v1/bye/ada")
            .header("authorization", &alice)
            .ok()
            .await;
        (r.status == 200).then_some(r)
    })
    .await;
    // The methods that were there still are.
    let r = s
        .client
        .get("/v1/hello/ada")
        .header("authorization", &alice)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["message"], "hello, ada");

    // A descriptor file that no longer decodes is refused like a broken gateway.yaml: the
    // last good config keeps serving.
    let version = s.gw.stack.xds.status().await["version"].clone();
    std::fs::write(&s.descriptor, b"\x0a\xffnot a descriptor set").expect("break the file");
    let st = wait_for(
        "the broken descriptor to be refused",
        CONVERGE_TIMEOUT,
        async || {
            let st = s.gw.stack.xds.try_status().await.ok()?;
            (!st["last_error"].is_null()).then_some(st)
        },
    )
    .await;
    assert!(
        st["last_error"]
            .to_string()
            .contains("is not a binary FileDescriptorSet"),
        "{st}"
    );
    assert_eq!(st["version"], version, "a refused file changes nothing");
    let r = s
        .client
        .get("/v1/bye/ada")
        .header("authorization", &alice)
        .ok()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// One gRPC(-Web) frame: flag, big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a gRPC-Web body into its frames.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a truncated frame header: {body:?}");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "a truncated frame: {body:?}");
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

/// A gRPC-Web answer: HTTP status, headers and body frames.
struct WebReply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    frames: Vec<(u8, Vec<u8>)>,
}

impl WebReply {
    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The reply messages (data frames).
    fn messages(&self) -> Vec<&[u8]> {
        self.frames
            .iter()
            .filter(|(flag, _)| flag & 0x80 == 0)
            .map(|(_, m)| m.as_slice())
            .collect()
    }

    /// A gRPC trailer: from the trailer frame's `name:value` lines, or from the headers of a
    /// trailers-only answer (an error with no message).
    fn trailer(&self, name: &str) -> Option<String> {
        let from_frame = self
            .frames
            .iter()
            .find(|(flag, _)| flag & 0x80 != 0)
            .and_then(|(_, t)| {
                String::from_utf8_lossy(t).split("\r\n").find_map(|line| {
                    let (k, v) = line.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            });
        from_frame.or_else(|| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
    }
}

/// The two gRPC-Web encodings of the frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// `application/grpc-web+proto`: the frames as they are.
    Binary,
    /// `application/grpc-web-text`: the frames in base64, both ways (for browsers that cannot
    /// read a binary streaming body).
    Text,
}

/// A `grpc-web-text` body back into bytes. The answer may be several base64 chunks one after
/// another, each padded on its own (Envoy encodes the trailer frame apart from the messages),
/// so it is decoded chunk by chunk: a chunk ends at its padding or at the end.
fn decode_text(body: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut rest: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    while !rest.is_empty() {
        let end = match rest.iter().position(|&b| b == b'=') {
            Some(i) => i + rest[i..].iter().take_while(|&&b| b == b'=').count(),
            None => rest.len(),
        };
        let chunk = base64::engine::general_purpose::STANDARD
            .decode(&rest[..end])
            .unwrap_or_else(|e| {
                panic!(
                    "a base64 chunk {:?}: {e}",
                    String::from_utf8_lossy(&rest[..end])
                )
            });
        out.extend(chunk);
        rest.drain(..end);
    }
    out
}

/// POSTs a gRPC-Web call over HTTP/1.1 (`body`, when given, replaces the encoded frame).
async fn grpc_web_call(
    port: u16,
    mode: Mode,
    method: &str,
    body: Vec<u8>,
    authorization: Option<&str>,
) -> WebReply {
    let client = reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let content_type = match mode {
        Mode::Binary => "application/grpc-web+proto",
        Mode::Text => "application/grpc-web-text",
    };
    let mut req = client
        .post(format!("http://127.0.0.1:{port}/demo.Greeter/{method}"))
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("a body");
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let frames = if ct.starts_with("application/grpc-web-text") {
        frames(&decode_text(&body))
    } else if ct.starts_with("application/grpc-web") {
        frames(&body)
    } else {
        Vec::new()
    };
    WebReply {
        status,
        headers,
        frames,
    }
}

/// One gRPC-Web call of `method` with `message`, framed and encoded for `mode`.
async fn grpc_web_in(
    port: u16,
    mode: Mode,
    method: &str,
    message: &[u8],
    authorization: Option<&str>,
) -> WebReply {
    use base64::Engine as _;
    let framed = frame(0, message);
    let body = match mode {
        Mode::Binary => framed,
        Mode::Text => base64::engine::general_purpose::STANDARD
            .encode(framed)
            .into_bytes(),
    };
    grpc_web_call(port, mode, method, body, authorization).await
}

async fn grpc_web(
    port: u16,
    method: &str,
    message: &[u8],
    authorization: Option<&str>,
) -> WebReply {
    grpc_web_in(port, Mode::Binary, method, message, authorization).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_frames_reach_the_grpc_upstream_and_come_back() {
    let s = start().await;
    let alice = alice();
    let port = s.gw.ports.http;
    let hello = pb::HelloRequest {
        name: "ada".into(),
        greeting: "hi".into(),
    }
    .encode_to_vec();

    let r = grpc_web(port, "SayHello", &hello, Some(&alice)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/grpc-web+proto");
    let messages = r.messages();
    assert_eq!(messages.len(), 1, "one reply message: {:?}", r.frames);
    let reply = pb::HelloReply::decode(messages[0]).expect("a HelloReply");
    assert_eq!(reply.message, "hi, ada");
    assert!(
        reply.seen_headers.iter().any(|h| h == "x-route=web"),
        "{:?}",
        reply.seen_headers
    );
    assert!(
        r.frames.last().is_some_and(|(flag, _)| flag & 0x80 != 0),
        "the trailers come as the last frame: {:?}",
        r.frames
    );
    assert_eq!(r.trailer("grpc-status").as_deref(), Some("0"));

    // A gRPC error arrives as the trailer frame's status.
    let fail = pb::Item {
        name: "fail".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let r = grpc_web(port, "CreateItem", &fail, Some(&alice)).await;
    assert_eq!(r.status, 200);
    assert!(r.messages().is_empty(), "{:?}", r.frames);
    assert_eq!(r.trailer("grpc-status").as_deref(), Some("5"));
    // grpc-message is percent-encoded.
    assert_eq!(
        r.trailer("grpc-message").as_deref(),
        Some("no%20such%20item:%20fail")
    );

    // Auth applies to gRPC-Web calls as to any other.
    let before = s.grpc.calls();
    let r = grpc_web(port, "SayHello", &hello, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(s.grpc.calls(), before);
}

/// The same calls in text mode: a base64 request body, base64 answer frames (decoded here) with
/// the reply message and then the trailers; a gRPC error in the trailers; auth first. Abuse: a
/// body that is not base64 is refused by Envoy without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_text_frames_are_base64_both_ways() {
    let s = start().await;
    let alice = alice();
    let port = s.gw.ports.http;
    let hello = pb::HelloRequest {
        name: "ada".into(),
        greeting: "hi".into(),
    }
    .encode_to_vec();

    let r = grpc_web_in(port, Mode::Text, "SayHello", &hello, Some(&alice)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("application/grpc-web-text"),
        "{}",
        r.content_type()
    );
    let messages = r.messages();
    assert_eq!(messages.len(), 1, "one reply message: {:?}", r.frames);
    let reply = pb::HelloReply::decode(messages[0]).expect("a HelloReply");
    assert_eq!(reply.message, "hi, ada");
    assert!(
        reply.seen_headers.iter().any(|h| h == "x-route=web"),
        "{:?}",
        reply.seen_headers
    );
    assert!(
        r.frames.last().is_some_and(|(flag, _)| flag & 0x80 != 0),
        "the trailers come as the last frame: {:?}",
        r.frames
    );
    assert_eq!(r.trailer("grpc-status").as_deref(), Some("0"));

    let fail = pb::Item {
        name: "fail".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let r = grpc_web_in(port, Mode::Text, "CreateItem", &fail, Some(&alice)).await;
    assert_eq!(r.status, 200);
    assert!(r.messages().is_empty(), "{:?}", r.frames);
    assert_eq!(r.trailer("grpc-status").as_deref(), Some("5"));
    assert_eq!(
        r.trailer("grpc-message").as_deref(),
        Some("no%20such%20item:%20fail")
    );

    let before = s.grpc.calls();
    let r = grpc_web_in(port, Mode::Text, "SayHello", &hello, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(s.grpc.calls(), before);

    // Not base64 (and not a frame either): refused, the upstream never called.
    let r = grpc_web_call(
        port,
        Mode::Text,
        "SayHello",
        b"%%% not base64 %%%".to_vec(),
        Some(&alice),
    )
    .await;
    assert_eq!(r.status, 400, "{:?} {:?}", r.headers, r.frames);
    assert_eq!(s.grpc.calls(), before);
}
