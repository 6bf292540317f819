//! Progress of the running asynchronous command, where an operator looks: the command's
//! result in `GET /v1/commands` while it is `RUNNING`, and a log line every few seconds.
//!
//! The disk work (an image write, each disk's erase) registers on [`blockdev::progress`]'s
//! board; this reads the board while the command runs. Ironic tolerates a result on a
//! `RUNNING` command: `_get_completed_command` returns as soon as it sees `RUNNING` (it only
//! reads `<kind>_step` out of the result, which this leaves out), `_wait_for_command` retries,
//! and the status log line passes the result through `_sanitize_for_logging`. IPA leaves the
//! result empty until the end; the final result replaces this one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blockdev::progress::{snapshot_since, Snapshot, LOG_INTERVAL};
use serde_json::json;

use super::CommandRecord;

/// How often the RUNNING result is refreshed.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes progress into `record` until it finishes. `since`: when the command started;
/// tasks registered before it belong to something else (a thread left behind by a stalled
/// disk).
pub async fn report(record: Arc<CommandRecord>, since: Instant) {
    let mut tick = tokio::time::interval(PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_log = since + LOG_INTERVAL;
    loop {
        tokio::select! {
            _ = record.wait() => return,
            _ = tick.tick() => {}
        }
        let tasks = snapshot_since(since);
        if tasks.is_empty() {
            continue;
        }
        record.set_progress(json!({ "progress": tasks }));
        if Instant::now() >= next_log {
            next_log = Instant::now() + LOG_INTERVAL;
            for t in &tasks {
                log(record.name(), t);
            }
        }
    }
}

fn log(command: &str, t: &Snapshot) {
    let unknown = || "?".to_string();
    tracing::info!(
        command,
        operation = t.operation,
        device = %t.device,
        method = %t.method.as_deref().unwrap_or("?"),
        phase = t.phase,
        bytes = t.bytes_done,
        total = %t.bytes_total.map_or_else(unknown, |v| v.to_string()),
        percent = %t.percent.map_or_else(unknown, |v| format!("{v:.1}")),
        mb_per_s = %format!("{:.1}", t.mb_per_s),
        eta_s = %t.eta_seconds.map_or_else(unknown, |v| format!("{v:.0}")),
        "progress"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironic_protocol::CommandStatus;

    #[tokio::test(start_paused = true)]
    async fn running_result_carries_progress_and_the_final_result_replaces_it() {
        let since = Instant::now();
        let record = CommandRecord::new("execute_deploy_step");
        let reporter = tokio::spawn(report(record.clone(), since));
        let task = blockdev::progress::track("write_image", "/dev/test-report", Some(4000));
        task.add(1000);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let snap = record.snapshot();
        assert_eq!(snap.command_status, CommandStatus::Running);
        let progress = &snap.command_result.expect("a running result")["progress"];
        let mine: Vec<_> = progress
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["device"] == "/dev/test-report")
            .collect();
        assert_eq!(mine.len(), 1, "{progress}");
        assert_eq!(mine[0]["operation"], "write_image");
        assert_eq!(mine[0]["bytes_done"], 1000);
        assert_eq!(mine[0]["bytes_total"], 4000);
        assert_eq!(mine[0]["percent"], 25.0);
        record.finish(CommandStatus::Succeeded, None, None);
        reporter.await.unwrap();
        // A late publish cannot overwrite the outcome.
        record.set_progress(json!({"progress": []}));
        assert_eq!(record.snapshot().command_result, None);
        drop(task);
    }
}
