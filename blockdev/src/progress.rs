//! Progress of long disk work (an image write, the erase of each disk), for the operator:
//! the agent publishes it in the RUNNING command's result (`GET /v1/commands`) and in a log
//! line every few seconds.
//!
//! Process-wide, as [`crate::watch::global`] is, and for the same reason: the erase runs
//! inside hardware managers, behind an interface that knows nothing of commands, so the code
//! doing the work registers a [`Task`] here and the agent's command runner reads the board.
//! The hot path only adds to an atomic; a snapshot costs a lock over a handful of entries.
//!
//! Rates and ETAs are averages since the current method began (a restart of the method, or a
//! download restarted from byte 0, starts them again): steadier than an instantaneous rate on
//! a disk whose write-back cache fills, and what an operator compares across nodes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One unit of work being done to one device.
#[derive(Debug)]
pub struct Task {
    operation: &'static str,
    device: String,
    /// When the task was registered: lets a reader skip tasks older than what it reports on
    /// (a thread left behind by a stalled disk keeps its task).
    registered: Instant,
    done: AtomicU64,
    /// 0 = unknown.
    total: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    method: Option<String>,
    phase: &'static str,
    /// When the current method (or attempt) began: rates and ETAs count from here.
    since: Instant,
}

/// What a reader sees of one task; serialised into the command result as it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub operation: &'static str,
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub phase: &'static str,
    pub bytes_done: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    pub mb_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    pub elapsed_seconds: f64,
}

/// Keeps a task on the board (and, for [`start`], as this thread's current task) until
/// dropped.
#[must_use = "the task leaves the board when the handle is dropped"]
pub struct Handle {
    task: Arc<Task>,
    /// The thread's previous current task, restored on drop (tasks may nest).
    previous: Option<Option<Weak<Task>>>,
}

fn board() -> &'static Mutex<Vec<Weak<Task>>> {
    static BOARD: OnceLock<Mutex<Vec<Weak<Task>>>> = OnceLock::new();
    BOARD.get_or_init(Mutex::default)
}

thread_local! {
    static CURRENT: RefCell<Option<Weak<Task>>> = const { RefCell::new(None) };
}

fn register(operation: &'static str, device: &str, total: Option<u64>) -> Arc<Task> {
    let now = Instant::now();
    let task = Arc::new(Task {
        operation,
        device: device.to_string(),
        registered: now,
        done: AtomicU64::new(0),
        total: AtomicU64::new(total.unwrap_or(0)),
        state: Mutex::new(State {
            method: None,
            phase: "starting",
            since: now,
        }),
    });
    let mut b = board().lock().expect("progress board");
    b.retain(|w| w.strong_count() > 0);
    b.push(Arc::downgrade(&task));
    task
}

/// Registers a task and makes it this thread's current one ([`current`]), so that code deep
/// in the work (an overwrite pass, a sanitize poll) can report without a handle threaded
/// through interfaces that know nothing of progress.
pub fn start(operation: &'static str, device: &str, total: Option<u64>) -> Handle {
    let task = register(operation, device, total);
    let previous = CURRENT.with(|c| c.replace(Some(Arc::downgrade(&task))));
    Handle {
        task,
        previous: Some(previous),
    }
}

/// Registers a task without making it the thread's current one: for work whose reporting
/// happens on this thread through the handle itself.
pub fn track(operation: &'static str, device: &str, total: Option<u64>) -> Handle {
    Handle {
        task: register(operation, device, total),
        previous: None,
    }
}

/// This thread's current task, if one was [`start`]ed and is still running.
pub fn current() -> Option<Arc<Task>> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(Weak::upgrade))
}

/// Every task on the board registered at or after `since`, oldest first.
pub fn snapshot_since(since: Instant) -> Vec<Snapshot> {
    let now = Instant::now();
    board()
        .lock()
        .expect("progress board")
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|t| t.registered >= since)
        .map(|t| t.snapshot_at(now))
        .collect()
}

impl std::ops::Deref for Handle {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.task
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
}

impl Task {
    /// A new method (or attempt) begins: bytes and the rate's clock start again.
    pub fn set_method(&self, method: &str) {
        let mut s = self.state.lock().expect("progress task");
        s.method = Some(method.to_string());
        s.since = Instant::now();
        self.done.store(0, Ordering::Relaxed);
    }

