//! A spray of source addresses against a per-IP limit, through a real Envoy and a real
//! ratelimit-service on its in-memory store with a small `--memory-max-counters`: the store
//! stays at its bound however many addresses come, `ratelimit_memory_full_total` counts every
//! request that needed a counter it could not have, and the clients that already have a counter
//! keep being limited exactly. What the store does when full is the documented rule of
//! `ratelimit_service::store::memory`: expired counters are dropped first, a live one is never
//! evicted, and a request that needs a new counter is answered by `on_error` (`allow`: admitted
//! uncounted; `deny`: refused with 503).
//!
//! The review's attack is an IPv6 spray (a /64 is 2^64 addresses); here the sources are
//! 127.x.y.z, which Linux routes on the loopback interface with no setup, so each client binds
//! its own address. IPv6 sources would need addresses added to an interface as root. What the
//! store sees is the same: one descriptor value per source address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tests::ratelimit::RateLimitService;
use tests::xds::parse_metric;
use tests::{free_port, wait_for, wait_for_route, EchoUpstream, HttpClient, Reply, Stack, XdsMode};

/// The counters the store may hold in these tests.
const BOUND: usize = 16;
/// Distinct source addresses in the spray: well past the bound, and bounded in time.
const SPRAY: usize = 150;
/// Longest wait for the sprayed counters (15 s windows) to expire and be swept (every 5 s).
const EXPIRY_WAIT: Duration = Duration::from_secs(40);

fn config(upstream: &str, port: u16, rls_port: u16, on_error: &str) -> String {
    format!(
        r#"version: 1
services:
  api: {{ endpoints: [{upstream}] }}
rate_limits:
  service: {{ address: 127.0.0.1:{rls_port}, timeout: 1s, on_error: {on_error} }}
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      # Counters that live a minute: the clients whose limits must keep holding.
      - name: steady
        match: {{ prefix: /steady }}
        service: api
        auth: none
        rate_limit: [{{ limit: 3/minute, per: ip }}]
      # Counters that expire after about 15 s: the spray.
      - name: spray
        match: {{ prefix: /spray }}
        service: api
        auth: none
        rate_limit: [{{ limit: 100/15s, per: ip }}]
      - name: open
        match: {{ prefix: /open }}
        service: api
        auth: none
        rate_limit: none
"#
    )
}

/// One gateway with ratelimit-service on a memory store of [`BOUND`] counters.
struct World {
    stack: Stack,
    rls: RateLimitService,
    port: u16,
    _upstream: EchoUpstream,
}

impl World {
    async fn start(on_error: &str) -> World {
        let upstream = EchoUpstream::start("api").await;
        let (port, rls_port) = (free_port(), free_port());
        let yaml = config(&upstream.endpoint(), port, rls_port, on_error);
        let stack = Stack::start(XdsMode::Sotw, &yaml).await;
        let rls = RateLimitService::start_with(
            "rls-spray",
            &stack.xds.grpc_addr(),
            None,
            rls_port,
            &["--memory-max-counters", &BOUND.to_string()],
            stack.dir(),
        )
        .await;
        stack.wait_converged().await;
        // An unlimited route, so waiting for the routes creates no counter.
        wait_for_route(&stack.client(port), "/open", 200).await;
        let world = World {
            stack,
            rls,
            port,
            _upstream: upstream,
        };
        assert_eq!(world.counters().await, 0, "no counter before any request");
        world
    }

    /// `GET path` from source address `from`.
    async fn get(&self, from: IpAddr, path: &str) -> Reply {
        HttpClient::from_source(self.port, from)
            .get(path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} from {from}: {e}"))
    }

    /// One request from each address, all at once; the statuses in address order.
    async fn spray(&self, addresses: &[IpAddr], path: &str) -> Vec<u16> {
        let mut set = tokio::task::JoinSet::new();
        for (i, &from) in addresses.iter().enumerate() {
            let client = HttpClient::from_source(self.port, from);
            let path = path.to_string();
            set.spawn(async move {
                let r = client.get(&path).send().await;
                (i, r.map(|r| r.status).map_err(|e| format!("{from}: {e}")))
            });
        }
        let mut statuses = vec![0; addresses.len()];
        while let Some(joined) = set.join_next().await {
            let (i, status) = joined.expect("request task");
            statuses[i] = status.unwrap_or_else(|e| panic!("spray request failed: {e}"));
        }
        statuses
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.rls.metrics().await;
        parse_metric(&text, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
    }

    /// `ratelimit_memory_counters`: the counters the store holds.
    async fn counters(&self) -> usize {
        self.metric("ratelimit_memory_counters").await as usize
    }

    /// `ratelimit_memory_full_total`.
    async fn full(&self) -> usize {
        self.metric("ratelimit_memory_full_total").await as usize
    }
}

/// `n` distinct source addresses in 127.`block`.0.0/16, none of them 127.0.0.1.
fn addresses(block: u8, n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let [hi, lo] = u16::try_from(i + 1).expect("few addresses").to_be_bytes();
            IpAddr::V4(Ipv4Addr::new(127, block, hi, lo))
        })
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

