//! Logging: to stderr (the console of a ramdisk), optionally to a file, and into a bounded
//! in-memory buffer that `log.collect_system_logs` ships to the conductor.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The newest log output, at most `capacity` bytes.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(1 << 20)))),
            capacity,
        }
    }

    fn append(&self, data: &[u8]) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let overflow = (q.len() + data.len()).saturating_sub(self.capacity);
        q.drain(..overflow);
        q.extend(data);
    }

    pub fn contents(&self) -> Vec<u8> {
        let q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().copied().collect()
    }
}

/// Writes each formatted event to every sink.
#[derive(Clone)]
struct Tee {
    buffer: LogBuffer,
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl Write for Tee {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.append(data);
        if let Some(f) = &self.file {
            // A full disk must not stop the agent: the console and buffer still get the line.
            let _ = f.lock().unwrap_or_else(|p| p.into_inner()).write_all(data);
        }
        let _ = std::io::stderr().write_all(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = Tee;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the level.
pub fn init(debug: bool, file: Option<&Path>) -> std::io::Result<LogBuffer> {
    let buffer = LogBuffer::new(8 << 20);
    let file = match file {
        Some(p) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ))),
        None => None,
    };
    let default = if debug {
        "debug,hyper=info,reqwest=info,rustls=info,h2=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let writer = Tee {
        buffer: buffer.clone(),
        file,
    };
    // Another subscriber (a test harness) may be installed already; keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_keeps_the_newest_bytes() {
        let b = LogBuffer::new(8);
        b.append(b"0123");
        b.append(b"456789");
        assert_eq!(b.contents(), b"23456789");
        b.append(b"abcdefghijkl");
        assert_eq!(b.contents(), b"efghijkl");
    }
}
