use std::cmp::Reverse;
use std::collections::BTreeMap;

use ironic_protocol::{
    BlockDevice, Interface, Inventory, ManagerVersions, Node, Step, StepKind, StepLists,
};
use serde_json::Value;

use crate::Disk;
use crate::{Dispatch, HardwareError, HardwareManager, StepCall, SupportLevel};

/// The loaded managers, best support first, and IPA's dispatch rules over them.
pub struct Managers {
    /// Sorted by support level, highest first; ties keep registration order (IPA keeps
    /// entry-point order for ties too).
    managers: Vec<(SupportLevel, Box<dyn HardwareManager>)>,
}

impl std::fmt::Debug for Managers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.managers.iter().map(|(s, m)| (m.name(), s.0)))
            .finish()
    }
}

impl Managers {
    /// Evaluates each manager's support, drops those answering [`SupportLevel::NONE`] and
    /// orders the rest. Fails if none is left, as IPA does.
    pub fn new(candidates: Vec<Box<dyn HardwareManager>>) -> Result<Self, HardwareError> {
        let mut managers: Vec<_> = candidates
            .into_iter()
            .map(|m| (m.evaluate_hardware_support(), m))
            .filter(|(support, m)| {
                tracing::info!(
                    manager = m.name(),
                    support = support.0,
                    "hardware manager evaluated"
                );
                *support > SupportLevel::NONE
            })
            .collect();
        if managers.is_empty() {
            return Err(HardwareError::MethodNotFound(
                "evaluate_hardware_support: no hardware manager supports this machine".into(),
            ));
        }
        managers.sort_by_key(|(support, _)| Reverse(*support));
        Ok(Managers { managers })
    }

    /// Names of the loaded managers in dispatch order.
    pub fn names(&self) -> Vec<&str> {
        self.managers.iter().map(|(_, m)| m.name()).collect()
    }

    /// IPA's `dispatch_to_managers`: the first manager (best support first) that handles the
    /// call answers it; `NotHandled`/`Incompatible` fall through; nobody -> `MethodNotFound`.
    fn dispatch<T>(
        &self,
        method: &str,
        mut call: impl FnMut(&dyn HardwareManager) -> Result<T, HardwareError>,
    ) -> Result<T, HardwareError> {
        for (_, manager) in &self.managers {
            match call(manager.as_ref()) {
                Err(e) if e.falls_through() => {
                    if let HardwareError::Incompatible(why) = &e {
                        tracing::debug!(
                            manager = manager.name(),
                            method,
                            why,
                            "incompatible, trying next manager"
                        );
                    }
                }
                other => return other,
            }
        }
        Err(HardwareError::MethodNotFound(method.to_string()))
    }

    /// Runs a step by name on the best manager that handles it.
    pub fn execute_step(&self, name: &str, call: &StepCall<'_>) -> Result<Value, HardwareError> {
        let call = StepCall {
            managers: Some(self),
            ..*call
        };
        self.dispatch(name, |m| m.execute_step(name, &call))
    }

    /// IPA's `dispatch_to_managers('erase_block_device', ...)`: the best manager that erases
    /// `disk` does. Its name is added to the disk's report (`"manager"`).
    pub fn erase_block_device(&self, node: &Node, disk: &Disk) -> Result<Value, HardwareError> {
        let mut by = None;
        let result = self.dispatch("erase_block_device", |m| {
            let r = m.erase_block_device(node, disk);
            if !matches!(&r, Err(e) if e.falls_through()) {
                by = Some(m.name().to_string());
            }
            r
        });
        match (result, by) {
            (Ok(Value::Object(mut report)), Some(name)) => {
                report.insert("manager".into(), Value::String(name));
                Ok(Value::Object(report))
            }
            (other, _) => other,
        }
    }

