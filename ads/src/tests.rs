//! Protocol tests of the stream state machine against synthetic snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use proto::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};

use super::stream::{Mode, Request, Stream, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use super::Registry;
use crate::metrics::Metrics;
use crate::snapshot::{Resource, Snapshot, TypeSnapshot};

fn snap(types: &[(&str, &[(&str, &str)])]) -> Arc<Snapshot> {
    let mut m = BTreeMap::new();
    for (t, rs) in types {
        m.insert(
            t.to_string(),
            TypeSnapshot::new(
                rs.iter()
                    .map(|(n, body)| Resource::from_bytes(t, *n, body.as_bytes().to_vec())),
            ),
        );
    }
    Arc::new(Snapshot::new(m))
}

fn base() -> Arc<Snapshot> {
    snap(&[
        (CLUSTER, &[("users", "c1")]),
        (ENDPOINT, &[("users", "e1")]),
        (LISTENER, &[("http", "l1")]),
        (ROUTE, &[("edge", "r1")]),
    ])
}

struct Harness {
    s: Stream,
    now: Instant,
}

impl Harness {
    fn new(mode: Mode, snapshot: Arc<Snapshot>) -> Self {
        let registry = Arc::new(Registry::default());
        let id = registry.add(mode.as_str());
        let mut s = Stream::new(mode, id, registry, Arc::new(Metrics::new()));
        s.set_node("n1", "edge");
        s.set_snapshots(&BTreeMap::from([("edge".to_string(), snapshot)]));
        Self {
            s,
            now: Instant::now(),
        }
    }

    fn set(&mut self, snapshot: Arc<Snapshot>) {
        self.s
            .set_snapshots(&BTreeMap::from([("edge".to_string(), snapshot)]));
    }

    fn sotw(
        &mut self,
        type_url: &str,
        names: &[&str],
        nonce: &str,
        error: Option<&str>,
    ) -> Vec<DiscoveryResponse> {
        self.s.handle(Request {
            type_url: type_url.into(),
            nonce: nonce.into(),
            error: error.map(Into::into),
            names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        self.advance_sotw()
    }

    fn advance_sotw(&mut self) -> Vec<DiscoveryResponse> {
        self.s
            .advance(self.now)
            .into_iter()
            .map(|e| DiscoveryResponse::decode(e.0).unwrap())
            .collect()
    }

    fn delta(
        &mut self,
        type_url: &str,
        sub: &[&str],
        unsub: &[&str],
        nonce: &str,
        error: Option<&str>,
    ) -> Vec<DeltaDiscoveryResponse> {
        self.s.handle(Request {
            type_url: type_url.into(),
            nonce: nonce.into(),
            error: error.map(Into::into),
            subscribe: sub.iter().map(|s| s.to_string()).collect(),
            unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        self.advance_delta()
    }

    fn advance_delta(&mut self) -> Vec<DeltaDiscoveryResponse> {
        self.s
            .advance(self.now)
            .into_iter()
            .map(|e| DeltaDiscoveryResponse::decode(e.0).unwrap())
            .collect()
    }
}

fn types(rs: &[DiscoveryResponse]) -> Vec<&str> {
    rs.iter().map(|r| r.type_url.as_str()).collect()
}

/// Walks a SotW client through the initial handshake the way Envoy does: it holds its cluster
/// ACK until the clusters' endpoints arrived.
fn sotw_converge(h: &mut Harness) {
    let r = h.sotw(CLUSTER, &[], "", None);
    assert_eq!(types(&r), [CLUSTER], "only clusters may go first");
    let cds = r[0].nonce.clone();
    let r = h.sotw(LISTENER, &[], "", None);
    assert!(
        r.is_empty(),
        "listeners must wait for clusters: {:?}",
        types(&r)
    );
    let r = h.sotw(ENDPOINT, &["users"], "", None);
    assert_eq!(
        types(&r),
        [ENDPOINT],
        "endpoints follow clusters without waiting for the ACK"
    );
    let r = h.sotw(ENDPOINT, &["users"], &r[0].nonce.clone(), None);
    assert!(r.is_empty(), "listeners wait for the cluster ACK");
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert_eq!(types(&r), [LISTENER]);
    let r = h.sotw(LISTENER, &[], &r[0].nonce.clone(), None);
    assert!(r.is_empty());
    let r = h.sotw(ROUTE, &["edge"], "", None);
    assert_eq!(types(&r), [ROUTE]);
    assert!(h
        .sotw(ROUTE, &["edge"], &r[0].nonce.clone(), None)
        .is_empty());
}

fn with_clusters(clusters: &[(&str, &str)], route: &str) -> Arc<Snapshot> {
    let eds: Vec<(&str, &str)> = clusters.iter().map(|(n, _)| (*n, "e1")).collect();
    snap(&[
        (CLUSTER, clusters),
        (ENDPOINT, &eds),
        (LISTENER, &[("http", "l1")]),
        (ROUTE, &[("edge", route)]),
    ])
}

#[test]
fn sotw_initial_push_is_ordered_and_gated_on_acks() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    assert!(
        h.advance_sotw().is_empty(),
        "nothing more to send once everything is ACKed"
    );
}

#[test]
fn sotw_nack_is_not_resent_and_holds_later_types() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(with_clusters(&[("users", "c2")], "r2"));
    let r = h.advance_sotw();
    assert_eq!(types(&r), [CLUSTER, ENDPOINT]);
    let (cds, eds) = (r[0].nonce.clone(), r[1].nonce.clone());
    assert!(h.sotw(ENDPOINT, &["users"], &eds, None).is_empty());
    let r = h.sotw(CLUSTER, &[], &cds, Some("bad cluster"));
    assert!(
        r.is_empty(),
        "a NACKed version must not be re-sent, nor later types: {:?}",
        types(&r)
    );
    h.now += Duration::from_secs(60);
    assert!(
        h.advance_sotw().is_empty(),
        "still nothing after time passes"
    );
    // A fixed snapshot goes out again.
    h.set(with_clusters(&[("users", "c3")], "r2"));
    assert_eq!(types(&h.advance_sotw()), [CLUSTER, ENDPOINT]);
}

#[test]
fn sotw_endpoints_are_resent_after_every_cluster_change() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(with_clusters(&[("users", "c2")], "r1"));
    let r = h.advance_sotw();
    assert_eq!(
        types(&r),
        [CLUSTER, ENDPOINT],
        "unchanged endpoints must still be re-sent"
    );
    assert_eq!(r[1].resources.len(), 1);
}

#[test]
fn sotw_stale_nonce_is_ignored() {
    let mut h = Harness::new(Mode::Sotw, base());
    let r = h.sotw(CLUSTER, &[], "", None);
    assert_eq!(r.len(), 1);
    let cds = r[0].nonce.clone();
    let r = h.sotw(ENDPOINT, &["users"], "", None);
    assert_eq!(types(&r), [ENDPOINT]);
    let eds = r[0].nonce.clone();
    // A request echoing a nonce we never sent (or an old one) changes nothing.
    assert!(h.sotw(CLUSTER, &[], "999", Some("old news")).is_empty());
    assert!(h.sotw(ENDPOINT, &["users"], &eds, None).is_empty());
    assert!(h.sotw(LISTENER, &[], "", None).is_empty());
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert_eq!(types(&r), [LISTENER], "the real ACK still counts");
}

#[test]
fn sotw_subscription_change_with_the_last_acked_nonce_is_answered() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(with_clusters(&[("users", "c1"), ("orders", "c1")], "r2"));
    let r = h.advance_sotw();
    assert_eq!(types(&r), [CLUSTER, ENDPOINT]);
    let (cds, eds) = (r[0].nonce.clone(), r[1].nonce.clone());
    assert_eq!(r[1].resources.len(), 1, "orders not requested yet");
    // Envoy ACKs the endpoints, then (after applying the clusters) asks for the new cluster's
    // endpoints echoing the same, latest, nonce.
    assert!(h.sotw(ENDPOINT, &["users"], &eds, None).is_empty());
    let r = h.sotw(ENDPOINT, &["orders", "users"], &eds, None);
    assert_eq!(types(&r), [ENDPOINT]);
    assert_eq!(r[0].resources.len(), 2);
    let r = h.sotw(ENDPOINT, &["orders", "users"], &r[0].nonce.clone(), None);
    assert!(r.is_empty(), "routes wait for the cluster ACK");
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert_eq!(types(&r), [ROUTE]);
}

#[test]
fn sotw_routes_wait_for_endpoint_subscription_of_new_cluster() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(with_clusters(&[("users", "c1"), ("orders", "c1")], "r2"));
    let r = h.advance_sotw();
    let (cds, eds) = (r[0].nonce.clone(), r[1].nonce.clone());
    assert!(h.sotw(ENDPOINT, &["users"], &eds, None).is_empty());
    // The cluster ACK arrives before the client subscribed to the new endpoints.
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert!(
        r.is_empty(),
        "routes must wait until endpoints of 'orders' are requested: {:?}",
        types(&r)
    );
    let r = h.sotw(ENDPOINT, &["orders", "users"], &eds, None);
    assert_eq!(types(&r), [ENDPOINT]);
    let r = h.sotw(ENDPOINT, &["orders", "users"], &r[0].nonce.clone(), None);
    assert_eq!(types(&r), [ROUTE]);
}

