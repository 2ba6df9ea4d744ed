//! Ordered rollout across components: a changed policy goes to the policy services first, and
//! the gateways get the routes that depend on it only once every connected policy service has
//! applied it. A refusal stops the rollout, so a rejected config changes nothing anywhere
//! (spec §6), across processes as inside one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use ads::error::{Classify, ErrorSource, RetryType};
use ads::snapshot::Snapshots;
use ads::{Refusal, Registry, Settled, Target};

/// How long gateways wait for the policy services to apply a changed policy before they receive
/// the routes that depend on it anyway: a hung service must not freeze the configuration. A
/// service that does not answer is not applying any policy either, so holding everyone else back
/// for it would protect nothing; a service that answers "no" is different (see [`rollout`]).
pub const POLICY_FIRST_TIMEOUT: Duration = Duration::from_secs(2);

/// A rollout that did not happen: every component keeps what it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// A policy service refused the new policy (now, or already on an earlier offer of the very
    /// same version).
    #[error("{} refused the new policy", refusals.len())]
    Refused { refusals: Vec<Refusal> },
}

impl RolloutError {
    /// One line per refusal, for `/status` and the log.
    pub fn lines(&self) -> Vec<String> {
        match self {
            RolloutError::Refused { refusals } => {
                refusals.iter().map(ToString::to_string).collect()
            }
        }
    }

    pub fn refusals(&self) -> &[Refusal] {
        match self {
            RolloutError::Refused { refusals } => refusals,
        }
    }
}

impl Classify for RolloutError {
    fn source_kind(&self) -> ErrorSource {
        ErrorSource::Client
    }

    fn retry(&self) -> RetryType {
        RetryType::AfterChange
    }
}

/// Publishes `next` on `tx`, policies first.
///
/// When a policy changed, the policy groups get it first, with every gateway still on its
/// current resources, and this waits (at most [`POLICY_FIRST_TIMEOUT`]) until every connected
/// policy service answered. Only then may Envoys get routes naming a new provider, plan or rule,
/// so no request is judged against a policy that does not know its route yet.
///
/// When a service NACKs, the previous snapshots are published again: the gateways never see the
/// new routes, and the policy groups are offered their previous (last good) policy, so a replica
/// that did accept the new one goes back to what the gateways' routes expect and a replica that
/// connects later gets the policy in force. A service keeps its own last good policy when it
/// NACKs, so going back costs it at most one re-apply of the same policy. The refused version is
/// never offered again to a connection that refused it: a later reload producing it again is
/// rejected at once.
#[tracing::instrument(name = "config.rollout", skip_all, fields(policy_groups = tracing::field::Empty))]
pub async fn rollout(
    tx: &watch::Sender<Arc<Snapshots>>,
    next: Snapshots,
    registry: &Registry,
) -> Result<(), RolloutError> {
    let current = tx.borrow().clone();
    let changed = changed_policies(&current, &next);
    if !changed.is_empty() {
        let refusals = registry.refusals(&changed);
        if !refusals.is_empty() {
            return Err(RolloutError::Refused { refusals });
        }
        let mut groups = current.groups.clone();
        for t in &changed {
            if let Some(s) = next.groups.get(&t.group) {
                groups.insert(t.group.clone(), s.clone());
            }
        }
        tx.send_replace(Arc::new(Snapshots::from_shared(groups)));
        let names: Vec<&str> = changed.iter().map(|t| t.group.as_str()).collect();
        tracing::Span::current().record("policy_groups", names.join(",").as_str());
        // The wait for the policy groups' ACKs, one span per group in the trace.
        let settled = registry
            .settled(&changed, POLICY_FIRST_TIMEOUT)
            .instrument(tracing::info_span!("config.policy_ack", groups = %names.join(",")))
            .await;
        match settled {
            Settled::Acked => {}
            Settled::TimedOut(pending) => {
                let pending: Vec<&str> = pending.iter().map(|p| p.node_id.as_str()).collect();
                warn!(timeout = ?POLICY_FIRST_TIMEOUT, ?pending, "a policy service has not applied the new policy; updating the gateways anyway");
            }
            Settled::Nacked(refusals) => {
                tx.send_replace(current);
                info!("a policy service refused the new policy; every component keeps its previous configuration");
                return Err(RolloutError::Refused { refusals });
            }
        }
    }
    tracing::info_span!("config.publish", groups = next.groups.len())
        .in_scope(|| tx.send_replace(Arc::new(next)));
    Ok(())
}

/// The policy groups whose policy `next` changes, with the new version.
fn changed_policies(current: &Snapshots, next: &Snapshots) -> Vec<Target> {
    translate::POLICY_GROUPS
        .iter()
        .filter_map(|&(group, type_url)| {
            let new = next.groups.get(group)?.get(type_url)?.version.clone();
            let old = current
                .groups
                .get(group)
                .and_then(|s| s.get(type_url))
                .map(|t| t.version.as_str());
            (old != Some(new.as_str())).then(|| Target {
                group: group.to_string(),
                type_url: type_url.to_string(),
                version: new,
            })
        })
        .collect()
}
