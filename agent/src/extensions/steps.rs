//! What `clean`, `deploy` and `service` share: listing steps across hardware managers and
//! running one, with IPA's version check and result shape.

use std::sync::Arc;
use std::time::Duration;

use hardware_managers::{HardwareError, StepCall};
use ironic_protocol::{CommandError, ErrorClass, ManagerVersions, Node, StepKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::agent::Agent;
use crate::commands::{CommandDef, CommandValue, Mode, Params};

/// `get_<kind>_steps` (sync) and `execute_<kind>_step` (async) of one step kind.
pub fn commands(kind: StepKind) -> Vec<CommandDef> {
    let (get, execute) = match kind {
        StepKind::Clean => ("get_clean_steps", "execute_clean_step"),
        StepKind::Deploy => ("get_deploy_steps", "execute_deploy_step"),
        StepKind::Service => ("get_service_steps", "execute_service_step"),
    };
    vec![
        CommandDef::new(get, Mode::Sync, move |agent, p: GetStepsParams| {
            get_steps(agent, kind, p)
        }),
        CommandDef::new(execute, Mode::Async, move |agent, p: ExecuteStepParams| {
            execute_step(agent, kind, p)
        }),
    ]
}

/// Parameters of `get_*_steps`.
#[derive(Debug, Deserialize)]
pub struct GetStepsParams {
    pub node: Node,
    pub ports: Vec<Value>,
}
impl Params for GetStepsParams {}

/// Parameters of `execute_*_step`: the step, node, ports, the `*_version` map the conductor
/// cached, and any further keyword arguments (IPA passes them on to the step).
#[derive(Debug, Deserialize)]
pub struct ExecuteStepParams {
    pub step: Value,
    pub node: Node,
    pub ports: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
impl Params for ExecuteStepParams {}

pub async fn get_steps(
    agent: Arc<Agent>,
    kind: StepKind,
    p: GetStepsParams,
) -> Result<CommandValue, CommandError> {
    agent.cache_node(&p.node);
    let managers = agent.managers();
    let (steps, versions) = tokio::task::spawn_blocking(move || {
        (managers.steps(kind, &p.node, &p.ports), managers.versions())
    })
    .await
    .map_err(|e| internal(kind, &format!("listing steps: {e}")))?;
    let mut result = Map::new();
    result.insert(kind.steps_key(), json!(steps));
    result.insert("hardware_manager_version".into(), json!(versions));
    Ok(CommandValue::Json(Value::Object(result)))
}

pub async fn execute_step(
    agent: Arc<Agent>,
    kind: StepKind,
    mut p: ExecuteStepParams,
) -> Result<CommandValue, CommandError> {
    agent.cache_node(&p.node);
    let managers = agent.managers();
    check_versions(&managers.versions(), p.extra.remove(&kind.version_param()))?;
    let Some(name) = p
        .step
        .get("step")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(CommandError::execution_failed(format!(
            "Malformed {}_step, no \"step\" key: {}",
            kind.as_str(),
            p.step
        )));
    };
    let step_args = match p.step.get("args") {
        Some(Value::Object(a)) => a.clone(),
        _ => Map::new(),
    };
    let mut args = p.extra;
    args.extend(step_args.clone());
    tracing::info!(kind = kind.as_str(), step = %name, "executing step");
    if may_change_disks(kind, &name) {
        agent.forget_written_image();
    }
    let (node, ports, step_name) = (p.node, p.ports, name.clone());
    let task = tokio::task::spawn_blocking(move || {
        managers.execute_step_checked(
            kind,
            &step_name,
            &step_args,
            &StepCall::new(&node, &ports, &args),
        )
    });
    let stall = agent.config().options.disk_stall_timeout;
    let limit = (stall > 0).then(|| Duration::from_secs(stall));
    let result = unless_stalled(task, blockdev::watch::global(), limit)
        .await
        .map_err(|s| {
            step_error(
                kind,
                &name,
                HardwareError::StepFailed(stall_message(&s, stall)),
            )
        })?
        .map_err(|e| internal(kind, &format!("{} step {name} crashed: {e}", kind.as_str())))?
        .map_err(|e| step_error(kind, &name, e))?;
    tracing::info!(kind = kind.as_str(), step = %name, "step completed");
    let mut out = Map::new();
    out.insert(kind.result_key(), result);
    // The step as the conductor sent it, as IPA echoes it, but without the secrets its args
    // can carry (the conductor only compares `interface` and `step`).
    out.insert(kind.step_key(), crate::redact::scrub(&p.step));
    Ok(CommandValue::Json(Value::Object(out)))
}

/// Whether a step may leave the disks without the image written before it: every clean and
/// service step (erase, RAID, firmware: anything a manager adds) and the erase deploy steps.
/// The deploy steps that write or build on the image (`write_image`, boot loader, file
/// injection) keep the record.
fn may_change_disks(kind: StepKind, name: &str) -> bool {
    kind != StepKind::Deploy || name.starts_with("erase_") || name.ends_with("_configuration")
}

/// IPA's `check_versions`: no version given means a first run; any difference means the
/// conductor must start over with fresh steps.
fn check_versions(current: &ManagerVersions, given: Option<Value>) -> Result<(), CommandError> {
    let Some(given) = given.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let matches =
        serde_json::from_value::<ManagerVersions>(given.clone()).is_ok_and(|g| &g == current);
    if matches {
        return Ok(());
    }
    tracing::warn!(agent = ?current, node = %given, "hardware manager versions differ from the conductor's");
    Err(CommandError::new(
        ErrorClass::VersionMismatch,
        format!(
            "Current versions: {}, versions used by ironic: {given}",
            json!(current)
        ),
    ))
}

fn step_error(kind: StepKind, step: &str, e: HardwareError) -> CommandError {
    let mut error = e.to_command_error(kind.error_class());
    if error.kind == kind.error_class() {
        error.details = format!(
            "Error performing {} step {step}: {}",
            kind.as_str(),
            error.details
        );
    }
    error
}

/// Awaits `task` unless one request in `watch` stays in flight past `limit`: then the watch
/// is cancelled (the managers' disk writes refuse to go on) and the stall returned, leaving
/// the stuck thread behind. Ironic would wait for ever otherwise: heartbeats keep coming.
async fn unless_stalled<T>(
    mut task: tokio::task::JoinHandle<T>,
    watch: &blockdev::IoWatch,
    limit: Option<Duration>,
) -> Result<Result<T, tokio::task::JoinError>, blockdev::Stall> {
    let Some(limit) = limit else {
        return Ok(task.await);
    };
    loop {
        tokio::select! {
            r = &mut task => return Ok(r),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(stall) = watch.stalled(limit) {
                    watch.cancel();
                    tracing::error!(request = stall.what, device = ?stall.device,
                        seconds = stall.for_.as_secs(), "disk request stalled; failing the step");
                    return Err(stall);
                }
            }
        }
    }
}

