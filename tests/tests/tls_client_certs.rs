//! Spec §8 through a real Envoy: `https_redirect` on a plain listener (status and `Location` for
//! several hosts, ports and queries; hostile Host headers), and listener client certificates
//! (`client_ca_file`, `client_cert: required|optional`) with `x-forwarded-client-cert` and the
//! `auth.mtls` provider in authz-service.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tests::authz::AuthzService;
use tests::{free_port, wait_for, EchoUpstream, HttpClient, Stack, XdsMode, CONVERGE_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PARTNER_URI: &str = "spiffe://partners/a";

/// A CA and what it signs.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Cert {
    pem: String,
    key_pem: String,
}

impl Cert {
    /// Chain and key in one text, as reqwest's identity wants it.
    fn identity(&self) -> String {
        format!("{}{}", self.pem, self.key_pem)
    }
}

fn partner_params() -> CertificateParams {
    let mut p = CertificateParams::new(vec!["a.partners.example".to_string()]).unwrap();
    p.distinguished_name
        .push(DnType::OrganizationName, "Partners");
    p.distinguished_name.push(DnType::CommonName, "partner-a");
    p.subject_alt_names
        .push(SanType::URI(PARTNER_URI.try_into().unwrap()));
    p
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, params: CertificateParams) -> Cert {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Cert {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A self-signed certificate copying the partner's subject and names: a forgery.
fn forged() -> Cert {
    let key = KeyPair::generate().unwrap();
    let cert = partner_params().self_signed(&key).unwrap();
    Cert {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

struct Gw {
    stack: Stack,
    _authz: AuthzService,
    _upstream: EchoUpstream,
    http_port: u16,
    https_port: u16,
    server: Cert,
    partners: Pki,
}

async fn start(client_cert: &str) -> Gw {
    let upstream = EchoUpstream::start("api").await;
    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-mtls-")
        .tempdir()
        .unwrap();
    let server_ca = Pki::new("Server CA");
    let server = server_ca.issue(CertificateParams::new(vec!["localhost".to_string()]).unwrap());
    let partners = Pki::new("Partners CA");
    std::fs::write(dir.path().join("api.crt"), &server.pem).unwrap();
    std::fs::write(dir.path().join("api.key"), &server.key_pem).unwrap();
    std::fs::write(dir.path().join("partners-ca.pem"), &partners.ca_pem).unwrap();
    let (http_port, https_port, authz_port) = (free_port(), free_port(), free_port());
    let yaml = format!(
        r#"version: 1
services:
  api: {{ endpoints: [{up}] }}
auth:
  service: {{ address: 127.0.0.1:{authz_port}, timeout: 1s, on_error: deny }}
  mtls:
    partners: {{ client_id: uri_san, plans: {{ "{PARTNER_URI}": pro }}, default_plan: free }}
    by-subject: {{ client_id: subject }}
gateways:
  edge:
    listeners:
      - {{ name: http, address: 127.0.0.1, port: {http_port}, https_redirect: true }}
      - name: https
        address: 127.0.0.1
        port: {https_port}
        tls: {{ cert_file: api.crt, key_file: api.key, client_ca_file: partners-ca.pem, client_cert: {client_cert} }}
    routes:
      - {{ name: public, match: {{ prefix: /public }}, service: api, auth: none }}
      - {{ name: subject, match: {{ prefix: /subject }}, service: api, auth: [by-subject] }}
      - {{ name: mtls, match: {{ prefix: /mtls }}, service: api, auth: [partners] }}
"#,
        up = upstream.endpoint()
    );
    let stack = Stack::start_in(dir, XdsMode::Sotw, &yaml).await;
    let authz = AuthzService::start_on(
        "authz-mtls",
        &stack.xds.grpc_addr(),
        authz_port,
        stack.dir(),
    )
    .await;
    stack.wait_converged().await;
    let gw = Gw {
        stack,
        _authz: authz,
        _upstream: upstream,
        http_port,
        https_port,
        server: Cert {
            pem: server_ca.ca_pem.clone(),
            key_pem: String::new(),
        },
        partners,
    };
    let trusted = gw.client(Some(&gw.partner()));
    wait_for("the TLS listener to answer", CONVERGE_TIMEOUT, async || {
        trusted
            .get("/mtls")
            .send()
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    gw
}

impl Gw {
    fn partner(&self) -> Cert {
        self.partners.issue(partner_params())
    }

    /// A client of the TLS listener trusting the server's CA, presenting `cert` if given.
    fn client(&self, cert: Option<&Cert>) -> HttpClient {
        let id = cert.map(Cert::identity);
        HttpClient::https_as(
            "localhost",
            self.https_port,
            &self.server.pem,
            id.as_deref(),
        )
    }
}

/// One raw HTTP/1.1 request (`head` without the final blank line) to 127.0.0.1:`port`: the
/// status and the `Location` header of the response.
async fn raw(port: u16, head: &str) -> (u16, Option<String>) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("a response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let location = text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim().to_string())
    });
    (status, location)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_redirect_and_optional_client_certificates() {
    let gw = start("optional").await;
    let tls = gw.https_port;

    // ---- https_redirect: the host without its port, the TLS listener's port, path and query
    // byte for byte; no auth, no route.
    let q = "/a/b?x=1&y=%2F";
    for (host, location) in [
        (
            "api.example.com",
            format!("https://api.example.com:{tls}{q}"),
        ),
        (
            "api.example.com:8080",
            format!("https://api.example.com:{tls}{q}"),
        ),
        (
            "API.Example.com:80",
            format!("https://API.Example.com:{tls}{q}"),
        ),
        ("10.1.2.3:99", format!("https://10.1.2.3:{tls}{q}")),
        (
            "[2001:db8::1]:8080",
            format!("https://[2001:db8::1]:{tls}{q}"),
        ),
    ] {
        let got = raw(gw.http_port, &format!("GET {q} HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(got, (301, Some(location)), "Host: {host}");
    }
    // A POST with a body and credentials: redirected at once, the body never read.
    let got = raw(
        gw.http_port,
        "POST /mtls?z HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(got, (301, Some(format!("https://api:{tls}/mtls?z"))));
    // The absolute form names the client's own host (only the requester is redirected), but
    // never another port or scheme.
    let got = raw(
        gw.http_port,
        "GET http://other.example:99/p HTTP/1.1\r\nHost: api",
    )
    .await;
    assert_eq!(got, (301, Some(format!("https://other.example:{tls}/p"))));
    // Hosts that would not be a plain host in a Location: refused, never redirected.
    for host in [
        "api.example.com@evil.example",
        "user@evil.example:443",
        "api.example.com%2F@evil.example",
        "api example.com",
        "evil.example/x",
        "",
    ] {
        let (status, location) =
            raw(gw.http_port, &format!("GET /p HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!((status, location), (400, None), "Host: {host:?}");
    }

    // ---- optional client certificates
    let anonymous = gw.client(None);
    let r = anonymous
        .get("/public")
        .header("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\"")
        .header("x-client-id", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "optional: no certificate still gets in");
    assert_eq!(
        r.upstream_header("x-forwarded-client-cert"),
        None,
        "a client-sent XFCC never reaches the upstream"
    );
    assert_eq!(r.upstream_header("x-client-id"), None);
    let r = anonymous.get("/mtls").send().await.unwrap();
    assert_eq!(
        r.status, 401,
        "an mtls-only route needs a verified certificate"
    );
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains("ClientCertificate")),
        "{:?}",
        r.headers
    );

    let partner = gw.partner();
    let client = gw.client(Some(&partner));
    let r = client
        .get("/mtls")
        .header("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\"")
        .header("x-client-id", "admin")
        .header("x-client-plan", "enterprise")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-client-id"), Some(PARTNER_URI));
    assert_eq!(r.upstream_header("x-client-plan"), Some("pro"));
    assert_eq!(r.upstream_header("x-auth-provider"), Some("partners"));
    let xfcc = r
        .upstream_header("x-forwarded-client-cert")
        .expect("Envoy sets XFCC")
        .to_string();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(xfcc.contains(&format!("URI={PARTNER_URI}")), "{xfcc}");
    assert!(xfcc.contains("DNS=a.partners.example"), "{xfcc}");
    assert!(
        !xfcc.contains("CN=admin"),
        "the client's copy is gone: {xfcc}"
    );

    // The subject authz-service reads is the one Envoy shows upstream; unlisted: default plan.
    let r = client.get("/subject").send().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let subject = r
        .upstream_header("x-client-id")
        .expect("a client id")
        .to_string();
    assert!(
        subject.contains("CN=partner-a") && subject.contains("O=Partners"),
        "{subject}"
    );
    let xfcc = r.upstream_header("x-forwarded-client-cert").unwrap();
    assert!(
        xfcc.contains(&format!("Subject=\"{subject}\"")),
        "{xfcc} vs {subject}"
    );
    assert_eq!(r.upstream_header("x-client-plan"), None, "no plan anywhere");

    // A self-signed copy of the partner's subject and names is refused in the handshake, even
    // though a certificate is optional.
    let forger = gw.client(Some(&forged()));
    for path in ["/public", "/mtls"] {
        assert!(
            forger.get(path).send().await.is_err(),
            "a forged certificate must not complete the handshake ({path})"
        );
    }
    // Another CA's certificate with the partner's names: the same.
    let other_ca = Pki::new("Partners CA");
    let other = other_ca.issue(partner_params());
    assert!(gw.client(Some(&other)).get("/mtls").send().await.is_err());

    // Replacing the CA file rotates the trust anchors over SDS, nothing restarted: the new CA's
    // certificates get in, the old one's no longer do.
    let dir = gw.stack.dir().to_path_buf();
    let tmp = dir.join(".partners-ca.pem.tmp");
    std::fs::write(&tmp, &other_ca.ca_pem).unwrap();
    std::fs::rename(&tmp, dir.join("partners-ca.pem")).unwrap();
    let rotated = gw.client(Some(&other));
    wait_for(
        "the new client CA to be in force",
        CONVERGE_TIMEOUT,
        async || {
            rotated
                .get("/mtls")
                .send()
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;
    assert!(
        gw.client(Some(&partner)).get("/mtls").send().await.is_err(),
        "a certificate of the replaced CA is refused"
    );
    drop(gw.stack);
}

#[tokio::test(flavor = "multi_thread")]
async fn required_client_certificates_refuse_the_handshake_without_one() {
    let gw = start("required").await;
    let anonymous = gw.client(None);
    assert!(
        anonymous.get("/public").send().await.is_err(),
        "required: no handshake without a certificate, even for a public route"
    );
    let r = gw
        .client(Some(&gw.partner()))
        .get("/public")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.upstream_header("x-forwarded-client-cert").is_some());
    assert!(gw
        .client(Some(&forged()))
        .get("/public")
        .send()
        .await
        .is_err());
}
