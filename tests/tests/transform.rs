//! Body transforms (spec §9 `transform`) through a real Envoy, a real transform-service and a
//! real upstream on sockets: the exact body and `content-length` a client receives for a table
//! of JSON bodies, what the upstream receives from request transforms, XML by `Accept`, the
//! abuse cases (media-type spelling, compression, ranges, HTTP/2, hostile bodies), failing
//! closed (service stopped, service hung, no policy yet) and a hot reload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;
use tests::transform::TransformService;
use tests::{free_port, wait_for, wait_for_route, Stack, XdsMode, CONVERGE_TIMEOUT};

/// A request as the upstream received it: headers (name, value) and body.
type Received = (Vec<(String, String)>, Vec<u8>);

/// What the test upstream answers next, and what it last received.
#[derive(Default)]
struct Upstream {
    /// (content-type, content-encoding, body, chunked).
    answer: Mutex<(String, Option<String>, Vec<u8>, bool)>,
    /// (headers as `name: value` lines, body) of the last request.
    received: Mutex<Option<Received>>,
}

async fn serve(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    *up.received.lock().unwrap() = Some((headers, body.to_vec()));
    let (ct, ce, bytes, chunked) = up.answer.lock().unwrap().clone();
    let body = if chunked {
        // Several frames and no content-length: hyper sends it chunked.
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(7).map(|c| Ok(c.to_vec())).collect();
        Body::from_stream(futures::stream::iter(pieces))
    } else {
        Body::from(bytes)
    };
    let mut r = Response::builder().header("content-type", ct);
    if let Some(ce) = ce {
        r = r.header("content-encoding", ce);
    }
    r.body(body).unwrap()
}

