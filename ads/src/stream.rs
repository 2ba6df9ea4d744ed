//! The per-stream xDS state machine, shared by State-of-the-World and Delta streams.
//!
//! One [`Stream`] serves one Envoy on one ADS stream. It tracks, per type URL, what the client
//! subscribed to, what was sent under which nonce, and what was ACKed or NACKed, and decides what
//! to send next. Rules it enforces (see the xDS protocol, "ACK/NACK", "Eventual consistency"):
//!
//! - **Make-before-break order.** Types are pushed in [`TYPE_ORDER`] (clusters, endpoints,
//!   listeners, secrets, routes), and a type is only sent once every earlier type is *settled*:
//!   ACKed at the current snapshot, with the client subscribed to every resource of that type the
//!   snapshot has (so endpoints for a new cluster are in place before a route can point at it).
//!   Endpoints are the exception: they follow clusters without waiting for the cluster ACK,
//!   because Envoy only ACKs clusters once they have warmed, and warming needs the endpoints.
//!   So are secrets while the listeners are at rest: a cluster presenting a client certificate
//!   warms on its Secret.
//! - **One response in flight per type.** The next one waits for the ACK or NACK.
//! - **NACKs never loop.** A rejected version is not re-sent; later types of that snapshot are held
//!   back so the Envoy stays on its last good configuration until a new snapshot arrives.
//! - **Endpoints after clusters.** Every cluster response forces the endpoints of those clusters
//!   to be sent again, because Envoy only finishes warming a (re)created cluster on a fresh
//!   ClusterLoadAssignment.
//! - **Removals last.** Clusters (and their endpoints) that a new snapshot drops stay on offer
//!   until every type of the new snapshot is settled, so routes stop naming a cluster before the
//!   cluster goes away.
//! - **Stale nonces.** SotW requests carrying an old nonce are ignored; Delta requests still update
//!   subscriptions, as the protocol requires.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::wire::{delta_response, sotw_response, Encoded};
use super::{Nack, Registry, TypeStatus};
use crate::metrics::Metrics;
use crate::snapshot::{Resource, Snapshot, TypeSnapshot};

pub use proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// Push order. Secrets come after listeners because Envoy only subscribes to a secret once a
/// listener names it; the listener warms until both its secret and its routes arrive. Types not
/// listed here (policy resources of later services) follow, by type URL.
pub const TYPE_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, SECRET, ROUTE];

/// Types whose empty subscription means "everything" (legacy wildcard): every type except
/// the ones Envoy always requests by name. Our own policy types are fetched whole by the
/// services, so they behave like clusters and listeners.
fn wildcard_capable(type_url: &str) -> bool {
    !matches!(type_url, ENDPOINT | ROUTE | SECRET)
}

/// How long a later type waits for the client to subscribe to everything an earlier type needs
/// before the stream logs it and moves on anyway. Envoy subscribes within milliseconds; this only
/// guards against a client that never does, which would otherwise stall the stream forever.
const SUBSCRIBE_GRACE: Duration = Duration::from_secs(5);

static EMPTY: std::sync::LazyLock<TypeSnapshot> = std::sync::LazyLock::new(TypeSnapshot::default);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sotw,
    Delta,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// A request from either protocol, reduced to what the state machine needs.
#[derive(Debug, Default)]
pub struct Request {
    pub type_url: String,
    pub nonce: String,
    pub error: Option<String>,
    /// The `error_detail.code` accompanying `error`.
    pub error_code: i32,
    /// SotW: the full set of names (empty = wildcard for CDS/LDS).
    pub names: Vec<String>,
    /// Delta only.
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    pub initial_versions: HashMap<String, String>,
}