#[test]
fn sotw_removed_cluster_outlives_the_routes_that_named_it() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(with_clusters(&[("orders", "c1")], "r-orders"));
    let bodies = |r: &DiscoveryResponse| -> Vec<String> {
        r.resources
            .iter()
            .map(|a| String::from_utf8(a.value.clone()).unwrap())
            .collect()
    };
    let r = h.advance_sotw();
    assert_eq!(types(&r), [CLUSTER, ENDPOINT]);
    assert_eq!(bodies(&r[0]).len(), 2, "the old cluster is still offered");
    let (cds, eds) = (r[0].nonce.clone(), r[1].nonce.clone());
    let r = h.sotw(ENDPOINT, &["orders", "users"], &eds, None);
    assert_eq!(
        types(&r),
        [ENDPOINT],
        "the widened subscription is answered"
    );
    assert!(h
        .sotw(ENDPOINT, &["orders", "users"], &r[0].nonce.clone(), None)
        .is_empty());
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert_eq!(types(&r), [ROUTE], "listeners unchanged, routes next");
    let r = h.sotw(ROUTE, &["edge"], &r[0].nonce.clone(), None);
    assert_eq!(
        types(&r),
        [CLUSTER, ENDPOINT],
        "only now is the old cluster removed"
    );
    assert_eq!(bodies(&r[0]), ["c1"]);
}

