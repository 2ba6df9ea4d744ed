//! `jwks_url` providers against a real HTTP server: readiness after the first fetch, a
//! refetch on an unknown `kid` (and its rate limit), stale keys while fetches fail.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authz_service::jwks::MAX_JWKS_BYTES;
use authz_service::policy::{Decision, Policy};
use authz_service::remote::Timing;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use common::*;
use jsonwebtoken::Algorithm;
use proto::authz::{jwt_provider::Keys, AuthPolicy};
use serde_json::json;
use test_support::wait_for;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Idp {
    /// `None`: answer 500.
    body: Mutex<Option<Vec<u8>>>,
    hits: AtomicUsize,
}

impl Idp {
    fn serve(&self, body: Option<Vec<u8>>) {
        *self.body.lock().unwrap() = body;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn idp(initial: Option<Vec<u8>>) -> (String, Arc<Idp>) {
    let state = Arc::new(Idp::default());
    state.serve(initial);
    let app = axum::Router::new()
        .route(
            "/jwks",
            get(|State(s): State<Arc<Idp>>| async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                match s.body.lock().unwrap().clone() {
                    Some(b) => (StatusCode::OK, b),
                    None => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
                }
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/jwks"), state)
}

fn compile_with(url: &str, timing: Timing) -> Policy {
    let mut p = AuthPolicy {
        jwt: vec![jwt_provider(
            "remote",
            &["RS256"],
            Keys::JwksUrl(url.into()),
        )],
        routes: vec![route("r", &["remote"])],
        ..Default::default()
    };
    p.identity_headers = identity_headers(&p);
    let mut env = TestEnv::new();
    env.timing = timing;
    Policy::compile(&p, &mut env).unwrap()
}

async fn wait_loaded(p: &Policy) {
    wait_for("the first JWKS fetch", WAIT, async || p.keys_loaded()).await;
}

async fn verdict(p: &Policy, t: &str) -> Result<(), &'static str> {
    let h: HashMap<String, String> =
        HashMap::from([("authorization".into(), format!("Bearer {t}"))]);
    match p.decide(Some("r"), &h, "/", now()).await {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(d) => Err(d.reason),
    }
}

fn k1() -> serde_json::Value {
    jwk("rsa2048.pem", Algorithm::RS256, Some("k1"), true)
}
fn k2() -> serde_json::Value {
    jwk("rsa2048-b.pem", Algorithm::RS256, Some("k2"), true)
}

#[tokio::test]
async fn unknown_kid_refetches_and_stale_keys_survive_failures() {
    let (url, idp) = idp(Some(jwks(&[k1()]))).await;
    let fast = Timing {
        refresh: Duration::from_secs(300),
        min_refetch: Duration::ZERO,
        refetch_wait: WAIT,
    };
    let p = compile_with(&url, fast);
    wait_loaded(&p).await;
    let t1 = token("rsa2048.pem", Algorithm::RS256, "k1", &claims(json!({})));
    let t2 = token("rsa2048-b.pem", Algorithm::RS256, "k2", &claims(json!({})));
    assert_eq!(verdict(&p, &t1).await, Ok(()));

    // The issuer rotates in k2: the first token naming it triggers a refetch and passes.
    idp.serve(Some(jwks(&[k1(), k2()])));
    let before = idp.hits();
    assert_eq!(verdict(&p, &t2).await, Ok(()));
    assert_eq!(idp.hits(), before + 1);

    // The issuer retires k1. Once the new set is fetched (here, prompted by an unknown kid),
    // k1 tokens stop working at once, although they are still in the verified-token cache:
    // cached verdicts belong to the key set they were made with.
    idp.serve(Some(jwks(&[k2()])));
    let t4 = token("rsa2048-b.pem", Algorithm::RS256, "k4", &claims(json!({})));
    assert_eq!(verdict(&p, &t4).await, Err("unknown_kid"));
    assert_eq!(verdict(&p, &t1).await, Err("unknown_kid"));
    assert_eq!(verdict(&p, &t2).await, Ok(()));
    idp.serve(Some(jwks(&[k1(), k2()])));
    assert_eq!(verdict(&p, &t1).await, Ok(()));

    // The issuer fails: a token with an unknown kid is refused after the failed refetch, and
    // the keys we had keep working.
    idp.serve(None);
    let t3 = token("rsa2048.pem", Algorithm::RS256, "k3", &claims(json!({})));
    assert_eq!(verdict(&p, &t3).await, Err("unknown_kid"));
    assert_eq!(verdict(&p, &t1).await, Ok(()));
    assert_eq!(verdict(&p, &t2).await, Ok(()));
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let (url, idp) = idp(Some(jwks(&[k1()]))).await;
    let p = compile_with(&url, Timing::default());
    wait_loaded(&p).await;
    let hits = idp.hits();
    // A burst of forged kids within the rate-limit window costs the issuer nothing.
    for i in 0..20 {
        let t = token(
            "rsa2048.pem",
            Algorithm::RS256,
            &format!("forged-{i}"),
            &claims(json!({})),
        );
        assert_eq!(verdict(&p, &t).await, Err("unknown_kid"));
    }
    assert_eq!(idp.hits(), hits);
}

#[tokio::test]
async fn not_ready_until_the_first_fetch_succeeds() {
    let (url, idp) = idp(None).await;
    let p = compile_with(&url, Timing::default());
    wait_for("the first fetch attempt", WAIT, async || idp.hits() > 0).await;
    assert!(!p.keys_loaded());
    let t1 = token("rsa2048.pem", Algorithm::RS256, "k1", &claims(json!({})));
    assert_eq!(verdict(&p, &t1).await, Err("keys_unavailable"));
    // The issuer recovers; the background fetch retries and the provider becomes ready.
    idp.serve(Some(jwks(&[k1()])));
    wait_loaded(&p).await;
    assert_eq!(verdict(&p, &t1).await, Ok(()));
}

/// Counts the bytes an endless JWKS stream has handed out, and notices when the client hangs up.
struct Endless {
    sent: Arc<AtomicUsize>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_chunked_jwks_is_cut_off_at_the_size_cap() {
    let sent = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, d) = (sent.clone(), dropped.clone());
    // Chunked transfer (no Content-Length) of a body that never ends.
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            let guard = Endless {
                sent: s.clone(),
                dropped: d.clone(),
            };
            let chunks = futures::stream::unfold(guard, |g| async move {
                g.sent.fetch_add(64 * 1024, Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]), g))
            });
            async move { axum::body::Body::from_stream(chunks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let p = compile_with(&format!("http://{addr}/jwks"), Timing::default());
    // The fetch gives up at the cap, long before its 5 s timeout would end it.
    wait_for(
        "the fetch to hang up once the body passes the cap",
        Duration::from_secs(3),
        async || dropped.load(Ordering::SeqCst),
    )
    .await;
    assert!(!p.keys_loaded());
    // What the server produced is what the client read plus what the loopback socket buffers
    // hold (several MiB on a busy machine): far below what 5 s of reading an endless body at
    // loopback speed would be, so still proof that the cap, not the timeout, ended the fetch.
    let mib = sent.load(Ordering::SeqCst) as f64 / (1 << 20) as f64;
    let cap_mib = MAX_JWKS_BYTES as f64 / (1 << 20) as f64;
    assert!(
        mib < cap_mib + 32.0,
        "the server handed out {mib:.1} MiB before the fetch stopped (cap {cap_mib} MiB)"
    );
}