#[derive(Debug)]
struct InFlight {
    nonce: String,
    /// Type version of the snapshot the response came from.
    version: String,
    /// Delta: the client's versions before this response, restored on NACK.
    undo: Vec<(String, Option<String>)>,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    in_flight: Option<InFlight>,
    /// Nonce of the latest response of this type; requests echoing anything else are stale.
    last_nonce: Option<String>,
    /// Type version of the last ACKed response.
    acked: Option<String>,
    /// Type version of the last NACKed response, while no newer one was sent.
    nacked: Option<String>,
    /// SotW: (type version, names, wildcard) of the last response; equal means nothing to send.
    sent: Option<(String, BTreeSet<String>, bool)>,
    /// SotW: send again even though nothing changed (endpoints after a cluster update).
    force: bool,
    /// Delta: name → version the client holds.
    has: HashMap<String, String>,
    /// Delta: subscribed names already reported absent.
    announced_missing: BTreeSet<String>,
    seen_request: bool,
    /// Type version last reported to the registry as held by the client.
    reported: Option<String>,
    /// When this type first looked settled except for a missing subscription.
    waiting_since: Option<Instant>,
}

impl TypeState {
    fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    fn delta_diff<'a>(&self, tv: &'a TypeSnapshot) -> (Vec<&'a Arc<Resource>>, Vec<String>) {
        let updates: Vec<_> = tv
            .resources
            .values()
            .filter(|r| self.in_scope(&r.name) && self.has.get(&r.name) != Some(&r.version))
            .collect();
        let mut removed: Vec<String> = self
            .has
            .keys()
            .filter(|n| !tv.resources.contains_key(*n))
            .cloned()
            .collect();
        removed.extend(
            self.names
                .iter()
                .filter(|n| {
                    !tv.resources.contains_key(*n)
                        && !self.has.contains_key(*n)
                        && !self.announced_missing.contains(*n)
                })
                .cloned(),
        );
        removed.sort();
        removed.dedup();
        (updates, removed)
    }

    fn needs_send(&self, mode: Mode, tv: &TypeSnapshot) -> bool {
        if !self.subscribed {
            return false;
        }
        match mode {
            Mode::Sotw => {
                self.force
                    || !self.sent.as_ref().is_some_and(|(v, names, wildcard)| {
                        *v == tv.version && *wildcard == self.wildcard && *names == self.names
                    })
            }
            Mode::Delta => {
                if self.nacked.as_deref() == Some(&tv.version) {
                    return false;
                }
                let (u, r) = self.delta_diff(tv);
                !u.is_empty() || !r.is_empty()
            }
        }
    }

    /// Whether later types may be sent: nothing pending, and (for named subscriptions) the client
    /// asked for every resource of this type the snapshot has.
    /// `needs_send` is [`TypeState::needs_send`] for the same snapshot, computed by the caller.
    fn settled(&mut self, needs_send: bool, tv: &TypeSnapshot, now: Instant) -> bool {
        if self.subscribed {
            if self.in_flight.is_some() || needs_send {
                return false;
            }
            if self.nacked.is_some() && self.nacked.as_deref() == Some(&tv.version) {
                return false;
            }
        }
        let covered = (self.subscribed && self.wildcard)
            || tv
                .resources
                .keys()
                .all(|n| self.subscribed && self.names.contains(n));
        if covered {
            self.waiting_since = None;
            return true;
        }
        let since = *self.waiting_since.get_or_insert(now);
        now.duration_since(since) >= SUBSCRIBE_GRACE
    }
}

/// Types whose resources are kept on offer after a snapshot drops them, until the rest of the
/// new snapshot is settled (make-before-break for removals).
const RETAINED_TYPES: [&str; 2] = [CLUSTER, ENDPOINT];

/// `new`, plus the clusters and endpoints of `old` that `new` no longer has.
fn with_retained(old: &Snapshot, new: &Arc<Snapshot>) -> Arc<Snapshot> {
    let mut merged: Option<BTreeMap<String, TypeSnapshot>> = None;
    for t in RETAINED_TYPES {
        let Some(old_t) = old.get(t) else { continue };
        let new_t = new.get(t);
        let gone: Vec<&Arc<Resource>> = old_t
            .resources
            .values()
            .filter(|r| !new_t.is_some_and(|n| n.resources.contains_key(&r.name)))
            .collect();
        if gone.is_empty() {
            continue;
        }
        let types = merged.get_or_insert_with(|| {
            new.types
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        TypeSnapshot::from_shared(v.resources.values().cloned()),
                    )
                })
                .collect()
        });
        let all = new_t
            .into_iter()
            .flat_map(|n| n.resources.values())
            .chain(gone)
            .cloned();
        types.insert(t.to_string(), TypeSnapshot::from_shared(all));
    }
    match merged {
        Some(types) => Arc::new(Snapshot::new(types)),
        None => new.clone(),
    }
}