#[test]
fn delta_sends_only_changes_and_removals() {
    let mut h = Harness::new(Mode::Delta, base());
    let r = h.delta(CLUSTER, &[], &[], "", None);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].resources.len(), 1);
    let cds = r[0].nonce.clone();
    let r = h.delta(ENDPOINT, &["users"], &[], "", None);
    assert_eq!(r[0].type_url, ENDPOINT);
    assert!(h
        .delta(ENDPOINT, &[], &[], &r[0].nonce.clone(), None)
        .is_empty());
    assert!(
        h.delta(CLUSTER, &[], &[], &cds, None).is_empty(),
        "LDS not yet subscribed"
    );
    let r = h.delta(LISTENER, &[], &[], "", None);
    assert_eq!(r[0].type_url, LISTENER);
    assert!(h
        .delta(LISTENER, &[], &[], &r[0].nonce.clone(), None)
        .is_empty());
    let r = h.delta(ROUTE, &["edge"], &[], "", None);
    assert_eq!(r[0].type_url, ROUTE);
    assert!(h
        .delta(ROUTE, &[], &[], &r[0].nonce.clone(), None)
        .is_empty());
    // Change the listener and drop the only cluster.
    h.set(snap(&[
        (CLUSTER, &[]),
        (ENDPOINT, &[]),
        (LISTENER, &[("http", "l2")]),
        (ROUTE, &[("edge", "r1")]),
    ]));
    // The dropped cluster stays until the changed listener is in place.
    let r = h.advance_delta();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].type_url, LISTENER);
    assert_eq!(r[0].resources.len(), 1, "only the changed resource");
    let r = h.delta(LISTENER, &[], &[], &r[0].nonce.clone(), None);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].type_url.as_str(), r[1].type_url.as_str()),
        (CLUSTER, ENDPOINT)
    );
    assert!(r[0].resources.is_empty());
    assert_eq!(r[0].removed_resources, ["users"]);
    assert_eq!(r[1].removed_resources, ["users"]);
}

