//! Upstream mTLS (spec §8): an upstream that requires a client certificate from its CA accepts
//! the gateway's, sees the new one after the certificate and key files are replaced (over SDS,
//! with nothing restarted and the cluster not re-created), and refuses a service of the same
//! gateway that has no `cert_file`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use tests::{sotw_and_delta, wait_for, wait_for_route, Stack, XdsMode, CONVERGE_TIMEOUT};

sotw_and_delta!(upstream_requires_the_gateways_client_certificate_and_sees_it_rotate);

const UPSTREAM_NAME: &str = "upstream.internal";

struct Pem {
    cert: String,
    key: String,
    der: Vec<u8>,
}

/// A private CA issuing server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, common_name: &str, usage: ExtendedKeyUsagePurpose) -> Pem {
        let mut params =
            CertificateParams::new(vec![common_name.to_string()]).expect("leaf params");
        params.distinguished_name = dn(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTPS upstream that requires a client certificate signed by its CA and answers every
/// request with the hex DER of the certificate the client presented. It closes every connection
/// after one response, so each request is a fresh handshake and shows the certificate Envoy
/// presents now.
struct MtlsUpstream {
    addr: SocketAddr,
    /// Handshakes that failed (no certificate, or one the CA did not sign).
    refused: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for MtlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MtlsUpstream {
    async fn start(ca_pem: &str, server: &Pem) -> MtlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("CA certificate");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(server.cert.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).expect("server key PEM");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let refused = Arc::new(AtomicU64::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        counter.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let presented = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| hex(c.as_ref()))
                        .unwrap_or_default();
                    let svc = service_fn(move |_req| {
                        let body = presented.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        MtlsUpstream {
            addr,
            refused,
            task,
        }
    }
}

/// Replaces the gateway's client certificate files by write-then-rename, key first.
fn install(client: &Pem, dir: &Path) {
    for (name, text) in [("gw.key", &client.key), ("gw.crt", &client.cert)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write temp file");
        std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
    }
}

async fn upstream_requires_the_gateways_client_certificate_and_sees_it_rotate(mode: XdsMode) {
    let ca = Ca::new("mesh CA");
    let server = ca.issue(UPSTREAM_NAME, ExtendedKeyUsagePurpose::ServerAuth);
    let first = ca.issue("gateway-1", ExtendedKeyUsagePurpose::ClientAuth);
    let second = ca.issue("gateway-2", ExtendedKeyUsagePurpose::ClientAuth);
    let up = MtlsUpstream::start(&ca.pem, &server).await;

    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-upstream-mtls-")
        .tempdir()
        .expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir certs");
    std::fs::write(certs.join("ca.pem"), &ca.pem).expect("write CA");
    install(&first, &certs);

    let port = tests::free_port();
    let addr = up.addr;
    let yaml = format!(
        r#"version: 1
services:
  mesh:
    endpoints: [{addr}]
    tls: {{ sni: {UPSTREAM_NAME}, ca_file: certs/ca.pem, cert_file: certs/gw.crt, key_file: certs/gw.key }}
  no-cert:
    endpoints: [{addr}]
    tls: {{ sni: {UPSTREAM_NAME}, ca_file: certs/ca.pem }}
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      - {{ name: mesh, match: {{ prefix: /mesh }}, service: mesh, auth: none }}
      - {{ name: no-cert, match: {{ prefix: /no-cert }}, service: no-cert, auth: none }}
"#
    );
    let stack = Stack::start_in(dir, mode, &yaml).await;
    let client = stack.client(port);

    let r = wait_for_route(&client, "/mesh", 200).await;
    assert_eq!(
        r.body,
        hex(&first.der),
        "the upstream saw another certificate"
    );
    stack.wait_converged().await;

    // The same upstream, the same gateway, no `cert_file`: the upstream refuses the handshake.
    let refused_before = up.refused.load(Ordering::SeqCst);
    let r = client.get("/no-cert").send().await.expect("a response");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        up.refused.load(Ordering::SeqCst) > refused_before,
        "the upstream never refused a handshake"
    );

    // Rotate: new files from the same CA at the same paths. The cluster is not re-created
    // (the certificate is a Secret) and Envoy keeps running.
    let modified = stack.envoy.stat("cluster_manager.cluster_modified").await;
    let uptime_before = stack.envoy.stat("server.uptime").await.unwrap_or(0);
    install(&second, &certs);
    // Requests during the rotation get the old certificate or the new one, never an error.
    let failed = AtomicU64::new(0);
    let r = wait_for(
        "the upstream to see the replaced client certificate",
        CONVERGE_TIMEOUT,
        async || {
            let r = client
                .get("/mesh")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status != 200 {
                failed.fetch_add(1, Ordering::SeqCst);
            }
            if r.status == 200 && r.body == hex(&second.der) {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, &r.body[..r.body.len().min(32)]))
            }
        },
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the rotation"
    );
    // Every later request presents the new certificate, and none fails.
    for _ in 0..10 {
        let r = client.get("/mesh").ok().await;
        assert_eq!(r.body, hex(&second.der));
    }
    stack.wait_converged().await;
    assert_eq!(
        stack.envoy.stat("cluster_manager.cluster_modified").await,
        modified,
        "the rotation re-created the cluster instead of updating its Secret"
    );
    assert!(
        stack.envoy.stat("server.uptime").await.unwrap_or(0) >= uptime_before,
        "Envoy restarted"
    );
    assert_eq!(
        client
            .get("/no-cert")
            .send()
            .await
            .expect("a response")
            .status,
        503
    );

    // A reload that adds a service with its own client certificate: the new cluster warms on
    // its Secret, which follows it on the same stream, well within the time Envoy would wait
    // for a Secret that never came (15 s) before bringing the cluster up without it.
    let third = ca.issue("gateway-3", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(certs.join("gw3.crt"), &third.cert).expect("write cert");
    std::fs::write(certs.join("gw3.key"), &third.key).expect("write key");
    let added = yaml
        .replace(
            "gateways:",
            &format!(
                "  mesh-3:\n    endpoints: [{addr}]\n    tls: {{ sni: {UPSTREAM_NAME}, ca_file: certs/ca.pem, cert_file: certs/gw3.crt, key_file: certs/gw3.key }}\ngateways:"
            ),
        )
        .replace(
            "    routes:\n",
            "    routes:\n      - { name: mesh-3, match: { prefix: /mesh-3 }, service: mesh-3, auth: none }\n",
        );
    let start = std::time::Instant::now();
    stack.config.write(&added);
    let r = wait_for_route(&client, "/mesh-3", 200).await;
    let took = start.elapsed();
    eprintln!("a service with a client certificate added in {took:?}");
    assert_eq!(r.body, hex(&third.der));
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    stack.wait_converged().await;
}
