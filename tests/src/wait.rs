//! `wait_for`: poll a condition until it holds or a deadline passes; the only way tests wait.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often `wait_for` re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a polled condition may return: `bool`, `Option<T>` or `Result<T, E>` (the last error is
/// shown when the deadline passes, which usually says why).
pub trait Ready {
    type Output;
    /// `Ok` when ready; `Err` carries a note on why not (for the timeout message).
    fn ready(self) -> Result<Self::Output, Option<String>>;
}

impl Ready for bool {
    type Output = ();
    fn ready(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Ready for Option<T> {
    type Output = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Ready for Result<T, E> {
    type Output = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it is ready, and returns its value; panics with
/// `description` (and the last error, if any) once `timeout` has passed.
pub async fn wait_for<R: Ready>(
    description: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> R,
) -> R::Output {
    let start = Instant::now();
    let mut last = None;
    loop {
        match check().await.ready() {
            Ok(v) => return v,
            Err(note) => last = note.or(last),
        }
        if start.elapsed() >= timeout {
            match last {
                Some(e) => {
                    panic!("timed out after {timeout:?} waiting for {description}; last error: {e}")
                }
                None => panic!("timed out after {timeout:?} waiting for {description}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `f` until it returns, for at most `timeout`; panics with `description` otherwise.
pub async fn within<T>(description: &str, timeout: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?}: {description}"))
}
