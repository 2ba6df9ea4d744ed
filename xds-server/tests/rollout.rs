//! `rollout` against the real ADS server on a socket and real ADS clients (the policy services'
//! `xds_client`): a policy service that ACKs lets the rollout through, one that NACKs stops it
//! and is never offered the refused version again, one that never answers is waited for at most
//! `POLICY_FIRST_TIMEOUT`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ads::snapshot::{Resource, Snapshot, Snapshots, TypeSnapshot};
use ads::{AdsServer, Metrics, Registry, ROUTE};
use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use proto::pb::google::protobuf::Any;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use xds_server::rollout::{rollout, RolloutError, POLICY_FIRST_TIMEOUT};

const AUTHZ: &str = proto::group::AUTHZ;
const POLICY: &str = proto::type_url::AUTH_POLICY;
const WAIT: Duration = Duration::from_secs(10);

/// A gateway `edge` with one route configuration and the authz group with one policy (any
/// bytes: the test's clients read them as text).
fn snapshots(route: &str, policy: &str) -> Snapshots {
    let one = |t: &str, name: &str, body: &str| {
        Snapshot::new(BTreeMap::from([(
            t.to_string(),
            TypeSnapshot::new([Resource::from_bytes(t, name, body.as_bytes().to_vec())]),
        )]))
    };
    Snapshots::new(BTreeMap::from([
        ("edge".to_string(), one(ROUTE, "edge", route)),
        (AUTHZ.to_string(), one(POLICY, "policy", policy)),
    ]))
}

/// Refuses any policy containing "bad"; records every policy it was offered.
#[derive(Clone, Default)]
struct Service(Arc<Mutex<Vec<String>>>);

impl xds_client::Apply for Service {
    fn apply(&mut self, _version: &str, resources: &[Any]) -> Result<(), String> {
        let body = String::from_utf8_lossy(&resources[0].value).to_string();
        self.0.lock().unwrap().push(body.clone());
        if body.contains("bad") {
            return Err(format!("cannot compile {body}"));
        }
        Ok(())
    }
}

impl Service {
    fn offered(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct World {
    snaps: watch::Sender<Arc<Snapshots>>,
    registry: Arc<Registry>,
    addr: std::net::SocketAddr,
    _shutdown: watch::Sender<bool>,
}

async fn start(initial: Snapshots) -> World {
    let (snaps, rx) = watch::channel(Arc::new(initial));
    let (shutdown, sd) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let ads = AdsServer::new(rx, registry.clone(), Arc::new(Metrics::new()), sd);
    let listener = ads::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ads.serve(listener, std::future::pending()));
    World {
        snaps,
        registry,
        addr,
        _shutdown: shutdown,
    }
}

impl World {
    /// Starts a policy service `node_id` and waits until it holds the current policy.
    async fn service(&self, node_id: &str) -> Service {
        let service = Service::default();
        let (state, mut ready) = watch::channel(xds_client::State::default());
        let opts = xds_client::Options::new(self.addr.to_string(), node_id, AUTHZ, POLICY);
        let applier = service.clone();
        tokio::spawn(async move {
            // Held by the task: the client runs until the test's runtime ends.
            let (_shutdown, sd) = watch::channel(false);
            xds_client::run(opts, applier, state, sd).await
        });
        tokio::time::timeout(WAIT, ready.wait_for(|s| s.version.is_some()))
            .await
            .expect("the service gets its first policy")
            .unwrap();
        service
    }

    fn version(&self) -> String {
        self.snaps.borrow().version.clone()
    }
}

/// Polls `cond` until it holds; panics after [`WAIT`].
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    test_support::wait::wait_for(what, WAIT, async || cond()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_lets_the_rollout_through_and_a_nack_stops_it() {
    let world = start(snapshots("r1", "p1")).await;
    let service = world.service("authz-1").await;

    // Accepted: the gateways get the new routes too.
    let good = snapshots("r2", "p2");
    let good_version = good.version.clone();
    rollout(&world.snaps, good, &world.registry)
        .await
        .expect("accepted");
    assert_eq!(world.version(), good_version);
    assert_eq!(service.offered(), ["p1", "p2"]);

    // Refused: everything goes back to the previous snapshots, the service keeps p2.
    let err = rollout(&world.snaps, snapshots("r3", "bad-3"), &world.registry)
        .await
        .expect_err("refused");
    let RolloutError::Refused { refusals } = &err;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].node_id, "authz-1");
    assert_eq!(refusals[0].group, AUTHZ);
    assert_eq!(refusals[0].nack.error, "cannot compile bad-3");
    assert_eq!(
        refusals[0].nack.code, 3,
        "INVALID_ARGUMENT, as xds_client sends"
    );
    assert!(err.lines()[0].contains("authz-1") && err.lines()[0].contains("cannot compile bad-3"));
    assert_eq!(world.version(), good_version, "the gateways keep r2");
    // Offered its last good policy again, the service ends up on p2 with nothing outstanding.
    wait_until("p2 offered again", || service.offered().len() == 4).await;
    assert_eq!(service.offered(), ["p1", "p2", "bad-3", "p2"]);

    // The same refused policy again: refused at once, not offered.
    let again = rollout(&world.snaps, snapshots("r4", "bad-3"), &world.registry)
        .await
        .expect_err("refused again");
    assert_eq!(again.refusals()[0].nack.version, refusals[0].nack.version);
    assert_eq!(
        service.offered(),
        ["p1", "p2", "bad-3", "p2"],
        "bad-3 is not re-sent"
    );
    assert_eq!(world.version(), good_version);

    // A good edit afterwards rolls out as usual.
    let fixed = snapshots("r5", "p5");
    let fixed_version = fixed.version.clone();
    rollout(&world.snaps, fixed, &world.registry)
        .await
        .expect("accepted");
    assert_eq!(world.version(), fixed_version);
    assert_eq!(service.offered().last().map(String::as_str), Some("p5"));
}

/// A policy service that subscribes and then never answers.
async fn silent_service(addr: std::net::SocketAddr) -> mpsc::Sender<DiscoveryRequest> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: "authz-silent".into(),
            cluster: AUTHZ.into(),
            ..Default::default()
        }),
        type_url: POLICY.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The first response means the server has registered us; only then may the rollout start,
    // or it would find no policy service to wait for.
    responses
        .message()
        .await
        .unwrap()
        .expect("the current policy is sent");
    // Read (and never answer) whatever comes, so the server is never blocked on us.
    tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_is_waited_for_at_most_the_bound() {
    let world = start(snapshots("r1", "p1")).await;
    let _silent = silent_service(world.addr).await;
    let next = snapshots("r2", "p2");
    let version = next.version.clone();
    let start = tokio::time::Instant::now();
    rollout(&world.snaps, next, &world.registry)
        .await
        .expect("a hung service does not block the rollout");
    let took = start.elapsed();
    assert!(took >= POLICY_FIRST_TIMEOUT, "waited {took:?}");
    assert!(took < POLICY_FIRST_TIMEOUT + WAIT, "waited {took:?}");
    assert_eq!(world.version(), version);
}
