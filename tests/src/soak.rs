//! The soak run behind `scripts/soak` (the `soak` binary): the whole gateway ([`Full`] on a real
//! Redis, one real Envoy) under paced mixed traffic for minutes or hours, with a config edit
//! every 30 s and one component killed and started again in turn, while every component's
//! resident memory and open file descriptors are sampled.
//!
//! It fails when an answer is one the spec does not allow in the phase the request was sent or
//! answered in (`on_error` of each policy service, spec §3 and §5), when a fault does not recover
//! on its own, when an edit is not served, when Envoy dies, or when memory or descriptors grow
//! past the tolerance after warm-up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::authz::{bearer, token, AuthzService};
use crate::gateway::{Full, Shape, API_KEY_HEADER};
use crate::load::error_chain;
use crate::ratelimit::RateLimitService;
use crate::redis::RedisServer;
use crate::stack::{client_converged, client_settled, CONVERGE_TIMEOUT};
use crate::ws::WsEchoUpstream;
use crate::HttpClient;

/// What a soak run does; `scripts/soak --help` documents each knob.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    /// Until then nothing is restarted and samples are not held to the tolerance.
    pub warmup: Duration,
    pub edit_every: Duration,
    pub restart_every: Duration,
    /// How long a killed component stays down.
    pub down_for: Duration,
    /// How long a restarted component may take until traffic is as before.
    pub recover_within: Duration,
    /// HTTP requests per second, over all HTTP probes.
    pub rps: u32,
    /// WebSocket sessions (upgrade, one echo, close) per second.
    pub ws_per_second: u32,
    pub sample_every: Duration,
    /// Resident memory may exceed its after-warm-up sample by this share plus `rss_slack_kib`.
    pub rss_tolerance: f64,
    pub rss_slack_kib: u64,
    /// Open descriptors may exceed their after-warm-up sample by this many.
    pub fd_slack: u64,
}

impl Options {
    /// The defaults for a run of `duration`: warm-up a fifth of it (at most a minute), and
    /// restarts spaced so each of the four restarted components goes down once in the rest
    /// (every 20 s to 3 min).
    pub fn for_duration(duration: Duration) -> Options {
        let warmup = (duration / 5).min(Duration::from_secs(60));
        let rest = duration.saturating_sub(warmup);
        let restart_every = (rest / (RESTARTED.len() as u32 + 1))
            .clamp(Duration::from_secs(20), Duration::from_secs(180));
        Options {
            duration,
            warmup,
            edit_every: Duration::from_secs(30),
            restart_every,
            down_for: Duration::from_secs(5),
            recover_within: Duration::from_secs(30),
            rps: 100,
            ws_per_second: 4,
            sample_every: Duration::from_secs(10),
            rss_tolerance: 0.20,
            rss_slack_kib: 8 * 1024,
            fd_slack: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Envoy,
    XdsServer,
    AuthzService,
    RateLimitService,
    Redis,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Envoy => "envoy",
            Component::XdsServer => "xds-server",
            Component::AuthzService => "authz-service",
            Component::RateLimitService => "ratelimit-service",
            Component::Redis => "redis",
        }
    }
}

/// Killed and started again in this order, one per restart slot (Envoy is never restarted: it
/// is what must ride out the others' faults).
pub const RESTARTED: [Component; 4] = [
    Component::RateLimitService,
    Component::AuthzService,
    Component::XdsServer,
    Component::Redis,
];

const SAMPLED: [Component; 5] = [
    Component::Envoy,
    Component::XdsServer,
    Component::AuthzService,
    Component::RateLimitService,
    Component::Redis,
];

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Probe {
    /// `auth: none`, no limit.
    Public,
    /// A JWT on plan `pro`.
    Jwt,
    /// An API key on plan `pro`.
    ApiKey,
    /// One JWT client on a route limited per client well below what it sends.
    Limited,
    /// No credential on an authenticated route.
    NoCredential,
    /// An upgrade on the `websocket: true` route (API key), one echoed message, a close.
    WebSocket,
    /// The `respond` route every config edit rewrites.
    Edited,
}

