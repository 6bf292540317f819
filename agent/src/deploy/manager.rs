use std::sync::{Arc, Weak};

use hardware_managers::generic::GenericHardwareManager;
use hardware_managers::{HardwareError, HardwareManager, StepCall, SupportLevel};
use ironic_protocol::{ErrorClass, ImageInfo, Node, Step, StepKind};
use serde_json::{json, Value};

use super::prepare::{prepare_image, ImageRequest};
use crate::agent::Agent;

/// The image-writing half of IPA's `GenericHardwareManager`: the `write_image` step. It lives
/// in the agent because it needs the agent's downloader, cached node and partition-UUID
/// record; it reports under the generic manager's name and version, so the conductor sees
/// IPA's step list unchanged.
pub struct DeployManager {
    agent: Weak<Agent>,
    runtime: tokio::runtime::Handle,
}

impl DeployManager {
    pub fn new(agent: Weak<Agent>, runtime: tokio::runtime::Handle) -> Self {
        DeployManager { agent, runtime }
    }

    fn agent(&self) -> Result<Arc<Agent>, HardwareError> {
        self.agent
            .upgrade()
            .ok_or_else(|| HardwareError::Incompatible("the agent is shutting down".into()))
    }
}

impl HardwareManager for DeployManager {
    fn name(&self) -> &str {
        GenericHardwareManager::NAME
    }

    fn version(&self) -> (String, String) {
        (
            GenericHardwareManager::VERSION_NAME.to_string(),
            GenericHardwareManager::VERSION.to_string(),
        )
    }

    fn evaluate_hardware_support(&self) -> SupportLevel {
        SupportLevel::GENERIC
    }

    /// IPA's priority 0: the conductor's out-of-band `write_image` step (priority 80) is what
    /// runs it.
    fn steps(&self, kind: StepKind, _node: &Node, _ports: &[Value]) -> Vec<Step> {
        match kind {
            StepKind::Deploy | StepKind::Service => vec![Step::new("write_image", 0)],
            StepKind::Clean => Vec::new(),
        }
    }

    fn execute_step(&self, name: &str, call: &StepCall<'_>) -> Result<Value, HardwareError> {
        if name != "write_image" {
            return Err(HardwareError::NotHandled);
        }
        let image_info: ImageInfo = match call.args.get("image_info") {
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map_err(|e| {
                HardwareError::ipa(ErrorClass::InvalidCommandParamsError, e.to_string())
            })?,
            _ => {
                return Err(HardwareError::InvalidArguments(
                    "write_image needs an 'image_info' object".into(),
                ))
            }
        };
        let configdrive = call
            .args
            .get("configdrive")
            .filter(|v| !v.is_null())
            .cloned();
        let agent = self.agent()?;
        agent.cache_node(call.node);
        let message = prepare_image(
            &agent,
            &self.runtime,
            ImageRequest {
                image_info: &image_info,
                configdrive: configdrive.as_ref(),
                force: false,
            },
        )?;
        // IPA returns the inner prepare_image command's result.
        Ok(json!({"result": format!("prepare_image: {message}")}))
    }
}
