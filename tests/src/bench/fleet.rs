//! A fleet of simulated Envoys: ADS clients over real TCP/HTTP2 connections that follow the
//! protocol the way Envoy does, and report when each has converged on a target snapshot.
//!
//! Each client opens one ADS stream (SotW or Delta) with `node.cluster` = the gateway, asks for
//! clusters (wildcard), subscribes to the endpoints of exactly the clusters it received, then to
//! listeners (wildcard) once endpoints arrived, then to the gateway's RouteConfiguration once
//! listeners arrived, and ACKs every response. A client has *converged* on a [`Target`] when it
//! has received and ACKed every watched type at the target's content: for SotW the ACKed
//! `version_info` and the set of resource names match; for Delta the held name → version map
//! matches. The moment is recorded right after the last ACK is handed to the connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ads::snapshot::Snapshot;
use ads::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use anyhow::{bail, Context as _};
use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::gen::GATEWAY;

/// The types a gateway Envoy subscribes to (no TLS listeners in the bench, so no secrets).
pub const WATCHED: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Envoy's default HTTP/2 windows (256 MiB): with them the server never waits for a window
/// update, as with a real Envoy; h2's 64 KiB default would throttle every large RDS push.
const WINDOW: u32 = 256 * 1024 * 1024;
/// A 10,000-route RouteConfiguration is a few MiB; tonic's 4 MiB default would reject it.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Concurrent connection attempts, like a fleet of Envoys reconnecting at once but not all in
/// the same millisecond. It does not bound the server's accept queue (a connect completes in the
/// kernel before the server accepts it), so a busy server can still drop SYNs; the output counts
/// them.
const CONNECT_CONCURRENCY: usize = 64;
/// How long one TCP + HTTP/2 connect may take before the bench gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub use ads::Mode;

/// What every client should end up holding, per watched type.
#[derive(Debug)]
pub struct Target {
    pub epoch: u64,
    types: Vec<TypeTarget>,
}

#[derive(Debug)]
struct TypeTarget {
    type_url: &'static str,
    /// SotW `version_info`.
    version: String,
    /// Sorted resource names.
    names: Vec<String>,
    /// Delta: name → resource version.
    versions: HashMap<String, String>,
}