impl Probe {
    pub fn name(self) -> &'static str {
        match self {
            Probe::Public => "public",
            Probe::Jwt => "jwt",
            Probe::ApiKey => "api-key",
            Probe::Limited => "limited",
            Probe::NoCredential => "no-cred",
            Probe::WebSocket => "websocket",
            Probe::Edited => "edited",
        }
    }
}

const HTTP_PROBES: [Probe; 6] = [
    Probe::Public,
    Probe::Jwt,
    Probe::ApiKey,
    Probe::Limited,
    Probe::NoCredential,
    Probe::Edited,
];
const ALL_PROBES: [Probe; 7] = [
    Probe::Public,
    Probe::Jwt,
    Probe::ApiKey,
    Probe::Limited,
    Probe::NoCredential,
    Probe::WebSocket,
    Probe::Edited,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    WarmUp,
    Steady,
    /// From just before the kill until the component is ready again.
    Down(Component),
    /// From then until traffic through it is as before.
    Recovering(Component),
}

impl Phase {
    pub fn label(self) -> String {
        match self {
            Phase::WarmUp => "warm-up".into(),
            Phase::Steady => "steady".into(),
            Phase::Down(c) => format!("{} down", c.name()),
            Phase::Recovering(c) => format!("{} back", c.name()),
        }
    }
}

/// The statuses the spec allows `probe` in `phase` (0, a transport error, never is).
///
/// - Up: public, JWT, API key and the edited route 200; the limited client 200 or 429; no
///   credential 401; the WebSocket upgrade 101.
/// - ratelimit-service or Redis down: `rate_limits.service.on_error: allow` fails open, so the
///   limited client gets 200 only (a 429 would mean a limit enforced by nothing).
/// - authz-service down: `auth.service.on_error: deny` answers 503 on every authenticated route
///   (the upgrade included); `auth: none` routes are untouched.
/// - xds-server down: Envoy and both services keep their configuration, so nothing changes.
/// - Coming back: either side's answers.
pub fn allowed(phase: Phase, probe: Probe) -> Vec<u16> {
    let up: Vec<u16> = match probe {
        Probe::Public | Probe::Jwt | Probe::ApiKey | Probe::Edited => vec![200],
        Probe::Limited => vec![200, 429],
        Probe::NoCredential => vec![401],
        Probe::WebSocket => vec![101],
    };
    match phase {
        Phase::WarmUp | Phase::Steady => up,
        Phase::Down(Component::Envoy | Component::XdsServer) => up,
        Phase::Down(Component::RateLimitService | Component::Redis) => match probe {
            Probe::Limited => vec![200],
            _ => up,
        },
        Phase::Down(Component::AuthzService) => match probe {
            Probe::Public | Probe::Edited => up,
            _ => vec![503],
        },
        Phase::Recovering(c) => {
            let mut all = allowed(Phase::Down(c), probe);
            all.extend(up);
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    latencies_us: Vec<u32>,
}

/// Every answer, by the phase its request was sent in and its probe, judged against
/// [`allowed`] for every phase it overlapped.
pub struct Recorder {
    start: Instant,
    current: AtomicUsize,
    phases: Mutex<Vec<(Phase, Duration)>>,
    tallies: Mutex<BTreeMap<(Phase, Probe), Tally>>,
    violations: Mutex<(u64, Vec<String>)>,
}

/// How many unexpected answers the report lists (all are counted).
const LISTED_VIOLATIONS: usize = 30;

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            current: AtomicUsize::new(0),
            phases: Mutex::new(vec![(Phase::WarmUp, Duration::ZERO)]),
            tallies: Mutex::new(BTreeMap::new()),
            violations: Mutex::new((0, Vec::new())),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn enter(&self, phase: Phase) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        phases.push((phase, self.elapsed()));
        self.current.store(phases.len() - 1, Ordering::SeqCst);
    }

    fn phase(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// `status` 0 is a transport error, described by `detail`.
    fn record(
        &self,
        probe: Probe,
        sent_in: usize,
        status: u16,
        latency: Duration,
        detail: impl FnOnce() -> String,
    ) {
        let answered_in = self.phase();
        let (phase, ok) = {
            let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
            let ok = phases[sent_in..=answered_in.max(sent_in)]
                .iter()
                .any(|&(p, _)| allowed(p, probe).contains(&status));
            (phases[sent_in].0, ok)
        };
        {
            let mut t = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
            let tally = t.entry((phase, probe)).or_default();
            *tally.statuses.entry(status).or_default() += 1;
            tally
                .latencies_us
                .push(latency.as_micros().min(u32::MAX as u128) as u32);
        }
        if !ok {
            let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
            v.0 += 1;
            if v.1.len() < LISTED_VIOLATIONS {
                let at = self.elapsed().as_secs_f64();
                v.1.push(format!(
                    "{at:7.1}s {} {}: {status} {}",
                    phase.label(),
                    probe.name(),
                    detail()
                ));
            }
        }
    }
}

/// The credentials the probes send.
struct Credentials {
    jwt: String,
    limited: String,
    key: String,
}

/// Paced HTTP traffic: one request per tick, cycling through [`HTTP_PROBES`].
async fn http_traffic(
    client: HttpClient,
    creds: Arc<Credentials>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    every: Duration,
    first: usize,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut i = first;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let probe = HTTP_PROBES[i % HTTP_PROBES.len()];
        i += 1;
        let req = match probe {
            Probe::Public => client.get("/public"),
            Probe::Jwt => client
                .get("/orders/jwt")
                .header("authorization", &creds.jwt),
            Probe::ApiKey => client.get("/orders/key").header(API_KEY_HEADER, &creds.key),
            Probe::Limited => client.get("/tight").header("authorization", &creds.limited),
            Probe::NoCredential => client.get("/orders/anonymous"),
            Probe::Edited => client.get("/edit"),
            Probe::WebSocket => unreachable!("not an HTTP probe"),
        };
        let sent = rec.phase();
        let t0 = Instant::now();
        let r = req.timeout(Duration::from_secs(10)).send().await;
        let latency = t0.elapsed();
        match r {
            Ok(r) => rec.record(probe, sent, r.status, latency, || {
                r.body.chars().take(160).collect()
            }),
            Err(e) => rec.record(probe, sent, 0, latency, || error_chain(&e)),
        }
    }
}

