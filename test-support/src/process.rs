//! `Proc`: a child process whose output goes to a log file, killed when dropped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::{http_client, http_ok, poll, poll_blocking, TimedOut};

/// How much of a log `Drop` prints when the test is panicking.
const TAIL_LINES_ON_PANIC: usize = 60;

/// A running child process. Its stdout and stderr go to `<log_dir>/<name>.log`.
///
/// Dropping it kills the process; if the thread is panicking (a failed assertion) the tail of
/// its log is printed first, so a failing test shows what the process had to say.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output appended to `<log_dir>/<name>.log`. Panics if it cannot start.
    pub fn spawn(name: &str, cmd: Command, log_dir: &Path) -> Proc {
        Self::spawn_inner(name, cmd, log_dir, false)
    }

    /// Like [`spawn`](Self::spawn), but stdout goes to `<log_dir>/<name>.stdout.log` so that the
    /// log keeps only stderr (for Envoy, whose stdout carries the access log).
    pub fn spawn_split(name: &str, cmd: Command, log_dir: &Path) -> Proc {
        Self::spawn_inner(name, cmd, log_dir, true)
    }

    fn spawn_inner(name: &str, mut cmd: Command, log_dir: &Path, split: bool) -> Proc {
        std::fs::create_dir_all(log_dir).expect("create log dir");
        let log = log_dir.join(format!("{name}.log"));
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .expect("open log file")
        };
        let err = open(&log);
        let out = if split {
            open(&log_dir.join(format!("{name}.stdout.log")))
        } else {
            err.try_clone().expect("clone log file handle")
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has ended (or was killed), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait"),
            None => None,
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Panics (with the log tail) if the process has exited; for use inside readiness polls.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "{} exited early ({status}); log tail:\n{}",
                self.name,
                self.log_tail(TAIL_LINES_ON_PANIC)
            );
        }
    }

    /// SIGKILL and reap. Safe to call twice.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `timeout` for it; kills it after that.
    /// Returns the exit status if it stopped by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let stopped = poll_blocking(timeout, || child.try_wait().ok().flatten()).ok();
        if stopped.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        stopped
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_blocking(timeout, || self.try_wait()).ok()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Prints the last `lines` lines of the log to stderr (shown by the test runner on failure).
    pub fn print_log_tail(&self, lines: usize) {
        eprintln!(
            "----- {} log tail ({}) -----",
            self.name,
            self.log.display()
        );
        eprintln!("{}", self.log_tail(lines));
        eprintln!("----- end of {} log -----", self.name);
    }
}

/// Why a process did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("{name} exited ({status}) before it was ready")]
    Exited { name: String, status: ExitStatus },
    #[error("{name} not ready: {timed_out}")]
    TimedOut { name: String, timed_out: TimedOut },
}

impl Proc {
    /// Polls `url` until it answers 2xx (a side port's `/readyz`, Envoy's `/ready`); gives up at
    /// once if this process exits, and after `timeout` otherwise (with the last answer).
    pub async fn poll_http_ok(&mut self, url: &str, timeout: Duration) -> Result<(), NotReady> {
        let http = http_client();
        // An exit ends the poll as a "ready" outcome carrying the status; only HTTP failures
        // are worth another try.
        let outcome = poll(timeout, async || match self.try_wait() {
            Some(status) => Ok(Err(status)),
            None => http_ok(&http, url).await.map(Ok),
        })
        .await;
        let name = self.name.clone();
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(NotReady::Exited { name, status }),
            Err(timed_out) => Err(NotReady::TimedOut { name, timed_out }),
        }
    }

    /// [`poll_http_ok`](Self::poll_http_ok), panicking with `what` when it fails (the log tail
    /// is printed as the process drops).
    pub async fn wait_http_ok(&mut self, what: &str, url: &str, timeout: Duration) {
        if let Err(e) = self.poll_http_ok(url, timeout).await {
            panic!("waiting for {what} ({url}): {e}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tail(TAIL_LINES_ON_PANIC);
        }
        self.kill();
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of a file, reading at most its last 256 KiB.
fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 256 * 1024;
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
        let _ = f.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn captures_output_and_exit_status() {
        let dir = std::env::temp_dir().join(format!("test-support-{}", std::process::id()));
        let mut p = Proc::spawn("talker", sh("echo out; echo err >&2; exit 3"), &dir);
        let status = p.wait(Duration::from_secs(10)).expect("exits by itself");
        assert_eq!(status.code(), Some(3));
        let log = p.log();
        assert!(log.contains("out") && log.contains("err"), "{log}");
        assert_eq!(p.log_tail(1), "err");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn readiness_gives_up_when_the_process_exits() {
        let dir = std::env::temp_dir().join(format!("test-support-exit-{}", std::process::id()));
        let mut p = Proc::spawn("quitter", sh("exit 7"), &dir);
        // Nothing listens there: without the exit check this would poll for the whole minute.
        let url = format!("http://{}/readyz", crate::free_addr());
        let started = std::time::Instant::now();
        let e = p
            .poll_http_ok(&url, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, NotReady::Exited { status, .. } if status.code() == Some(7)),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dropping_kills_the_process() {
        let dir = std::env::temp_dir().join(format!("test-support-drop-{}", std::process::id()));
        let p = Proc::spawn("sleeper", sh("exec sleep 60"), &dir);
        let pid = p.pid().expect("running").to_string();
        let alive = || {
            Command::new("kill")
                .args(["-0", &pid])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(alive());
        drop(p);
        // Reaped by `kill`, so the pid is gone at once (not a zombie that `kill -0` still sees).
        assert!(!alive());
        let _ = std::fs::remove_dir_all(dir);
    }
}
