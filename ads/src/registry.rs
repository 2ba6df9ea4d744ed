//! Connected clients and what each was sent, ACKed and NACKed: the data behind `/status`, and
//! [`Registry::settled`], which a rollout awaits to learn whether a node group took a version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::error::{Classify, ErrorSource, RetryType};

/// What `/status` shows for one connected client.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientStatus {
    pub node_id: String,
    pub gateway: String,
    pub protocol: &'static str,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// Type URL → what was sent, ACKed and NACKed.
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    pub sent: Option<String>,
    pub acked: Option<String>,
    pub nacked: Option<Nack>,
}

/// A client's rejection of one version of one type: its `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("version {version} rejected: {error}")]
pub struct Nack {
    pub version: String,
    /// The client's `error_detail.message`.
    pub error: String,
    /// The client's `error_detail.code`, a gRPC status code (Envoy sends 13, INTERNAL; our policy
    /// services 3, INVALID_ARGUMENT).
    pub code: i32,
}

impl Classify for Nack {
    fn source_kind(&self) -> ErrorSource {
        ErrorSource::Client
    }

    /// The client judged exactly these bytes; a stream never offers them to it again (see
    /// `stream`), and a rollout treats a repeat of the version as refused (see
    /// [`Registry::refusals`]).
    fn retry(&self) -> RetryType {
        RetryType::AfterChange
    }
}

/// Which client refused what, for a rollout's verdict and `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{node_id} (node group {group}) rejected {type_url} version {}: {}", nack.version, nack.error)]
pub struct Refusal {
    pub node_id: String,
    pub group: String,
    pub type_url: String,
    #[serde(flatten)]
    pub nack: Nack,
}

impl Classify for Refusal {
    fn source_kind(&self) -> ErrorSource {
        self.nack.source_kind()
    }

    fn retry(&self) -> RetryType {
        self.nack.retry()
    }
}

/// One version of one type that every connected client of a node group is to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub type_url: String,
    pub version: String,
}

/// A client that has answered none of the targets it is concerned by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub node_id: String,
    pub group: String,
    pub type_url: String,
}

/// How a set of [`Target`]s came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Every connected client of every target's group ACKed it (trivially so for a group with no
    /// clients).
    Acked,
    /// Some client NACKed a target (others may not have answered yet: one refusal decides).
    Nacked(Vec<Refusal>),
    /// The bound passed while these clients had not answered.
    TimedOut(Vec<Pending>),
}

/// How many refused versions a connection remembers per type. A refusal is a human's edit, so
/// this is far more than a connection sees in practice; the bound only keeps memory finite.
const REFUSALS_KEPT: usize = 32;

#[derive(Debug, Default)]
struct Entry {
    status: ClientStatus,
    /// Type URL → every version this connection NACKed (the latest last), even after a later
    /// ACK cleared `status.types[..].nacked`.
    refused: BTreeMap<String, Vec<Nack>>,
}

/// Connected clients, for `/status`, metrics and rollouts.
#[derive(Debug)]
pub struct Registry {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Entry>>,
    /// Bumped on every change, so [`Registry::settled`] wakes exactly when an answer may have
    /// arrived or a client left.
    changed: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(0),
            clients: Mutex::new(BTreeMap::new()),
            changed: watch::Sender::new(0),
        }
    }
}

impl Registry {
    pub(crate) fn add(&self, protocol: &'static str) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let status = ClientStatus {
            protocol,
            connected_at,
            ..Default::default()
        };
        self.lock().insert(
            id,
            Entry {
                status,
                ..Default::default()
            },
        );
        self.bump();
        id
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.bump();
    }

    pub(crate) fn update(&self, id: u64, f: impl FnOnce(&mut ClientStatus)) {
        if let Some(c) = self.lock().get_mut(&id) {
            f(&mut c.status);
        }
        self.bump();
    }

    /// Records that client `id` NACKed `nack.version` of `type_url`.
    pub(crate) fn nacked(&self, id: u64, type_url: &str, nack: Nack) {
        if let Some(c) = self.lock().get_mut(&id) {
            let refused = c.refused.entry(type_url.to_string()).or_default();
            refused.retain(|n| n.version != nack.version);
            refused.push(nack.clone());
            if refused.len() > REFUSALS_KEPT {
                refused.remove(0);
            }
            c.status
                .types
                .entry(type_url.to_string())
                .or_default()
                .nacked = Some(nack);
        }
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn clients(&self) -> Vec<ClientStatus> {
        self.lock().values().map(|e| e.status.clone()).collect()
    }

    /// Connected clients that already refused a target's very version on this connection (and
    /// may since have gone back to an older one). Offering it again would only be refused again.
    pub fn refusals(&self, targets: &[Target]) -> Vec<Refusal> {
        let clients = self.lock();
        let mut out = Vec::new();
        for t in targets {
            for e in clients.values().filter(|e| e.status.gateway == t.group) {
                let mut refused = e.refused.get(&t.type_url).into_iter().flatten();
                if let Some(n) = refused.find(|n| n.version == t.version) {
                    out.push(refusal(&e.status, t, n.clone()));
                }
            }
        }
        out
    }

    /// Waits until every connected client of each target's node group has answered it, or one
    /// refused it, or `timeout` passed. Clients that connect meanwhile count too; clients that
    /// leave stop counting.
    pub async fn settled(&self, targets: &[Target], timeout: Duration) -> Settled {
        // Subscribed before looking, so a change between the look and the wait still wakes us.
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (refused, pending) = self.answers(targets);
            if !refused.is_empty() {
                return Settled::Nacked(refused);
            }
            if pending.is_empty() {
                return Settled::Acked;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or (impossible while we borrow `self`, which owns the sender) no
                // more changes can come: one last look, so an answer that raced the deadline
                // still counts.
                _ => {
                    let (refused, pending) = self.answers(targets);
                    return match (refused.is_empty(), pending.is_empty()) {
                        (false, _) => Settled::Nacked(refused),
                        (true, true) => Settled::Acked,
                        (true, false) => Settled::TimedOut(pending),
                    };
                }
            }
        }
    }

    /// (refusals, clients yet to answer) for `targets`, now.
    fn answers(&self, targets: &[Target]) -> (Vec<Refusal>, Vec<Pending>) {
        let clients = self.lock();
        let mut refused = Vec::new();
        let mut pending = Vec::new();
        for t in targets {
            for c in clients
                .values()
                .map(|e| &e.status)
                .filter(|c| c.gateway == t.group)
            {
                let ts = c.types.get(&t.type_url);
                match ts.and_then(|ts| ts.nacked.as_ref()) {
                    Some(n) if n.version == t.version => {
                        refused.push(refusal(c, t, n.clone()));
                        continue;
                    }
                    _ => {}
                }
                if ts.and_then(|ts| ts.acked.as_deref()) != Some(t.version.as_str()) {
                    pending.push(Pending {
                        node_id: c.node_id.clone(),
                        group: t.group.clone(),
                        type_url: t.type_url.clone(),
                    });
                }
            }
        }
        (refused, pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is a
        // single field write), so a poisoned lock is still safe to use.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refusal(c: &ClientStatus, t: &Target, nack: Nack) -> Refusal {
    Refusal {
        node_id: c.node_id.clone(),
        group: t.group.clone(),
        type_url: t.type_url.clone(),
        nack,
    }
}
