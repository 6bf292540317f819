//! Whether the conductor has read the last asynchronous command's result, and so whether and
//! when a heartbeat must make it look.
//!
//! Ironic learns that an asynchronous command finished in one of two ways. For
//! `image.install_bootloader` (`poll=True`) it reads `GET /v1/commands` at once after the
//! `POST`, then every `[agent] command_wait_interval` (6 s) while holding the node's lock. For
//! steps and `prepare_image` it reads the list when a heartbeat arrives. A heartbeat that
//! arrives while the conductor holds the lock is dropped ("currently locked, skipping heartbeat
//! processing") although the API answers 202, so the agent cannot tell from the answer: the
//! result then waits for the next regular heartbeat, 90-180 s later. IPA spaces its early
//! heartbeat at least 5 s after the previous one to stay clear of that, which makes every
//! short step cost about 5 s as Ironic sees it.
//!
//! Here the agent watches the reads instead. A read of the command list served after the
//! command finished means the conductor has the result: no heartbeat is needed. Otherwise the
//! heartbeat goes out when the conductor is free to take it: at once if the command's `POST`
//! was answered more than [`LOCK_RELEASE`] ago, [`LOCK_RELEASE`] after that answer otherwise,
//! and, when the conductor was seen polling the running command (reads that no heartbeat of
//! ours caused), one poll interval after its last poll, which the poll itself normally makes
//! unnecessary. A heartbeat not followed by a read within [`RETRY_AFTER`] is repeated, at
//! most [`MAX_EARLY_BEATS`] in all; then IPA's regular schedule takes over. Only the token's
//! holder can read the list (every `/v1/commands` route needs the token), so no other client
//! can suppress these heartbeats.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long after answering a command's `POST` the conductor may still hold the node's lock:
/// it saves the node and releases the lock right after the answer, in the same thread (16 ms
/// measured here with SQLite, `tests/deploy-bench.sh --log-dir`). A heartbeat that comes too
/// early is dropped and costs [`RETRY_AFTER`]`[0]`; one that waits too long costs every short
/// step that wait. 500 ms leaves a margin of 30x over the measured hold.
pub const LOCK_RELEASE: Duration = Duration::from_millis(500);
/// A read within this long after one of our heartbeats is the heartbeat's doing, not a poll.
const CAUSED_BY_BEAT: Duration = Duration::from_secs(2);
/// Ironic's default `[agent] command_wait_interval`, until two polls show the real one.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(6);
/// Waits for a read after an early heartbeat before the next one.
pub const RETRY_AFTER: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(4)];
pub const MAX_EARLY_BEATS: u32 = 3;
/// Early heartbeats are never closer together than this.
const MIN_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// Asynchronous commands finished so far.
    finished: u64,
    /// `finished` as of the last read of the command list.
    seen: u64,
    running: bool,
    finished_at: Option<Instant>,
    answered_at: Option<Instant>,
    /// Reads while the command ran that no heartbeat caused: the last two.
    polls: [Option<Instant>; 2],
    last_beat: Option<Instant>,
    /// Heartbeats since the last finish that the conductor has not answered with a read.
    early_beats: u32,
}

/// Shared by the command executor, the API's read handlers and the heartbeat loop.
#[derive(Debug, Default)]
pub struct Delivery {
    state: Mutex<State>,
    changed: Notify,
}

/// Taken before a read handler snapshots the history, so that a command finishing between
/// the two does not count as read.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket {
    finished: u64,
    running: bool,
}

impl Delivery {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An asynchronous command was accepted.
    pub fn started(&self) {
        let mut s = self.state();
        s.running = true;
        s.answered_at = None;
        s.polls = [None, None];
    }

    /// The `POST` that started a command was answered (with its final result if it finished
    /// within the grace, else `RUNNING`).
    pub fn answered(&self, at: Instant) {
        self.state().answered_at = Some(at);
        self.changed.notify_one();
    }

    /// The asynchronous command finished.
    pub fn finished(&self, at: Instant) {
        {
            let mut s = self.state();
            s.running = false;
            s.finished += 1;
            s.finished_at = Some(at);
            s.early_beats = 0;
        }
        self.changed.notify_one();
    }

    pub fn before_read(&self) -> ReadTicket {
        let s = self.state();
        ReadTicket {
            finished: s.finished,
            running: s.running,
        }
    }

    /// A read of the command list (or of one command) was served.
    pub fn after_read(&self, ticket: ReadTicket, at: Instant) {
        let mut changed = false;
        {
            let mut s = self.state();
            if ticket.finished > s.seen {
                s.seen = ticket.finished;
                changed = true;
            }
            let by_beat = s
                .last_beat
                .is_some_and(|b| at.saturating_duration_since(b) < CAUSED_BY_BEAT);
            if ticket.running && s.running && !by_beat {
                s.polls = [s.polls[1], Some(at)];
                changed = true;
            }
        }
        // Only what moves the early beat wakes the heartbeat loop (a poller may read often).
        if changed {
            self.changed.notify_one();
        }
    }

    /// A heartbeat was sent (early or regular).
    pub fn beat_sent(&self, at: Instant) {
        let mut s = self.state();
        s.last_beat = Some(at);
        if s.seen < s.finished {
            s.early_beats += 1;
        }
    }

