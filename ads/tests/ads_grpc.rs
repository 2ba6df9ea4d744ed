//! The ADS server over real gRPC on a real socket, driven by the generated Envoy client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ads::snapshot::{Resource, Snapshot, Snapshots, TypeSnapshot};
use ads::Metrics;
use ads::{AdsServer, Registry, CLUSTER};
use prost::Message;
use proto::pb::envoy::config::cluster::v3::Cluster;
use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use proto::pb::google::rpc::Status as RpcStatus;
use test_support::wait_for;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

fn snapshots(cluster_names: &[&str]) -> Arc<Snapshots> {
    let clusters = TypeSnapshot::new(cluster_names.iter().map(|n| {
        Resource::new(
            CLUSTER,
            *n,
            &Cluster {
                name: n.to_string(),
                ..Default::default()
            },
        )
    }));
    let snap = Snapshot::new(BTreeMap::from([(CLUSTER.to_string(), clusters)]));
    Arc::new(Snapshots::new(BTreeMap::from([("edge".to_string(), snap)])))
}

struct Server {
    addr: std::net::SocketAddr,
    snaps: watch::Sender<Arc<Snapshots>>,
    registry: Arc<Registry>,
    _shutdown: watch::Sender<bool>,
}

async fn start(initial: Arc<Snapshots>) -> Server {
    let (snaps, rx) = watch::channel(initial);
    let (shutdown, sd) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let ads = AdsServer::new(rx, registry.clone(), Arc::new(Metrics::new()), sd);
    let listener = ads::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ads.serve(listener, std::future::pending()));
    Server {
        addr,
        snaps,
        registry,
        _shutdown: shutdown,
    }
}

fn node(cluster: &str) -> Option<Node> {
    Some(Node {
        id: "test-node".into(),
        cluster: cluster.into(),
        ..Default::default()
    })
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sotw_push_ack_nack_and_update() {
    let server = start(snapshots(&["a", "b"])).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(DiscoveryRequest {
        node: node("edge"),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let first = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.type_url, CLUSTER);
    let names: Vec<String> = first
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        first.version_info,
        server.snaps.borrow().groups["edge"]
            .get(CLUSTER)
            .unwrap()
            .version
    );

    // NACK it; then publish a new snapshot: the next response must be the new version, never the
    // rejected one again.
    tx.send(DiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: first.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "rejected for the test".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // Wait until the server has recorded the NACK (visible on the status registry).
    let c = wait_for("the NACK to be recorded", WAIT, async || {
        let c = server.registry.clients();
        c.iter()
            .any(|c| c.types.get(CLUSTER).is_some_and(|t| t.nacked.is_some()))
            .then_some(c)
    })
    .await;
    let t = &c[0].types[CLUSTER];
    assert_eq!(t.nacked.as_ref().unwrap().error, "rejected for the test");
    assert_eq!(c[0].gateway, "edge");
    server.snaps.send_replace(snapshots(&["a", "b", "c"]));
    let second = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(second.version_info, first.version_info);
    assert_eq!(second.resources.len(), 3);
}

#[tokio::test]
async fn delta_initial_versions_skip_known_resources() {
    let snaps = snapshots(&["a", "b"]);
    let known = snaps.groups["edge"].get(CLUSTER).unwrap().resources["a"]
        .version
        .clone();
    let server = start(snaps).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: node("edge"),
        type_url: CLUSTER.into(),
        initial_resource_versions: [("a".to_string(), known)].into_iter().collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["b"],
        "the client already holds a at the current version"
    );
    assert_eq!(server.registry.clients()[0].protocol, "delta");
}

#[tokio::test]
async fn unknown_gateway_gets_nothing_but_is_listed() {
    let server = start(snapshots(&["a"])).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(DiscoveryRequest {
        node: node("nope"),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    wait_for(
        "the client of gateway nope to be listed",
        WAIT,
        async || {
            server
                .registry
                .clients()
                .iter()
                .any(|c| c.gateway == "nope")
        },
    )
    .await;
    // Once the gateway appears in the config, the waiting client is served.
    let mut groups: BTreeMap<String, Snapshot> = BTreeMap::new();
    let clusters = TypeSnapshot::new([Resource::new(
        CLUSTER,
        "x",
        &Cluster {
            name: "x".into(),
            ..Default::default()
        },
    )]);
    groups.insert(
        "nope".into(),
        Snapshot::new(BTreeMap::from([(CLUSTER.to_string(), clusters)])),
    );
    server.snaps.send_replace(Arc::new(Snapshots::new(groups)));
    let r = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.resources.len(), 1);
}
