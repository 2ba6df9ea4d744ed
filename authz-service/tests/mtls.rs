//! `auth.mtls` providers: a verified client certificate (as Envoy sends it in a Check request)
//! is a credential with a client id from the chosen field and a plan; without one, or without
//! the field, the provider refuses.

mod common;

use authz_service::policy::{Decision, DenyStatus};
use authz_service::service::{AuthzService, Shared};
use common::*;
use proto::authz::{AuthPolicy, CertField, CertPlan, MtlsProvider};
use proto::pb::envoy::service::auth::v3::attribute_context::Peer;

fn policy() -> AuthPolicy {
    let mut p = AuthPolicy {
        mtls: vec![
            MtlsProvider {
                name: "by-uri".into(),
                client_id: CertField::UriSan as i32,
                plans: vec![CertPlan {
                    client_id: "spiffe://p/a".into(),
                    plan: "pro".into(),
                }],
                default_plan: String::new(),
            },
            MtlsProvider {
                name: "by-dns".into(),
                client_id: CertField::DnsSan as i32,
                plans: vec![],
                default_plan: "gold".into(),
            },
        ],
        routes: vec![
            route("uri", &["by-uri"]),
            route("dns", &["by-dns"]),
            route("public", &[]),
        ],
        plans: vec!["free".into(), "pro".into()],
        default_plan: "free".into(),
        ..Default::default()
    };
    p.identity_headers = identity_headers(&p);
    p
}

/// A certificate's PEM, URL-encoded the way Envoy sends `source.certificate`.
fn cert(params: rcgen::CertificateParams) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn decide(svc: &AuthzService, route: &str, certificate: Option<&str>) -> Decision {
    let mut req = check_request(Some(route), &[("x-request-id", "r1")], "/");
    if let Some(c) = certificate {
        req.attributes.as_mut().unwrap().source = Some(Peer {
            certificate: c.to_string(),
            ..Default::default()
        });
    }
    svc.decide(&req).await.0
}

#[tokio::test]
async fn a_verified_certificate_is_a_credential() {
    let shared = Shared::new();
    shared
        .policy
        .store(Some(std::sync::Arc::new(compile(&policy()))));
    let svc = AuthzService::new(shared);

    let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a, \"quoted\"");
    params
        .subject_alt_names
        .push(rcgen::SanType::URI("spiffe://p/a".try_into().unwrap()));
    let with_uri = cert(params);
    let dns_only = cert(rcgen::CertificateParams::new(vec!["b.example".to_string()]).unwrap());

    let Decision::Allow(a) = decide(&svc, "uri", Some(&with_uri)).await else {
        panic!("a certificate with the URI SAN is accepted")
    };
    assert_eq!(a.provider, "by-uri");
    let id = a.identity.unwrap();
    assert_eq!(
        (id.client_id.as_str(), id.plan.as_str()),
        ("spiffe://p/a", "pro")
    );

    // Not listed in `plans`: the provider's default plan, and one `rate_limits.plans` does not
    // define resolves to the policy's default (and is recorded as unknown).
    let Decision::Allow(a) = decide(&svc, "dns", Some(&dns_only)).await else {
        panic!("the DNS SAN is the client id")
    };
    let id = a.identity.unwrap();
    assert_eq!(id.client_id, "b.example");
    assert_eq!(id.plan, "free");
    assert_eq!(id.unknown_plan.as_deref(), Some("gold"));

    for (route, certificate, status) in [
        // No certificate; one without the field; one that is not a certificate.
        ("uri", None, DenyStatus::Unauthorized),
        ("uri", Some(dns_only.as_str()), DenyStatus::Unauthorized),
        (
            "uri",
            Some("-----BEGIN%20CERTIFICATE-----%0AAAAA"),
            DenyStatus::Unauthorized,
        ),
    ] {
        match decide(&svc, route, certificate).await {
            Decision::Deny(d) => {
                assert_eq!(d.status, status, "{route} {certificate:?}");
                assert!(
                    d.challenge
                        .as_deref()
                        .is_some_and(|c| c.contains("ClientCertificate")),
                    "{d:?}"
                );
            }
            other => panic!("{route} {certificate:?}: {other:?}"),
        }
    }
    assert!(matches!(
        decide(&svc, "public", None).await,
        Decision::Allow(_)
    ));
}

#[test]
fn subjects_are_written_as_rfc_2253() {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Partners");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "#a, b+c ");
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    let id = config::pem::client_identity(pem.as_bytes()).unwrap();
    // rcgen writes the CN first; RFC 2253 writes the last RDN first, as OpenSSL (and Envoy's
    // XFCC, which the end-to-end test compares with) does.
    assert_eq!(id.subject, r"O=Partners,CN=\#a\, b\+c\ ");
    assert!(id.uris.is_empty() && id.dns.is_empty());
}
