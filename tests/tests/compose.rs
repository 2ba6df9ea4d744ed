//! `compose` routes (spec §9) through a real Envoy, authz-service and ratelimit-service: the exact
//! merged body with every part's bytes as the part sent them, a slow part cut off by the route's
//! timeout while the answer still arrives in time, a failing part, non-JSON parts (a table of
//! valid and invalid JSON texts), the identity headers and `x-request-id` on every part call
//! (never a client's copy), no part call for a request auth or a limit refuses, 405 for other
//! methods, HEAD answered without a body, and parts added and removed by a hot reload.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape};
use tests::{wait_for, wait_for_route, CONVERGE_TIMEOUT};

/// A part answering with numbers no float keeps, escapes, non-ASCII text and nesting: it must
/// reach the client byte for byte.
const USER: &str = r#"{"id":12345678901234567890123,"price":1.10,"tiny":-0.5e-10,"name":"J\u00e9r\u00f4me \"q\" \\ \/","emoji":"😀","text":"naïve","nested":[{"a":[]},{},[[null,true,false]]]}"#;

/// What the parts upstream received on one path.
#[derive(Debug, Clone, Default)]
struct Seen {
    hits: u64,
    /// Request headers of the last call.
    headers: BTreeMap<String, String>,
    /// The path and query of the last call.
    uri: String,
}

#[derive(Default)]
struct Log {
    by_path: BTreeMap<String, Seen>,
}