/// One ADS stream.
pub struct Stream {
    mode: Mode,
    id: u64,
    node_id: String,
    group: Option<String>,
    /// What this client is being converged to: `base`, plus retained clusters while removals wait.
    snapshot: Option<Arc<Snapshot>>,
    /// The published snapshot of this client's group.
    base: Option<Arc<Snapshot>>,
    types: BTreeMap<String, TypeState>,
    next_nonce: u64,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    warned_unknown: bool,
}

impl Stream {
    pub fn new(mode: Mode, id: u64, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Self {
            mode,
            id,
            node_id: String::new(),
            group: None,
            snapshot: None,
            base: None,
            types: BTreeMap::new(),
            next_nonce: 0,
            registry,
            metrics,
            warned_unknown: false,
        }
    }

    /// Whether a timer must re-run [`Stream::advance`]: only while an ordering gate waits out
    /// its grace period, so idle streams cost nothing.
    pub fn waiting(&self) -> bool {
        self.types.values().any(|t| t.waiting_since.is_some())
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Identifies the client from the first request's node.
    pub fn set_node(&mut self, node_id: &str, cluster: &str) {
        if self.group.is_some() {
            return;
        }
        self.node_id = node_id.to_string();
        self.group = Some(cluster.to_string());
        self.registry.update(self.id, |c| {
            c.node_id = node_id.to_string();
            c.gateway = cluster.to_string();
        });
        info!(
            node_id,
            group = cluster,
            protocol = self.mode.as_str(),
            "xDS client connected"
        );
    }

    /// Picks this client's snapshot out of a newly published set.
    pub fn set_snapshots(&mut self, groups: &BTreeMap<String, Arc<Snapshot>>) {
        let Some(group) = &self.group else { return };
        match groups.get(group) {
            Some(s) => {
                self.snapshot = Some(match &self.snapshot {
                    Some(old) => with_retained(old, s),
                    None => s.clone(),
                });
                self.base = Some(s.clone());
                self.warned_unknown = false;
            }
            None => {
                if !self.warned_unknown {
                    warn!(
                        node_id = %self.node_id,
                        group = %group,
                        known = ?groups.keys().collect::<Vec<_>>(),
                        "xDS client's node.cluster names neither a gateway nor a policy service of the config; it gets no resources"
                    );
                    self.warned_unknown = true;
                }
                self.snapshot = None;
                self.base = None;
            }
        }
    }

    pub fn handle(&mut self, req: Request) {
        let mode = self.mode;
        let ts = self.types.entry(req.type_url.clone()).or_default();
        let acks_in_flight = ts.in_flight.as_ref().is_some_and(|f| f.nonce == req.nonce);
        let current = req.nonce.is_empty() || ts.last_nonce.as_deref() == Some(req.nonce.as_str());
        if mode == Mode::Sotw && !current {
            // A request answering an older response: the client has not seen our latest one yet.
            debug!(type_url = %req.type_url, nonce = %req.nonce, "ignoring request with stale nonce");
            return;
        }
        if acks_in_flight {
            let f = ts.in_flight.take().expect("checked above");
            match &req.error {
                None => {
                    ts.acked = Some(f.version.clone());
                    ts.nacked = None;
                    self.registry.update(self.id, |c| {
                        let t = c.types.entry(req.type_url.clone()).or_default();
                        t.acked = Some(f.version.clone());
                        // A newer accepted version supersedes the rejection.
                        t.nacked = None;
                    });
                }
                Some(error) => {
                    warn!(
                        node_id = %self.node_id, type_url = %req.type_url, version = %f.version,
                        error = %error, "xDS client rejected (NACKed) a response; not re-sending it"
                    );
                    self.metrics.nacks.with_label_values(&[&req.type_url]).inc();
                    for (name, old) in f.undo.iter().rev() {
                        match old {
                            Some(v) => ts.has.insert(name.clone(), v.clone()),
                            None => ts.has.remove(name),
                        };
                    }
                    ts.nacked = Some(f.version.clone());
                    ts.reported = None;
                    self.registry.nacked(
                        self.id,
                        &req.type_url,
                        Nack {
                            version: f.version.clone(),
                            error: error.clone(),
                            code: req.error_code,
                        },
                    );
                }
            }
        }
        match mode {
            Mode::Sotw => {
                let mut names: BTreeSet<String> = req.names.into_iter().collect();
                let star = names.remove("*");
                ts.wildcard = wildcard_capable(&req.type_url) && (star || names.is_empty());
                ts.names = names;
            }
            Mode::Delta => {
                if !ts.seen_request {
                    ts.has = req.initial_versions;
                    if req.subscribe.is_empty() && wildcard_capable(&req.type_url) {
                        ts.wildcard = true;
                    }
                }
                for n in req.subscribe {
                    if n == "*" {
                        ts.wildcard = true;
                    } else {
                        // An explicit subscribe must be answered even for a version the client
                        // claims to hold, unless it said so in this stream's first request.
                        if ts.seen_request {
                            ts.has.remove(&n);
                        }
                        ts.announced_missing.remove(&n);
                        ts.names.insert(n);
                    }
                }
                for n in req.unsubscribe {
                    if n == "*" {
                        ts.wildcard = false;
                    } else {
                        ts.names.remove(&n);
                        ts.announced_missing.remove(&n);
                        // Forget it; if a wildcard still covers it, it is sent again.
                        ts.has.remove(&n);
                    }
                }
                if !ts.wildcard {
                    let names = &ts.names;
                    ts.has.retain(|n, _| names.contains(n));
                }
            }
        }
        ts.seen_request = true;
        ts.subscribed = true;
    }

    /// Sends whatever the ordering rules allow now.
    pub fn advance(&mut self, now: Instant) -> Vec<Encoded> {
        let Some(snapshot) = self.snapshot.clone() else {
            return Vec::new();
        };
        let mut order: Vec<String> = TYPE_ORDER.iter().map(|t| t.to_string()).collect();
        for t in snapshot.types.keys().chain(self.types.keys()) {
            if !order.contains(t) {
                order.push(t.clone());
            }
        }
        let mut out = Vec::new();
        // Every earlier type is ACKed and fully subscribed.
        let mut earlier_settled = true;
        // Every earlier type has been sent (its response may still await an ACK, and a newer
        // version may wait behind it).
        let mut earlier_sent = true;
        // The listeners are settled at this snapshot (nothing of theirs waits to be sent).
        let mut listeners_settled = false;
        for type_url in order {
            let tv = snapshot.get(&type_url).unwrap_or(&EMPTY);
            // Envoy holds back its cluster ACK until new clusters have warmed, which needs their
            // endpoints: endpoints may follow clusters on the wire without waiting for that ACK.
            let gate = if type_url == ENDPOINT {
                earlier_sent
            } else if type_url == SECRET {
                // A new cluster that presents a client certificate warms on its Secret, and
                // Envoy holds the cluster ACK until then: like endpoints, secrets may follow
                // clusters without that ACK, as long as the listeners are at rest (so a Secret a
                // changed listener still uses is never removed before the listener changes).
                earlier_settled || (earlier_sent && listeners_settled)
            } else {
                earlier_settled
            };
            let ts = self.types.entry(type_url.clone()).or_default();
            // Computed once per type per pass: for Delta it is a diff over every resource.
            let mut needs_send = ts.needs_send(self.mode, tv);
            if gate && ts.in_flight.is_none() && needs_send {
                out.push(self.send(&type_url, tv));
                needs_send = false;
            }
            let ts = self.types.get_mut(&type_url).expect("inserted above");
            // A type whose newer version waits behind one in flight counts as sent: Envoy is
            // already processing that response and may be waiting on endpoints to finish it.
            if needs_send && ts.in_flight.is_none() {
                earlier_sent = false;
            }
            // At rest on the current version without sending anything (a Delta client that
            // reconnected holding it, or went back to it after a NACK): show that on /status.
            let at_rest = ts.subscribed && ts.in_flight.is_none() && !needs_send;
            if at_rest
                && ts.nacked.as_deref() != Some(&tv.version)
                && ts.reported.as_deref() != Some(&tv.version)
            {
                ts.reported = Some(tv.version.clone());
                self.registry.update(self.id, |c| {
                    let t = c.types.entry(type_url.clone()).or_default();
                    t.sent = Some(tv.version.clone());
                    t.acked = Some(tv.version.clone());
                    t.nacked = None;
                });
            }
            let settled = ts.settled(needs_send, tv, now);
            if type_url == LISTENER {
                listeners_settled = settled;
            }
            if !settled {
                earlier_settled = false;
            }
        }
        // Everything of the new snapshot is in place: now the retained clusters can go.
        if let (true, Some(base)) = (earlier_settled, &self.base) {
            if !Arc::ptr_eq(base, &snapshot) {
                self.snapshot = Some(base.clone());
                out.extend(self.advance(now));
            }
        }
        out
    }

    fn send(&mut self, type_url: &str, tv: &TypeSnapshot) -> Encoded {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let mode = self.mode;
        let ts = self.types.get_mut(type_url).expect("caller inserted it");
        ts.last_nonce = Some(nonce.clone());
        ts.reported = None;
        let mut changed_clusters = Vec::new();
        let encoded = match mode {
            Mode::Sotw => {
                let rs = tv
                    .resources
                    .values()
                    .filter(|r| ts.in_scope(&r.name))
                    .map(|r| &r.any);
                let enc = sotw_response(&tv.version, rs, type_url, &nonce);
                ts.sent = Some((tv.version.clone(), ts.names.clone(), ts.wildcard));
                ts.force = false;
                ts.in_flight = Some(InFlight {
                    nonce: nonce.clone(),
                    version: tv.version.clone(),
                    undo: vec![],
                });
                enc
            }
            Mode::Delta => {
                let (updates, removed) = ts.delta_diff(tv);
                let enc = delta_response(
                    &tv.version,
                    updates.iter().map(|r| &r.delta),
                    type_url,
                    &removed,
                    &nonce,
                );
                let mut undo = Vec::with_capacity(updates.len() + removed.len());
                for r in &updates {
                    undo.push((
                        r.name.clone(),
                        ts.has.insert(r.name.clone(), r.version.clone()),
                    ));
                    changed_clusters.push(r.name.clone());
                }
                for n in &removed {
                    match ts.has.remove(n) {
                        Some(v) => undo.push((n.clone(), Some(v))),
                        None => {
                            ts.announced_missing.insert(n.clone());
                        }
                    }
                }
                ts.in_flight = Some(InFlight {
                    nonce: nonce.clone(),
                    version: tv.version.clone(),
                    undo,
                });
                enc
            }
        };
        if type_url == CLUSTER {
            let eds = self.types.entry(ENDPOINT.to_string()).or_default();
            match mode {
                Mode::Sotw => eds.force = true,
                // A ClusterLoadAssignment is named after its cluster.
                Mode::Delta => changed_clusters.iter().for_each(|c| {
                    eds.has.remove(c);
                }),
            }
        }
        self.metrics
            .responses
            .with_label_values(&[type_url, mode.as_str()])
            .inc();
        self.registry.update(self.id, |c| {
            let t: &mut TypeStatus = c.types.entry(type_url.to_string()).or_default();
            t.sent = Some(tv.version.clone());
        });
        debug!(node_id = %self.node_id, type_url, version = %tv.version, nonce, "sent xDS response");
        encoded
    }
}
