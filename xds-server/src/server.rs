//! `xds-server serve`: load, translate, publish, watch for edits, and serve ADS plus the admin port.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn, Instrument};

use ads::error::{Classify, ErrorSource, RetryType};

use crate::admin;
use crate::metrics::Metrics;
use crate::rollout::rollout;
use crate::state::{App, LastError, ReloadCounts, ReloadStatus};
use ads::snapshot::Snapshots;
use ads::{AdsServer, Registry};

/// Quiet period after the last file event before a reload: editors write in bursts (truncate,
/// write, rename, chmod), and one reload per save is what users expect.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Upper bound on how long a continuous stream of events can postpone a reload.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// A config turned into snapshots, plus the files whose change must trigger a reload.
pub struct Built {
    pub snapshots: Snapshots,
    pub files: BTreeSet<PathBuf>,
    /// Valid but risky or probably not meant (`config::ConfigWarning`, then
    /// `translate::warnings`), one line each with the file and, where there is one, the line and
    /// column: logged on load, printed by `validate`.
    pub warnings: Vec<String>,
}

/// Why a config could not be built: the file (or one it names) is invalid, or translation failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{}: {source}", path.display())]
    Translate {
        path: PathBuf,
        source: translate::TranslateError,
    },
    /// The reload task itself died (a bug, or the runtime shutting down).
    #[error("reload task failed: {0}")]
    Task(String),
}

