//! What the reload loop, the ADS server and the admin port share: [`App`], and the
//! [`ReloadStatus`] that `/status` shows.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ads::error::{ErrorSource, RetryType};
use serde::Serialize;

use crate::metrics::Metrics;
use ads::Registry;

/// What `/status` reports about config loading.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// The version of the config every component was given (a rejected edit leaves it alone).
    pub version: String,
    pub config_path: PathBuf,
    /// Seconds since the Unix epoch of the last accepted load.
    pub loaded_at: u64,
    pub last_error: Option<LastError>,
    pub reloads: ReloadCounts,
}

/// Why the last reload was rejected; cleared by the next accepted one.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: u64,
    /// One human-readable line per problem (`file:line:col: …` where there is a position).
    pub errors: Vec<String>,
    /// Whose fault it is: `config` (fix the file), `client` (a service refused it; fix its
    /// environment or the file) or `internal` (a bug).
    pub source: ErrorSource,
    /// `after_change` (the same file fails the same way) or `later` (may pass unchanged).
    pub retry: RetryType,
    /// Set when a policy service refused the new policy: who refused which version, and its
    /// error. Empty when the file itself was invalid.
    pub refused_by: Vec<ads::Refusal>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadCounts {
    pub ok: u64,
    pub rejected: u64,
}

/// Shared by the reload loop, the ADS server and the admin port.
#[derive(Debug)]
pub struct App {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub status: Mutex<ReloadStatus>,
}

impl App {
    pub fn status(&self) -> ReloadStatus {
        self.lock().clone()
    }

    /// A reload that reached every component (or changed nothing).
    pub fn accepted(&self, version: &str, now: u64) {
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        let mut st = self.lock();
        st.reloads.ok += 1;
        st.last_error = None;
        if st.version != version {
            st.version = version.to_string();
            st.loaded_at = now;
        }
    }

    /// A reload that changed nothing anywhere, and why.
    pub fn rejected(&self, error: LastError) {
        self.metrics.reloads.with_label_values(&["rejected"]).inc();
        let mut st = self.lock();
        st.reloads.rejected += 1;
        st.last_error = Some(error);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        // Every update is a handful of field writes that cannot panic halfway.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
