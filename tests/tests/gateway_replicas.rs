//! Two gateway replicas sharing one Redis (spec §1, §5): each with its own xds-server,
//! authz-service, ratelimit-service and Envoy, as two hosts of a deployment would be, and one
//! client hammering both at once. Together they admit exactly the plan's limit: never more
//! (the count is shared), and never fewer (rejected requests consume nothing).

use tests::authz::{bearer, token};
use tests::gateway::{Full, Shape};
use tests::redis::RedisServer;
use tests::wait_for_route;

const LIMIT: usize = 20;
const ATTEMPTS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_sharing_redis_admit_exactly_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).await;
    let shape = Shape::new(
        &format!("{{ free: {LIMIT}/minute, pro: 1000/minute }}"),
        r#"      - name: orders
        match: { prefix: /orders }
        service: api
        auth: main
"#,
    );
    let a = Full::start(&shape, Some(&redis.url())).await;
    let b = Full::start(&shape, Some(&redis.url())).await;
    let clients = [a.stack.client(a.ports.http), b.stack.client(b.ports.http)];
    for c in &clients {
        wait_for_route(c, "/orders", 401).await;
    }

    let auth = bearer(&token("shared-client", "free"));
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..8 {
        let (client, auth) = (clients[k % 2].clone(), auth.clone());
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..ATTEMPTS / 8 + usize::from(k < ATTEMPTS % 8) {
                let r = client
                    .get("/orders")
                    .header("authorization", &auth)
                    .ok()
                    .await;
                statuses.push((k % 2, r.status));
            }
            statuses
        });
    }
    let mut admitted = [0usize; 2];
    let mut limited = 0;
    let mut other = Vec::new();
    while let Some(res) = tasks.join_next().await {
        for (replica, status) in res.expect("client task") {
            match status {
                200 => admitted[replica] += 1,
                429 => limited += 1,
                s => other.push(s),
            }
        }
    }
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(
        admitted[0] + admitted[1],
        LIMIT,
        "admitted per replica {admitted:?}, {limited} limited"
    );
    assert_eq!(limited, ATTEMPTS - LIMIT);
    // Each replica enforced the shared count: both admitted some and both turned some away.
    assert!(
        admitted.iter().all(|&n| n > 0),
        "both replicas should have admitted requests: {admitted:?}"
    );
}