/// `on_error: allow` (the default): the spray is admitted, the store holds [`BOUND`] counters
/// and no more, the full metric counts the rest, an existing client's limit still holds (also
/// when it spoofs `x-forwarded-for`), a new client is admitted uncounted while the store is
/// full, and once the sprayed counters expire they are dropped and new clients are counted
/// again, while the long-lived counter was never evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_keeps_the_memory_store_at_its_bound_and_existing_limits_hold() {
    let mut w = World::start("allow").await;
    let victim = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let r = w.get(victim, "/steady").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    assert_eq!(w.counters().await, 1);

    // The spray: one request from each of SPRAY addresses. The first BOUND - 1 get a counter;
    // every later one needs a new counter in a full store of live counters.
    let statuses = w.spray(&addresses(1, SPRAY), "/spray").await;
    assert_eq!(
        count(&statuses, 200),
        SPRAY,
        "on_error: allow admits the spray: {statuses:?}"
    );
    assert_eq!(w.counters().await, BOUND, "the store grew past its bound");
    let overflow = SPRAY - (BOUND - 1);
    assert_eq!(w.full().await, overflow, "each request beyond the bound");

    // The victim's counter existed before the store filled: it still decides, exactly. A
    // spoofed X-Forwarded-For does not make the same connection another client.
    for remaining in ["1", "0"] {
        let r = w.get(victim, "/steady").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
    }
    let r = HttpClient::from_source(w.port, victim)
        .get("/steady")
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status, 429, "the victim's limit must hold: {}", r.body);
    assert_eq!(w.counters().await, BOUND);

    // A client that arrives while the store is full has no counter and gets none: under
    // `on_error: allow` it is admitted uncounted (the documented price of never evicting a live
    // counter), and every such request is counted as full.
    let late = addresses(2, 1)[0];
    for _ in 0..4 {
        let r = w.get(late, "/steady").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(w.full().await, overflow + 4);
    assert_eq!(w.counters().await, BOUND);

    // The sprayed counters expire after their 15 s window and are dropped; one counter stays,
    // and the only live one is the victim's (the late client never got one): expired counters
    // go, live ones are never evicted.
    wait_for(
        "the sprayed counters to expire and be dropped",
        EXPIRY_WAIT,
        async || {
            let n = w.counters().await;
            (n == 1).then_some(()).ok_or(format!("{n} counters"))
        },
    )
    .await;
    let r = w.get(victim, "/steady").await;
    assert_eq!(r.status, 429, "the victim is limited still: {}", r.body);

    // With room again, the late client is counted like anyone: its limit holds.
    for remaining in ["2", "1", "0"] {
        let r = w.get(late, "/steady").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
    }
    assert_eq!(w.get(late, "/steady").await.status, 429);
    assert_eq!(w.counters().await, 2);
    assert_eq!(w.full().await, overflow + 4, "nothing was full since");
    w.rls.proc().assert_running();
    w.stack.envoy.proc().assert_running();
}

/// `on_error: deny`: while the store is full, a request that needs a new counter is refused
/// with 503 rather than admitted uncounted; a client with a counter is still limited by it (429,
/// not 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_on_error_deny_a_full_store_refuses_new_clients() {
    let w = World::start("deny").await;
    let victim = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(w.get(victim, "/steady").await.status, 200);

    let spray = addresses(1, 40);
    let statuses = w.spray(&spray, "/steady").await;
    assert_eq!(
        count(&statuses, 200),
        BOUND - 1,
        "only the addresses that got a counter are admitted: {statuses:?}"
    );
    assert_eq!(
        count(&statuses, 503),
        spray.len() - (BOUND - 1),
        "the rest are refused: {statuses:?}"
    );
    assert_eq!(w.counters().await, BOUND);
    assert_eq!(w.full().await, spray.len() - (BOUND - 1));

    // The victim's counter keeps deciding: two more, then 429.
    for _ in 0..2 {
        let r = w.get(victim, "/steady").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = w.get(victim, "/steady").await;
    assert_eq!(r.status, 429, "{}", r.body);
    // A refused sprayer stays refused while the store is full: retrying does not get it a
    // counter (or through).
    let refused = spray[statuses.iter().position(|&s| s == 503).expect("a 503")];
    let r = w.get(refused, "/steady").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "unavailable", "{}", r.body);
    assert_eq!(w.counters().await, BOUND);
}
