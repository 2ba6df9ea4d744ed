//! `capture_logs`: what a test's own thread logs through `tracing`, as the text a binary would
//! write (no colours), so tests can assert what is logged and, above all, what never is.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// The logs captured since [`capture_logs`]; capture ends when this drops.
pub struct CapturedLogs {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

impl CapturedLogs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Captures every event and span of every level logged on this thread (and so by every task of a
/// current-thread runtime, `#[tokio::test]`'s default) until the result drops.
pub fn capture_logs() -> CapturedLogs {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buf = buf.clone();
        move || Writer(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    CapturedLogs {
        buf,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn captures_this_threads_events_only() {
        let logs = super::capture_logs();
        tracing::debug!(request_id = "r-1", "seen");
        std::thread::spawn(|| tracing::warn!("elsewhere"))
            .join()
            .unwrap();
        let text = logs.text();
        assert!(
            text.contains("DEBUG") && text.contains(r#"request_id="r-1""#),
            "{text}"
        );
        assert!(!text.contains("elsewhere"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