    /// The definition of step `name` of `kind` as the conductor sees it: the winner of the
    /// de-duplicated step lists ([`Managers::steps`]). `None` when no manager advertises it.
    pub fn step_definition(
        &self,
        kind: StepKind,
        name: &str,
        node: &Node,
        ports: &[Value],
    ) -> Option<Step> {
        self.steps(kind, node, ports)
            .into_values()
            .flatten()
            .find(|s| s.step == name)
    }

    /// The conductor's `execute_*_step`: checks the step's own arguments (`step.args`, the
    /// part `argsinfo` describes) against the advertised definition, then dispatches with
    /// `call` (whose `args` may carry further command parameters). A step nobody advertises is
    /// dispatched unchecked, so that a manager handling a step it does not list still works
    /// and an unknown step still fails with IPA's `HardwareManagerMethodNotFound`.
    pub fn execute_step_checked(
        &self,
        kind: StepKind,
        name: &str,
        step_args: &serde_json::Map<String, Value>,
        call: &StepCall<'_>,
    ) -> Result<Value, HardwareError> {
        if let Some(def) = self.step_definition(kind, name, call.node, call.ports) {
            crate::argsinfo::validate_args(kind, &def, step_args)?;
        }
        self.execute_step(name, call)
    }

    pub fn list_block_devices(
        &self,
        include_partitions: bool,
    ) -> Result<Vec<BlockDevice>, HardwareError> {
        self.dispatch("list_block_devices", |m| {
            m.list_block_devices(include_partitions)
        })
    }

    pub fn get_os_install_device(&self, node: &Node) -> Result<BlockDevice, HardwareError> {
        self.dispatch("get_os_install_device", |m| m.get_os_install_device(node))
    }

    pub fn list_network_interfaces(&self) -> Result<Vec<Interface>, HardwareError> {
        self.dispatch("list_network_interfaces", |m| m.list_network_interfaces())
    }

    pub fn list_hardware_info(
        &self,
        request: &crate::InventoryRequest,
    ) -> Result<Inventory, HardwareError> {
        self.dispatch("list_hardware_info", |m| m.list_hardware_info(request))
    }

    pub fn collect_lldp_data(
        &self,
        interfaces: &[String],
        timeout: std::time::Duration,
    ) -> Result<BTreeMap<String, Vec<(u8, String)>>, HardwareError> {
        self.dispatch("collect_lldp_data", |m| {
            m.collect_lldp_data(interfaces, timeout)
        })
    }

    /// `get_*_steps` over all managers, de-duplicated by step name with IPA's rules: the step
    /// of the manager with the highest support wins, then the higher priority, then the
    /// manager whose name sorts first.
    pub fn steps(&self, kind: StepKind, node: &Node, ports: &[Value]) -> StepLists {
        // step name -> (support, priority, manager name, step)
        let mut winners: BTreeMap<String, (SupportLevel, i64, String, Step)> = BTreeMap::new();
        for (support, manager) in &self.managers {
            for step in manager.steps(kind, node, ports) {
                let candidate = (*support, step.priority, manager.name().to_string(), step);
                match winners.get(&candidate.3.step) {
                    Some(best) if !beats(&candidate, best) => {}
                    _ => {
                        winners.insert(candidate.3.step.clone(), candidate);
                    }
                }
            }
        }
        let mut lists = StepLists::new();
        for (_, (_, _, manager, step)) in winners {
            lists.entry(manager).or_default().push(step);
        }
        // Every loaded manager appears, even with no steps, as in IPA's reply.
        for (_, m) in &self.managers {
            lists.entry(m.name().to_string()).or_default();
        }
        lists
    }

    /// `hardware_manager_version`: `{version name: version}` of every loaded manager.
    pub fn versions(&self) -> ManagerVersions {
        self.managers.iter().map(|(_, m)| m.version()).collect()
    }
}

fn beats(a: &(SupportLevel, i64, String, Step), b: &(SupportLevel, i64, String, Step)) -> bool {
    (a.0, a.1, Reverse(&a.2)) > (b.0, b.1, Reverse(&b.2))
}

