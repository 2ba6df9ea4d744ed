//! A translated config encoded into the [`Snapshots`] the ADS server publishes: every gateway's
//! resources (checked for consistency first) and every policy group's resource.

use std::collections::BTreeMap;

use ads::snapshot::{Resource, Snapshot, Snapshots, TypeSnapshot};
use ads::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

use crate::TranslateError;

/// Translates a loaded config and encodes every gateway's resources into a snapshot.
pub fn snapshots(loaded: &config::Loaded) -> Result<Snapshots, TranslateError> {
    let gateways = crate::translate(loaded)?;
    let mut groups = BTreeMap::new();
    for (name, r) in gateways {
        r.check().map_err(|problem| TranslateError::Inconsistent {
            gateway: name.clone(),
            problem,
        })?;
        let mut types = BTreeMap::new();
        types.insert(
            CLUSTER.to_string(),
            TypeSnapshot::new(
                r.clusters
                    .iter()
                    .map(|c| Resource::new(CLUSTER, &c.name, c)),
            ),
        );
        types.insert(
            ENDPOINT.to_string(),
            TypeSnapshot::new(
                r.endpoints
                    .iter()
                    .map(|e| Resource::new(ENDPOINT, &e.cluster_name, e)),
            ),
        );
        types.insert(
            LISTENER.to_string(),
            TypeSnapshot::new(
                r.listeners
                    .iter()
                    .map(|l| Resource::new(LISTENER, &l.name, l)),
            ),
        );
        types.insert(
            SECRET.to_string(),
            TypeSnapshot::new(r.secrets.iter().map(|s| Resource::new(SECRET, &s.name, s))),
        );
        types.insert(
            ROUTE.to_string(),
            // Canonically: a route's per-filter map may hold two entries.
            TypeSnapshot::new(
                r.routes
                    .iter()
                    .map(|rc| Resource::from_bytes(ROUTE, &rc.name, crate::route::encode(rc))),
            ),
        );
        groups.insert(name, Snapshot::new(types));
    }
    for p in crate::policies(loaded)? {
        let types = BTreeMap::from([(
            p.type_url.to_string(),
            TypeSnapshot::new(
                p.resources
                    .into_iter()
                    .map(|(name, bytes)| Resource::from_bytes(p.type_url, name, bytes)),
            ),
        )]);
        groups.insert(p.group.to_string(), Snapshot::new(types));
    }
    Ok(Snapshots::new(groups))
}
