//! xds-server's ADS protocol state machine (`ads::StreamMachine`, what every SotW and Delta
//! stream runs) driven by a sequence of DiscoveryRequests or DeltaDiscoveryRequests built from
//! the input, with reloads between two fixed snapshots and time passing.
//!
//! Besides no panic: every response decodes as the protocol's message, carries a nonce never used before on the stream, and is the only one in flight for its type (the next
//! response of a type waits until the client answered the last one's nonce).
#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ads::wire::Encoded;
use ads::{Mode, StreamMachine};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::pb::envoy::config::core::v3::Node;
use proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use proto::pb::google::rpc::Status;

/// Node groups: the fixture's gateway, a policy service's group, and one no config has.
const GROUPS: [&str; 3] = ["edge", "authz-service", "nobody"];

#[derive(Arbitrary, Debug)]
enum Pick {
    /// By number from what is known at that point (types, names or nonces seen).
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Request {
        node: bool,
        type_url: Pick,
        /// `None`: no nonce (a first request); `Some(Known(_))` a nonce the server sent.
        nonce: Option<Pick>,
        error: Option<(i32, String)>,
        /// SotW `resource_names`, or Delta `resource_names_subscribe`.
        names: Vec<Pick>,
        unsubscribe: Vec<Pick>,
        initial_versions: Vec<(Pick, String)>,
    },
    /// Publishes snapshot 0 or 1.
    Reload(bool),
    /// Lets this many seconds pass, then advances the stream.
    Wait(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    delta: bool,
    group: Pick,
    ops: Vec<Op>,
}

/// What the fuzz target has seen on the stream.
#[derive(Default)]
struct Seen {
    types: Vec<String>,
    names: Vec<String>,
    nonces: Vec<String>,
    all_nonces: BTreeSet<String>,
    /// Type URL → the nonce of its response that awaits an answer.
    in_flight: HashMap<String, String>,
}

impl Seen {
    fn pick(list: &[String], p: &Pick) -> String {
        match p {
            Pick::Known(i) if !list.is_empty() => list[usize::from(*i) % list.len()].clone(),
            Pick::Known(_) => String::new(),
            Pick::Other(s) => s.clone(),
        }
    }

    /// Checks one response and records its type, names and nonce.
    fn response(&mut self, delta: bool, e: &Encoded) {
        let (type_url, nonce, names) = if delta {
            let r = DeltaDiscoveryResponse::decode(e.0.clone()).expect("a DeltaDiscoveryResponse");
            let mut names: Vec<String> = r.resources.into_iter().map(|r| r.name).collect();
            names.extend(r.removed_resources);
            (r.type_url, r.nonce, names)
        } else {
            let r = DiscoveryResponse::decode(e.0.clone()).expect("a DiscoveryResponse");
            (r.type_url, r.nonce, Vec::new())
        };
        assert!(!nonce.is_empty(), "a response without a nonce");
        assert!(
            self.all_nonces.insert(nonce.clone()),
            "nonce {nonce} sent twice"
        );
        if let Some(old) = self.in_flight.insert(type_url.clone(), nonce.clone()) {
            panic!("{type_url}: response {nonce} sent while {old} awaits an answer");
        }
        if !self.types.contains(&type_url) {
            self.types.push(type_url);
        }
        self.nonces.push(nonce);
        for n in names {
            if !self.names.contains(&n) {
                self.names.push(n);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let snapshots = &*gateway_fuzz::SNAPSHOTS;
    let mode = if input.delta { Mode::Delta } else { Mode::Sotw };
    let mut machine = StreamMachine::new(mode, snapshots[0].clone());
    let mut seen = Seen::default();
    for g in &snapshots[0].groups {
        for (t, ts) in &g.1.types {
            seen.types.push(t.clone());
            seen.names.extend(ts.resources.keys().cloned());
        }
    }
    let cluster = match &input.group {
        Pick::Known(i) => GROUPS[usize::from(*i) % GROUPS.len()].to_string(),
        Pick::Other(s) => s.clone(),
    };
    let start = Instant::now();
    let mut now = start;
    for op in input.ops {
        let out = match op {
            Op::Request {
                node,
                type_url,
                nonce,
                error,
                names,
                unsubscribe,
                initial_versions,
            } => {
                let node = node.then(|| Node {
                    id: "fuzz-1".into(),
                    cluster: cluster.clone(),
                    ..Default::default()
                });
                let type_url = Seen::pick(&seen.types, &type_url);
                let nonce = nonce.map_or_else(String::new, |n| Seen::pick(&seen.nonces, &n));
                let error_detail = error.map(|(code, message)| Status {
                    code,
                    message,
                    ..Default::default()
                });
                let names: Vec<String> = names.iter().map(|n| Seen::pick(&seen.names, n)).collect();
                if seen.in_flight.get(&type_url) == Some(&nonce) {
                    seen.in_flight.remove(&type_url);
                }
                let result = if input.delta {
                    machine.delta(
                        DeltaDiscoveryRequest {
                            node,
                            type_url,
                            response_nonce: nonce,
                            error_detail,
                            resource_names_subscribe: names,
                            resource_names_unsubscribe: unsubscribe
                                .iter()
                                .map(|n| Seen::pick(&seen.names, n))
                                .collect(),
                            initial_resource_versions: initial_versions
                                .iter()
                                .map(|(n, v)| (Seen::pick(&seen.names, n), v.clone()))
                                .collect(),
                            ..Default::default()
                        },
                        now,
                    )
                } else {
                    machine.sotw(
                        DiscoveryRequest {
                            node,
                            type_url,
                            response_nonce: nonce,
                            error_detail,
                            resource_names: names,
                            ..Default::default()
                        },
                        now,
                    )
                };
                match result {
                    Ok(out) => out,
                    // The stream ends, as on the wire.
                    Err(_) => return,
                }
            }
            Op::Reload(which) => {
                machine.set_snapshots(snapshots[usize::from(which)].clone());
                machine.advance(now)
            }
            Op::Wait(secs) => {
                now += Duration::from_secs(u64::from(secs));
                machine.advance(now)
            }
        };
        for e in &out {
            seen.response(input.delta, e);
        }
    }
});
