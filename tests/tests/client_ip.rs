//! The client IP (spec §8 `client_ip`) and route IP lists (`allow_ips` / `deny_ips`) through a
//! real Envoy, authz-service and ratelimit-service, with clients on distinct 127.0.0.x source
//! addresses. With `trusted_hops: 0` (the default) the TCP peer is the client: a spoofed
//! `x-forwarded-for`, with one entry or several, moves neither a per-IP limit's bucket nor an IP
//! list's decision. After a live edit to `trusted_hops: 1`, the last entry is the client, entries
//! to its left are ignored, and an IPv4-mapped IPv6 entry does not slip past an IPv4 deny list.
//! A refused address gets 403 JSON, and neither authz-service nor the upstream sees it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape};
use tests::load::{assert_clean, Load, Probe};
use tests::{wait_for, wait_for_route, HttpClient, Reply, CONVERGE_TIMEOUT};

const ROUTES: &str = r#"      - name: admin
        match: { prefix: /admin }
        service: api
        auth: main
        rate_limit: none
        allow_ips: [127.0.0.0/24, 10.0.0.0/8, "2001:db8::/32"]
        deny_ips: [127.0.0.3, 10.9.0.0/16]
      - name: blocked
        match: { prefix: /blocked }
        service: api
        auth: none
        rate_limit: none
        deny_ips: [10.9.0.0/16]
      - name: limited
        match: { prefix: /limited }
        service: api
        auth: none
        rate_limit: [{ limit: 2/minute, per: ip }]
      - name: open
        match: { prefix: / }
        service: api
        auth: none
        rate_limit: none
"#;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Inside the allow list's 127.0.0.0/24 and not denied.
const ALLOWED: [u8; 4] = [127, 0, 0, 2];
/// Inside 127.0.0.0/24 but denied: deny wins.
const DENIED: [u8; 4] = [127, 0, 0, 3];
/// In no list: not allowed.
const OUTSIDER: [u8; 4] = [127, 0, 1, 5];

fn addr(a: [u8; 4]) -> IpAddr {
    ip(a[0], a[1], a[2], a[3])
}

struct World {
    gw: Full,
    shape: Shape,
    token: String,
}