#[test]
fn delta_nack_rolls_back_and_does_not_loop() {
    let mut h = Harness::new(Mode::Delta, base());
    let r = h.delta(CLUSTER, &[], &[], "", None);
    let r2 = h.delta(CLUSTER, &[], &[], &r[0].nonce.clone(), Some("nope"));
    assert!(r2.is_empty(), "rejected resources are not re-sent");
    h.set(snap(&[
        (CLUSTER, &[("users", "c9")]),
        (ENDPOINT, &[]),
        (LISTENER, &[]),
        (ROUTE, &[]),
    ]));
    let r = h.advance_delta();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].resources.len(), 1, "the new version goes out");
}

#[test]
fn delta_reconnect_with_current_versions_sends_nothing() {
    let s = base();
    let mut h = Harness::new(Mode::Delta, s.clone());
    let cds = s.get(CLUSTER).unwrap();
    h.s.handle(Request {
        type_url: CLUSTER.into(),
        initial_versions: cds
            .resources
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect(),
        ..Default::default()
    });
    assert!(h.advance_delta().is_empty());
}

#[test]
fn delta_unknown_explicit_subscription_is_reported_removed_once() {
    let mut h = Harness::new(Mode::Delta, base());
    let r = h.delta(ROUTE, &["nope"], &[], "", None);
    // Routes are gated behind clusters, which this client has not requested: after the grace
    // period the stream moves on.
    assert!(r.is_empty());
    h.now += Duration::from_secs(10);
    let r: Vec<_> = h
        .advance_delta()
        .into_iter()
        .filter(|r| r.type_url == ROUTE)
        .collect();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].removed_resources, ["nope"]);
    assert!(h.advance_delta().is_empty(), "reported once");
}

#[test]
fn sotw_endpoints_are_not_held_back_by_a_cluster_response_awaiting_its_ack() {
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    // Edit 1 adds a cluster; Envoy holds that cluster ACK until the new cluster has warmed.
    h.set(with_clusters(&[("users", "c1"), ("orders", "c1")], "r2"));
    let r = h.advance_sotw();
    assert_eq!(types(&r), [CLUSTER, ENDPOINT]);
    let eds = r[1].nonce.clone();
    // Edit 2 changes clusters again before that ACK.
    h.set(with_clusters(&[("users", "c2"), ("orders", "c1")], "r3"));
    assert!(
        h.advance_sotw().is_empty(),
        "one response in flight per type"
    );
    // Envoy asks for the new cluster's endpoints: they must go out, or it waits forever.
    let r = h.sotw(ENDPOINT, &["orders", "users"], &eds, None);
    assert_eq!(types(&r), [ENDPOINT]);
    assert_eq!(r[0].resources.len(), 2);
}

/// An edit that adds a cluster presenting a client certificate: Envoy holds the cluster ACK
/// until the cluster has warmed, which needs its Secret, so the Secret must not wait for that
/// ACK (it would come only after Envoy's 15 s initial-fetch timeout, without the certificate).
/// Routes still wait for the ACK; and while a listener change is pending, secrets wait too.
#[test]
fn sotw_a_new_clusters_secret_is_not_held_back_by_the_cluster_ack() {
    let added = |listener: &str| {
        snap(&[
            (CLUSTER, &[("users", "c1"), ("mesh", "c1")]),
            (ENDPOINT, &[("users", "e1"), ("mesh", "e1")]),
            (LISTENER, &[("http", listener)]),
            (SECRET, &[("mesh-cert", "s1")]),
            (ROUTE, &[("edge", "r2")]),
        ])
    };
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(added("l1"));
    let r = h.advance_sotw();
    assert_eq!(types(&r), [CLUSTER, ENDPOINT]);
    let (cds, eds) = (r[0].nonce.clone(), r[1].nonce.clone());
    // Envoy subscribes to the new cluster's endpoints, gets them and ACKs them.
    let r = h.sotw(ENDPOINT, &["mesh", "users"], &eds, None);
    assert_eq!(types(&r), [ENDPOINT]);
    assert!(h
        .sotw(ENDPOINT, &["mesh", "users"], &r[0].nonce.clone(), None)
        .is_empty());
    // Warming the new cluster, Envoy asks for its Secret before it ACKs the clusters.
    let r = h.sotw(SECRET, &["mesh-cert"], "", None);
    assert_eq!(
        types(&r),
        [SECRET],
        "the Secret must follow the unACKed cluster"
    );
    let r = h.sotw(SECRET, &["mesh-cert"], &r[0].nonce.clone(), None);
    assert!(
        r.is_empty(),
        "routes wait for the cluster ACK: {:?}",
        types(&r)
    );
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert_eq!(types(&r), [ROUTE]);

    // The same edit with a listener change: the listener goes first, the secrets after it.
    let mut h = Harness::new(Mode::Sotw, base());
    sotw_converge(&mut h);
    h.set(added("l2"));
    let r = h.advance_sotw();
    assert_eq!(types(&r), [CLUSTER, ENDPOINT]);
    let (cds, eds) = (r[0].nonce.clone(), r[1].nonce.clone());
    let r = h.sotw(ENDPOINT, &["mesh", "users"], &eds, None);
    assert!(h
        .sotw(ENDPOINT, &["mesh", "users"], &r[0].nonce.clone(), None)
        .is_empty());
    assert!(h.sotw(SECRET, &["mesh-cert"], "", None).is_empty());
    let r = h.sotw(CLUSTER, &[], &cds, None);
    assert_eq!(types(&r), [LISTENER]);
    let r = h.sotw(LISTENER, &[], &r[0].nonce.clone(), None);
    assert_eq!(types(&r), [SECRET]);
}