/// Paced WebSocket sessions.
async fn ws_traffic(
    port: u16,
    creds: Arc<Credentials>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let sent = rec.phase();
        let t0 = Instant::now();
        let r = ws_session(port, &creds.key).await;
        let latency = t0.elapsed();
        match r {
            Ok(status) => rec.record(Probe::WebSocket, sent, status, latency, String::new),
            Err(e) => rec.record(Probe::WebSocket, sent, 0, latency, || e),
        }
    }
}

/// One upgrade: the refusal's status, or 101 once a message came back and the socket closed.
async fn ws_session(port: u16, key: &str) -> Result<u16, String> {
    let mut req = format!("ws://127.0.0.1:{port}/ws/soak")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        API_KEY_HEADER,
        key.parse().map_err(|e| format!("api key header: {e}"))?,
    );
    let limit = Duration::from_secs(10);
    let (mut ws, resp) =
        match tokio::time::timeout(limit, tokio_tungstenite::connect_async(req)).await {
            Err(_) => return Err("no answer to the upgrade within 10 s".into()),
            Ok(Err(WsError::Http(resp))) => return Ok(resp.status().as_u16()),
            Ok(Err(e)) => return Err(format!("upgrade: {}", error_chain(&e))),
            Ok(Ok(pair)) => pair,
        };
    let text = "soak";
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))?;
    match tokio::time::timeout(limit, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => {}
        other => return Err(format!("no echo: {other:?}")),
    }
    // A close the peer does not finish is not the gateway's failure to report here.
    let _ = ws.close(None).await;
    Ok(resp.status().as_u16())
}

/// One sample of one process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
}