impl Target {
    pub fn new(epoch: u64, snap: &Snapshot) -> Target {
        let types = WATCHED
            .iter()
            .map(|t| {
                let ts = snap.get(t);
                TypeTarget {
                    type_url: t,
                    version: ts.map(|s| s.version.clone()).unwrap_or_default(),
                    names: ts
                        .map(|s| s.resources.keys().cloned().collect())
                        .unwrap_or_default(),
                    versions: ts
                        .map(|s| {
                            s.resources
                                .values()
                                .map(|r| (r.name.clone(), r.version.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Target { epoch, types }
    }
}

/// Responses and resource bytes received by all clients, per watched type (index in
/// [`WATCHED`]).
#[derive(Debug, Default)]
pub struct Counters {
    pub responses: [AtomicU64; 4],
    pub bytes: [AtomicU64; 4],
}

impl Counters {
    fn count(&self, type_url: &str, bytes: usize) {
        if let Some(i) = WATCHED.iter().position(|t| *t == type_url) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
            self.bytes[i].fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// (responses per type, total resource bytes) so far.
    pub fn read(&self) -> ([u64; 4], u64) {
        let r = std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed));
        let b = self.bytes.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        (r, b)
    }
}

enum Event {
    Reached { epoch: u64, at: Instant },
    Failed { client: usize, error: String },
}

/// How connecting went.
pub struct Connected {
    /// From the first attempt until every connection was up.
    pub total: Duration,
    /// Each connection's own connect time.
    pub each: Vec<Duration>,
}

impl Connected {
    /// Connections that took longer than a second: their first SYN was dropped (the server's
    /// accept queue overflowed) and the kernel retransmitted it after its 1 s initial RTO.
    pub fn syn_retransmits(&self) -> usize {
        self.each.iter().filter(|d| **d >= SYN_RETRANSMIT).count()
    }
}

/// A connect this slow on loopback means a retransmitted SYN (initial RTO 1 s, minus jitter).
const SYN_RETRANSMIT: Duration = Duration::from_millis(900);

/// Clients connected to one server, all following one [`Target`].
pub struct Fleet {
    mode: Mode,
    channels: Vec<Channel>,
    clients: usize,
    tasks: JoinSet<()>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    target: watch::Sender<Arc<Target>>,
    pub counters: Arc<Counters>,
}

impl Fleet {
    /// Opens `connections` HTTP/2 connections to `addr` (clients share them round-robin when
    /// there are fewer connections than clients).
    pub async fn connect(
        addr: SocketAddr,
        mode: Mode,
        clients: usize,
        connections: usize,
        target: Target,
    ) -> anyhow::Result<(Fleet, Connected)> {
        let start = Instant::now();
        let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let mut set = JoinSet::new();
        for i in 0..connections.clamp(1, clients.max(1)) {
            let gate = gate.clone();
            set.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let t = Instant::now();
                let ep = Endpoint::from_shared(format!("http://{addr}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .initial_stream_window_size(WINDOW)
                    .initial_connection_window_size(WINDOW);
                let ch = ep
                    .connect()
                    .await
                    .with_context(|| format!("connection {i} to {addr}"))?;
                anyhow::Ok((i, ch, t.elapsed()))
            });
        }
        let mut channels = Vec::new();
        while let Some(r) = set.join_next().await {
            channels.push(r.context("connect task")??);
        }
        channels.sort_by_key(|(i, _, _)| *i);
        let connected = Connected {
            total: start.elapsed(),
            each: channels.iter().map(|(_, _, d)| *d).collect(),
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let (target, _) = watch::channel(Arc::new(target));
        Ok((
            Fleet {
                mode,
                channels: channels.into_iter().map(|(_, c, _)| c).collect(),
                clients,
                tasks: JoinSet::new(),
                events_tx,
                events,
                target,
                counters: Arc::default(),
            },
            connected,
        ))
    }

    pub fn connections(&self) -> usize {
        self.channels.len()
    }

    /// Starts every client's stream; returns the start time.
    pub fn go(&mut self) -> Instant {
        let start = Instant::now();
        for id in 0..self.clients {
            let client = Client {
                id,
                channel: self.channels[id % self.channels.len()].clone(),
                target: self.target.subscribe(),
                events: self.events_tx.clone(),
                counters: self.counters.clone(),
            };
            let events = self.events_tx.clone();
            let mode = self.mode;
            self.tasks.spawn(async move {
                let r = match mode {
                    Mode::Sotw => client.sotw().await,
                    Mode::Delta => client.delta().await,
                };
                if let Err(e) = r {
                    let _ = events.send(Event::Failed {
                        client: id,
                        error: format!("{e:#}"),
                    });
                }
            });
        }
        start
    }

    /// Sets what the clients should converge on next (before publishing the snapshot, so no
    /// client can converge unobserved).
    pub fn set_target(&self, target: Target) {
        self.target.send_replace(Arc::new(target));
    }

    /// Waits until every client has converged on `epoch`; returns each client's latency from
    /// `since`. Fails on the first client error, or after `timeout` saying how many made it.
    pub async fn wait(
        &mut self,
        epoch: u64,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut lat = Vec::with_capacity(self.clients);
        while lat.len() < self.clients {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Reached { epoch: e, at })) if e == epoch => {
                    lat.push(at.saturating_duration_since(since))
                }
                Ok(Some(Event::Reached { .. })) => {}
                Ok(Some(Event::Failed { client, error })) => {
                    bail!("simulated client {client} failed: {error}")
                }
                Ok(None) => bail!("every client stopped"),
                Err(_) => bail!(
                    "only {} of {} clients converged within {timeout:?}",
                    lat.len(),
                    self.clients
                ),
            }
        }
        Ok(lat)
    }

    /// Ends every stream and closes the connections.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

struct Client {
    id: usize,
    channel: Channel,
    target: watch::Receiver<Arc<Target>>,
    events: mpsc::UnboundedSender<Event>,
    counters: Arc<Counters>,
}

fn node(id: usize) -> Option<Node> {
    Some(Node {
        id: format!("bench-{id}"),
        cluster: GATEWAY.to_string(),
        ..Default::default()
    })
}

/// Requests are queued, not awaited on the wire; a small buffer is what Envoy has too.
const REQUEST_BUFFER: usize = 16;

impl Client {
    fn client(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        AggregatedDiscoveryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Reports convergence on the current target once per epoch.
    fn check(&mut self, reported: &mut Option<u64>, converged: impl Fn(&Target) -> bool) {
        let target = self.target.borrow().clone();
        if *reported != Some(target.epoch) && converged(&target) {
            *reported = Some(target.epoch);
            let _ = self.events.send(Event::Reached {
                epoch: target.epoch,
                at: Instant::now(),
            });
        }
    }

    async fn sotw(mut self) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        tx.send(DiscoveryRequest {
            node: node(self.id),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await?;
        let mut responses = self
            .client()
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .context("opening the SotW stream")?
            .into_inner();
        let mut st = SotwState::default();
        let mut reported = None;
        loop {
            tokio::select! {
                msg = responses.message() => {
                    let resp = msg.context("SotW stream")?.context("the server ended the stream")?;
                    for req in st.on_response(&resp, &self.counters) {
                        tx.send(req).await.context("request channel closed")?;
                    }
                }
                changed = self.target.changed() => if changed.is_err() { return Ok(()) },
            }
            self.check(&mut reported, |t| st.converged(t));
        }
    }

    async fn delta(mut self) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        // An empty first subscription to clusters is the wildcard, as Envoy sends it.
        tx.send(DeltaDiscoveryRequest {
            node: node(self.id),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await?;
        let mut responses = self
            .client()
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .context("opening the Delta stream")?
            .into_inner();
        let mut st = DeltaState::default();
        let mut reported = None;
        loop {
            tokio::select! {
                msg = responses.message() => {
                    let resp = msg.context("Delta stream")?.context("the server ended the stream")?;
                    for req in st.on_response(&resp, &self.counters) {
                        tx.send(req).await.context("request channel closed")?;
                    }
                }
                changed = self.target.changed() => if changed.is_err() { return Ok(()) },
            }
            self.check(&mut reported, |t| st.converged(t));
        }
    }
}

/// Field 1 of an encoded message as a string: the `name` of a Cluster, Listener and
/// RouteConfiguration and the `cluster_name` of a ClusterLoadAssignment. Decoded by hand because
/// the name is all a simulated Envoy needs from a SotW resource (prost encodes fields in number
/// order, so it is the first thing in the bytes), which spares decoding whole route tables.
pub fn name_field(mut b: &[u8]) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let value = b.get(..len)?;
                if key >> 3 == 1 {
                    return String::from_utf8(value.to_vec()).ok();
                }
                b = &b[len..];
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    None
}

#[derive(Default)]
struct SotwType {
    /// Nonce of the latest response: a request echoing an older one is ignored by the server.
    nonce: String,
    acked_version: String,
    /// Sorted names in the last ACKed response.
    names: Vec<String>,
}

#[derive(Default)]
struct SotwState {
    types: BTreeMap<&'static str, SotwType>,
    /// The endpoints subscription: the clusters last received.
    eds_names: Vec<String>,
    lds_requested: bool,
    rds_requested: bool,
}

impl SotwState {
    fn subscription(&self, type_url: &str) -> Vec<String> {
        match type_url {
            ENDPOINT => self.eds_names.clone(),
            ROUTE => vec![GATEWAY.to_string()],
            // Clusters and listeners: wildcard.
            _ => Vec::new(),
        }
    }

    fn on_response(&mut self, r: &DiscoveryResponse, counters: &Counters) -> Vec<DiscoveryRequest> {
        let Some(&t) = WATCHED.iter().find(|t| **t == r.type_url) else {
            return Vec::new();
        };
        counters.count(t, r.resources.iter().map(|a| a.value.len()).sum());
        let mut names: Vec<String> = r
            .resources
            .iter()
            .filter_map(|a| name_field(&a.value))
            .collect();
        names.sort();
        let mut out = Vec::new();
        if t == CLUSTER && names != self.eds_names {
            // Every bench cluster is an EDS cluster (IP endpoints), so Envoy would ask for the
            // endpoints of exactly these clusters.
            self.eds_names = names.clone();
        }
        out.push(DiscoveryRequest {
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            type_url: r.type_url.clone(),
            resource_names: self.subscription(t),
            ..Default::default()
        });
        self.types.insert(
            t,
            SotwType {
                nonce: r.nonce.clone(),
                acked_version: r.version_info.clone(),
                names,
            },
        );
        match t {
            CLUSTER => {
                // A changed endpoints subscription, sent with the latest endpoints nonce; if an
                // endpoints response is already on its way this is stale and the ACK of that
                // response carries the new names instead, as with Envoy.
                let eds = self.types.get(ENDPOINT);
                let (version, nonce) = eds.map_or((String::new(), String::new()), |e| {
                    (e.acked_version.clone(), e.nonce.clone())
                });
                if eds.is_none_or(|e| e.names != self.eds_names) {
                    out.push(DiscoveryRequest {
                        version_info: version,
                        response_nonce: nonce,
                        type_url: ENDPOINT.into(),
                        resource_names: self.eds_names.clone(),
                        ..Default::default()
                    });
                }
            }
            // Envoy asks for listeners once its clusters have warmed, i.e. have endpoints.
            ENDPOINT if !self.lds_requested => {
                self.lds_requested = true;
                out.push(DiscoveryRequest {
                    type_url: LISTENER.into(),
                    ..Default::default()
                });
            }
            // A listener with an RDS route config makes Envoy subscribe to it.
            LISTENER if !self.rds_requested => {
                self.rds_requested = true;
                out.push(DiscoveryRequest {
                    type_url: ROUTE.into(),
                    resource_names: self.subscription(ROUTE),
                    ..Default::default()
                });
            }
            _ => {}
        }
        out
    }

    fn converged(&self, target: &Target) -> bool {
        target.types.iter().all(|tt| {
            self.types
                .get(tt.type_url)
                .is_some_and(|s| s.acked_version == tt.version && s.names == tt.names)
        })
    }
}

#[derive(Default)]
struct DeltaState {
    /// Per watched type: name → version held.
    has: BTreeMap<&'static str, HashMap<String, String>>,
    eds_subscribed: BTreeSet<String>,
    lds_requested: bool,
    rds_requested: bool,
}

impl DeltaState {
    fn on_response(
        &mut self,
        r: &DeltaDiscoveryResponse,
        counters: &Counters,
    ) -> Vec<DeltaDiscoveryRequest> {
        let Some(&t) = WATCHED.iter().find(|t| **t == r.type_url) else {
            return Vec::new();
        };
        counters.count(
            t,
            r.resources
                .iter()
                .map(|x| x.resource.as_ref().map_or(0, |a| a.value.len()))
                .sum(),
        );
        let has = self.has.entry(t).or_default();
        for res in &r.resources {
            has.insert(res.name.clone(), res.version.clone());
        }
        for name in &r.removed_resources {
            has.remove(name);
        }
        let mut out = vec![DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        }];
        match t {
            CLUSTER => {
                let clusters: BTreeSet<String> = has.keys().cloned().collect();
                let subscribe: Vec<String> =
                    clusters.difference(&self.eds_subscribed).cloned().collect();
                let unsubscribe: Vec<String> =
                    self.eds_subscribed.difference(&clusters).cloned().collect();
                if !subscribe.is_empty() || !unsubscribe.is_empty() {
                    out.push(DeltaDiscoveryRequest {
                        type_url: ENDPOINT.into(),
                        resource_names_subscribe: subscribe,
                        resource_names_unsubscribe: unsubscribe,
                        ..Default::default()
                    });
                    self.eds_subscribed = clusters;
                }
            }
            ENDPOINT if !self.lds_requested => {
                self.lds_requested = true;
                out.push(DeltaDiscoveryRequest {
                    type_url: LISTENER.into(),
                    ..Default::default()
                });
            }
            LISTENER if !self.rds_requested => {
                self.rds_requested = true;
                out.push(DeltaDiscoveryRequest {
                    type_url: ROUTE.into(),
                    resource_names_subscribe: vec![GATEWAY.to_string()],
                    ..Default::default()
                });
            }
            _ => {}
        }
        out
    }

    fn converged(&self, target: &Target) -> bool {
        target.types.iter().all(|tt| {
            let has = self.has.get(tt.type_url);
            let held = has.map_or(0, HashMap::len);
            held == tt.versions.len()
                && tt
                    .versions
                    .iter()
                    .all(|(n, v)| has.and_then(|h| h.get(n)) == Some(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::name_field;

    #[test]
    fn reads_the_name_field() {
        // field 2 varint 150, then field 1 "ab" (out of order on purpose), then field 3.
        let bytes = [0x10, 0x96, 0x01, 0x0a, 0x02, b'a', b'b', 0x1a, 0x00];
        assert_eq!(name_field(&bytes).as_deref(), Some("ab"));
        assert_eq!(name_field(&[0x10, 0x01]), None);
        assert_eq!(name_field(&[0x0a, 0x05, b'a']), None, "truncated");
    }
}
