//! The identity check over real TLS, for the Delta protocol (the end-to-end test drives SotW): a
//! client certificate naming `edge` is served `edge` and refused any other node group before
//! anything is sent, and a refused client is counted and never registered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ads::snapshot::{Resource, Snapshot, Snapshots, TypeSnapshot};
use ads::{AdsServer, Metrics, Registry, CLUSTER};
use proto::pb::envoy::config::cluster::v3::Cluster;
use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    ca: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().pem();
        Pki {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate, key) PEM for DNS name `dns` and, if given, node group `group`.
    fn issue(&self, dns: &str, group: Option<&str>) -> (String, String) {
        let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
        if let Some(g) = group {
            params
                .subject_alt_names
                .push(SanType::URI(ads::identity::uri_for(g).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn snapshots() -> Arc<Snapshots> {
    let snap = |name: &str| {
        let clusters = TypeSnapshot::new([Resource::new(
            CLUSTER,
            name,
            &Cluster {
                name: name.into(),
                ..Default::default()
            },
        )]);
        Snapshot::new(BTreeMap::from([(CLUSTER.to_string(), clusters)]))
    };
    Arc::new(Snapshots::new(BTreeMap::from([
        ("edge".to_string(), snap("secret-of-edge")),
        ("internal".to_string(), snap("secret-of-internal")),
    ])))
}

/// Opens a Delta stream as node group `claimed` and returns the first answer.
async fn first_delta(
    addr: std::net::SocketAddr,
    pki: &Pki,
    cert: &(String, String),
    claimed: &str,
) -> Result<Vec<String>, tonic::Status> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .identity(Identity::from_pem(&cert.0, &cert.1))
        .domain_name("xds-server");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("the TLS handshake succeeds with a certificate from the CA");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: format!("node-{claimed}"),
            cluster: claimed.into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("an answer in time")?
        .expect("a response, not the end of the stream");
    // Kept open until the answer is read, so the server never sees an end of stream first.
    drop(tx);
    Ok(first.resources.into_iter().map(|r| r.name).collect())
}

#[tokio::test]
async fn delta_clients_are_served_the_group_their_certificate_names_only() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue("xds-server", None);
    let (_snaps, rx) = watch::channel(snapshots());
    let (_shutdown, sd) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::new());
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(server_cert, server_key))
        .client_ca_root(Certificate::from_pem(&pki.ca));
    let ads = AdsServer::new(rx, registry.clone(), metrics.clone(), sd).with_tls(tls);
    let listener = ads::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ads.serve(listener, std::future::pending()));

    let edge = pki.issue("edge", Some("edge"));
    let status = first_delta(addr, &pki, &edge, "internal")
        .await
        .expect_err("edge's certificate claiming internal");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let nameless = pki.issue("someone", None);
    let status = first_delta(addr, &pki, &nameless, "edge")
        .await
        .expect_err("a certificate naming no group");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(registry.clients().is_empty(), "{:?}", registry.clients());
    for (reason, n) in [("other_group", 1), ("no_group", 1)] {
        assert_eq!(
            metrics.refused.with_label_values(&[reason]).get(),
            n,
            "{reason}"
        );
    }

    let served = first_delta(addr, &pki, &edge, "edge")
        .await
        .expect("edge's certificate claiming edge");
    assert_eq!(served, ["secret-of-edge"]);
}
