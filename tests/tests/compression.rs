//! Response compression (spec §8 `compression`) as a client sees it through a real Envoy: each
//! algorithm decodes back to exactly the bytes the upstream sent, the best accepted algorithm
//! wins with ties going to the configured order, `q=0` is honoured, and small bodies, other
//! content types and already-encoded responses pass unchanged.

use std::io::Read;

use tests::{
    free_port, sotw_and_delta, wait_for, wait_for_route, EchoUpstream, Stack, XdsMode,
    CONVERGE_TIMEOUT,
};

sotw_and_delta!(compression);

/// A response well over `min_bytes` (the echo upstream returns the request body inside its JSON).
const BIG: usize = 8 * 1024;

struct Answer {
    status: u16,
    encoding: Option<String>,
    vary: Option<String>,
    body: Vec<u8>,
}

async fn get(port: u16, accept: Option<&str>, body_len: usize, extra: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::builder().build().expect("client");
    // The request id is fixed so that every answer to the same request is the same bytes.
    let mut req = client
        .post(format!("http://127.0.0.1:{port}/api/echo"))
        .header("x-request-id", "compression-test")
        .body("abcdefgh".repeat(body_len / 8));
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    for (n, v) in extra {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.expect("Envoy answers");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, encoding, vary) = (
        resp.status().as_u16(),
        header("content-encoding"),
        header("vary"),
    );
    let body = resp.bytes().await.expect("body").to_vec();
    Answer {
        status,
        encoding,
        vary,
        body,
    }
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "br" => {
            brotli_decompressor::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "zstd" => {
            ruzstd::decoding::StreamingDecoder::new(body)
                .expect("a zstd frame")
                .read_to_end(&mut out)
                .expect("valid zstd");
        }
        other => panic!("unexpected encoding {other}"),
    }
    out
}