    pub fn set_phase(&self, phase: &'static str) {
        self.state.lock().expect("progress task").phase = phase;
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_done(&self, bytes: u64) {
        self.done.store(bytes, Ordering::Relaxed);
    }

    /// For work the device reports as a fraction (NVMe sanitize's SPROG, SCSI's progress
    /// indication): bytes done as that fraction of the total.
    pub fn set_fraction(&self, fraction: f64) {
        let total = self.total.load(Ordering::Relaxed);
        let f = fraction.clamp(0.0, 1.0);
        self.set_done((total as f64 * f) as u64);
    }

    /// The download restarted from byte 0 (or the method is tried again): count afresh.
    pub fn restart(&self) {
        self.state.lock().expect("progress task").since = Instant::now();
        self.done.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Snapshot {
        let s = self.state.lock().expect("progress task");
        let done = self.done.load(Ordering::Relaxed);
        let total = Some(self.total.load(Ordering::Relaxed)).filter(|t| *t > 0);
        let elapsed = now.saturating_duration_since(s.since);
        let secs = elapsed.as_secs_f64();
        // Below a tenth of a second (or a few KiB) a rate is noise, not a figure.
        let rate = if secs >= 0.1 { done as f64 / secs } else { 0.0 };
        let eta = match total {
            Some(t) if rate > 0.0 => Some(t.saturating_sub(done) as f64 / rate),
            _ => None,
        };
        Snapshot {
            operation: self.operation,
            device: self.device.clone(),
            method: s.method.clone(),
            phase: s.phase,
            bytes_done: done,
            bytes_total: total,
            percent: total.map(|t| round1((done.min(t)) as f64 * 100.0 / t as f64)),
            mb_per_s: round1(rate / 1e6),
            eta_seconds: eta.map(round1),
            elapsed_seconds: round1(secs),
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// How often the agent logs a progress line for each task (the command result is refreshed
/// every second).
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_on_the_board_until_its_handle_drops() {
        let since = Instant::now();
        let h = track("write_image", "/dev/test-board-a", Some(1000));
        h.add(250);
        let seen: Vec<_> = snapshot_since(since)
            .into_iter()
            .filter(|s| s.device == "/dev/test-board-a")
            .collect();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].bytes_done, 250);
        assert_eq!(seen[0].bytes_total, Some(1000));
        assert_eq!(seen[0].percent, Some(25.0));
        drop(h);
        assert!(!snapshot_since(since)
            .iter()
            .any(|s| s.device == "/dev/test-board-a"));
    }

    #[test]
    fn tasks_registered_before_the_reader_began_are_not_reported() {
        let old = track("erase", "/dev/test-board-old", None);
        std::thread::sleep(Duration::from_millis(2));
        let since = Instant::now();
        let new = track("erase", "/dev/test-board-new", None);
        let devices: Vec<_> = snapshot_since(since)
            .into_iter()
            .map(|s| s.device)
            .filter(|d| d.starts_with("/dev/test-board-"))
            .collect();
        assert_eq!(devices, ["/dev/test-board-new"]);
        drop((old, new));
    }

    #[test]
    fn current_follows_the_thread_and_nests() {
        assert!(current().is_none());
        let outer = start("erase", "/dev/test-cur-outer", Some(10));
        assert_eq!(current().unwrap().device, "/dev/test-cur-outer");
        {
            let _inner = start("erase", "/dev/test-cur-inner", Some(10));
            assert_eq!(current().unwrap().device, "/dev/test-cur-inner");
            // Another thread has no current task.
            std::thread::spawn(|| assert!(current().is_none()))
                .join()
                .unwrap();
        }
        assert_eq!(current().unwrap().device, "/dev/test-cur-outer");
        drop(outer);
        assert!(current().is_none());
    }

    #[test]
    fn rate_and_eta_count_from_the_method_start() {
        let h = track("erase", "/dev/test-rate", Some(4_000_000));
        h.add(999);
        h.set_method("overwrite");
        assert_eq!(h.snapshot().bytes_done, 0, "a new method counts afresh");
        assert_eq!(h.snapshot().method.as_deref(), Some("overwrite"));
        // Fake the clock: pretend the method began 2 s ago and half the bytes are done.
        h.state.lock().unwrap().since = Instant::now() - Duration::from_secs(2);
        h.set_done(2_000_000);
        let s = h.snapshot();
        assert_eq!(s.percent, Some(50.0));
        assert!((s.mb_per_s - 1.0).abs() < 0.05, "{s:?}");
        let eta = s.eta_seconds.unwrap();
        assert!((eta - 2.0).abs() < 0.1, "{s:?}");
        h.set_fraction(0.75);
        assert_eq!(h.snapshot().bytes_done, 3_000_000);
        h.restart();
        assert_eq!(h.snapshot().bytes_done, 0);
    }

    #[test]
    fn no_rate_or_eta_without_time_or_total() {
        let h = track("write_image", "/dev/test-norate", None);
        h.add(10);
        let s = h.snapshot();
        assert_eq!(s.mb_per_s, 0.0);
        assert_eq!(s.eta_seconds, None);
        assert_eq!(s.percent, None);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("bytes_total").is_none() && v.get("eta_seconds").is_none());
    }
}
