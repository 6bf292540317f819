use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ErrorClass;

/// The three kinds of in-band steps. They share one protocol, differing only in key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Clean,
    Deploy,
    Service,
}

impl StepKind {
    pub const ALL: [StepKind; 3] = [StepKind::Clean, StepKind::Deploy, StepKind::Service];

    /// `clean`, `deploy` or `service`: the prefix of every key and the extension name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Clean => "clean",
            StepKind::Deploy => "deploy",
            StepKind::Service => "service",
        }
    }

    /// Key of the step list in `get_*_steps` results, e.g. `clean_steps`.
    pub fn steps_key(self) -> String {
        format!("{}_steps", self.as_str())
    }

    /// Key of the step's return value in `execute_*_step` results, e.g. `clean_result`.
    pub fn result_key(self) -> String {
        format!("{}_result", self.as_str())
    }

    /// Key of the echoed step in `execute_*_step` results, e.g. `clean_step`.
    pub fn step_key(self) -> String {
        format!("{}_step", self.as_str())
    }

    /// Name of the version parameter of `execute_*_step`, e.g. `clean_version`.
    pub fn version_param(self) -> String {
        format!("{}_version", self.as_str())
    }

    /// IPA's error class for a failed step of this kind.
    pub fn error_class(self) -> ErrorClass {
        match self {
            StepKind::Clean => ErrorClass::CleaningError,
            StepKind::Deploy => ErrorClass::DeploymentError,
            StepKind::Service => ErrorClass::ServicingError,
        }
    }
}

/// A step as a hardware manager advertises it in `get_*_steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub priority: i64,
    /// The conductor interface that owns the step: `deploy` or `raid` for in-band steps.
    pub interface: String,
    pub reboot_requested: bool,
    /// Clean and service steps only: whether an operator may abort the step midway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abortable: Option<bool>,
    /// Argument name -> `{"description": str, "required": bool}`; the conductor validates
    /// user-supplied `args` against it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argsinfo: Option<Map<String, Value>>,
}

impl Step {
    /// A `deploy`-interface step with no arguments, the common case.
    pub fn new(step: &str, priority: i64) -> Self {
        Step {
            step: step.to_string(),
            priority,
            interface: "deploy".to_string(),
            reboot_requested: false,
            abortable: None,
            argsinfo: None,
        }
    }

    pub fn abortable(mut self, abortable: bool) -> Self {
        self.abortable = Some(abortable);
        self
    }

    pub fn interface(mut self, interface: &str) -> Self {
        self.interface = interface.to_string();
        self
    }
}

/// `{ManagerName: [step, ...]}`, the shape of `*_steps` in `get_*_steps` results.
pub type StepLists = BTreeMap<String, Vec<Step>>;

/// `hardware_manager_version`: `{manager version name: version}`. The conductor sends it back
/// as `*_version`; any difference means the agent changed under it.
pub type ManagerVersions = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_follow_ipa() {
        assert_eq!(StepKind::Clean.steps_key(), "clean_steps");
        assert_eq!(StepKind::Deploy.result_key(), "deploy_result");
        assert_eq!(StepKind::Service.step_key(), "service_step");
        assert_eq!(StepKind::Clean.version_param(), "clean_version");
    }

    #[test]
    fn advertised_step_shape() {
        let s = Step::new("erase_devices_metadata", 99).abortable(true);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                   "reboot_requested": false, "abortable": true})
        );
    }

    #[test]
    fn captured_execute_request_has_expected_params() {
        let body: crate::CommandRequest = serde_json::from_slice(include_bytes!(
            "../fixtures/execute-clean-step-request.json"
        ))
        .unwrap();
        assert_eq!(body.name, "clean.execute_clean_step");
        let step = &body.params["step"];
        assert_eq!(step["step"], "erase_devices_metadata");
        // The conductor adds keys of its own to the step; they must survive an echo.
        assert_eq!(step["requires_ramdisk"], true);
        let node: crate::Node = serde_json::from_value(body.params["node"].clone()).unwrap();
        assert!(node.uuid().is_some());
        assert_eq!(
            node.driver_internal_info().unwrap()["agent_erase_devices_iterations"],
            1
        );
        let versions: ManagerVersions =
            serde_json::from_value(body.params["clean_version"].clone()).unwrap();
        assert_eq!(versions["generic_hardware_manager"], "1.2");
    }
}
