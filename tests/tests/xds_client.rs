//! The client against the real ADS server over real gRPC: apply + ACK, NACK keeps the last good
//! set, and reconnecting to a restarted server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ads::snapshot::{Resource, Snapshot, Snapshots, TypeSnapshot};
use ads::Metrics;
use ads::{AdsServer, Registry};
use prost::Message;
use proto::pb::google::protobuf::{Any, StringValue};
use tests::wait_for;
use tokio::sync::watch;
use xds_client::{Apply, Options, State};

const TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";
const WAIT: Duration = Duration::from_secs(10);

fn snapshots(values: &[&str]) -> Arc<Snapshots> {
    let t = TypeSnapshot::new(values.iter().map(|v| {
        Resource::new(
            TYPE,
            *v,
            &StringValue {
                value: v.to_string(),
            },
        )
    }));
    let snap = Snapshot::new(BTreeMap::from([(TYPE.to_string(), t)]));
    Arc::new(Snapshots::new(BTreeMap::from([(
        "policy".to_string(),
        snap,
    )])))
}

/// Accepts any set without "bad" in it.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

impl Apply for Collect {
    fn apply(&mut self, _version: &str, resources: &[Any]) -> Result<(), String> {
        let values: Vec<String> = resources
            .iter()
            .map(|a| {
                StringValue::decode(a.value.as_slice())
                    .map(|s| s.value)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        if values.iter().any(|v| v == "bad") {
            return Err("value 'bad' is not allowed".into());
        }
        *self.0.lock().unwrap() = values;
        Ok(())
    }
}

struct Server {
    snaps: watch::Sender<Arc<Snapshots>>,
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(addr: std::net::SocketAddr, initial: Arc<Snapshots>) -> Server {
    let (snaps, rx) = watch::channel(initial);
    let (stop, sd) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let server = AdsServer::new(rx, registry.clone(), Arc::new(Metrics::new()), sd.clone());
    let listener = ads::bind(addr).unwrap();
    let mut sd2 = sd;
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = sd2.wait_for(|v| *v).await;
            })
            .await
            .unwrap();
    });
    Server {
        snaps,
        registry,
        stop,
        task,
    }
}

#[tokio::test]
async fn applies_acks_nacks_and_survives_a_server_restart() {
    // A fixed address, so the restarted server comes back where the client reconnects.
    let addr = tests::free_addr();
    let server = start(addr, snapshots(&["a", "b"])).await;

    let collected = Collect::default();
    let (state_tx, state) = watch::channel(State::default());
    let (stop_client, client_sd) = watch::channel(false);
    let mut opts = Options::new(addr.to_string(), "svc-1", "policy", TYPE);
    opts.min_backoff = Duration::from_millis(20);
    opts.max_backoff = Duration::from_millis(100);
    let client = tokio::spawn(xds_client::run(
        opts,
        collected.clone(),
        state_tx,
        client_sd,
    ));

    let v1 = server.snaps.borrow().groups["policy"]
        .get(TYPE)
        .unwrap()
        .version
        .clone();
    wait_for("the first set to be applied", WAIT, async || {
        state.borrow().version.as_deref() == Some(&v1)
    })
    .await;
    assert_eq!(*collected.0.lock().unwrap(), ["a", "b"]);
    wait_for("the server to record the ACK", WAIT, async || {
        server
            .registry
            .clients()
            .first()
            .and_then(|c| c.types.get(TYPE))
            .and_then(|t| t.acked.clone())
            == Some(v1.clone())
    })
    .await;

    // A set the service cannot use is NACKed with its reason; the previous set stays.
    server.snaps.send_replace(snapshots(&["a", "bad"]));
    wait_for("the NACK to reach the server", WAIT, async || {
        server
            .registry
            .clients()
            .first()
            .and_then(|c| c.types.get(TYPE))
            .is_some_and(|t| t.nacked.is_some())
    })
    .await;
    let nack = server.registry.clients()[0].types[TYPE]
        .nacked
        .clone()
        .unwrap();
    assert_eq!(nack.error, "value 'bad' is not allowed");
    assert_eq!(*collected.0.lock().unwrap(), ["a", "b"]);
    assert_eq!(state.borrow().version.as_deref(), Some(v1.as_str()));
    assert!(state.borrow().last_error.is_some());

    // The server goes away: the client keeps its set and reconnects to a new server.
    server.stop.send_replace(true);
    server.task.await.unwrap();
    wait_for("the client to notice", WAIT, async || {
        !state.borrow().connected
    })
    .await;
    assert_eq!(*collected.0.lock().unwrap(), ["a", "b"]);
    let server = start(addr, snapshots(&["c"])).await;
    let v3 = server.snaps.borrow().groups["policy"]
        .get(TYPE)
        .unwrap()
        .version
        .clone();
    wait_for("the set from the new server", WAIT, async || {
        state.borrow().version.as_deref() == Some(&v3)
    })
    .await;
    assert_eq!(*collected.0.lock().unwrap(), ["c"]);
    assert!(state.borrow().connected);

    stop_client.send_replace(true);
    client.await.unwrap();
    server.stop.send_replace(true);
}

/// Compiling a big policy must not stop the calls a service answers: on a current-thread
/// runtime (the policy services' default) an apply that takes a second runs on a blocking
/// thread while a task on the runtime keeps ticking, and the set is still applied and ACKed.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_apply_does_not_stall_a_current_thread_runtime() {
    struct Slow(Arc<Mutex<Option<std::time::Instant>>>);
    impl Apply for Slow {
        fn apply(&mut self, _version: &str, _resources: &[Any]) -> Result<(), String> {
            let started = std::time::Instant::now();
            // Blocking on purpose, as parsing a large keys file does.
            std::thread::sleep(Duration::from_secs(1));
            *self.0.lock().unwrap() = Some(started);
            Ok(())
        }
    }
    let addr = tests::free_addr();
    let server = start(addr, snapshots(&["a"])).await;
    let started = Arc::new(Mutex::new(None));
    let (state_tx, state) = watch::channel(State::default());
    let (stop_client, client_sd) = watch::channel(false);
    let opts = Options::new(addr.to_string(), "svc-slow", "policy", TYPE);
    let client = tokio::spawn(xds_client::run(
        opts,
        Slow(started.clone()),
        state_tx,
        client_sd,
    ));
    // Ticks every 10 ms on this runtime's only thread; records the longest gap between ticks.
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let ticker = {
        let longest = longest.clone();
        tokio::spawn(async move {
            let mut last = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let gap = last.elapsed();
                last = std::time::Instant::now();
                let mut l = longest.lock().unwrap();
                *l = (*l).max(gap);
            }
        })
    };
    wait_for("the slow set to be applied", WAIT, async || {
        state.borrow().version.is_some()
    })
    .await;
    ticker.abort();
    assert!(started.lock().unwrap().is_some(), "the set was applied");
    let longest = *longest.lock().unwrap();
    assert!(
        longest < Duration::from_millis(500),
        "the runtime stalled for {longest:?} during a 1 s apply"
    );
    stop_client.send_replace(true);
    client.await.unwrap();
    server.stop.send_replace(true);
    server.task.await.unwrap();
}
