//! `jwks_url` key sets: fetched in the background every [`REFRESH`], refetched (at most once per
//! [`MIN_REFETCH`]) when a token names an unknown `kid`, and served stale while fetches fail, so
//! an identity provider outage does not become a gateway outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::jwks::{self, KeySet, MAX_JWKS_BYTES};

/// How often keys are refreshed when nothing asks sooner.
pub const REFRESH: Duration = Duration::from_secs(300);
/// Unknown-`kid` refetches are rate-limited: otherwise every forged token with a random `kid`
/// would become a request to the identity provider.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long a Check waits for an unknown-`kid` refetch. Envoy's ext_authz timeout defaults to
/// 200 ms, so the request path waits briefly and the fetch finishes in the background either way.
pub const REFETCH_WAIT: Duration = Duration::from_millis(100);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays after a failed fetch, doubling up to the cap, until one works.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The clock of a remote key set; [`Timing::default`] is what the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub refresh: Duration,
    pub min_refetch: Duration,
    pub refetch_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            refresh: REFRESH,
            min_refetch: MIN_REFETCH,
            refetch_wait: REFETCH_WAIT,
        }
    }
}

pub struct RemoteJwks {
    pub url: String,
    timing: Timing,
    allowed: Vec<Algorithm>,
    client: Result<reqwest::Client, String>,
    keys: ArcSwapOption<KeySet>,
    /// Bumped on every successful fetch; cached verdicts made with older keys are ignored.
    generation: AtomicU64,
    loaded: AtomicBool,
    last_fetch: Mutex<Option<Instant>>,
    /// Wakes the refresher early (unknown kid). Shared so the sleeping refresher holds no strong
    /// reference to the key set.
    wake: Arc<Notify>,
    /// Signalled after every fetch attempt.
    fetched: Notify,
    on_fetch: Box<dyn Fn(bool) + Send + Sync>,
}

impl RemoteJwks {
    /// Starts fetching in the background; the task ends when the last `Arc` is dropped.
    pub fn spawn(
        url: String,
        allowed: Vec<Algorithm>,
        timing: Timing,
        on_fetch: Box<dyn Fn(bool) + Send + Sync>,
    ) -> Arc<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // Keys must come from where the configuration says, not from wherever a redirect
            // points.
            .redirect(reqwest::redirect::Policy::none());
        for cert in system_roots() {
            builder = builder.add_root_certificate(cert);
        }
        // A client that cannot be built is an error on every fetch, never a default client
        // (which would follow redirects and trust nothing we chose).
        let client = builder.build().map_err(|e| e.to_string());
        let this = Arc::new(Self {
            url,
            timing,
            allowed,
            client,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            last_fetch: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            fetched: Notify::new(),
            on_fetch,
        });
        tokio::spawn(refresher(Arc::downgrade(&this)));
        this
    }

    /// The last successfully fetched keys (possibly stale), `None` before the first success.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True once a fetch has succeeded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Asks for a refetch because a token named an unknown `kid`, and waits up to
    /// `refetch_wait` for it. Returns true when new keys arrived in time.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let allowed = {
            let last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            last.is_none_or(|t| t.elapsed() >= self.timing.min_refetch)
        };
        if !allowed {
            return false;
        }
        let before = self.generation();
        let fetched = self.fetched.notified();
        self.wake.notify_one();
        let _ = tokio::time::timeout(self.timing.refetch_wait, fetched).await;
        self.generation() != before
    }

    async fn fetch(&self) -> Result<(), String> {
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let result = self.try_fetch().await;
        (self.on_fetch)(result.is_ok());
        self.fetched.notify_waiters();
        result
    }

    async fn try_fetch(&self) -> Result<(), String> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let resp = client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(jwks::JwksError::TooLarge.to_string());
        }
        // Read in chunks and stop at the cap: a chunked answer has no Content-Length, and a
        // server streaming forever must not fill our memory before the fetch timeout.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(jwks::JwksError::TooLarge.to_string());
            }
            body.extend_from_slice(&chunk);
        }
        let set = jwks::parse(&body, &self.allowed).map_err(|e| e.to_string())?;
        self.keys.store(Some(Arc::new(set)));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }
}

/// Where distributions keep their CA bundle; `SSL_CERT_FILE` comes first.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The system's trusted roots. The workspace builds reqwest without a compiled-in root store,
/// so `https://` JWKS URLs are verified against the operating system's CA bundle.
fn system_roots() -> Vec<reqwest::Certificate> {
    static ROOTS: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let from_env = std::env::var("SSL_CERT_FILE").ok();
            let paths = from_env
                .iter()
                .map(String::as_str)
                .chain(CA_BUNDLES.iter().copied());
            for path in paths {
                if let Ok(pem) = std::fs::read(path) {
                    match reqwest::Certificate::from_pem_bundle(&pem) {
                        Ok(certs) if !certs.is_empty() => return certs,
                        _ => warn!(path, "unreadable CA bundle"),
                    }
                }
            }
            warn!("no CA bundle found: https jwks_url fetches will fail (set SSL_CERT_FILE)");
            Vec::new()
        })
        .clone()
}

async fn refresher(weak: Weak<RemoteJwks>) {
    let mut retry = RETRY_MIN;
    loop {
        let Some(this) = weak.upgrade() else { return };
        let delay = match this.fetch().await {
            Ok(()) => {
                info!(url = %this.url, "JWKS fetched");
                retry = RETRY_MIN;
                this.timing.refresh
            }
            Err(e) => {
                warn!(url = %this.url, error = %e, retry_in = ?retry, "JWKS fetch failed; keeping the last good keys");
                let d = retry;
                retry = (retry * 2).min(RETRY_MAX);
                d
            }
        };
        let wake = this.wake.clone();
        // Hold only a weak reference while sleeping, so a dropped provider ends this task.
        drop(this);
        let _ = tokio::time::timeout(delay, wake.notified()).await;
    }
}