// ---- Registry::settled: how a rollout learns whether a node group took a version ----

mod settled {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use prost::Message;
    use proto::pb::envoy::service::discovery::v3::DiscoveryResponse;

    use super::snap;
    use crate::metrics::Metrics;
    use crate::stream::{Mode, Request, Stream};
    use crate::{Nack, Refusal, Registry, Settled, Target};

    const GROUP: &str = "authz-service";
    const POLICY: &str = "type.example/Policy";
    const TIMEOUT: Duration = Duration::from_secs(2);

    /// A policy service on a SotW stream of `GROUP`.
    struct Service {
        s: Stream,
        id: u64,
    }

    impl Service {
        fn connect(registry: &Arc<Registry>, node_id: &str, policy: &str) -> Self {
            let id = registry.add(Mode::Sotw.as_str());
            let mut s = Stream::new(Mode::Sotw, id, registry.clone(), Arc::new(Metrics::new()));
            s.set_node(node_id, GROUP);
            let mut svc = Self { s, id };
            svc.publish(policy);
            svc
        }

        fn publish(&mut self, policy: &str) {
            self.s.set_snapshots(&BTreeMap::from([(
                GROUP.to_string(),
                snap(&[(POLICY, &[("policy", policy)])]),
            )]));
        }

        /// Sends a request (subscription, ACK or NACK) and returns the response it releases.
        fn request(&mut self, nonce: &str, error: Option<&str>) -> Option<DiscoveryResponse> {
            self.s.handle(Request {
                type_url: POLICY.into(),
                nonce: nonce.into(),
                error: error.map(Into::into),
                error_code: if error.is_some() { 3 } else { 0 },
                ..Default::default()
            });
            self.advance()
        }

        /// The response the stream sends now, if any.
        fn advance(&mut self) -> Option<DiscoveryResponse> {
            let mut out = self.s.advance(Instant::now());
            assert!(out.len() <= 1, "one policy type, one response at most");
            out.pop().map(|e| DiscoveryResponse::decode(e.0).unwrap())
        }
    }

    fn target(version: &str) -> Vec<Target> {
        vec![Target {
            group: GROUP.into(),
            type_url: POLICY.into(),
            version: version.into(),
        }]
    }