impl Dispatch for Managers {
    fn erase_block_device(&self, node: &Node, disk: &Disk) -> Result<Value, HardwareError> {
        Managers::erase_block_device(self, node, disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    struct Fake {
        name: &'static str,
        support: u32,
        steps: Vec<Step>,
        handles: &'static [&'static str],
        incompatible: &'static [&'static str],
    }

    impl HardwareManager for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn version(&self) -> (String, String) {
            (self.name.to_lowercase(), "1.0".into())
        }
        fn evaluate_hardware_support(&self) -> SupportLevel {
            SupportLevel(self.support)
        }
        fn steps(&self, _: StepKind, _: &Node, _: &[Value]) -> Vec<Step> {
            self.steps.clone()
        }
        fn execute_step(&self, name: &str, _: &StepCall<'_>) -> Result<Value, HardwareError> {
            if self.incompatible.contains(&name) {
                return Err(HardwareError::Incompatible("not my hardware".into()));
            }
            if self.handles.contains(&name) {
                return Ok(json!(self.name));
            }
            Err(HardwareError::NotHandled)
        }
    }

    fn fake(name: &'static str, support: u32, steps: Vec<Step>) -> Box<dyn HardwareManager> {
        Box::new(Fake {
            name,
            support,
            steps,
            handles: &[],
            incompatible: &[],
        })
    }

    fn call<T>(f: impl FnOnce(&StepCall<'_>) -> T) -> T {
        let node = Node::default();
        let args = Map::new();
        f(&StepCall::new(&node, &[], &args))
    }

    #[test]
    fn dispatch_prefers_support_and_falls_through() {
        let m = Managers::new(vec![
            Box::new(Fake {
                name: "Generic",
                support: 1,
                steps: vec![],
                handles: &["erase", "only_generic"],
                incompatible: &[],
            }),
            Box::new(Fake {
                name: "Vendor",
                support: 3,
                steps: vec![],
                handles: &["erase"],
                incompatible: &["only_generic"],
            }),
            fake("Disabled", 0, vec![]),
        ])
        .unwrap();
        assert_eq!(m.names(), ["Vendor", "Generic"]);
        assert_eq!(
            call(|c| m.execute_step("erase", c)).unwrap(),
            json!("Vendor")
        );
        assert_eq!(
            call(|c| m.execute_step("only_generic", c)).unwrap(),
            json!("Generic")
        );
        let err = call(|c| m.execute_step("nope", c)).unwrap_err();
        assert!(
            matches!(err, HardwareError::MethodNotFound(ref s) if s == "nope"),
            "{err}"
        );
    }

    #[test]
    fn no_supported_manager_is_an_error() {
        assert!(Managers::new(vec![fake("Disabled", 0, vec![])]).is_err());
    }

    #[test]
    fn steps_deduplicate_like_ipa() {
        let m = Managers::new(vec![
            fake(
                "Generic",
                1,
                vec![
                    Step::new("erase_devices", 10),
                    Step::new("erase_devices_metadata", 99),
                ],
            ),
            // Same support: the higher priority wins; equal priority: alphabetical name wins.
            fake("Bmain", 2, vec![Step::new("tie", 5), Step::new("prio", 1)]),
            fake("Amain", 2, vec![Step::new("tie", 5), Step::new("prio", 7)]),
            // Higher support wins even with a lower priority.
            fake("Vendor", 3, vec![Step::new("erase_devices", 0)]),
        ])
        .unwrap();
        let lists = m.steps(StepKind::Clean, &Node::default(), &[]);
        let names = |k: &str| lists[k].iter().map(|s| s.step.as_str()).collect::<Vec<_>>();
        assert_eq!(names("Vendor"), ["erase_devices"]);
        assert_eq!(names("Generic"), ["erase_devices_metadata"]);
        assert_eq!(names("Amain"), ["prio", "tie"]);
        assert!(names("Bmain").is_empty());
        assert_eq!(m.versions()["generic"], "1.0");
    }
}