async fn start_upstream() -> (Arc<Upstream>, u16) {
    let up = Arc::new(Upstream::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(serve).with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (up, port)
}

fn answer(up: &Upstream, ct: &str, body: &[u8]) {
    *up.answer.lock().unwrap() = (ct.to_string(), None, body.to_vec(), false);
}

const RESPONSE_EDITS: &str = r#"
        transform:
          response:
            json:
              remove: [/internal_id, /audit, /items/0/secret]
              set: { /meta/source: gateway, /meta/big: 9223372036854775809 }
              rename: { /full_name: /name }
              envelope: { field: data, with: { api_version: "1.0" } }
            xml: true"#;

fn config(port: u16, up: u16, tport: u16, response_edits: &str) -> String {
    format!(
        r#"version: 1
transforms: {{ service: {{ address: 127.0.0.1:{tport}, timeout: 2s }} }}
services:
  up: {{ endpoints: [127.0.0.1:{up}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - name: shaped
        match: {{ prefix: /shaped }}
        service: up
        auth: none
        timeout: 3s{response_edits}
      - name: inbound
        match: {{ prefix: /inbound }}
        service: up
        auth: none
        transform:
          request:
            json: {{ remove: [/debug], set: {{ /source: mobile, /meta/n: 1.10 }} }}
      - {{ name: plain, match: {{ prefix: /plain }}, service: up, auth: none }}
"#
    )
}

struct Got {
    status: u16,
    content_type: Option<String>,
    content_length: Option<String>,
    body: Vec<u8>,
}

async fn fetch(port: u16, path: &str, headers: &[(&str, &str)]) -> Got {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("x-request-id", "rid-1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("Envoy answers");
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, content_type, content_length) =
        (r.status().as_u16(), h("content-type"), h("content-length"));
    let body = r.bytes().await.unwrap().to_vec();
    Got {
        status,
        content_type,
        content_length,
        body,
    }
}

/// The length header, when there is one, matches the bytes received.
fn length_right(g: &Got, what: &str) {
    if let Some(cl) = &g.content_length {
        assert_eq!(cl, &g.body.len().to_string(), "{what}: content-length");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_edited_in_the_spec_order_and_others_pass() {
    let (up, up_port) = start_upstream().await;
    let (port, tport) = (free_port(), free_port());
    let stack = Stack::start(XdsMode::Sotw, &config(port, up_port, tport, RESPONSE_EDITS)).await;
    let _svc = TransformService::start_on(
        "transform-1",
        &stack.xds.grpc_addr(),
        tport,
        stack.dir(),
        true,
    )
    .await;
    answer(&up, "text/plain", b"ready");
    wait_for_route(&stack.client(port), "/plain", 200).await;
    wait_for_route(&stack.client(port), "/shaped", 200).await;

    let envelope =
        |inner: &str| format!(r#"{{"data":{inner},"api_version":"1.0","request_id":"rid-1"}}"#);
    let meta = r#""meta":{"source":"gateway","big":9223372036854775809}"#;
    // (what, content-type, upstream body, chunked, expected body: None = unchanged)
    let cases: Vec<(&str, &str, String, bool, Option<String>)> = vec![
        (
            "nested, renamed, numbers kept",
            "application/json",
            r#"{"id":18446744073709551617,"internal_id":7,"full_name":"Ann","audit":{"by":"x"},"price":1.10,"e":1e400}"#.into(),
            false,
            Some(envelope(&format!(r#"{{"id":18446744073709551617,"price":1.10,"e":1e400,{meta},"name":"Ann"}}"#))),
        ),
        (
            "arrays",
            "application/json",
            r#"{"items":[{"secret":1,"a":2},{"secret":3}]}"#.into(),
            false,
            Some(envelope(&format!(r#"{{"items":[{{"a":2}},{{"secret":3}}],{meta}}}"#))),
        ),
        (
            "unicode and escapes",
            "application/json; charset=utf-8",
            r#"{"full_name":"Zoë \"Z\" 日本 😀 \u00e9\n\\","internal_id":1}"#.into(),
            false,
            Some(envelope(&format!("{{{meta},\"name\":\"Zoë \\\"Z\\\" 日本 😀 é\\n\\\\\"}}"))),
        ),
        ("empty object", "application/json", "{}".into(), false, Some(envelope(&format!("{{{meta}}}")))),
        ("empty array", "application/json", "[]".into(), false, Some(envelope("[]"))),
        (
            "chunked",
            "application/json",
            r#"{"internal_id":1,"keep":"yes"}"#.into(),
            true,
            Some(envelope(&format!(r#"{{"keep":"yes",{meta}}}"#))),
        ),
        (
            "+json in capitals",
            "Application/Problem+JSON",
            r#"{"internal_id":1}"#.into(),
            false,
            Some(envelope(&format!("{{{meta}}}"))),
        ),
        ("invalid JSON", "application/json", r#"{"internal_id":1"#.into(), false, None),
        ("text", "text/plain", r#"{"internal_id":1}"#.into(), false, None),
        ("xml", "application/xml", "<internal_id>1</internal_id>".into(), false, None),
        ("chunked text", "text/plain", "x".repeat(5000), true, None),
    ];
    for (what, ct, body, chunked, want) in &cases {
        *up.answer.lock().unwrap() = (ct.to_string(), None, body.clone().into_bytes(), *chunked);
        let g = fetch(port, "/shaped/x", &[]).await;
        assert_eq!(
            g.status,
            200,
            "{what}: {}",
            String::from_utf8_lossy(&g.body)
        );
        let got = String::from_utf8(g.body.clone()).unwrap();
        assert_eq!(&got, want.as_ref().unwrap_or(body), "{what}");
        length_right(&g, what);
        if want.is_some() {
            assert_eq!(
                g.content_length,
                Some(got.len().to_string()),
                "{what}: a content-length"
            );
        }
    }

    // 1 MiB: well past Envoy's 32 KiB connection buffer.
    let items: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"n":{i},"secret":"s","pad":"{}"}}"#, "p".repeat(20)))
        .collect();
    let big = format!(r#"{{"internal_id":1,"items":[{}]}}"#, items.join(","));
    assert!(big.len() > 1 << 20, "{}", big.len());
    answer(&up, "application/json", big.as_bytes());
    let g = fetch(port, "/shaped/big", &[]).await;
    assert_eq!(
        g.status,
        200,
        "{}",
        String::from_utf8_lossy(&g.body[..200.min(g.body.len())])
    );
    length_right(&g, "1 MiB");
    let v: Value = serde_json::from_slice(&g.body).expect("JSON");
    assert_eq!(v["data"]["items"].as_array().map(Vec::len), Some(20_000));
    assert!(v["data"]["internal_id"].is_null());
    assert!(v["data"]["items"][0]["secret"].is_null() && v["data"]["items"][1]["secret"] == "s");

    // Request transforms: the upstream sees the edited body with its own length.
    answer(&up, "text/plain", b"ok");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (ct, sent, want) in [
        (
            "application/json",
            r#"{"debug":true,"q":"x"}"#,
            r#"{"q":"x","source":"mobile","meta":{"n":1.10}}"#,
        ),
        ("text/plain", r#"{"debug":true}"#, r#"{"debug":true}"#),
        ("application/json", "not json", "not json"),
    ] {
        let r = client
            .post(format!("http://127.0.0.1:{port}/inbound"))
            .header("content-type", ct)
            .body(sent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (headers, body) = up.received.lock().unwrap().clone().unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), want, "{ct} {sent}");
        let cl = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.clone());
        assert_eq!(
            cl,
            Some(want.len().to_string()),
            "{ct} {sent}: content-length upstream"
        );
    }
    // A request nested deeper than the parser goes: a clean 400, the upstream never asked.
    *up.received.lock().unwrap() = None;
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let r = client
        .post(format!("http://127.0.0.1:{port}/inbound"))
        .header("content-type", "application/json")
        .header("x-request-id", "deep-1")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"].as_str(), v["request_id"].as_str()),
        (Some("bad_request"), Some("deep-1"))
    );
    assert!(up.received.lock().unwrap().is_none());
    // A request body beyond the transform limit: 413, never forwarded unedited.
    let huge = format!(r#"{{"debug":true,"pad":"{}"}}"#, "x".repeat(5 << 20));
    let r = client
        .post(format!("http://127.0.0.1:{port}/inbound"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(up.received.lock().unwrap().is_none());
}

/// Every element of `node` by name, in order.
fn children<'a>(node: roxmltree::Node<'a, 'a>) -> Vec<(String, String)> {
    node.children()
        .filter(|c| c.is_element())
        .map(|c| {
            (
                c.tag_name().name().to_string(),
                c.text().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_by_accept_and_the_abuse_cases() {
    let (up, up_port) = start_upstream().await;
    let (port, tport) = (free_port(), free_port());
    let stack = Stack::start(XdsMode::Sotw, &config(port, up_port, tport, RESPONSE_EDITS)).await;
    let _svc = TransformService::start_on(
        "transform-1",
        &stack.xds.grpc_addr(),
        tport,
        stack.dir(),
        true,
    )
    .await;
    answer(&up, "text/plain", b"ready");
    wait_for_route(&stack.client(port), "/shaped", 200).await;
    let body =
        r#"{"internal_id":9,"tags":["a","b"],"full name":"x","1st":true,"a:b":null,"ok":"<&>"}"#;
    answer(&up, "application/json", body.as_bytes());

    for (accept, xml) in [
        (Some("application/xml;q=0.9, application/json;q=0.8"), true),
        (Some("application/json;q=0.9, application/xml;q=0.8"), false),
        (Some("application/xml"), true),
        (Some("*/*"), false),
        (Some("application/xml, application/json"), false),
        (None, false),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let g = fetch(port, "/shaped/x", &headers).await;
        assert_eq!(g.status, 200, "{accept:?}");
        length_right(&g, "xml");
        let text = String::from_utf8(g.body).unwrap();
        assert!(!text.contains("internal_id"), "{accept:?}: {text}");
        if xml {
            assert_eq!(
                g.content_type.as_deref(),
                Some("application/xml; charset=utf-8")
            );
            let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "response");
            let data = root
                .children()
                .find(|c| c.has_tag_name("data"))
                .expect("data");
            let got = children(data);
            let want: Vec<(String, String)> = [
                ("tags", "a"),
                ("tags", "b"),
                ("full_x0020_name", "x"),
                ("_x0031_st", "true"),
                ("a_x003A_b", ""),
                ("ok", "<&>"),
                ("meta", ""),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
            assert_eq!(got, want, "{text}");
            let tail: Vec<(String, String)> = children(root).into_iter().skip(1).collect();
            assert_eq!(
                tail,
                [
                    ("api_version".to_string(), "1.0".to_string()),
                    ("request_id".into(), "rid-1".into())
                ]
            );
        } else {
            assert_eq!(
                g.content_type.as_deref(),
                Some("application/json"),
                "{accept:?}"
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["data"]["tags"], serde_json::json!(["a", "b"]));
        }
    }

    // Abuse: none of these gets the upstream's body untransformed.
    let leaks = |g: &Got| String::from_utf8_lossy(&g.body).contains("internal_id");
    // A client's Accept-Encoding never reaches the upstream, and Range neither.
    for h in [
        [("accept-encoding", "gzip"), ("x-n", "1")],
        [("range", "bytes=0-10"), ("if-range", "x")],
        [("accept", "application/JSON; charset=utf-8"), ("x-n", "2")],
        [("accept", "text/html, application/xml;q=0.1"), ("x-n", "3")],
    ] {
        let g = fetch(port, "/shaped/x", &h).await;
        assert_eq!(g.status, 200, "{h:?}");
        assert!(!leaks(&g), "{h:?}");
        let (seen, _) = up.received.lock().unwrap().clone().unwrap();
        assert!(
            !seen
                .iter()
                .any(|(k, _)| k == "accept-encoding" || k == "range" || k == "if-range"),
            "{h:?}: {seen:?}"
        );
    }
    // An upstream that compresses anyway, or answers a part: refused, not passed.
    *up.answer.lock().unwrap() = (
        "application/json".into(),
        Some("gzip".into()),
        body.as_bytes().to_vec(),
        false,
    );
    let g = fetch(port, "/shaped/x", &[]).await;
    assert_eq!(g.status, 502, "{}", String::from_utf8_lossy(&g.body));
    assert!(!leaks(&g));
    let v: Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(v["error"], "bad_gateway");
    // A response nested too deep to parse: 502, not passed as "invalid".
    answer(
        &up,
        "application/json",
        ("[".repeat(300) + &"]".repeat(300)).as_bytes(),
    );
    assert_eq!(fetch(port, "/shaped/x", &[]).await.status, 502);
    // A response beyond the transform limit is not passed either.
    let huge = format!(r#"{{"internal_id":1,"pad":"{}"}}"#, "x".repeat(5 << 20));
    answer(&up, "application/json", huge.as_bytes());
    let g = fetch(port, "/shaped/x", &[]).await;
    assert!(g.status >= 500, "{}", g.status);
    assert!(!leaks(&g));

    // HTTP/2 (prior knowledge) gets the same transform.
    answer(&up, "application/json", body.as_bytes());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let req = http::Request::get(format!("http://127.0.0.1:{port}/shaped/x"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).expect("send");
    let response = response.await.expect("a response");
    assert_eq!(response.status().as_u16(), 200);
    let cl = response
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().to_string());
    let mut rbody = response.into_body();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = rbody.data().await {
        let _ = rbody.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        !text.contains("internal_id") && text.starts_with(r#"{"data":"#),
        "{text}"
    );
    assert_eq!(cl, Some(text.len().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_fail_closed_and_reload_without_a_restart() {
    let (up, up_port) = start_upstream().await;
    let (port, tport) = (free_port(), free_port());
    let stack = Stack::start(XdsMode::Sotw, &config(port, up_port, tport, RESPONSE_EDITS)).await;
    answer(&up, "text/plain", b"ready");
    wait_for_route(&stack.client(port), "/plain", 200).await;
    let secret = br#"{"internal_id":42,"full_name":"x"}"#;
    let leaks = |g: &Got| String::from_utf8_lossy(&g.body).contains("internal_id");

    // No transform-service at all: 502 JSON, never the body.
    answer(&up, "application/json", secret);
    let g = fetch(port, "/shaped/x", &[]).await;
    assert_eq!(g.status, 502, "{}", String::from_utf8_lossy(&g.body));
    assert!(!leaks(&g));
    let v: Value = serde_json::from_slice(&g.body).expect("a JSON error");
    assert_eq!(
        (v["error"].as_str(), v["request_id"].as_str()),
        (Some("bad_gateway"), Some("rid-1"))
    );

    // Hung: a socket that accepts and never answers. The route's 3 s timeout bounds the wait.
    let hung = std::net::TcpListener::bind(("127.0.0.1", tport)).unwrap();
    let started = Instant::now();
    let g = fetch(port, "/shaped/x", &[]).await;
    let took = started.elapsed();
    assert!(
        g.status == 504 || g.status == 502,
        "{} {}",
        g.status,
        String::from_utf8_lossy(&g.body)
    );
    assert!(!leaks(&g));
    assert!(took < Duration::from_secs(3), "held for {took:?}");
    drop(hung);

    // Started but not yet holding a policy (its xds-server is elsewhere): refuses.
    let mut lost = TransformService::start_on(
        "transform-nopolicy",
        "127.0.0.1:1",
        tport,
        stack.dir(),
        false,
    )
    .await;
    let g = wait_for(
        "transform-service without a policy to answer",
        CONVERGE_TIMEOUT,
        async || {
            let g = fetch(port, "/shaped/x", &[]).await;
            if g.status == 503 {
                Ok(g)
            } else {
                Err(format!("{} {}", g.status, String::from_utf8_lossy(&g.body)))
            }
        },
    )
    .await;
    assert!(!leaks(&g));
    assert_eq!(
        serde_json::from_slice::<Value>(&g.body).unwrap()["error"],
        "unavailable"
    );
    lost.kill();

    // The real one: transformed.
    let _svc = TransformService::start_on(
        "transform-1",
        &stack.xds.grpc_addr(),
        tport,
        stack.dir(),
        true,
    )
    .await;
    let g = wait_for("a transformed answer", CONVERGE_TIMEOUT, async || {
        let g = fetch(port, "/shaped/x", &[]).await;
        if g.status == 200 {
            Ok(g)
        } else {
            Err(g.status.to_string())
        }
    })
    .await;
    assert!(!leaks(&g));

    // Hot reload: another edit takes effect without a restart…
    let other = RESPONSE_EDITS.replace("envelope: { field: data,", "envelope: { field: payload,");
    stack.config.write(&config(port, up_port, tport, &other));
    wait_for("the new envelope", CONVERGE_TIMEOUT, async || {
        let g = fetch(port, "/shaped/x", &[]).await;
        let t = String::from_utf8_lossy(&g.body).into_owned();
        if t.starts_with(r#"{"payload":"#) {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
    // …and removing `transform` passes the body as the upstream sent it.
    stack.config.write(&config(port, up_port, tport, ""));
    wait_for("the untransformed body", CONVERGE_TIMEOUT, async || {
        let g = fetch(port, "/shaped/x", &[]).await;
        if g.body == secret {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&g.body).into_owned())
        }
    })
    .await;
}