fn stall_message(s: &blockdev::Stall, limit_s: u64) -> String {
    let device = s
        .device
        .as_ref()
        .map_or_else(|| "a disk".to_string(), |d| d.display().to_string());
    format!(
        "{} {device} did not complete in {limit_s} s: the disk stopped answering (check the disk \
         and its controller; the limit is the agent's disk_stall_timeout). No more erase writes \
         until the ramdisk restarts.",
        s.what
    )
}

fn internal(kind: StepKind, details: &str) -> CommandError {
    CommandError::new(kind.error_class(), details)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step whose disk request hangs past the limit fails at once with the device named;
    /// one that finishes is awaited whatever it takes; without a limit nothing is watched.
    #[tokio::test]
    async fn a_stalled_step_fails_naming_the_device_and_a_finished_one_returns() {
        let watch = blockdev::IoWatch::new();
        let w = watch.clone();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let hung = tokio::task::spawn_blocking(move || {
            let _io = w.begin_on("writing to", std::path::Path::new("/dev/vdq"));
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            7
        });
        let t = std::time::Instant::now();
        let stall = unless_stalled(hung, &watch, Some(Duration::from_millis(300)))
            .await
            .expect_err("the hung request is a stall");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(watch.is_cancelled());
        let msg = stall_message(&stall, 300);
        assert!(
            msg.starts_with("writing to /dev/vdq did not complete in 300 s"),
            "{msg}"
        );
        release_tx.send(()).unwrap();

        let quiet = blockdev::IoWatch::new();
        let done = tokio::task::spawn_blocking(|| {
            std::thread::sleep(Duration::from_millis(700));
            5
        });
        let v = unless_stalled(done, &quiet, Some(Duration::from_millis(300))).await;
        assert_eq!(v.unwrap().unwrap(), 5, "no request in flight: no stall");
    }

    #[test]
    fn steps_that_may_change_disks_forget_the_written_image() {
        assert!(may_change_disks(StepKind::Clean, "erase_devices_metadata"));
        assert!(may_change_disks(StepKind::Clean, "update_firmware"));
        assert!(may_change_disks(StepKind::Service, "burnin_disk"));
        assert!(may_change_disks(StepKind::Deploy, "erase_devices_metadata"));
        assert!(may_change_disks(StepKind::Deploy, "apply_configuration"));
        assert!(!may_change_disks(StepKind::Deploy, "write_image"));
        assert!(!may_change_disks(StepKind::Deploy, "inject_files"));
    }

    #[test]
    fn versions() {
        let current: ManagerVersions =
            [("generic_hardware_manager".to_string(), "1.2".to_string())].into();
        assert!(check_versions(&current, None).is_ok());
        assert!(check_versions(&current, Some(Value::Null)).is_ok());
        assert!(check_versions(&current, Some(json!({"generic_hardware_manager": "1.2"}))).is_ok());
        let e =
            check_versions(&current, Some(json!({"generic_hardware_manager": "1.1"}))).unwrap_err();
        assert_eq!(e.kind, ErrorClass::VersionMismatch);
        assert_eq!(e.code, 409);
        assert!(e.details.contains("1.1"));
    }

    #[test]
    fn errors_keep_ipa_classes() {
        let e = step_error(
            StepKind::Clean,
            "erase_devices_metadata",
            HardwareError::ProtectedDevice {
                device: "/dev/sdb1".into(),
                what: "VMware VMFS Partition (GPT)".into(),
            },
        );
        assert_eq!(e.kind, ErrorClass::ProtectedDeviceError);
        assert!(e
            .details
            .starts_with("Protected VMware VMFS Partition (GPT) located on device /dev/sdb1"));
        let e = step_error(
            StepKind::Deploy,
            "x",
            HardwareError::io("opening /dev/loop7", std::io::Error::other("boom")),
        );
        assert_eq!(e.kind, ErrorClass::DeploymentError);
        assert_eq!(
            e.details,
            "Error performing deploy step x: opening /dev/loop7: boom"
        );
        let e = step_error(
            StepKind::Clean,
            "nope",
            HardwareError::MethodNotFound("nope".into()),
        );
        assert_eq!(e.kind, ErrorClass::HardwareManagerMethodNotFound);
    }
}
