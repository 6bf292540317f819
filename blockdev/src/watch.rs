//! Stall detection for disk I/O: a disk that stops completing requests must end the command
//! with an error instead of hanging it forever.
//!
//! Why the agent needs its own: Ironic's callback timeouts never fire while the agent keeps
//! heartbeating (every heartbeat touches the node's provisioning time), so a deploy whose
//! write is stuck in the kernel would wait forever, with IPA as with us. A thread blocked in
//! `pwrite` cannot be interrupted, so the watch is kept by the thread doing the I/O and read
//! by another: the I/O thread marks the start and end of every request ([`IoWatch::begin`]),
//! the waiting thread asks [`IoWatch::stalled`] and, when one request is older than the
//! limit, [`IoWatch::cancel`]s the writer (which refuses further work if the request ever
//! returns) and reports the stall, leaving the stuck thread behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The watch over the disk I/O of steps (erasing): those run inside hardware managers, behind
/// an interface that knows nothing of stalls, so their writes report here and the agent's
/// step runner watches. Image writes have a watch of their own (one per write).
pub fn global() -> &'static IoWatch {
    static GLOBAL: OnceLock<IoWatch> = OnceLock::new();
    GLOBAL.get_or_init(IoWatch::new)
}

type Entry = (u64, Instant, &'static str, Option<PathBuf>);

/// Shared between the threads doing the I/O (the writer, its background flusher) and the one
/// watching them; clones share the state.
#[derive(Clone, Debug, Default)]
pub struct IoWatch {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Requests in flight: id, start, what. A handful at most (one per I/O thread, nested
    /// requests), so a list under a lock costs nothing next to a multi-MiB write.
    in_flight: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    cancelled: AtomicBool,
}

/// A request in flight; its end is recorded when this is dropped.
#[must_use = "the request counts as in flight until the guard is dropped"]
pub struct InFlight<'a> {
    watch: &'a IoWatch,
    id: u64,
}

/// A request that took longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// What the request was doing ("writing to", "syncing").
    pub what: &'static str,
    /// How long it has been in flight.
    pub for_: Duration,
    /// The device, when the request named it ([`IoWatch::begin_on`]).
    pub device: Option<PathBuf>,
}

impl IoWatch {
    pub fn new() -> Self {
        Self::default()
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A panic while holding this lock leaves a valid list: keep using it.
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the start of a request (`what`: "writing to", "syncing"), until the guard drops.
    pub fn begin(&self, what: &'static str) -> InFlight<'_> {
        self.push(what, None)
    }

    /// [`Self::begin`] for a request to `device`, which a stall then names.
    pub fn begin_on(&self, what: &'static str, device: &Path) -> InFlight<'_> {
        self.push(what, Some(device.to_path_buf()))
    }

    fn push(&self, what: &'static str, device: Option<PathBuf>) -> InFlight<'_> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.list().push((id, Instant::now(), what, device));
        InFlight { watch: self, id }
    }

    /// The oldest request in flight, if it has been for at least `limit`.
    pub fn stalled(&self, limit: Duration) -> Option<Stall> {
        let list = self.list();
        let (_, started, what, device) = list.iter().min_by_key(|e| e.1)?;
        let for_ = started.elapsed();
        (for_ >= limit).then(|| Stall {
            what,
            for_,
            device: device.clone(),
        })
    }

    /// Tells the I/O threads to stop: they refuse every request after the ones in flight.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.watch.list().retain(|e| e.0 != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_as_stalled_only_while_in_flight_past_the_limit() {
        let w = IoWatch::new();
        assert_eq!(w.stalled(Duration::ZERO), None, "nothing in flight");
        {
            let _io = w.begin("writing to");
            assert_eq!(w.stalled(Duration::from_secs(60)), None);
            std::thread::sleep(Duration::from_millis(30));
            let s = w.stalled(Duration::from_millis(20)).expect("stalled");
            assert_eq!(s.what, "writing to");
            assert!(s.for_ >= Duration::from_millis(20));
        }
        assert_eq!(w.stalled(Duration::ZERO), None, "the request ended");
    }

    #[test]
    fn the_oldest_request_in_flight_counts() {
        let w = IoWatch::new();
        let outer = w.begin_on("zeroing", Path::new("/dev/vdz"));
        std::thread::sleep(Duration::from_millis(30));
        {
            let _inner = w.begin("syncing");
        }
        // The inner end must not clear the outer request.
        let s = w
            .stalled(Duration::from_millis(20))
            .expect("outer still in flight");
        assert_eq!(s.what, "zeroing");
        assert_eq!(s.device.as_deref(), Some(Path::new("/dev/vdz")));
        drop(outer);
        assert_eq!(w.stalled(Duration::ZERO), None);
    }

    #[test]
    fn another_thread_sees_the_stall_and_cancels() {
        let w = IoWatch::new();
        let io = w.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _g = io.begin("writing to");
            tx.send(()).unwrap();
            while !io.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.stalled(Duration::from_millis(50)).is_none() {
            assert!(Instant::now() < deadline, "the stall was never seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        w.cancel();
        t.join().unwrap();
        assert!(w.is_cancelled());
    }
}
