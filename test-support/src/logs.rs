//! `capture_logs`: what a test's own thread logs through `tracing`, as the text a binary would
//! write (no colours), so tests can assert what is logged and, above all, what never is.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

type Buffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    /// Where this thread's events go while a capture is active.
    static CURRENT: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

/// The logs captured since [`capture_logs`]; capture ends when this drops.
pub struct CapturedLogs {
    buf: Buffer,
}

impl CapturedLogs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for CapturedLogs {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Captures every event and span of every level logged on this thread (and so by every task of a
/// current-thread runtime, `#[tokio::test]`'s default) until the result drops.
///
/// One process-wide subscriber at TRACE writes each event to the buffer of the thread that logs
/// it, if that thread is capturing. (A subscriber per test, set with `set_default`, is not
/// enough: tracing caches each call site's interest process-wide, and a test running beside
/// another without a subscriber can leave a call site disabled for both.)
pub fn capture_logs() -> CapturedLogs {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| ThreadWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("capture_logs installs the process's only global subscriber");
    });
    let buf = Buffer::default();
    CURRENT.with(|c| *c.borrow_mut() = Some(buf.clone()));
    CapturedLogs { buf }
}

/// Writes to the capturing thread's buffer; drops the bytes of threads that are not capturing.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        CURRENT.with(|c| {
            if let Some(buf) = c.borrow().as_ref() {
                let mut buf = buf.lock().unwrap_or_else(|e| e.into_inner());
                buf.extend_from_slice(data);
            }
        });
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