/// `VmRSS` (KiB) and the number of open descriptors of `pid`, from `/proc`.
pub fn read_proc(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

type Pids = Arc<Mutex<BTreeMap<Component, u32>>>;
type Samples = Arc<Mutex<BTreeMap<Component, Vec<Sample>>>>;

fn take_samples(rec: &Recorder, pids: &Pids, samples: &Samples) {
    let pids = pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let at = rec.elapsed();
    let mut all = samples.lock().unwrap_or_else(|e| e.into_inner());
    for (c, pid) in pids {
        if let Some((rss_kib, fds)) = read_proc(pid) {
            all.entry(c).or_default().push(Sample {
                at,
                pid,
                rss_kib,
                fds,
            });
        }
    }
}

/// The verdict on one component's samples: `Err` names the first sample after warm-up that
/// exceeds the after-warm-up one by more than the tolerance.
pub fn flat_after_warmup(samples: &[Sample], o: &Options) -> Result<(), String> {
    let Some(warm) = samples.iter().find(|s| s.at >= o.warmup) else {
        return Err("no sample after warm-up".into());
    };
    let rss_max = (warm.rss_kib as f64 * (1.0 + o.rss_tolerance)) as u64 + o.rss_slack_kib;
    let fd_max = warm.fds + o.fd_slack;
    for s in samples.iter().filter(|s| s.at > warm.at) {
        if s.rss_kib > rss_max {
            return Err(format!(
                "RSS {} KiB at {:.0}s, over {rss_max} KiB",
                s.rss_kib,
                s.at.as_secs_f64()
            ));
        }
        if s.fds > fd_max {
            return Err(format!(
                "{} fds at {:.0}s, over {fd_max}",
                s.fds,
                s.at.as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// The routes, services and plans of the soak's gateway.yaml; edit `n` rewrites the `edit`
/// route's answer and the limited route's rate.
fn shape(ws_upstream: &str, n: u64) -> Shape {
    let limit = limited_rate(n);
    let routes = format!(
        r#"      - name: orders
        match: {{ prefix: /orders }}
        service: api
        auth: [main, partners]
      - name: tight
        match: {{ prefix: /tight }}
        service: api
        auth: main
        rate_limit: [{{ limit: {limit}/second, per: client }}]
      - name: public
        match: {{ prefix: /public }}
        service: api
        auth: none
        rate_limit: none
      - name: chat
        match: {{ prefix: /ws }}
        service: chat
        auth: partners
        websocket: true
        timeout: 0s
      - name: edit
        match: {{ path: /edit }}
        respond: {{ status: 200, json: {{ edit: {n} }} }}
        auth: none
        rate_limit: none
"#
    );
    let mut s = Shape::new("{ free: 1000000/minute, pro: 1000000/minute }", &routes);
    s.services_extra = format!("  chat: {{ endpoints: [{ws_upstream}] }}\n");
    s
}

/// The limited route's requests per second after edit `n`; the probe sends more than that.
fn limited_rate(n: u64) -> u64 {
    if n.is_multiple_of(2) {
        10
    } else {
        12
    }
}

/// The processes of one run and what the scheduler needs to restart them.
struct World {
    gw: Full,
    redis: RedisServer,
    ws: WsEchoUpstream,
    client: HttpClient,
    pids: Pids,
    /// Node ids of the policy services now running.
    authz_node: String,
    rls_node: String,
    restarts: usize,
    probe_token: String,
}

impl World {
    fn log_dir(&self) -> &Path {
        self.gw.stack.dir()
    }

    fn record_pids(&mut self) {
        let mut p = BTreeMap::new();
        let mut put = |c, pid: Option<u32>| {
            if let Some(pid) = pid {
                p.insert(c, pid);
            }
        };
        put(Component::Envoy, self.gw.stack.envoy.proc().pid());
        put(Component::XdsServer, self.gw.stack.xds.proc().pid());
        put(Component::AuthzService, self.gw.authz.proc().pid());
        put(Component::RateLimitService, self.gw.rls.proc().pid());
        put(Component::Redis, self.redis.pid());
        *self.pids.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn forget_pid(&self, c: Component) {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&c);
    }

    /// Writes edit `n` and waits until Envoy serves it and ratelimit-service enforces it.
    async fn edit(&mut self, n: u64) -> Result<Duration, String> {
        let yaml = self.gw.yaml(&shape(&self.ws.endpoint(), n));
        let t0 = Instant::now();
        self.gw.stack.config.write(&yaml);
        let want_limit = limited_rate(n).to_string();
        let (client, probe) = (&self.client, &self.probe_token);
        test_support::poll(CONVERGE_TIMEOUT, async || {
            let r = client.get("/edit").send().await.ok()?;
            (r.json.as_ref()?.get("edit")?.as_u64()? == n).then_some(())?;
            let r = client
                .get("/tight")
                .header("authorization", probe)
                .send()
                .await
                .ok()?;
            (r.header("x-ratelimit-limit")? == want_limit).then_some(())
        })
        .await
        .map_err(|e| format!("edit {n} was not served: {e}"))?;
        Ok(t0.elapsed())
    }

    /// Kills `c`, keeps it down for `down_for`, starts it again; returns when it is ready.
    /// Kills `c`, enters its `Down` phase in `rec` once the process is gone (a request sent
    /// before that may still have been decided by it), waits `down_for` and starts it again.
    async fn kill_and_restart(&mut self, c: Component, down_for: Duration, rec: &Recorder) {
        self.restarts += 1;
        let n = self.restarts;
        let xds = self.gw.stack.xds.grpc_addr();
        let dir = self.log_dir().to_path_buf();
        self.forget_pid(c);
        match c {
            Component::RateLimitService => {
                let port = self.gw.rls.grpc_port;
                self.gw.rls.proc().kill();
                rec.enter(Phase::Down(c));
                tokio::time::sleep(down_for).await;
                self.rls_node = format!("rls-soak-{n}");
                let redis = self.redis.url();
                self.gw.rls =
                    RateLimitService::start_on(&self.rls_node, &xds, Some(&redis), port, &dir)
                        .await;
            }
            Component::AuthzService => {
                let port = self.gw.authz.grpc_port;
                self.gw.authz.kill();
                rec.enter(Phase::Down(c));
                tokio::time::sleep(down_for).await;
                self.authz_node = format!("authz-soak-{n}");
                self.gw.authz = AuthzService::start_on(&self.authz_node, &xds, port, &dir).await;
            }
            Component::XdsServer => {
                self.gw.stack.xds.kill();
                rec.enter(Phase::Down(c));
                tokio::time::sleep(down_for).await;
                self.gw.stack.xds.restart().await;
            }
            Component::Redis => {
                self.redis.kill();
                rec.enter(Phase::Down(c));
                tokio::time::sleep(down_for).await;
                self.redis.restart(&dir).await;
            }
            Component::Envoy => unreachable!("Envoy is never restarted"),
        }
        self.record_pids();
    }

    /// Waits until traffic through `c` is as before its fault.
    async fn recovered(&self, c: Component, within: Duration) -> Result<(), String> {
        let client = &self.client;
        let outcome = match c {
            // The decision comes from the store again: Envoy forwards the service's headers.
            Component::RateLimitService | Component::Redis => {
                test_support::poll(within, async || {
                    let r = client
                        .get("/tight")
                        .header("authorization", &self.probe_token)
                        .send()
                        .await
                        .ok()?;
                    r.header("x-ratelimit-limit").map(drop)
                })
                .await
            }
            Component::AuthzService => {
                test_support::poll(within, async || {
                    let r = client
                        .get("/orders/recover")
                        .header("authorization", &self.probe_token)
                        .send()
                        .await
                        .ok()?;
                    (r.status == 200).then_some(())
                })
                .await
            }
            // Envoy and both policy services are back on the stream with nothing outstanding.
            Component::XdsServer => {
                let xds = &self.gw.stack.xds;
                let envoy = self.gw.stack.envoy.node_id();
                let (authz, rls) = (&self.authz_node, &self.rls_node);
                test_support::poll(within, async || {
                    let envoy_ok = xds
                        .client(envoy)
                        .await
                        .is_some_and(|c| client_converged(&c));
                    let authz_ok = xds.client(authz).await.is_some_and(|c| client_settled(&c));
                    let rls_ok = xds.client(rls).await.is_some_and(|c| client_settled(&c));
                    envoy_ok && authz_ok && rls_ok
                })
                .await
            }
            Component::Envoy => unreachable!("Envoy is never restarted"),
        };
        outcome
            .map(drop)
            .map_err(|e| format!("{} did not recover: {e}", c.name()))
    }
}

/// The result of a run: the printed report and whether every check held.
pub struct Outcome {
    pub ok: bool,
    pub report: String,
}

/// Runs the soak as `o` says (the caller provides a tokio runtime with at least two workers).
pub async fn run(o: &Options) -> Outcome {
    let rec = Arc::new(Recorder::new());
    let dir = tempfile::Builder::new()
        .prefix("soak-")
        .tempdir()
        .expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let ws = WsEchoUpstream::start().await;
    let gw = Full::start(&shape(&ws.endpoint(), 0), Some(&redis.url())).await;
    let client = gw.stack.client(gw.ports.http);
    crate::wait_for_route(&client, "/public", 200).await;
    let creds = Arc::new(Credentials {
        jwt: bearer(&token("soak-jwt", "pro")),
        limited: bearer(&token("soak-limited", "pro")),
        key: gw.partner_key.clone(),
    });
    let mut world = World {
        gw,
        redis,
        ws,
        client: client.clone(),
        pids: Arc::default(),
        authz_node: "authz-full".into(),
        rls_node: "rls-full".into(),
        restarts: 0,
        probe_token: bearer(&token("soak-probe", "pro")),
    };
    world.record_pids();
    let samples: Samples = Arc::default();
    take_samples(&rec, &world.pids, &samples);

    // Traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    const HTTP_TASKS: u32 = 4;
    let every = Duration::from_secs_f64(f64::from(HTTP_TASKS) / f64::from(o.rps.max(1)));
    for k in 0..HTTP_TASKS as usize {
        tasks.spawn(http_traffic(
            client.clone(),
            creds.clone(),
            rec.clone(),
            stop.clone(),
            every,
            k,
        ));
    }
    if o.ws_per_second > 0 {
        let every = Duration::from_secs_f64(1.0 / f64::from(o.ws_per_second));
        let port = world.gw.ports.http;
        tasks.spawn(ws_traffic(
            port,
            creds.clone(),
            rec.clone(),
            stop.clone(),
            every,
        ));
    }
    {
        let (rec, pids, samples, stop) = (
            rec.clone(),
            world.pids.clone(),
            samples.clone(),
            stop.clone(),
        );
        let every = o.sample_every;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick.tick().await;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                take_samples(&rec, &pids, &samples);
            }
        });
    }

    // The schedule: edits and restarts, one at a time.
    let mut failures: Vec<String> = Vec::new();
    let mut edit_times: Vec<Duration> = Vec::new();
    let mut recoveries: Vec<(Component, Duration)> = Vec::new();
    let start = Instant::now();
    let end = start + o.duration;
    let warm_end = start + o.warmup;
    let mut next_edit = start + o.edit_every;
    let mut next_restart = warm_end + o.restart_every;
    let mut edits = 0u64;
    let mut warm = true;
    while Instant::now() < end && failures.is_empty() {
        let now = Instant::now();
        if warm && now >= warm_end {
            rec.enter(Phase::Steady);
            warm = false;
        }
        if !warm && now >= next_restart && next_restart + o.down_for < end {
            let c = RESTARTED[recoveries.len() % RESTARTED.len()];
            world.kill_and_restart(c, o.down_for, &rec).await;
            let back = Instant::now();
            rec.enter(Phase::Recovering(c));
            match world.recovered(c, o.recover_within).await {
                Ok(()) => recoveries.push((c, back.elapsed())),
                Err(e) => failures.push(e),
            }
            rec.enter(Phase::Steady);
            next_restart += o.restart_every;
            continue;
        }
        if now >= next_edit {
            edits += 1;
            match world.edit(edits).await {
                Ok(t) => edit_times.push(t),
                Err(e) => failures.push(e),
            }
            while next_edit <= Instant::now() {
                next_edit += o.edit_every;
            }
            continue;
        }
        let mut wake = next_edit.min(end);
        if warm {
            wake = wake.min(warm_end);
        } else if next_restart + o.down_for < end {
            wake = wake.min(next_restart);
        }
        // Scheduling, not waiting for a condition: nothing is due before `wake`.
        tokio::time::sleep_until(wake.into()).await;
    }
    take_samples(&rec, &world.pids, &samples);
    stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    if !world.gw.stack.envoy.proc().is_running() {
        failures.push("Envoy exited during the run".into());
    }
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report(o, &rec, &samples, &edit_times, &recoveries, failures)
}

fn p99_ms(latencies: &mut [u32]) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let i = ((latencies.len() as f64) * 0.99).ceil() as usize;
    Some(f64::from(latencies[i.clamp(1, latencies.len()) - 1]) / 1000.0)
}

fn report(
    o: &Options,
    rec: &Recorder,
    samples: &BTreeMap<Component, Vec<Sample>>,
    edit_times: &[Duration],
    recoveries: &[(Component, Duration)],
    mut failures: Vec<String>,
) -> Outcome {
    let mut out = String::new();
    let secs = rec.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "soak: {secs:.0} s, {} req/s HTTP + {} WebSocket sessions/s, warm-up {} s, an edit every {} s, a restart every {} s ({} s down)",
        o.rps,
        o.ws_per_second,
        o.warmup.as_secs(),
        o.edit_every.as_secs(),
        o.restart_every.as_secs(),
        o.down_for.as_secs()
    );

    // Answers per phase.
    let mut tallies = rec.tallies.lock().unwrap_or_else(|e| e.into_inner());
    let mut phases: Vec<Phase> = tallies.keys().map(|&(p, _)| p).collect();
    phases.dedup();
    let _ = writeln!(out, "\nanswers by phase (status×count per probe; p99 over HTTP probes, and of WebSocket sessions):");
    let _ = writeln!(
        out,
        "{:<24} {:>7} {:>8} {:>8}  statuses",
        "phase", "requests", "p99 ms", "ws p99"
    );
    for phase in phases {
        let mut http_lat = Vec::new();
        let mut ws_lat = Vec::new();
        let mut n = 0u64;
        let mut cells = Vec::new();
        for probe in ALL_PROBES {
            let Some(t) = tallies.get_mut(&(phase, probe)) else {
                continue;
            };
            n += t.statuses.values().sum::<u64>();
            if probe == Probe::WebSocket {
                ws_lat.extend_from_slice(&t.latencies_us);
            } else {
                http_lat.extend_from_slice(&t.latencies_us);
            }
            let st: Vec<String> = t.statuses.iter().map(|(s, c)| format!("{s}×{c}")).collect();
            cells.push(format!("{} {}", probe.name(), st.join(",")));
        }
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>8} {:>8}  {}",
            phase.label(),
            n,
            fmt(p99_ms(&mut http_lat)),
            fmt(p99_ms(&mut ws_lat)),
            cells.join("; ")
        );
    }
    // A limit that never refused in steady state proves nothing about the limiter.
    let steady_429 = tallies
        .get(&(Phase::Steady, Probe::Limited))
        .and_then(|t| t.statuses.get(&429))
        .copied()
        .unwrap_or(0);
    if steady_429 == 0 {
        failures.push("the limited client never got 429 in steady state".into());
    }
    drop(tallies);

    // Memory and descriptors.
    let _ = writeln!(
        out,
        "\nresident memory (MiB) and open fds: start / after warm-up / middle / end; flat = every sample after warm-up within +{:.0}% +{} MiB and +{} fds of the warm-up one",
        o.rss_tolerance * 100.0,
        o.rss_slack_kib / 1024,
        o.fd_slack
    );
    let _ = writeln!(
        out,
        "{:<18} {:>31} {:>19} {:>9}  verdict",
        "component", "RSS MiB", "fds", "restarts"
    );
    let mib = |k: u64| k as f64 / 1024.0;
    for c in SAMPLED {
        let Some(s) = samples.get(&c).filter(|s| !s.is_empty()) else {
            failures.push(format!("{}: never sampled", c.name()));
            continue;
        };
        let first = s[0];
        let warm = s
            .iter()
            .find(|x| x.at >= o.warmup)
            .copied()
            .unwrap_or(first);
        let half = rec.elapsed() / 2;
        let mid = s
            .iter()
            .min_by_key(|x| x.at.abs_diff(half))
            .copied()
            .unwrap_or(first);
        let last = s[s.len() - 1];
        let mut pids: Vec<u32> = s.iter().map(|x| x.pid).collect();
        pids.dedup();
        let verdict = match flat_after_warmup(s, o) {
            Ok(()) => "flat".to_string(),
            Err(e) => {
                failures.push(format!("{}: {e}", c.name()));
                format!("GROWS: {e}")
            }
        };
        let _ = writeln!(
            out,
            "{:<18} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>4} {:>4} {:>4} {:>4} {:>9}  {verdict}",
            c.name(),
            mib(first.rss_kib),
            mib(warm.rss_kib),
            mib(mid.rss_kib),
            mib(last.rss_kib),
            first.fds,
            warm.fds,
            mid.fds,
            last.fds,
            pids.len() - 1
        );
    }

    // Edits and recoveries.
    let mut sorted = edit_times.to_vec();
    sorted.sort_unstable();
    if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
        let median = sorted[sorted.len() / 2];
        let _ = writeln!(
            out,
            "\nedits: {} served (edit to served by Envoy and enforced by ratelimit-service: min {} ms, median {} ms, max {} ms)",
            sorted.len(),
            first.as_millis(),
            median.as_millis(),
            last.as_millis()
        );
    }
    for (c, t) in recoveries {
        let _ = writeln!(
            out,
            "restart: {} ready to traffic as before in {} ms",
            c.name(),
            t.as_millis()
        );
    }

    let (count, listed) = {
        let v = rec.violations.lock().unwrap_or_else(|e| e.into_inner());
        (v.0, v.1.clone())
    };
    if count > 0 {
        failures.push(format!(
            "{count} answers the spec does not allow in their phase"
        ));
        let _ = writeln!(out, "\nunexpected answers (first {}):", listed.len());
        for l in listed {
            let _ = writeln!(out, "  {l}");
        }
    }
    let ok = failures.is_empty();
    if ok {
        let _ = writeln!(out, "\nPASS");
    } else {
        let _ = writeln!(out, "\nFAIL:");
        for f in &failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    Outcome { ok, report: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_allow_only_what_on_error_promises() {
        let authz = Phase::Down(Component::AuthzService);
        assert_eq!(allowed(authz, Probe::Jwt), [503]);
        assert_eq!(allowed(authz, Probe::WebSocket), [503]);
        assert_eq!(allowed(authz, Probe::Public), [200]);
        for c in [Component::RateLimitService, Component::Redis] {
            assert_eq!(allowed(Phase::Down(c), Probe::Limited), [200], "fails open");
        }
        assert_eq!(allowed(Phase::Steady, Probe::Limited), [200, 429]);
        assert_eq!(
            allowed(Phase::Recovering(Component::AuthzService), Probe::Jwt),
            [200, 503]
        );
        for phase in [Phase::Steady, authz, Phase::Down(Component::XdsServer)] {
            for p in ALL_PROBES {
                assert!(
                    !allowed(phase, p).contains(&0),
                    "a transport error is never allowed"
                );
            }
        }
    }

    #[test]
    fn an_answer_is_judged_by_every_phase_its_request_overlapped() {
        let rec = Recorder::new();
        rec.enter(Phase::Steady);
        let sent = rec.phase();
        rec.enter(Phase::Down(Component::AuthzService));
        rec.record(Probe::Jwt, sent, 503, Duration::ZERO, String::new);
        rec.record(Probe::Jwt, rec.phase(), 200, Duration::ZERO, || {
            "late".into()
        });
        let v = rec.violations.lock().unwrap();
        assert_eq!(v.0, 1, "{:?}", v.1);
        assert!(
            v.1[0].contains("authz-service down jwt: 200 late"),
            "{:?}",
            v.1
        );
    }

    #[test]
    fn growth_past_the_tolerance_after_warm_up_is_reported() {
        let mut o = Options::for_duration(Duration::from_secs(300));
        o.warmup = Duration::from_secs(60);
        let s = |at: u64, rss_kib: u64, fds: u64| Sample {
            at: Duration::from_secs(at),
            pid: 1,
            rss_kib,
            fds,
        };
        // Growth during warm-up does not count; after it, 20% + 8 MiB and 16 fds are allowed.
        let flat = [s(0, 10_000, 10), s(60, 50_000, 30), s(300, 68_000, 46)];
        assert_eq!(flat_after_warmup(&flat, &o), Ok(()));
        let grows = [s(0, 10_000, 10), s(60, 50_000, 30), s(300, 70_000, 30)];
        assert!(flat_after_warmup(&grows, &o)
            .unwrap_err()
            .contains("RSS 70000"));
        let leaks_fds = [s(60, 50_000, 30), s(200, 50_000, 47)];
        assert!(flat_after_warmup(&leaks_fds, &o)
            .unwrap_err()
            .contains("47 fds"));
    }
}
