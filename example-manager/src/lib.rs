//! An example of an operator's hardware manager, compiled into the agent.
//!
//! `SiteManager` adds one clean step, `check_memory`, an acceptance check an operator might
//! run in manual cleaning after a DIMM replacement: it fails the step unless the machine has at
//! least `min_gb` GiB of memory. Everything else (inventory, disks, the generic erase steps)
//! still comes from the built-in managers, because dispatch falls through to them.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use hardware_managers::{HardwareError, HardwareManager, StepCall, SupportLevel};
use ironic_protocol::{Node, Step, StepKind};
use serde_json::{json, Value};

pub struct SiteManager {
    /// Where `meminfo` is read from (`/proc`; tests point it elsewhere).
    proc_root: PathBuf,
}

impl Default for SiteManager {
    fn default() -> Self {
        SiteManager {
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl SiteManager {
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        SiteManager {
            proc_root: proc_root.into(),
        }
    }

    fn memory_kib(&self) -> Result<u64, HardwareError> {
        let path = self.proc_root.join("meminfo");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| HardwareError::io(format!("reading {}", path.display()), e))?;
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| HardwareError::StepFailed(format!("no MemTotal in {}", path.display())))
    }
}

impl HardwareManager for SiteManager {
    fn name(&self) -> &str {
        "SiteManager"
    }

    /// Bump when the steps change: the conductor restarts cleaning on a version change.
    fn version(&self) -> (String, String) {
        ("site_manager".into(), "1.0".into())
    }

    fn evaluate_hardware_support(&self) -> SupportLevel {
        SupportLevel::SERVICE_PROVIDER
    }

    fn steps(&self, kind: StepKind, _node: &Node, _ports: &[Value]) -> Vec<Step> {
        if kind != StepKind::Clean {
            return Vec::new();
        }
        let mut step = Step::new("check_memory", 0).abortable(true);
        step.argsinfo = json!({"min_gb": {
            "description": "fail unless the machine has at least this many GiB of memory",
            "required": true,
        }})
        .as_object()
        .cloned();
        vec![step]
    }

    fn execute_step(&self, name: &str, call: &StepCall<'_>) -> Result<Value, HardwareError> {
        if name != "check_memory" {
            return Err(HardwareError::NotHandled);
        }
        // argsinfo made sure min_gb is there; its type is ours to check.
        let min_gb = call
            .args
            .get("min_gb")
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                HardwareError::InvalidArguments("check_memory: min_gb must be a number".into())
            })?;
        let gib = self.memory_kib()? as f64 / (1024.0 * 1024.0);
        if gib < min_gb {
            return Err(HardwareError::StepFailed(format!(
                "the machine has {gib:.1} GiB of memory, less than the {min_gb} GiB required"
            )));
        }
        Ok(json!({"memory_gib": (gib * 10.0).round() / 10.0}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdev::DeviceGuard;
    use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
    use hardware_managers::Managers;
    use serde_json::Map;

    fn managers(proc_root: &std::path::Path) -> Managers {
        let guard = DeviceGuard::new(false, vec![], "/nonexistent");
        Managers::new(vec![
            Box::new(GenericHardwareManager::new(
                guard,
                GenericOptions::default(),
            )),
            Box::new(SiteManager::with_proc_root(proc_root)),
        ])
        .unwrap()
    }

    fn run(m: &Managers, args: Value) -> Result<Value, HardwareError> {
        let node = Node::default();
        let args: Map<String, Value> = args.as_object().unwrap().clone();
        m.execute_step_checked(
            StepKind::Clean,
            "check_memory",
            &args,
            &StepCall::new(&node, &[], &args),
        )
    }

    #[test]
    fn the_step_is_listed_and_runs_through_dispatch() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("meminfo"), "MemTotal:       8388608 kB\n").unwrap();
        let m = managers(d.path());
        assert_eq!(m.names(), ["SiteManager", "GenericHardwareManager"]);
        let steps = m.steps(StepKind::Clean, &Node::default(), &[]);
        assert_eq!(steps["SiteManager"][0].step, "check_memory");
        assert_eq!(m.versions()["site_manager"], "1.0");

        assert_eq!(
            run(&m, json!({"min_gb": 4})).unwrap(),
            json!({"memory_gib": 8.0})
        );
        let e = run(&m, json!({"min_gb": 16})).unwrap_err().to_string();
        assert!(
            e.contains("8.0 GiB of memory, less than the 16 GiB required"),
            "{e}"
        );
        let e = run(&m, json!({})).unwrap_err().to_string();
        assert!(e.contains("missing required arguments: min_gb"), "{e}");
        let e = run(&m, json!({"min_gb": "lots"})).unwrap_err().to_string();
        assert!(e.contains("min_gb must be a number"), "{e}");
    }
}
