//! An in-memory log sink, for tests that read what was logged.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// Collects everything a log layer writes, so tests can assert on log lines (the P8 canary test
/// greps them for secrets, for example). Pass it as the writer to [`subscriber`](crate::subscriber).
///
/// Clones share one buffer.
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    /// Every byte written by every [`LogCaptureWriter`] made from this capture, in order.
    buf: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far, lossily decoded as UTF-8.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&lock(&self.buf)).into_owned()
    }

    /// Everything written so far, split into lines.
    pub fn lines(&self) -> Vec<String> {
        self.contents().lines().map(str::to_owned).collect()
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogCaptureWriter {
            buf: Arc::clone(&self.buf),
        }
    }
}

/// The [`io::Write`] handle a [`LogCapture`] hands to the log layer for each line.
#[derive(Debug)]
pub struct LogCaptureWriter {
    /// The capture's shared buffer.
    buf: Arc<Mutex<Vec<u8>>>,
}

impl io::Write for LogCaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        lock(&self.buf).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A panic while holding the lock cannot leave a `Vec<u8>` invalid, so poisoning is ignored.
fn lock(buf: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    buf.lock().unwrap_or_else(PoisonError::into_inner)
}