/// The parts' upstream: fixed answers by path, every call recorded.
struct Parts {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

/// The table of bodies served at `/table/<i>`: (body, whether it is one valid JSON text).
fn table() -> Vec<(String, bool)> {
    let deep_ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let deep_bad = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let raw = |s: &str, ok: bool| (s.to_string(), ok);
    vec![
        raw("0", true),
        raw("-0", true),
        raw("1.5E+3", true),
        raw("\"\"", true),
        raw(" \t\n{\"a\" : [ 1 , 2 ] }\r\n", true),
        raw(r#""\ud83d\ude00""#, true),
        raw("\"\u{7f}\"", true),
        raw("null", true),
        (deep_ok, true),
        raw("", false),
        raw("01", false),
        raw("1.", false),
        raw(".5", false),
        raw("+1", false),
        raw("1e", false),
        raw("NaN", false),
        raw("{\"a\":1,}", false),
        raw("[1,]", false),
        raw("{'a':1}", false),
        raw("{\"a\" 1}", false),
        raw("\"tab\there\"", false),
        raw(r#""\x41""#, false),
        raw(r#""\ud83d""#, false),
        raw(r#""\ude00""#, false),
        raw(r#""\u12""#, false),
        raw("\"unterminated", false),
        raw("{} {}", false),
        raw("truex", false),
        raw("nul", false),
        raw("<html></html>", false),
        (deep_bad, false),
    ]
}

/// Bytes that are not UTF-8 inside a JSON string (an overlong `/`, a lone continuation byte, a
/// UTF-16 surrogate in UTF-8 form): served at `/bytes/<i>`, each invalid.
const BAD_UTF8: [&[u8]; 3] = [b"\"\xc0\xaf\"", b"\"\x80\"", b"\"\xed\xa0\x80\""];

async fn answer(State(log): State<Arc<Mutex<Log>>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    {
        let mut log = log.lock().expect("log");
        let seen = log.by_path.entry(path.clone()).or_default();
        seen.hits += 1;
        seen.uri = req.uri().to_string();
        seen.headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
    }
    let json = |status: StatusCode, body: Vec<u8>| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Some(i) = path.strip_prefix("/table/") {
        let i: usize = i.parse().expect("table index");
        return json(StatusCode::OK, table()[i].0.clone().into_bytes());
    }
    if let Some(i) = path.strip_prefix("/bytes/") {
        let i: usize = i.parse().expect("bytes index");
        return json(StatusCode::OK, BAD_UTF8[i].to_vec());
    }
    match path.as_str() {
        "/user" => json(StatusCode::OK, USER.as_bytes().to_vec()),
        "/orders" => json(StatusCode::OK, b"[{\"n\":1},{\"n\":2}]".to_vec()),
        "/fail" => json(StatusCode::INTERNAL_SERVER_ERROR, b"{\"e\":1}".to_vec()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, b"{}".to_vec())
        }
        "/html" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "{\"looks\":\"like json\"}",
        )
            .into_response(),
        "/problem" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/problem+json")],
            "{\"ok\":true}",
        )
            .into_response(),
        "/empty" => StatusCode::NO_CONTENT.into_response(),
        // Just over the 1 MiB bound, and valid JSON.
        "/big" => json(
            StatusCode::OK,
            format!("\"{}\"", "x".repeat(1 << 20)).into_bytes(),
        ),
        "/extra" => json(StatusCode::OK, b"{\"extra\":true}".to_vec()),
        _ => json(StatusCode::NOT_FOUND, b"{}".to_vec()),
    }
}

impl Parts {
    async fn start() -> Parts {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let app = Router::new().fallback(answer).with_state(log.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve parts");
        });
        Parts { addr, log, task }
    }

    fn seen(&self, path: &str) -> Seen {
        let log = self.log.lock().expect("log");
        log.by_path.get(path).cloned().unwrap_or_default()
    }

    fn total_hits(&self) -> u64 {
        let log = self.log.lock().expect("log");
        log.by_path.values().map(|s| s.hits).sum()
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn services(parts: &Parts) -> String {
    // `gone` listens nowhere: every call to it fails to connect.
    let gone = tests::free_port();
    format!(
        "  parts: {{ endpoints: [{}] }}\n  gone: {{ endpoints: [127.0.0.1:{gone}], connect_timeout: 250ms }}\n",
        parts.addr
    )
}

const HOME: &str = r#"      - name: home
        match: { path: /home, methods: [GET] }
        auth: main
        timeout: 1s
        compose:
          user: { service: parts, path: /user }
          orders: { service: parts, path: "/orders?limit=5&sort=new" }
          fail: { service: parts, path: /fail }
          gone: { service: gone, path: /anything }
          slow: { service: parts, path: /slow }
          late: { service: parts, path: /user }
"#;

fn routes(extra: &str) -> String {
    let mut table_parts = String::new();
    for i in 0..table().len() {
        table_parts.push_str(&format!(
            "          t{i}: {{ service: parts, path: /table/{i} }}\n"
        ));
    }
    for i in 0..BAD_UTF8.len() {
        table_parts.push_str(&format!(
            "          b{i}: {{ service: parts, path: /bytes/{i} }}\n"
        ));
    }
    format!(
        r#"      - name: public
        match: {{ path: /public }}
        respond: {{ status: 200, json: {{ ok: true }} }}
        auth: none
{HOME}      - name: shapes
        match: {{ path: /shapes }}
        auth: none
        rate_limit: none
        compose:
          html: {{ service: parts, path: /html }}
          problem: {{ service: parts, path: /problem }}
          empty: {{ service: parts, path: /empty }}
          big: {{ service: parts, path: /big }}
{extra}      - name: table
        match: {{ path: /table }}
        auth: none
        rate_limit: none
        compose:
{table_parts}"#
    )
}

async fn start(parts: &Parts, plans: &str) -> (Full, Shape) {
    let mut shape = Shape::new(plans, &routes(""));
    shape.services_extra = services(parts);
    let gw = Full::start(&shape, None).await;
    (gw, shape)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_merged_failures_reported_and_the_timeout_holds() {
    let parts = Parts::start().await;
    let (gw, _shape) = start(&parts, "{ free: 1000/minute, pro: 1000/minute }").await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;
    let auth = bearer(&token("alice", "free"));

    // Twice: the second call finds the connections the first one's cut-off left behind.
    for round in 0..2 {
        let started = Instant::now();
        let r = client
            .get("/home?limit=1000&evil=1")
            .header("authorization", &auth)
            .header("x-request-id", "compose-req-1")
            // Abuse: identity headers of the client's own making.
            .header("x-user-id", "admin")
            .header("x-client-id", "admin")
            .header("x-auth-provider", "forged")
            .ok()
            .await;
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{r:?}");
        // `slow` used up what was left of the 1 s budget, so `late` was never called.
        let expected = format!(
            r#"{{"user":{USER},"orders":[{{"n":1}},{{"n":2}}],"fail":null,"gone":null,"slow":null,"late":null,"errors":{{"fail":{{"status":500}},"gone":{{"status":503}},"slow":{{"status":504}},"late":{{"status":504}}}}}}"#
        );
        assert_eq!(r.body, expected);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-compose-complete"), Some("false"));
        assert_eq!(r.header("x-request-id"), Some("compose-req-1"));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1600),
            "the 1 s timeout bounds the whole answer; took {took:?}"
        );
        println!("compose with a part cut off by a 1 s timeout answered in {took:?}");
        assert_eq!(parts.seen("/slow").hits, round + 1);
        assert_eq!(
            parts.seen("/user").hits,
            round + 1,
            "`late` must not be called"
        );
    }

    // Every part call carried the verified identity and the request id, never the client's.
    for path in ["/user", "/orders", "/fail", "/slow"] {
        let seen = parts.seen(path);
        let h = |n: &str| seen.headers.get(n).map(String::as_str);
        assert_eq!(h("x-user-id"), Some("alice"), "{path}: {seen:?}");
        assert_eq!(h("x-client-id"), Some("alice"), "{path}: {seen:?}");
        assert_eq!(h("x-client-plan"), Some("free"), "{path}: {seen:?}");
        assert_eq!(h("x-auth-provider"), Some("main"), "{path}: {seen:?}");
        assert_eq!(h("x-request-id"), Some("compose-req-1"), "{path}: {seen:?}");
        assert_eq!(h("authorization"), None, "{path}: the token reached a part");
    }
    // The part's own query is kept; the client's is not passed on.
    assert_eq!(parts.seen("/orders").uri, "/orders?limit=5&sort=new");

    // A complete answer says so.
    let r = client.get("/shapes").ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"html":null,"problem":{"ok":true},"empty":null,"big":null,"errors":{"html":{"status":502},"empty":{"status":502},"big":{"status":502}}}"#
    );
    assert_eq!(r.header("x-compose-complete"), Some("false"));
    let r = client
        .get("/home")
        .header("authorization", &auth)
        .ok()
        .await;
    assert_eq!(r.header("x-compose-complete"), Some("false"));
    // x-request-id generated by Envoy reaches the parts too.
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert_eq!(
        parts.seen("/user").headers.get("x-request-id"),
        Some(&id),
        "the generated id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_bodies_are_checked_as_json_and_embedded_as_sent() {
    let parts = Parts::start().await;
    let (gw, _shape) = start(&parts, "{ free: 1000/minute, pro: 1000/minute }").await;
    let client = gw.stack.client(gw.ports.http);
    let r = wait_for_route(&client, "/table", 200).await;
    let mut members = Vec::new();
    let mut errors = Vec::new();
    for (i, (body, valid)) in table().iter().enumerate() {
        if *valid {
            members.push(format!(
                "\"t{i}\":{}",
                body.trim_matches([' ', '\t', '\r', '\n'])
            ));
        } else {
            members.push(format!("\"t{i}\":null"));
            errors.push(format!("\"t{i}\":{{\"status\":502}}"));
        }
    }
    for i in 0..BAD_UTF8.len() {
        members.push(format!("\"b{i}\":null"));
        errors.push(format!("\"b{i}\":{{\"status\":502}}"));
    }
    let expected = format!(
        "{{{},\"errors\":{{{}}}}}",
        members.join(","),
        errors.join(",")
    );
    assert_eq!(r.body, expected);
    // And the whole answer is JSON.
    let parsed: serde_json::Value = serde_json::from_str(&r.body).expect("JSON answer");
    assert_eq!(parsed["t5"], serde_json::json!("😀"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_call_no_part_and_other_methods_get_405() {
    let parts = Parts::start().await;
    let (gw, _shape) = start(&parts, "{ free: 2/minute, pro: 1000/minute }").await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/public", 200).await;

    // No credentials, a bad token, a forged identity header: 401, and no part is called.
    let r = client.get("/home").ok().await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = client
        .get("/home")
        .header("authorization", "Bearer not-a-token")
        .header("x-client-id", "alice")
        .ok()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(parts.total_hits(), 0, "a refused request called a part");

    // Two requests a minute: the third is refused with 429 before any part call.
    let auth = bearer(&token("bob", "free"));
    for _ in 0..2 {
        let r = client
            .get("/home")
            .header("authorization", &auth)
            .ok()
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let before = parts.total_hits();
    assert!(before > 0);
    let r = client
        .get("/home")
        .header("authorization", &auth)
        .ok()
        .await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["error"], "too_many_requests");
    assert_eq!(
        parts.total_hits(),
        before,
        "a rate-limited request called a part"
    );

    // Other methods: 405 JSON with the request id, and no part call.
    for method in ["POST", "PUT", "DELETE"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = client
            .request(m, "/shapes")
            .header("x-request-id", "m-1")
            .body("{}")
            .ok()
            .await;
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.json()["error"], "method_not_allowed", "{method}");
        assert_eq!(r.json()["request_id"], "m-1", "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    assert_eq!(parts.seen("/html").hits, 0, "a 405 called a part");

    // HEAD is answered like GET, without the body.
    let r = client.request(reqwest::Method::HEAD, "/shapes").ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-compose-complete"), Some("false"));
    assert_eq!(r.body, "");
    assert_eq!(parts.seen("/html").hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_parts() {
    let parts = Parts::start().await;
    let (gw, mut shape) = start(&parts, "{ free: 1000/minute, pro: 1000/minute }").await;
    let client = gw.stack.client(gw.ports.http);
    wait_for_route(&client, "/shapes", 200).await;

    let extra = "      - name: added\n        match: { path: /added }\n        auth: none\n        rate_limit: none\n        compose:\n          extra: { service: parts, path: /extra }\n";
    shape.routes = routes(extra);
    gw.stack.config.write(&gw.yaml(&shape));
    wait_for_route(&client, "/added", 200).await;
    assert_eq!(
        client.get("/added").ok().await.body,
        r#"{"extra":{"extra":true}}"#
    );

    let two = format!("{extra}          orders: {{ service: parts, path: /orders }}\n");
    shape.routes = routes(&two);
    gw.stack.config.write(&gw.yaml(&shape));
    let body = wait_for("the added part", CONVERGE_TIMEOUT, async || {
        let r = client
            .get("/added")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.body.contains("orders") {
            Ok(r)
        } else {
            Err(r.body)
        }
    })
    .await;
    assert_eq!(
        body.body,
        r#"{"extra":{"extra":true},"orders":[{"n":1},{"n":2}]}"#
    );
    assert_eq!(body.header("x-compose-complete"), Some("true"));

    shape.routes = routes(extra);
    gw.stack.config.write(&gw.yaml(&shape));
    wait_for("the removed part", CONVERGE_TIMEOUT, async || {
        let r = client
            .get("/added")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.body == r#"{"extra":{"extra":true}}"# {
            Ok(())
        } else {
            Err(r.body)
        }
    })
    .await;
}