    /// The version a response carries.
    fn offered(r: &Option<DiscoveryResponse>) -> (String, String) {
        let r = r.as_ref().expect("a response");
        (r.version_info.clone(), r.nonce.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn acked_by_every_client() {
        let registry = Arc::new(Registry::default());
        let mut a = Service::connect(&registry, "authz-a", "p1");
        let mut b = Service::connect(&registry, "authz-b", "p1");
        let (va, na) = offered(&a.request("", None));
        let (vb, nb) = offered(&b.request("", None));
        assert_eq!(va, vb);
        let targets = target(&va);
        let settled = registry.settled(&targets, TIMEOUT);
        tokio::pin!(settled);
        assert!(futures::poll!(settled.as_mut()).is_pending());
        assert!(a.request(&na, None).is_none());
        assert!(
            futures::poll!(settled.as_mut()).is_pending(),
            "authz-b has not answered"
        );
        assert!(b.request(&nb, None).is_none());
        assert_eq!(settled.await, Settled::Acked);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_without_clients_is_settled_at_once() {
        let registry = Registry::default();
        assert_eq!(
            registry.settled(&target("v"), TIMEOUT).await,
            Settled::Acked
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_nack_decides_and_is_remembered() {
        let registry = Arc::new(Registry::default());
        let mut a = Service::connect(&registry, "authz-a", "p1");
        let mut b = Service::connect(&registry, "authz-b", "p1");
        let (_, na) = offered(&a.request("", None));
        let (_, nb) = offered(&b.request("", None));
        a.request(&na, None);
        b.request(&nb, None);
        a.publish("p2");
        b.publish("p2");
        let (v2, na) = offered(&a.advance());
        let _ = b.advance();
        let targets = target(&v2);
        let settled = registry.settled(&targets, TIMEOUT);
        tokio::pin!(settled);
        assert!(futures::poll!(settled.as_mut()).is_pending());
        assert!(a
            .request(
                &na,
                Some("jwt provider p: environment variable S is not set")
            )
            .is_none());
        // authz-b never answers: one refusal is enough to decide.
        let refusal = Refusal {
            node_id: "authz-a".into(),
            group: GROUP.into(),
            type_url: POLICY.into(),
            nack: Nack {
                version: v2.clone(),
                error: "jwt provider p: environment variable S is not set".into(),
                code: 3,
            },
        };
        assert_eq!(settled.await, Settled::Nacked(vec![refusal.clone()]));

        // Offered its previous policy again, authz-a gets that one (never the refused one), and
        // once it ACKs it, the refusal of v2 is still on record for a later rollout of v2.
        a.publish("p1");
        let (v1, n1) = offered(&a.advance());
        assert_ne!(v1, v2);
        assert!(a.request(&n1, None).is_none());
        assert_eq!(registry.refusals(&targets), vec![refusal]);
        assert!(registry.refusals(&target(&v1)).is_empty());
        // A new connection of the same node has refused nothing.
        registry.remove(a.id);
        let _a = Service::connect(&registry, "authz-a", "p1");
        assert!(registry.refusals(&targets).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_stops_counting() {
        let registry = Arc::new(Registry::default());
        let mut a = Service::connect(&registry, "authz-a", "p1");
        let b = Service::connect(&registry, "authz-b", "p1");
        let (v, na) = offered(&a.request("", None));
        let targets = target(&v);
        let settled = registry.settled(&targets, TIMEOUT);
        tokio::pin!(settled);
        a.request(&na, None);
        assert!(futures::poll!(settled.as_mut()).is_pending());
        registry.remove(b.id);
        assert_eq!(settled.await, Settled::Acked);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let registry = Arc::new(Registry::default());
        let mut a = Service::connect(&registry, "authz-a", "p1");
        let (v, _) = offered(&a.request("", None));
        let start = tokio::time::Instant::now();
        match registry.settled(&target(&v), TIMEOUT).await {
            Settled::TimedOut(pending) => {
                assert_eq!(pending.len(), 1);
                assert_eq!(pending[0].node_id, "authz-a");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(start.elapsed(), TIMEOUT, "waits out the bound, no more");
    }
}

#[test]
fn stream_machine_needs_a_node_first_then_serves_its_group() {
    use proto::pb::envoy::config::core::v3::Node;
    use proto::pb::envoy::service::discovery::v3::DiscoveryRequest;

    let snapshots = Arc::new(crate::snapshot::Snapshots::from_shared(BTreeMap::from([(
        "edge".to_string(),
        base(),
    )])));
    let now = Instant::now();
    let cds = |node: Option<Node>, nonce: &str| DiscoveryRequest {
        node,
        type_url: CLUSTER.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let mut m = super::StreamMachine::new(Mode::Sotw, snapshots.clone());
    let refused = m.sotw(cds(None, ""), now).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let node = Node {
        id: "n1".into(),
        cluster: "edge".into(),
        ..Default::default()
    };
    let mut m = super::StreamMachine::new(Mode::Sotw, snapshots);
    let out = m.sotw(cds(Some(node), ""), now).unwrap();
    let sent: Vec<DiscoveryResponse> = out
        .iter()
        .map(|e| DiscoveryResponse::decode(e.0.clone()).unwrap())
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].type_url, CLUSTER);
    // Later requests need no node; the ACK of the clusters is not answered again.
    assert!(m.sotw(cds(None, &sent[0].nonce), now).unwrap().is_empty());
    assert!(m.advance(now + Duration::from_secs(10)).is_empty());
}
