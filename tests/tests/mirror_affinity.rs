//! Route `mirror` and `affinity` (spec §8) through a real Envoy: the mirror gets its share of the
//! requests with `-shadow` on the Host while the client only ever sees the primary, whose
//! latency does not change when the mirror hangs or is gone; the same affinity header or cookie
//! value lands on the same endpoint of three, different values spread, Envoy sets the cookie when
//! it is absent, and no client-sent header picks an endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use tests::{free_port, wait_for, wait_for_route, EchoUpstream, HttpClient, Stack, XdsMode};

/// Accepts connections and never answers: a mirror that hangs.
struct Hung {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Hung {
    async fn start() -> Hung {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        Hung {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn timed(client: &HttpClient, path: &str) -> Duration {
    let start = Instant::now();
    let r = client.get(path).ok().await;
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{path}: {r:?}");
    assert_eq!(
        r.upstream(),
        Some("primary"),
        "{path}: the client saw another answer"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_gets_its_share_and_never_slows_or_changes_the_answer() {
    let primary = EchoUpstream::start("primary").await;
    let shadow = EchoUpstream::start("shadow").await;
    let hung = Hung::start().await;
    // Nothing listens there: every copy's connection is refused.
    let dead = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  primary: {{ endpoints: [{primary}] }}
  shadow: {{ endpoints: [{shadow}] }}
  hung: {{ endpoints: [{hung}] }}
  dead: {{ endpoints: [{dead}] }}
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      - {{ name: half, match: {{ prefix: /half }}, service: primary, auth: none, mirror: {{ service: shadow, percent: 50% }} }}
      - {{ name: all, match: {{ prefix: /all }}, service: primary, auth: none, mirror: {{ service: shadow }} }}
      - {{ name: to-hung, match: {{ prefix: /hung }}, service: primary, auth: none, timeout: 5s, mirror: {{ service: hung, percent: 100% }} }}
      - {{ name: to-dead, match: {{ prefix: /dead }}, service: primary, auth: none, mirror: {{ service: dead, percent: 100% }} }}
      - {{ name: plain, match: {{ prefix: /plain }}, service: primary, auth: none }}
"#,
        primary = primary.endpoint(),
        shadow = shadow.endpoint(),
        hung = hung.addr,
    );
    let stack = Stack::start(XdsMode::Sotw, &yaml).await;
    let client = stack.client(port);
    wait_for_route(&client, "/plain", 200).await;
    stack.wait_converged().await;

    // The share: 400 requests at 50% is 200 ± 10 (one standard deviation); 6 of them either
    // side make a false failure far rarer than one in a million runs.
    let n = 400;
    for i in 0..n {
        let r = client.get(&format!("/half/{i}")).ok().await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.upstream(),
            Some("primary"),
            "the client saw the mirror's answer"
        );
    }
    // Copies run on their own: wait until every one Envoy started has been answered.
    let envoy = &stack.envoy;
    let copies = wait_for(
        "every mirrored copy to reach the mirror",
        Duration::from_secs(10),
        async || {
            let active = envoy.stat("cluster.shadow.upstream_rq_active").await?;
            let pending = envoy
                .stat("cluster.shadow.upstream_rq_pending_active")
                .await?;
            let done = envoy.stat("cluster.shadow.upstream_rq_completed").await?;
            (active == 0 && pending == 0 && done == shadow.hits()).then_some(done)
        },
    )
    .await;
    eprintln!("{copies} of {n} requests mirrored at 50%");
    assert!(
        (140..=260).contains(&copies),
        "{copies} of {n} requests mirrored at 50%"
    );
    assert_eq!(primary.hits(), 1 + n, "the primary got every request once");

    // The copy's Host gets `-shadow`; the primary's does not.
    let r = client
        .get("/all/host")
        .header("host", "api.example.com")
        .ok()
        .await;
    assert_eq!(r.upstream(), Some("primary"));
    assert_eq!(r.upstream_header("host"), Some("api.example.com"));
    let copy = wait_for(
        "the copy of /all/host to reach the mirror",
        Duration::from_secs(10),
        async || shadow.last_request().filter(|d| d["path"] == "/all/host"),
    )
    .await;
    assert_eq!(copy["headers"]["host"], "api.example.com-shadow", "{copy}");

    // Latency: a mirror that hangs, or refuses connections, against one that answers. Rounds
    // interleave the three so that anything else on the machine slows all of them alike.
    let (mut alive, mut hanging, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..40 {
        alive.push(timed(&client, "/all/t").await);
        hanging.push(timed(&client, "/hung/t").await);
        gone.push(timed(&client, "/dead/t").await);
    }
    let (alive, hanging, gone) = (median(alive), median(hanging), median(gone));
    eprintln!("median latency: mirror answering {alive:?}, hanging {hanging:?}, refusing {gone:?}");
    // Generous: a primary that waited on its copy would take the route's 5 s timeout.
    let bound = alive * 3 + Duration::from_millis(50);
    assert!(hanging <= bound, "hanging mirror: {hanging:?} vs {alive:?}");
    assert!(gone <= bound, "refusing mirror: {gone:?} vs {alive:?}");
    // The copies were really sent.
    assert!(
        hung.accepted.load(Ordering::SeqCst) > 0,
        "no copy reached the hanging mirror"
    );
    let refused = envoy.stat("cluster.dead.upstream_cx_connect_fail").await;
    assert!(
        refused.unwrap_or(0) > 0,
        "no copy was tried on the dead mirror"
    );
}

/// Which endpoint answered each request.
async fn upstream_of(client: &HttpClient, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = client.get(path);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let r = req.ok().await;
    assert_eq!(r.status, 200, "{r:?}");
    r.upstream().expect("an echo answer").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_keeps_a_value_on_one_endpoint_and_spreads_values() {
    let ups = [
        EchoUpstream::start("a").await,
        EchoUpstream::start("b").await,
        EchoUpstream::start("c").await,
    ];
    let endpoints = ups
        .iter()
        .map(EchoUpstream::endpoint)
        .collect::<Vec<_>>()
        .join(", ");
    let port = free_port();
    let yaml = format!(
        r#"version: 1
services:
  ring: {{ endpoints: [{endpoints}], lb: ring_hash }}
  maglev: {{ endpoints: [{endpoints}], lb: maglev }}
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      - {{ name: by-header, match: {{ prefix: /h }}, service: ring, auth: none, affinity: {{ header: x-session }} }}
      - {{ name: by-cookie, match: {{ prefix: /c }}, service: maglev, auth: none, affinity: {{ cookie: gw-route, ttl: 1h }} }}
"#
    );
    let stack = Stack::start(XdsMode::Sotw, &yaml).await;
    let client = stack.client(port);
    wait_for_route(&client, "/h", 200).await;
    stack.wait_converged().await;

    // The same value, the same endpoint; different values reach all three.
    let alice = upstream_of(&client, "/h", &[("x-session", "alice")]).await;
    for _ in 0..20 {
        assert_eq!(
            upstream_of(&client, "/h", &[("x-session", "alice")]).await,
            alice
        );
    }
    let mut spread: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..60 {
        let v = format!("user-{i}");
        let first = upstream_of(&client, "/h", &[("x-session", &v)]).await;
        assert_eq!(
            upstream_of(&client, "/h", &[("x-session", &v)]).await,
            first,
            "{v}"
        );
        *spread.entry(first).or_default() += 1;
    }
    eprintln!("60 header values over three endpoints: {spread:?}");
    assert_eq!(spread.len(), 3, "values do not spread: {spread:?}");

    // Abuse: Envoy's own host-override header does not move alice off her endpoint.
    let other = ups
        .iter()
        .find(|u| u.name() != alice)
        .expect("another endpoint");
    for _ in 0..10 {
        let h = [
            ("x-session", "alice"),
            ("x-envoy-original-dst-host", &other.endpoint()),
        ];
        assert_eq!(upstream_of(&client, "/h", &h).await, alice);
    }
    // Without the header the request is balanced as on any hashed route: by client IP, so one
    // client (here, always 127.0.0.1) stays on one endpoint too.
    let without: BTreeSet<String> = answered_by(&client, "/h", 20).await;
    assert_eq!(without.len(), 1, "{without:?}");

    // The cookie: set when absent, with the ttl, then it sticks.
    let r = client.get("/c").ok().await;
    assert_eq!(r.status, 200);
    let first = r.upstream().expect("an echo answer").to_string();
    let set = r
        .header("set-cookie")
        .expect("Envoy sets the affinity cookie");
    for attr in ["Max-Age=3600", "Path=/", "SameSite=Lax", "HttpOnly"] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    let cookie = set
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_string();
    assert!(cookie.starts_with("gw-route="), "{set}");
    for _ in 0..10 {
        let r = client.get("/c").header("cookie", &cookie).ok().await;
        assert_eq!(r.upstream(), Some(first.as_str()), "{cookie}");
        assert!(
            r.header("set-cookie").is_none(),
            "a present cookie is not set again"
        );
    }
    // Forged values are just other values: each sticks, and they spread.
    let mut spread: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..60 {
        let c = format!("gw-route=v{i}");
        let first = upstream_of(&client, "/c", &[("cookie", &c)]).await;
        assert_eq!(
            upstream_of(&client, "/c", &[("cookie", &c)]).await,
            first,
            "{c}"
        );
        *spread.entry(first).or_default() += 1;
    }
    eprintln!("60 cookie values over three endpoints: {spread:?}");
    assert_eq!(spread.len(), 3, "cookie values do not spread: {spread:?}");
}

/// The endpoints that answered `n` plain requests to `path`.
async fn answered_by(client: &HttpClient, path: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(upstream_of(client, path, &[]).await);
    }
    seen
}

/// Load on one route while eight reloads turn its mirror and affinity (and the consistent-hash
/// `lb` affinity needs, which re-creates the cluster) on and off: not one response may be
/// anything but 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_and_affinity_survive_reloads_under_load() {
    use tests::load::{assert_clean, Load, Probe};
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let shadow = EchoUpstream::start("shadow").await;
    let port = free_port();
    let cfg = |step: usize| {
        let (lb, extra) = match step % 4 {
            0 => ("round_robin", ""),
            1 => ("ring_hash", ", affinity: { header: x-session }"),
            2 => (
                "maglev",
                ", affinity: { cookie: gw-route, ttl: 1h }, mirror: { service: shadow, percent: 50% }",
            ),
            _ => ("round_robin", ", mirror: { service: shadow }"),
        };
        format!(
            r#"version: 1
services:
  app: {{ endpoints: [{a}, {b}], lb: {lb} }}
  shadow: {{ endpoints: [{shadow}] }}
gateways:
  edge:
    listeners: [{{ name: http, port: {port} }}]
    routes:
      - {{ name: base, match: {{ prefix: /base }}, service: app, auth: none, response_headers: {{ set: {{ x-step: "{step}" }} }}{extra} }}
"#,
            a = a.endpoint(),
            b = b.endpoint(),
            shadow = shadow.endpoint(),
        )
    };
    let stack = Stack::start(XdsMode::Sotw, &cfg(0)).await;
    let c = stack.client(port);
    wait_for_route(&c, "/base", 200).await;
    let load = Load::start(&c, vec![Probe::new("/base", 200)], 4);
    for step in 1..=8 {
        stack.config.write(&cfg(step));
        let want = step.to_string();
        wait_for(
            &format!("step {step} to apply"),
            tests::CONVERGE_TIMEOUT,
            async || {
                let r = c.get("/base").send().await.ok()?;
                (r.header("x-step") == Some(want.as_str())).then_some(())
            },
        )
        .await;
    }
    load.wait_more(200, "after the last reload").await;
    let (sent, bad) = load.finish().await;
    assert_clean(sent, &bad, 500);
    assert!(shadow.hits() > 0, "the mirror steps never mirrored");
    let st = stack.xds.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    stack.wait_converged().await;
}

/// An affinity cookie set over TLS carries `Secure` (a browser never sends it back over plain
/// HTTP, where it could be read); over the same gateway's plain listener it does not, or the
/// browser would never return it there and affinity would not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_cookies_are_secure_on_tls_listeners_only() {
    let up = EchoUpstream::start("a").await;
    let (http, https) = (free_port(), free_port());
    let dir = tempfile::Builder::new()
        .prefix("gateway-e2e-")
        .tempdir()
        .expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir certs");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate certificate");
    std::fs::write(certs.join("api.crt"), ck.cert.pem()).expect("write cert");
    std::fs::write(certs.join("api.key"), ck.signing_key.serialize_pem()).expect("write key");
    let yaml = format!(
        r#"version: 1
services:
  maglev: {{ endpoints: [{}], lb: maglev }}
gateways:
  edge:
    listeners:
      - {{ name: http, port: {http} }}
      - {{ name: https, port: {https}, tls: {{ cert_file: certs/api.crt, key_file: certs/api.key }} }}
    routes:
      - name: by-cookie
        match: {{ prefix: /c }}
        service: maglev
        auth: none
        affinity: {{ cookie: gw-route, ttl: 1h }}
"#,
        up.endpoint()
    );
    let stack = Stack::start_in(dir, XdsMode::Sotw, &yaml).await;
    let plain = stack.client(http);
    wait_for_route(&plain, "/c", 200).await;
    let tls = HttpClient::https("localhost", https, &ck.cert.pem());
    wait_for_route(&tls, "/c", 200).await;

    let cookies = |r: &tests::Reply| -> Vec<String> {
        r.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("set-cookie text").to_string())
            .collect()
    };
    let secure = |c: &str| {
        c.split(';')
            .any(|a| a.trim().eq_ignore_ascii_case("secure"))
    };

    let over_tls = cookies(&tls.get("/c").ok().await);
    let ours: Vec<&String> = over_tls
        .iter()
        .filter(|c| c.starts_with("gw-route="))
        .collect();
    assert_eq!(ours.len(), 1, "{over_tls:?}");
    assert!(secure(ours[0]), "over TLS: {over_tls:?}");
    assert!(
        ours[0].contains("Max-Age=3600"),
        "the rest is kept: {over_tls:?}"
    );

    let over_plain = cookies(&plain.get("/c").ok().await);
    let ours: Vec<&String> = over_plain
        .iter()
        .filter(|c| c.starts_with("gw-route="))
        .collect();
    assert_eq!(ours.len(), 1, "{over_plain:?}");
    assert!(!secure(ours[0]), "over plain HTTP: {over_plain:?}");
}
