//! Polling with a deadline: for a condition, an HTTP 2xx, a TCP port. The only way tests wait.

use std::fmt::{self, Debug};
use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// How often a poll re-checks its condition: short next to any timeout a test uses, long enough
/// that a dozen polls in parallel do not load a two-core machine.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long one HTTP request of a readiness poll may take before it counts as "not yet".
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A poll that ran out of time, with the last reason the condition gave for not holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub after: Duration,
    pub last_error: Option<String>,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.after)?;
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TimedOut {}

/// The bookkeeping both poll loops share: the deadline and the last error.
struct Deadline {
    start: Instant,
    timeout: Duration,
    last_error: Option<String>,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Self {
            start: Instant::now(),
            timeout,
            last_error: None,
        }
    }

    /// Takes one check's answer: break with the value, or with [`TimedOut`] once the deadline
    /// has passed (the condition is always checked at least once), or continue polling.
    fn step<R: Ready>(&mut self, answer: R) -> ControlFlow<Result<R::Output, TimedOut>> {
        match answer.ready() {
            Ok(v) => return ControlFlow::Break(Ok(v)),
            Err(note) => self.last_error = note.or(self.last_error.take()),
        }
        if self.start.elapsed() >= self.timeout {
            return ControlFlow::Break(Err(TimedOut {
                after: self.timeout,
                last_error: self.last_error.take(),
            }));
        }
        ControlFlow::Continue(())
    }
}

/// Checks `check` every [`POLL_INTERVAL`] until it is ready and returns its value, or
/// [`TimedOut`] once `timeout` has passed.
pub async fn poll<R: Ready>(
    timeout: Duration,
    check: impl AsyncFnMut() -> R,
) -> Result<R::Output, TimedOut> {
    poll_every(POLL_INTERVAL, timeout, check).await
}

/// [`poll`] at another interval (a benchmark resolving milliseconds polls tighter).
pub async fn poll_every<R: Ready>(
    interval: Duration,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> R,
) -> Result<R::Output, TimedOut> {
    let mut deadline = Deadline::new(timeout);
    loop {
        if let ControlFlow::Break(done) = deadline.step(check().await) {
            return done;
        }
        tokio::time::sleep(interval).await;
    }
}

/// [`poll`] for code without an async runtime to borrow (`Drop`, a child's exit); blocks the
/// thread between checks.
pub fn poll_blocking<R: Ready>(
    timeout: Duration,
    mut check: impl FnMut() -> R,
) -> Result<R::Output, TimedOut> {
    let mut deadline = Deadline::new(timeout);
    loop {
        if let ControlFlow::Break(done) = deadline.step(check()) {
            return done;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`poll`], panicking with `description` (and the last error, if any) on timeout.
pub async fn wait_for<R: Ready>(
    description: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> R,
) -> R::Output {
    poll(timeout, check)
        .await
        .unwrap_or_else(|e| panic!("waiting for {description}: {e}"))
}

/// Runs `f` until it returns, for at most `timeout`; panics with `description` otherwise.
pub async fn within<T>(description: &str, timeout: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?}: {description}"))
}

/// An HTTP client for talking to local test servers: no proxy from the environment (a
/// developer's `HTTP_PROXY` must not intercept 127.0.0.1) and a bound on every request, so a
/// hung server fails the test instead of hanging it.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// One readiness check: `Ok` when `GET url` answers 2xx, else the status and body (or the
/// connection error) as the reason.
pub async fn http_ok(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(format!("{status}: {}", body.trim()))
}

/// Polls `GET url` until it answers 2xx (a side port's `/readyz`, Envoy's `/ready`); panics
/// with `what` and the last answer after `timeout`. For a child process, prefer
/// [`Proc::wait_http_ok`](crate::Proc::wait_http_ok), which also fails at once if it exits.
pub async fn wait_http_ok(what: &str, url: &str, timeout: Duration) {
    let http = http_client();
    wait_for(&format!("{what} ({url})"), timeout, async || {
        http_ok(&http, url).await
    })
    .await;
}

/// Polls until something accepts TCP connections on `addr`; panics with `what` after `timeout`.
pub async fn wait_tcp(what: &str, addr: SocketAddr, timeout: Duration) {
    wait_for(&format!("{what} ({addr})"), timeout, async || {
        tokio::net::TcpStream::connect(addr).await.map(drop)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn wait_for_returns_the_value() {
        let mut n = 0;
        let v = wait_for("the third try", Duration::from_secs(5), async || {
            n += 1;
            (n >= 3).then_some(n * 10)
        })
        .await;
        assert_eq!(v, 30);
    }

    #[test]
    fn gives_up_at_the_deadline_with_the_last_error() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let r: Result<(), _> = poll_blocking(Duration::from_millis(200), || {
            calls.set(calls.get() + 1);
            Err::<(), _>(format!("attempt {}", calls.get()))
        });
        let e = r.expect_err("never ready");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(calls.get() > 1, "polled again before giving up");
        assert_eq!(
            e.last_error,
            Some(format!("{:?}", format!("attempt {}", calls.get())))
        );
        assert!(e.to_string().contains("timed out after 200ms"), "{e}");
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for something that never happens: timed out after")]
    async fn wait_for_panics_with_the_description() {
        wait_for(
            "something that never happens",
            Duration::from_millis(120),
            async || false,
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for no listener")]
    async fn wait_tcp_fails_when_nothing_listens() {
        wait_tcp(
            "no listener",
            crate::free_addr(),
            Duration::from_millis(200),
        )
        .await;
    }

    #[tokio::test]
    async fn tcp_and_http_readiness() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        wait_tcp("the listener", addr, Duration::from_secs(5)).await;
        // A minimal HTTP server: 503 to the first request, then 200, so the poll has to retry.
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut requests = 0;
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                // wait_tcp's probe connects and sends nothing.
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    continue;
                }
                requests += 1;
                let status = if requests == 1 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let http = http_client();
        let url = format!("http://{addr}/readyz");
        let first = http_ok(&http, &url).await.unwrap_err();
        assert!(first.starts_with("503"), "{first}");
        wait_http_ok("the server", &url, Duration::from_secs(5)).await;
        server.abort();
    }
}
