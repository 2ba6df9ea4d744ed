//! TLS termination on a listener, and certificate rotation by replacing the files on disk with
//! nothing restarted.

use std::path::Path;

use tests::{
    free_port, sotw_and_delta, wait_for, EchoUpstream, HttpClient, Stack, XdsMode, CONVERGE_TIMEOUT,
};

sotw_and_delta!(tls_termination_and_rotation);

struct Cert {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn self_signed(name: &str) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("generate certificate");
    Cert {
        pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().to_vec(),
    }
}

/// Replaces both files by write-then-rename, key first (each file is always whole).
fn install(cert: &Cert, dir: &Path) {
    for (name, text) in [("api.key", &cert.key_pem), ("api.crt", &cert.pem)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write cert temp file");
        std::fs::rename(&tmp, dir.join(name)).expect("rename cert into place");
    }
}

async fn tls_termination_and_rotation(mode: XdsMode) {
    let up = EchoUpstream::start("secure").await;
    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-tls-")
        .tempdir()
        .expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir certs");
    let first = self_signed("localhost");
    install(&first, &certs);

    let (http_port, https_port) = (free_port(), free_port());
    // Paths relative to gateway.yaml, as in the spec's example.
    let yaml = format!(
        r#"version: 1
services:
  secure: {{ endpoints: [{up}] }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {http_port} }}
      - {{ name: https, port: {https_port}, tls: {{ cert_file: certs/api.crt, key_file: certs/api.key }} }}
    routes:
      - name: secure
        match: {{ prefix: / }}
        service: secure
        auth: none
"#,
        up = up.endpoint(),
    );
    let stack = Stack::start_in(dir, mode, &yaml).await;

    let trusts_first = HttpClient::https("localhost", https_port, &first.pem);
    let r = wait_for(
        "the HTTPS listener to answer",
        CONVERGE_TIMEOUT,
        async || trusts_first.get("/hello").send().await,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream(), Some("secure"));
    assert_eq!(r.upstream_path(), Some("/hello"));
    assert_eq!(
        r.upstream_header("x-forwarded-proto"),
        Some("https"),
        "{r:?}"
    );
    assert_eq!(r.peer_certificate.as_deref(), Some(first.der.as_slice()));
    // The plain listener is unaffected.
    assert_eq!(stack.client(http_port).get("/plain").ok().await.status, 200);

    // Rotate: new files, same paths; Envoy must start serving the new certificate by itself.
    let second = self_signed("localhost");
    install(&second, &certs);
    let trusts_second = HttpClient::https("localhost", https_port, &second.pem);
    let r = wait_for(
        "Envoy to serve the replaced certificate",
        CONVERGE_TIMEOUT,
        async || {
            let r = trusts_second
                .get("/rotated")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.peer_certificate.as_deref() == Some(second.der.as_slice()) {
                Ok(r)
            } else {
                Err("still the old certificate".to_string())
            }
        },
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_path(), Some("/rotated"));
    assert!(
        trusts_first.get("/old").send().await.is_err(),
        "a client trusting only the old certificate must now fail the handshake"
    );
    stack.wait_converged().await;
}