impl World {
    /// `GET path` from `from` with a valid token and, when given, an `x-forwarded-for`.
    async fn get(&self, from: IpAddr, path: &str, xff: Option<&str>, request_id: &str) -> Reply {
        let mut req = HttpClient::from_source(self.gw.ports.http, from)
            .get(path)
            .header("authorization", &bearer(&self.token))
            .header("x-request-id", request_id);
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} from {from} (xff {xff:?}): {e}"))
    }

    /// Every Check decision authz-service has made, whatever its outcome.
    async fn authz_decisions(&self) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.gw.authz.admin_port);
        let text = tests::wait::http_client()
            .get(url)
            .send()
            .await
            .expect("authz-service /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with("authz_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Asserts `r` is the IP lists' 403: the spec's JSON error body with the request id.
    fn assert_refused(r: &Reply, request_id: &str, why: &str) {
        assert_eq!(r.status, 403, "{why}: {r:?}");
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{why}: {r:?}"
        );
        assert_eq!(r.json()["error"], "forbidden", "{why}: {r:?}");
        assert_eq!(r.json()["request_id"], request_id, "{why}: {r:?}");
    }

    /// Requests from `from` with each `x-forwarded-for` are all refused, and neither
    /// authz-service nor the upstream sees any of them.
    async fn refused(&self, from: [u8; 4], xffs: &[Option<&str>], why: &str) {
        let (decisions, hits) = (self.authz_decisions().await, self.gw.upstream.hits());
        for (i, xff) in xffs.iter().enumerate() {
            let what: String = why.replace(' ', "-").chars().take(24).collect();
            let id = format!("refused-{i}-{what}");
            let r = self.get(addr(from), "/admin", *xff, &id).await;
            Self::assert_refused(&r, &id, &format!("{why} (xff {xff:?})"));
        }
        assert_eq!(
            self.authz_decisions().await,
            decisions,
            "{why}: authz-service was asked about a refused address"
        );
        assert_eq!(
            self.gw.upstream.hits(),
            hits,
            "{why}: the upstream saw a refused request"
        );
    }

    /// Requests from `from` with each `x-forwarded-for` pass the lists, and authz-service
    /// decides each one (allowing the token).
    async fn admitted(&self, from: [u8; 4], xffs: &[Option<&str>], why: &str) {
        let decisions = self.authz_decisions().await;
        for (i, xff) in xffs.iter().enumerate() {
            let r = self
                .get(addr(from), "/admin", *xff, &format!("admitted-{i}"))
                .await;
            assert_eq!(r.status, 200, "{why} (xff {xff:?}): {r:?}");
            assert_eq!(r.upstream_path(), Some("/admin"), "{why}: {r:?}");
        }
        let after = self.authz_decisions().await;
        assert_eq!(
            after - decisions,
            xffs.len() as f64,
            "{why}: authz-service decides every admitted request"
        );
    }

    /// The status of `GET /limited` from `from` with `xff`.
    async fn limited(&self, from: IpAddr, xff: Option<&str>) -> u16 {
        self.get(from, "/limited", xff, "limited").await.status
    }

    /// Waits for Envoy's access log line of `request_id` and returns its `client_ip`.
    async fn logged_client_ip(&mut self, request_id: &str) -> String {
        let needle = format!("\"request_id\":\"{request_id}\"");
        // Envoy's stdout, the access log, goes beside its log (`Proc::spawn_split`).
        let path = self
            .gw
            .stack
            .envoy
            .proc()
            .log_path()
            .with_extension("stdout.log");
        let line = wait_for(
            "the access log line of the request",
            Duration::from_secs(10),
            async || {
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.contains(&needle))
                    .map(str::to_string)
            },
        )
        .await;
        let json: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("an access log line is JSON ({e}): {line}"));
        json["client_ip"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ip_decides_ip_lists_and_per_ip_limits_and_only_trusted_hops_move_it() {
    let shape = Shape::new("{ free: 100/minute, pro: 100/minute }", ROUTES);
    let gw = Full::start(&shape, None).await;
    wait_for_route(&HttpClient::new(gw.ports.http), "/", 200).await;
    let mut w = World {
        gw,
        shape,
        token: token("ip-tester", "free"),
    };

    // ---- trusted_hops: 0 (the default): the TCP peer is the client.

    w.admitted(ALLOWED, &[None], "an allowed address").await;
    w.refused(DENIED, &[None], "deny wins over allow").await;
    w.refused(OUTSIDER, &[None], "an address in no list").await;
    // A spoofed x-forwarded-for changes nothing: not one entry naming an allowed network, not
    // several, not an allowed address at the end where a load balancer would write it.
    w.refused(
        OUTSIDER,
        &[
            Some("10.1.1.1"),
            Some("10.1.1.1, 127.0.0.2"),
            Some("6.6.6.6,10.1.1.1,127.0.0.2"),
        ],
        "a spoofed xff from an outsider",
    )
    .await;
    w.refused(
        DENIED,
        &[Some("127.0.0.2")],
        "a spoofed xff from a denied address",
    )
    .await;
    // Nor does naming a denied address refuse an allowed client.
    w.admitted(
        ALLOWED,
        &[Some("127.0.0.3"), Some("10.9.1.1")],
        "an allowed address spoofing denied ones",
    )
    .await;

    // Per-IP limit (2/minute): one bucket for 127.0.0.4 whatever it claims to be.
    let spoofer = ip(127, 0, 0, 4);
    assert_eq!(w.limited(spoofer, Some("10.1.1.1")).await, 200);
    assert_eq!(w.limited(spoofer, Some("10.2.2.2")).await, 200);
    assert_eq!(
        w.limited(spoofer, Some("10.3.3.3, 10.4.4.4")).await,
        429,
        "a spoofed x-forwarded-for must not open a new bucket"
    );
    assert_eq!(
        w.limited(ip(127, 0, 0, 5), None).await,
        200,
        "another source address has its own bucket"
    );
    // The access log names the TCP peer.
    w.get(spoofer, "/", Some("10.1.1.1"), "log-hops-0").await;
    assert_eq!(w.logged_client_ip("log-hops-0").await, "127.0.0.4");

    // ---- a live edit to trusted_hops: 1: the last x-forwarded-for entry is the client.

    let yaml = w.gw.yaml(&w.shape).replace(
        "  edge:\n    listeners:",
        "  edge:\n    client_ip: { trusted_hops: 1 }\n    listeners:",
    );
    assert!(yaml.contains("trusted_hops: 1"), "the edit applies");
    w.gw.stack.config.write(&yaml);
    wait_for("Envoy to trust one hop", CONVERGE_TIMEOUT, async || {
        w.get(addr(OUTSIDER), "/admin", Some("10.1.1.1"), "converge")
            .await
            .status
            == 200
    })
    .await;
    w.gw.stack.wait_converged().await;

    // The balancer's entry (the last) decides; what a client wrote to its left is ignored.
    w.admitted(
        OUTSIDER,
        &[
            Some("10.1.1.1"),
            Some("6.6.6.6, 10.1.1.1"),
            Some("10.9.9.9,127.0.0.3, 10.2.3.4"),
        ],
        "the last entry is in an allowed network",
    )
    .await;
    w.refused(
        ALLOWED,
        &[Some("10.1.1.1, 6.6.6.6"), Some("127.0.0.2, 6.6.6.6")],
        "the last entry is in no list, whatever comes before it",
    )
    .await;
    w.refused(
        OUTSIDER,
        &[Some("10.9.1.1"), Some("10.1.1.1, 10.9.200.7")],
        "the last entry is denied",
    )
    .await;
    // IPv6 clients are judged by IPv6 networks.
    w.admitted(OUTSIDER, &[Some("2001:db8::7")], "an allowed IPv6 address")
        .await;
    w.refused(
        OUTSIDER,
        &[Some("2001:db9::7")],
        "an IPv6 address in no list",
    )
    .await;
    // An IPv4-mapped IPv6 entry is the IPv4 address it stands for, for deny and allow alike.
    w.refused(
        OUTSIDER,
        &[Some("::ffff:10.9.1.1")],
        "a mapped denied address",
    )
    .await;
    w.admitted(
        OUTSIDER,
        &[Some("::ffff:10.1.1.1")],
        "a mapped allowed address",
    )
    .await;
    // On a route with only a deny list, the mapped form of a denied address is refused too
    // (an allow list would refuse it anyway, being IPv4).
    let hits = w.gw.upstream.hits();
    for (xff, status) in [
        ("10.9.1.1", 403),
        ("::ffff:10.9.1.1", 403),
        ("::ffff:a09:101", 403),
        ("10.8.1.1", 200),
    ] {
        let r = w
            .get(addr(OUTSIDER), "/blocked", Some(xff), "deny-only")
            .await;
        assert_eq!(r.status, status, "deny-only route, xff {xff}: {r:?}");
        if status == 403 {
            World::assert_refused(&r, "deny-only", xff);
        }
    }
    assert_eq!(
        w.gw.upstream.hits(),
        hits + 1,
        "only the admitted request reached the upstream"
    );
    // No entry, or one Envoy cannot read: the TCP peer is the client again.
    w.refused(
        DENIED,
        &[None, Some("garbage"), Some("10.1.1.1:1234")],
        "without a readable entry the denied peer",
    )
    .await;
    w.admitted(
        ALLOWED,
        &[None, Some("not-an-ip")],
        "without a readable entry the allowed peer",
    )
    .await;

    // Per-IP limit: one bucket for 10.7.7.7 across three source addresses, another for 10.8.8.8.
    let seven = Some("10.7.7.7");
    assert_eq!(w.limited(ip(127, 0, 0, 6), seven).await, 200);
    assert_eq!(
        w.limited(ip(127, 0, 0, 7), Some("1.2.3.4, 10.7.7.7")).await,
        200
    );
    assert_eq!(
        w.limited(ip(127, 0, 0, 8), seven).await,
        429,
        "the client the balancer names is limited wherever its connection comes from"
    );
    assert_eq!(w.limited(ip(127, 0, 0, 6), Some("10.8.8.8")).await, 200);

    w.get(spoofer, "/", Some("6.6.6.6, 10.1.1.1"), "log-hops-1")
        .await;
    assert_eq!(w.logged_client_ip("log-hops-1").await, "10.1.1.1");
}

/// IP lists and `trusted_hops` turned on and off by live edits while clients keep requesting an
/// allowed route: every edit applies (a request naming 10.1.1.1 in `x-forwarded-for` is
/// refused exactly when both are on) and not one of the clients' requests fails.
///
/// Both edits change the listener's HTTP connection manager (the RBAC filter comes and goes,
/// `xff_num_trusted_hops` changes), so Envoy drains the old filter chain in place; the
/// bootstrap's polled drain decision closes each keep-alive connection between requests
/// (`xds_server::bootstrap::DRAIN_BY_EVENT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_lists_and_trusted_hops_reload_under_load_without_a_failed_request() {
    const RELOADS: usize = 6;
    let echo = tests::EchoUpstream::start("api").await;
    let port = tests::free_port();
    let cfg = |on: bool| {
        let (hops, lists) = if on {
            (
                "    client_ip: { trusted_hops: 1 }\n",
                ", allow_ips: [127.0.0.0/8], deny_ips: [10.0.0.0/8]",
            )
        } else {
            ("", "")
        };
        format!(
            "version: 1\nservices:\n  api: {{ endpoints: [{}] }}\ngateways:\n  edge:\n{hops}    listeners: [{{ name: http, port: {port} }}]\n    routes:\n      - {{ name: base, match: {{ prefix: / }}, service: api, auth: none{lists} }}\n",
            echo.endpoint()
        )
    };
    let stack = tests::Stack::start(tests::XdsMode::Sotw, &cfg(false)).await;
    let c = stack.client(port);
    wait_for_route(&c, "/base", 200).await;
    let load = Load::start(&c, vec![Probe::new("/base", 200)], 4);
    for n in 1..=RELOADS {
        let on = n % 2 == 1;
        stack.config.write(&cfg(on));
        let want = if on { 403 } else { 200 };
        wait_for(
            &format!("edit {n} to apply (x-forwarded-for 10.1.1.1 gets {want})"),
            CONVERGE_TIMEOUT,
            async || {
                c.get("/base")
                    .header("x-forwarded-for", "10.1.1.1")
                    .send()
                    .await
                    .is_ok_and(|r| r.status == want)
            },
        )
        .await;
        load.wait_more(50, &format!("after edit {n}")).await;
    }
    let (sent, bad) = load.finish().await;
    assert_clean(sent, &bad, 200);
    stack.wait_converged().await;
}