    /// When the next early heartbeat is due, if the last result is still unread.
    pub fn early_beat_due(&self) -> Option<Instant> {
        let s = self.state();
        if s.seen >= s.finished || s.early_beats >= MAX_EARLY_BEATS {
            return None;
        }
        let finished_at = s.finished_at?;
        let due = if s.early_beats == 0 {
            let after_answer = s.answered_at.map_or(finished_at + LOCK_RELEASE, |a| {
                finished_at.max(a + LOCK_RELEASE)
            });
            match s.polls {
                [_, None] => after_answer,
                [earlier, Some(last)] => {
                    let interval = earlier
                        .map(|e| last.saturating_duration_since(e))
                        .filter(|d| *d >= MIN_SPACING)
                        .unwrap_or(DEFAULT_POLL_INTERVAL)
                        .min(Duration::from_secs(60));
                    after_answer.max(last + interval + LOCK_RELEASE)
                }
            }
        } else {
            let wait = RETRY_AFTER[(s.early_beats as usize - 1).min(RETRY_AFTER.len() - 1)];
            s.last_beat.map_or(finished_at, |b| b + wait)
        };
        Some(match s.last_beat {
            Some(b) => due.max(b + MIN_SPACING),
            None => due,
        })
    }

    /// Resolves when any of the above changed.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn read(d: &Delivery, at: Instant) {
        let t = d.before_read();
        d.after_read(t, at);
    }

    #[test]
    fn nothing_is_due_before_a_command_finished() {
        let d = Delivery::default();
        assert_eq!(d.early_beat_due(), None);
        d.started();
        d.answered(Instant::now());
        assert_eq!(d.early_beat_due(), None);
    }

    #[test]
    fn a_read_after_the_finish_makes_the_beat_unneeded() {
        let t0 = Instant::now();
        let d = Delivery::default();
        d.started();
        d.answered(t0);
        d.finished(t0 + secs(3.0));
        assert_eq!(
            d.early_beat_due(),
            Some(t0 + secs(3.0)),
            "answered long ago: at once"
        );
        read(&d, t0 + secs(3.1));
        assert_eq!(d.early_beat_due(), None);
    }

    #[test]
    fn a_read_that_began_before_the_finish_does_not_count() {
        let t0 = Instant::now();
        let d = Delivery::default();
        d.started();
        d.answered(t0);
        let ticket = d.before_read();
        d.finished(t0 + secs(2.0));
        d.after_read(ticket, t0 + secs(2.0));
        assert!(d.early_beat_due().is_some());
    }

    #[test]
    fn a_command_done_within_the_grace_waits_for_the_lock_release() {
        let t0 = Instant::now();
        let d = Delivery::default();
        d.started();
        d.finished(t0 + secs(0.1));
        // Not answered yet: the conductor is still waiting for its POST.
        assert_eq!(d.early_beat_due(), Some(t0 + secs(0.1) + LOCK_RELEASE));
        d.answered(t0 + secs(0.2));
        assert_eq!(d.early_beat_due(), Some(t0 + secs(0.2) + LOCK_RELEASE));
    }

    #[test]
    fn a_polling_conductor_gets_one_interval_before_a_beat() {
        let t0 = Instant::now();
        let d = Delivery::default();
        d.started();
        d.answered(t0);
        read(&d, t0 + secs(0.01));
        d.finished(t0 + secs(2.0));
        assert_eq!(
            d.early_beat_due(),
            Some(t0 + secs(0.01) + DEFAULT_POLL_INTERVAL + LOCK_RELEASE)
        );
        // Two polls show the operator's interval.
        let d = Delivery::default();
        d.started();
        d.answered(t0);
        read(&d, t0 + secs(0.01));
        read(&d, t0 + secs(10.01));
        d.finished(t0 + secs(12.0));
        assert_eq!(d.early_beat_due(), Some(t0 + secs(20.01) + LOCK_RELEASE));
    }

    #[test]
    fn reads_caused_by_our_heartbeat_are_not_polls() {
        let t0 = Instant::now();
        let d = Delivery::default();
        d.started();
        d.answered(t0);
        d.beat_sent(t0 + secs(30.0));
        read(&d, t0 + secs(30.05));
        d.finished(t0 + secs(31.0));
        // Spacing after the last beat only.
        assert_eq!(d.early_beat_due(), Some(t0 + secs(31.0)));
    }

    #[test]
    fn unanswered_beats_are_repeated_a_few_times_then_left_to_the_schedule() {
        let t0 = Instant::now();
        let d = Delivery::default();
        d.started();
        d.answered(t0);
        d.finished(t0 + secs(5.0));
        let mut at = d.early_beat_due().unwrap();
        let mut beats = vec![];
        while let Some(due) = d.early_beat_due() {
            assert!(due >= at);
            at = due;
            beats.push(due.duration_since(t0).as_secs_f64());
            d.beat_sent(due);
        }
        assert_eq!(beats, [5.0, 7.0, 11.0]);
        assert_eq!(beats.len() as u32, MAX_EARLY_BEATS);
    }
}
