//! TLS termination on a listener, certificate rotation by replacing the files on disk with
//! nothing restarted, and broken certificate and key files refused where gateway.yaml is checked
//! (`xds-server validate`, a live reload) with the file named, never sent to Envoy.

use std::path::Path;

use tests::xds::validate;
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

/// gateway.yaml with a plain listener and an HTTPS one on `certs/api.crt` and `certs/api.key`.
fn tls_yaml(upstream: &str, http_port: u16, https_port: u16) -> String {
    // Paths relative to gateway.yaml, as in the spec's example.
    format!(
        r#"version: 1
services:
  secure: {{ endpoints: [{upstream}] }}
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
"#
    )
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
    let yaml = tls_yaml(&up.endpoint(), http_port, https_port);
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
    // Without client_ca_file no client certificate is asked for, and a client-sent
    // x-forwarded-client-cert reaches no upstream on either listener (spec §8).
    let forged_xfcc = "Hash=00;Subject=\"CN=admin\";URI=spiffe://partners/a";
    let via_tls = trusts_first
        .get("/xfcc")
        .header("x-forwarded-client-cert", forged_xfcc)
        .ok()
        .await;
    let via_plain = stack
        .client(http_port)
        .get("/xfcc")
        .header("x-forwarded-client-cert", forged_xfcc)
        .ok()
        .await;
    for r in [via_tls, via_plain] {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.upstream_header("x-forwarded-client-cert"), None, "{r:?}");
    }

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

/// Replaces one file by write-then-rename.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// A truncated certificate, text that is no PEM, a key file holding a certificate, and the key
/// of another certificate: each is refused by `xds-server validate` (exit 1, the file named) and
/// by a live reload, where the gateway keeps serving the previous certificate and `/status` names
/// the file. Envoy never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificate_files_are_refused_and_the_old_certificate_stays() {
    let up = EchoUpstream::start("secure").await;
    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-tls-broken-")
        .tempdir()
        .expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir certs");
    let first = self_signed("localhost");
    install(&first, &certs);
    let (http_port, https_port) = (free_port(), free_port());
    let stack = Stack::start_in(
        dir,
        XdsMode::Sotw,
        &tls_yaml(&up.endpoint(), http_port, https_port),
    )
    .await;
    let config = stack.config.path().to_path_buf();
    let trusts_first = HttpClient::https("localhost", https_port, &first.pem);
    let serves_first = async || {
        let r = trusts_first
            .get("/still")
            .send()
            .await
            .expect("the HTTPS listener answers");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.peer_certificate.as_deref(),
            Some(first.der.as_slice()),
            "the previous certificate is still served"
        );
    };
    wait_for(
        "the HTTPS listener to answer",
        CONVERGE_TIMEOUT,
        async || trusts_first.get("/hello").send().await,
    )
    .await;
    serves_first().await;
    let version = stack.xds.status().await["version"].clone();

    let crt = certs.join("api.crt");
    let key = certs.join("api.key");
    let other = self_signed("localhost");
    let cut = &first.pem[..first.pem.len() / 2];
    for (file, contents, why) in [
        (&crt, cut, "is not valid PEM"),
        (&crt, "not a certificate\n", "holds no certificate"),
        (&key, first.pem.as_str(), "holds no private key"),
        (
            &key,
            other.key_pem.as_str(),
            "the private key is not the key of the (first) certificate",
        ),
    ] {
        let named = format!("{}: {why}", file.display());
        let out = validate_after(file, contents, &config);
        assert_eq!(out.0, Some(1), "{named}: {}", out.1);
        assert!(
            out.1.lines().any(|l| l.contains(&named)),
            "{named}:\n{}",
            out.1
        );

        let st = wait_for(
            &format!("/status to report {named}"),
            CONVERGE_TIMEOUT,
            async || {
                let st = stack.xds.try_status().await.ok()?;
                let errors = st["last_error"]["errors"].as_array()?;
                errors
                    .iter()
                    .any(|e| e.as_str().is_some_and(|e| e.contains(&named)))
                    .then_some(st)
            },
        )
        .await;
        assert_eq!(
            st["version"], version,
            "a refused edit changes nothing: {st}"
        );
        serves_first().await;
        assert_eq!(stack.client(http_port).get("/plain").ok().await.status, 200);

        // Put back: accepted again, nothing else changed.
        let good = if file == &crt {
            &first.pem
        } else {
            &first.key_pem
        };
        replace(file, good);
        wait_for(
            "/status to clear last_error",
            CONVERGE_TIMEOUT,
            async || {
                let st = stack.xds.try_status().await.ok()?;
                st["last_error"].is_null().then_some(())
            },
        )
        .await;
    }
    // Nothing was ever NACKed: the broken files never reached Envoy.
    stack.wait_converged().await;
    let st = stack.xds.status().await;
    assert!(!st.to_string().contains("<inline>"), "{st}");
    serves_first().await;
}

/// Replaces `file` with `contents` and runs `xds-server validate` on `config`: (exit code, output).
fn validate_after(file: &Path, contents: &str, config: &Path) -> (Option<i32>, String) {
    replace(file, contents);
    let out = validate(config);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
