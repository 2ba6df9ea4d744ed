//! `Load`: continuous traffic through a gateway while a test changes things underneath it
//! (config edits, killed processes), recording every answer that is not the expected one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::{wait_for, HttpClient};

/// One kind of request a [`Load`] sends, and the only status it may get back.
#[derive(Debug, Clone)]
pub struct Probe {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub expect: u16,
}

impl Probe {
    pub fn new(path: &str, expect: u16) -> Probe {
        Probe {
            path: path.to_string(),
            headers: Vec::new(),
            expect,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Probe {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Continuous traffic: `tasks` clients each loop over the probes (which tests may extend while
/// it runs) and record every answer that is not the probe's expected status, and every error.
pub struct Load {
    probes: Arc<RwLock<Vec<Probe>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<Vec<String>>,
}

impl Load {
    pub fn start(client: &HttpClient, probes: Vec<Probe>, tasks: usize) -> Load {
        assert!(!probes.is_empty(), "a load needs at least one probe");
        let probes = Arc::new(RwLock::new(probes));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for k in 0..tasks {
            let (c, probes, stop, sent) =
                (client.clone(), probes.clone(), stop.clone(), sent.clone());
            set.spawn(async move {
                let mut bad = Vec::new();
                let mut i = k;
                while !stop.load(Ordering::SeqCst) {
                    let p = {
                        let probes = probes.read().unwrap_or_else(|e| e.into_inner());
                        probes[i % probes.len()].clone()
                    };
                    i += 1;
                    let mut req = c.get(&p.path).timeout(Duration::from_secs(10));
                    for (name, value) in &p.headers {
                        req = req.header(name, value);
                    }
                    match req.send().await {
                        Ok(r) if r.status == p.expect => {}
                        Ok(r) => bad.push(format!("{}: {} {}", p.path, r.status, r.body)),
                        Err(e) => bad.push(format!("{}: {}", p.path, error_chain(&e))),
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                bad
            });
        }
        Load {
            probes,
            stop,
            sent,
            tasks: set,
        }
    }

    /// Adds a probe to the rotation.
    pub fn add(&self, probe: Probe) {
        self.probes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(probe);
    }

    /// Requests answered (or failed) so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have been sent from now (so every phase of a test is
    /// measured in requests, not in time).
    pub async fn wait_more(&self, n: u64, what: &str) {
        let target = self.sent() + n;
        wait_for(
            &format!("{n} more requests {what}"),
            Duration::from_secs(60),
            async || self.sent() >= target,
        )
        .await;
    }

    /// Stops the clients and returns how many requests were sent and every unexpected answer.
    pub async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut bad = Vec::new();
        while let Some(res) = self.tasks.join_next().await {
            bad.extend(res.expect("load task"));
        }
        (self.sent(), bad)
    }
}

/// An error with every source under it (reqwest's own text alone hides whether the connection
/// was reset, closed before the response, or refused).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Fails with the first unexpected answers of a finished [`Load`], and when it sent fewer than
/// `min` requests (too little traffic to prove anything).
pub fn assert_clean(sent: u64, bad: &[String], min: u64) {
    assert!(
        bad.is_empty(),
        "{} of {sent} requests got an unexpected answer; the first ones: {:#?}",
        bad.len(),
        &bad[..bad.len().min(20)]
    );
    assert!(
        sent >= min,
        "too little load to prove anything: {sent} requests"
    );
}
