//! Store faults, seen through the service logic (`RateLimiter::decide` + `respond`) on a real
//! Redis: killed mid-run, restarted, a peer that answers garbage, and one that never answers.
//! In every case the answer follows `on_error` and arrives within the policy's timeout budget,
//! and the service uses the store again as soon as it is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use proto::ratelimit::{Per, Rate, RateLimitPolicy, Rule, DOMAIN};
use ratelimit_service::cache::OverLimitCache;
use ratelimit_service::metrics::Metrics;
use ratelimit_service::policy::Policy;
use ratelimit_service::service::{respond, Decision, RateLimiter};
use ratelimit_service::store::{RedisStore, StoreError};
use tests::ratelimit::{descriptor, is_ok, request};
use tests::redis::RedisServer;
use tests::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The policy's timeout; the service spends at most three quarters of it on the store.
const TIMEOUT_MS: u64 = 100;
/// What "within the timeout" is allowed to stretch to on a loaded two-core machine. Far below
/// the Redis client's own 2 s I/O timeout, so a hang there would still fail this.
const ANSWER_BOUND: Duration = Duration::from_millis(900);

fn limiter(store: RedisStore, fail_open: bool) -> (RateLimiter<RedisStore>, Arc<Metrics>) {
    let pb = RateLimitPolicy {
        domain: DOMAIN.into(),
        algorithm: 0,
        fail_open,
        timeout_ms: TIMEOUT_MS,
        plans: vec![],
        default_plan: String::new(),
        rules: vec![Rule {
            id: "api#0".into(),
            per: Per::Ip as i32,
            rate: Some(Rate {
                requests: 1000,
                window_ms: 60_000,
            }),
            header: String::new(),
        }],
    };
    let policy = Arc::new(ArcSwapOption::from_pointee(
        Policy::compile(&pb).expect("valid policy"),
    ));
    let metrics = Arc::new(Metrics::new());
    let l = RateLimiter::new(
        store,
        policy,
        Arc::new(OverLimitCache::default()),
        metrics.clone(),
    );
    (l, metrics)
}

fn req() -> proto::pb::envoy::service::ratelimit::v3::RateLimitRequest {
    request(vec![descriptor(&[
        ("rule", "api#0"),
        ("remote_address", "10.0.0.1"),
    ])])
}

/// Decides one request; returns the decision and how long it took.
async fn timed(l: &RateLimiter<RedisStore>) -> (Decision, Duration) {
    let start = Instant::now();
    let d = l.decide(&req()).await;
    (d, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = RedisServer::start(dir.path()).await;
    for fail_open in [true, false] {
        let (l, metrics) = limiter(RedisStore::from_url(&redis.url()).expect("url"), fail_open);
        let (d, _) = timed(&l).await;
        assert!(matches!(d, Decision::Decided { .. }), "{d:?}");

        redis.kill();
        for _ in 0..3 {
            let (d, took) = timed(&l).await;
            assert!(took < ANSWER_BOUND, "answered after {took:?}");
            assert!(matches!(d, Decision::StoreFailed { .. }), "{d:?}");
            let answer = respond(d);
            if fail_open {
                assert!(is_ok(&answer.expect("fail open answers OK")));
            } else {
                let status = answer.expect_err("fail closed answers an error");
                assert_eq!(status.code(), tonic::Code::Unavailable);
            }
        }
        let action = if fail_open { "allow" } else { "deny" };
        assert!(
            metrics.on_error.with_label_values(&[action]).get() >= 3,
            "on_error is counted"
        );

        redis.restart(dir.path()).await;
        wait_for(
            "the service to use Redis again",
            Duration::from_secs(10),
            async || matches!(l.decide(&req()).await, Decision::Decided { .. }),
        )
        .await;
    }
}

/// A TCP peer that answers every read with `reply` (or never answers when `reply` is `None`).
async fn fake_redis(reply: Option<&'static [u8]>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if let Some(r) = reply {
                        if sock.write_all(r).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silence_from_the_store() {
    let cases: [(&str, Option<&'static [u8]>); 4] = [
        ("protocol garbage", Some(b"!!not redis at all\r\n")),
        ("a wrong type", Some(b"+OK\r\n")),
        ("a short array", Some(b"*2\r\n:1\r\n:1\r\n")),
        ("silence", None),
    ];
    for (what, reply) in cases {
        let port = fake_redis(reply).await;
        let (l, metrics) = limiter(
            RedisStore::from_url(&format!("redis://127.0.0.1:{port}/0")).expect("url"),
            false,
        );
        let (d, took) = timed(&l).await;
        assert!(took < ANSWER_BOUND, "{what}: answered after {took:?}");
        let Decision::StoreFailed { error, .. } = &d else {
            panic!("{what}: expected a store failure, got {d:?}");
        };
        if reply.is_none() {
            assert_eq!(*error, StoreError::Timeout, "{what}");
        }
        assert!(
            respond(d).is_err(),
            "{what}: on_error deny answers an error"
        );
        let errors: u64 = ["unavailable", "bad_reply", "timeout"]
            .iter()
            .map(|k| metrics.store_errors.with_label_values(&[k]).get())
            .sum();
        assert_eq!(errors, 1, "{what}: the failure is counted once");
    }
}
