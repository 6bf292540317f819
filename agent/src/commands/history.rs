use std::sync::{Arc, Mutex};

use ironic_protocol::{CommandError, CommandResult, CommandStatus};
use serde_json::Value;
use tokio::sync::watch;

/// One command call and its outcome as the conductor sees it.
#[derive(Debug)]
pub struct CommandRecord {
    id: String,
    name: String,
    state: Mutex<CommandResult>,
    done: watch::Sender<bool>,
}

impl CommandRecord {
    pub fn new(name: &str) -> Arc<Self> {
        let id = uuid::Uuid::new_v4().to_string();
        Arc::new(CommandRecord {
            state: Mutex::new(CommandResult {
                id: id.clone(),
                command_name: name.to_string(),
                command_status: CommandStatus::Running,
                command_error: None,
                command_result: None,
            }),
            id,
            name: name.to_string(),
            done: watch::channel(false).0,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn snapshot(&self) -> CommandResult {
        self.state.lock().expect("record lock").clone()
    }

    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    /// A partial result for a command still running (its progress); ignored once the command
    /// has an outcome, so it never replaces the final result.
    pub fn set_progress(&self, result: Value) {
        let mut s = self.state.lock().expect("record lock");
        if s.command_status == CommandStatus::Running && !self.is_done() {
            s.command_result = Some(result);
        }
    }

    /// Records the outcome; the first call wins.
    pub fn finish(
        &self,
        status: CommandStatus,
        result: Option<Value>,
        error: Option<CommandError>,
    ) {
        if self.is_done() {
            return;
        }
        {
            let mut s = self.state.lock().expect("record lock");
            s.command_status = status;
            s.command_result = result;
            s.command_error = error;
        }
        self.done.send_replace(true);
    }

    /// Waits until the command has an outcome.
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        // An error means the sender is gone, which cannot happen while we hold `self`.
        let _ = rx.wait_for(|done| *done).await;
    }
}

/// Every command of this agent's lifetime, in the order they arrived. The conductor reads
/// the last entry to decide what happened, so entries are never reordered or dropped.
#[derive(Debug, Default)]
pub struct CommandHistory {
    records: Mutex<Vec<Arc<CommandRecord>>>,
}

impl CommandHistory {
    pub fn snapshot(&self) -> Vec<CommandResult> {
        self.records
            .lock()
            .expect("history lock")
            .iter()
            .map(|r| r.snapshot())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<CommandRecord>> {
        self.records
            .lock()
            .expect("history lock")
            .iter()
            .find(|r| r.id() == id)
            .cloned()
    }

    /// Appends `record` unless the last command is still running, in which case that one's
    /// name is returned (the agent is busy). Check and append are one step.
    pub fn push_unless_busy(&self, record: Arc<CommandRecord>) -> Result<(), String> {
        let mut records = self.records.lock().expect("history lock");
        if let Some(last) = records.last() {
            if !last.is_done() {
                return Err(last.name().to_string());
            }
        }
        records.push(record);
        Ok(())
    }

    /// The name of the running command, if the last one is still running.
    pub fn busy_with(&self) -> Option<String> {
        let records = self.records.lock().expect("history lock");
        records
            .last()
            .filter(|r| !r.is_done())
            .map(|r| r.name().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_only_while_last_is_running() {
        let h = CommandHistory::default();
        let a = CommandRecord::new("execute_clean_step");
        h.push_unless_busy(a.clone()).unwrap();
        assert_eq!(h.busy_with().as_deref(), Some("execute_clean_step"));
        assert_eq!(
            h.push_unless_busy(CommandRecord::new("sync")).unwrap_err(),
            "execute_clean_step"
        );
        a.finish(CommandStatus::Succeeded, None, None);
        h.push_unless_busy(CommandRecord::new("sync")).unwrap();
        let names: Vec<_> = h.snapshot().into_iter().map(|r| r.command_name).collect();
        assert_eq!(names, ["execute_clean_step", "sync"]);
    }

    #[tokio::test]
    async fn wait_returns_after_finish() {
        let r = CommandRecord::new("x");
        let r2 = r.clone();
        let t = tokio::spawn(async move {
            r2.wait().await;
            r2.snapshot().command_status
        });
        tokio::task::yield_now().await;
        r.finish(CommandStatus::Failed, None, None);
        r.finish(CommandStatus::Succeeded, None, None);
        assert_eq!(t.await.unwrap(), CommandStatus::Failed);
    }
}