async fn compression(mode: XdsMode) {
    let echo = EchoUpstream::start("echo").await;
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  echo: {{ endpoints: [{echo}] }}
gateways:
  edge:
    compression: {{ algorithms: [zstd, br, gzip], min_bytes: 1KiB, content_types: [application/json, text/plain] }}
    listeners:
      - {{ name: http, port: {port} }}
    routes:
      - {{ name: api, match: {{ prefix: /api }}, service: echo, auth: none }}
"#,
        echo = echo.endpoint(),
    );
    let stack = Stack::start(mode, &yaml).await;
    wait_for_route(&stack.client(port), "/api/ready", 200).await;

    // The reference: no Accept-Encoding, the upstream's bytes as they are.
    let plain = get(port, None, BIG, &[]).await;
    assert_eq!((plain.status, plain.encoding.as_deref()), (200, None));
    let json: serde_json::Value = serde_json::from_slice(&plain.body).expect("JSON");
    assert_eq!(json["body"].as_str().map(str::len), Some(BIG));
    // Envoy compresses, so the upstream never sees what the client accepts.
    assert_eq!(json["headers"]["accept-encoding"], serde_json::Value::Null);

    // Each algorithm alone: chosen, smaller, and decoded back to exactly the same bytes.
    for alg in ["gzip", "br", "zstd"] {
        let a = get(port, Some(alg), BIG, &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.encoding.as_deref(), Some(alg), "Accept-Encoding: {alg}");
        assert!(
            a.body.len() < plain.body.len() / 4,
            "{alg}: {} bytes",
            a.body.len()
        );
        assert_eq!(
            decode(alg, &a.body),
            plain.body,
            "{alg} decodes to the original"
        );
        assert!(
            a.vary
                .as_deref()
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("accept-encoding"),
            "{alg}: Vary {:?}",
            a.vary
        );
    }

    // Negotiation: the client's q-values first, then the configured order; q=0 refuses.
    let cases: &[(&str, Option<&str>)] = &[
        ("gzip, br, zstd", Some("zstd")),
        ("gzip, br", Some("br")),
        ("gzip;q=1, br;q=0.9, zstd;q=0.8", Some("gzip")),
        ("br;q=0.5, gzip;q=0.5", Some("br")),
        ("*", Some("zstd")),
        ("zstd;q=0, *", Some("br")),
        ("zstd;q=0, br;q=0, *;q=0.5", Some("gzip")),
        ("GZIP", Some("gzip")),
        ("gzip;q=abc, br", Some("br")),
        ("gzip;q=0", None),
        ("gzip;q=0, br;q=0, zstd;q=0", None),
        ("*;q=0", None),
        ("identity", None),
        ("deflate, compress", None),
        ("", None),
    ];
    for (accept, want) in cases {
        let a = get(port, Some(accept), BIG, &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.encoding.as_deref(), *want, "Accept-Encoding: {accept:?}");
        match want {
            Some(alg) => assert_eq!(decode(alg, &a.body), plain.body, "{accept:?}"),
            None => assert_eq!(a.body, plain.body, "{accept:?} is passed unchanged"),
        }
    }

    // Left alone: a body under min_bytes, a type not listed, a response already encoded.
    let small = get(port, Some("gzip, br, zstd"), 64, &[]).await;
    assert!(small.body.len() < 1024, "{} bytes", small.body.len());
    assert_eq!((small.status, small.encoding.as_deref()), (200, None));
    assert!(serde_json::from_slice::<serde_json::Value>(&small.body).is_ok());

    // (The steering header reaches the upstream's JSON, so each has its own reference.)
    let steer = [("x-echo-content-type", "text/csv")];
    let csv = get(port, Some("gzip"), BIG, &steer).await;
    assert_eq!((csv.status, csv.encoding.as_deref()), (200, None));
    assert_eq!(csv.body, get(port, None, BIG, &steer).await.body);

    // The type's parameters and letter case do not hide a listed type.
    let steer = [("x-echo-content-type", "Text/Plain; charset=utf-8")];
    let charset = get(port, Some("gzip"), BIG, &steer).await;
    assert_eq!(charset.encoding.as_deref(), Some("gzip"));
    assert_eq!(
        decode("gzip", &charset.body),
        get(port, None, BIG, &steer).await.body
    );

    // Labelled `br` by the upstream: neither re-compressed nor touched.
    let steer = [("x-echo-content-encoding", "br")];
    let encoded = get(port, Some("gzip"), BIG, &steer).await;
    assert_eq!(
        (encoded.status, encoded.encoding.as_deref()),
        (200, Some("br"))
    );
    assert_eq!(encoded.body, get(port, None, BIG, &steer).await.body);

    // Hot reload: another order takes effect without a restart, and removing the key turns
    // compression off.
    let line = "compression: { algorithms: [zstd, br, gzip], min_bytes: 1KiB, content_types: [application/json, text/plain] }";
    assert!(yaml.contains(line));
    stack
        .config
        .write(&yaml.replace(line, "compression: { algorithms: [gzip, br] }"));
    wait_for(
        "gzip to win the tie after the edit",
        CONVERGE_TIMEOUT,
        async || {
            get(port, Some("br, gzip, zstd"), BIG, &[])
                .await
                .encoding
                .as_deref()
                == Some("gzip")
        },
    )
    .await;
    let a = get(port, Some("zstd"), BIG, &[]).await;
    assert_eq!(a.encoding, None, "zstd is no longer offered");
    let removed: String = yaml
        .lines()
        .filter(|l| !l.contains("compression:"))
        .map(|l| format!("{l}\n"))
        .collect();
    stack.config.write(&removed);
    wait_for(
        "compression to be off after the edit",
        CONVERGE_TIMEOUT,
        async || get(port, Some("gzip"), BIG, &[]).await.encoding.is_none(),
    )
    .await;
    // The upstream now sees what the client accepts, and its answer passes as it is.
    let after = get(port, Some("gzip, br, zstd"), BIG, &[]).await;
    assert_eq!(after.encoding, None);
    let json: serde_json::Value = serde_json::from_slice(&after.body).expect("JSON");
    assert_eq!(json["headers"]["accept-encoding"], "gzip, br, zstd");
}