impl BuildError {
    /// One human-readable line per problem, each with its `file:line:col` where there is one.
    pub fn lines(&self) -> Vec<String> {
        match self {
            BuildError::Config(e) => e.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl Classify for BuildError {
    fn source_kind(&self) -> ErrorSource {
        match self {
            BuildError::Config(e) => e.0.first().map_or(ErrorSource::Config, |e| e.source_kind()),
            BuildError::Translate { source, .. } => source.source_kind(),
            BuildError::Task(_) => ErrorSource::Internal,
        }
    }

    /// Retrying helps only when every problem is one that may go away by itself (a file that
    /// could not be read in the middle of being replaced).
    fn retry(&self) -> RetryType {
        match self {
            BuildError::Config(e) if e.0.iter().all(|e| e.retry() == RetryType::Later) => {
                RetryType::Later
            }
            BuildError::Config(_) => RetryType::AfterChange,
            BuildError::Translate { source, .. } => source.retry(),
            BuildError::Task(_) => RetryType::Later,
        }
    }
}

/// Loads, validates and translates `path`.
pub fn build(path: &Path) -> Result<Built, BuildError> {
    let loaded = tracing::info_span!("config.load").in_scope(|| config::load(path))?;
    let snapshots = tracing::info_span!("config.translate")
        .in_scope(|| translate::snapshots(&loaded))
        .map_err(|source| BuildError::Translate {
            path: path.to_path_buf(),
            source,
        })?;
    let mut files: BTreeSet<PathBuf> = loaded.files.keys().cloned().collect();
    files.insert(absolute(path));
    let mut warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    warnings.extend(
        translate::warnings(&loaded.config)
            .into_iter()
            .map(|w| format!("{}: warning: {w}", path.display())),
    );
    Ok(Built {
        snapshots,
        files,
        warnings,
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// TLS requiring client certificates on the ADS port (each client is then served only the
    /// node group its certificate names); `None` serves plain text.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Runs until Ctrl-C / SIGTERM.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let first = build(&opts.config).map_err(|e| {
        anyhow::anyhow!(
            "{} is not valid:\n{}",
            opts.config.display(),
            e.lines().join("\n")
        )
    })?;
    let metrics = Arc::new(Metrics::new());
    metrics.reloads.with_label_values(&["ok"]).inc();
    let app = Arc::new(App {
        metrics: metrics.clone(),
        registry: Arc::new(Registry::default()),
        status: Mutex::new(ReloadStatus {
            version: first.snapshots.version.clone(),
            config_path: opts.config.clone(),
            loaded_at: now(),
            last_error: None,
            reloads: ReloadCounts { ok: 1, rejected: 0 },
        }),
    });
    info!(version = %first.snapshots.version, groups = ?first.snapshots.groups.keys().collect::<Vec<_>>(), "config loaded");
    for w in &first.warnings {
        warn!("{w}");
    }
    let (snap_tx, snap_rx) = watch::channel(Arc::new(first.snapshots));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let grpc = ads::bind(opts.listen).with_context(|| format!("binding gRPC {}", opts.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin)
        .await
        .with_context(|| format!("binding admin {}", opts.admin))?;
    info!(grpc = %opts.listen, admin = %opts.admin, mtls = opts.tls.is_some(), "xds-server listening");

    let ads = AdsServer::new(
        snap_rx,
        app.registry.clone(),
        metrics.ads.clone(),
        shutdown_rx.clone(),
    );
    let ads = match opts.tls {
        Some(tls) => ads.with_tls(tls),
        None => ads,
    };
    let mut sd = shutdown_rx.clone();
    let grpc_task = tokio::spawn(ads.serve(grpc, async move {
        let _ = sd.wait_for(|v| *v).await;
    }));
    let mut sd = shutdown_rx.clone();
    let admin_task = tokio::spawn(admin::serve(admin_listener, app.clone(), async move {
        let _ = sd.wait_for(|v| *v).await;
    }));
    let reload_task = tokio::spawn(reload_loop(
        opts.config.clone(),
        first.files,
        app.clone(),
        snap_tx,
        shutdown_rx.clone(),
    ));

    xds_client::side::shutdown_signal().await;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = reload_task.await;
    let _ = admin_task.await;
    match grpc_task.await {
        Ok(r) => r.context("gRPC server")?,
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Watches the config file and every file it references; reloads after a quiet period.
async fn reload_loop(
    config: PathBuf,
    mut files: BTreeSet<PathBuf>,
    app: Arc<App>,
    snapshots: watch::Sender<Arc<Snapshots>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let watched = Arc::new(Mutex::new(files.clone()));
    let filter = watched.clone();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                // Our own reads show up as access events; reacting to them would reload forever.
                // Metadata-only changes (touch, chmod) do not change what we would load.
                use notify::event::{EventKind, ModifyKind};
                if matches!(
                    ev.kind,
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                ) {
                    return;
                }
                let set = filter.lock().unwrap_or_else(|e| e.into_inner());
                if ev.paths.iter().any(|p| set.contains(p)) {
                    let _ = ev_tx.send(());
                }
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                error!(error = %e, "cannot watch files; hot reload is disabled");
                return;
            }
        };
    let mut dirs = BTreeSet::new();
    watch_dirs(&mut watcher, &files, &mut dirs);
    loop {
        tokio::select! {
            ev = ev_rx.recv() => if ev.is_none() { return },
            _ = shutdown.wait_for(|v| *v) => return,
        }
        // Debounce: wait for a quiet period, bounded so a constantly-touched file still reloads.
        let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
        loop {
            match tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + DEBOUNCE),
                ev_rx.recv(),
            )
            .await
            {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        // One trace per reload: `config.reload`, with `config.load`, `config.translate` and
        // `config.rollout` under it.
        let reload = tracing::info_span!(
            "config.reload",
            version = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let path = config.clone();
        let in_build = reload.clone();
        let result =
            match tokio::task::spawn_blocking(move || in_build.in_scope(|| build(&path))).await {
                Ok(r) => r,
                Err(e) => Err(BuildError::Task(e.to_string())),
            };
        let built = match result {
            Ok(built) => built,
            Err(e) => {
                reload.record("outcome", "rejected");
                let errors = e.lines();
                error!(errors = %errors.join("\n"), "config rejected; keeping the previous configuration");
                app.rejected(LastError {
                    at: now(),
                    errors,
                    source: e.source_kind(),
                    retry: e.retry(),
                    refused_by: Vec::new(),
                });
                continue;
            }
        };
        for w in &built.warnings {
            warn!("{w}");
        }
        // Even a config a policy service refuses names the files whose edit may fix it.
        if built.files != files {
            files = built.files;
            *watched.lock().unwrap_or_else(|e| e.into_inner()) = files.clone();
            watch_dirs(&mut watcher, &files, &mut dirs);
        }
        let version = built.snapshots.version.clone();
        reload.record("version", version.as_str());
        if snapshots.borrow().version == version {
            reload.record("outcome", "unchanged");
            info!(%version, "config reloaded; nothing changed");
            app.accepted(&version, now());
            continue;
        }
        info!(%version, "config reloaded; pushing to connected clients");
        let rolled_out = rollout(&snapshots, built.snapshots, &app.registry)
            .instrument(reload.clone())
            .await;
        reload.record(
            "outcome",
            if rolled_out.is_ok() {
                "applied"
            } else {
                "refused"
            },
        );
        match rolled_out {
            Ok(()) => app.accepted(&version, now()),
            Err(e) => {
                let errors = e.lines();
                error!(%version, errors = %errors.join("\n"), "config refused by a policy service; keeping the previous configuration");
                app.rejected(LastError {
                    at: now(),
                    errors,
                    source: e.source_kind(),
                    retry: e.retry(),
                    refused_by: e.refusals().to_vec(),
                });
            }
        }
    }
}

/// Watches the directories holding `files` (not the files themselves: editors and tools replace
/// files by renaming, which would silently end a watch on the old inode).
fn watch_dirs(watcher: &mut impl Watcher, files: &BTreeSet<PathBuf>, dirs: &mut BTreeSet<PathBuf>) {
    let wanted: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    for d in dirs.difference(&wanted) {
        let _ = watcher.unwatch(d);
    }
    for d in wanted.difference(dirs) {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            warn!(dir = %d.display(), error = %e, "cannot watch directory");
        }
    }
    *dirs = wanted;
}
