//! A small typed client for the Ironic REST API, as an operator would drive it: enroll a
//! node and its port, move it through provision states, watch it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http;

/// Ironic 39.0.0's maximum API microversion; no auth (noauth).
pub const API_VERSION: &str = "1.115";

/// Stable states: once the node leaves the state it was in when a wait began, reaching one
/// of these that is not the awaited state ends the wait with an error.
const STABLE_STATES: &[&str] = &[
    "enroll",
    "manageable",
    "available",
    "active",
    "rescue",
    "service hold",
    "clean hold",
    "deploy hold",
    "clean failed",
    "deploy failed",
    "inspect failed",
    "rescue failed",
    "service failed",
    "error",
];

/// The node fields the harness looks at.
#[derive(Debug, Clone, Deserialize)]
pub struct Node {
    pub uuid: String,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub power_state: Option<String>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub clean_step: Option<Value>,
    #[serde(default)]
    pub deploy_step: Option<Value>,
    #[serde(default)]
    pub driver_internal_info: Value,
}

impl Node {
    /// Name of the clean or deploy step in progress, if any.
    pub fn current_step(&self) -> Option<String> {
        [&self.clean_step, &self.deploy_step]
            .into_iter()
            .flatten()
            .find_map(|s| s.get("step").and_then(Value::as_str).map(str::to_string))
    }

    /// `clean wait (target available, step erase_devices_metadata)`.
    pub fn describe(&self) -> String {
        let mut s = self.provision_state.clone();
        let mut extra = Vec::new();
        if let Some(t) = &self.target_provision_state {
            extra.push(format!("target {t}"));
        }
        if let Some(step) = self.current_step() {
            extra.push(format!("step {step}"));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        s
    }
}

/// The node an agent test enrolls: fake-hardware with the direct deploy interface.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub local_gb: u64,
    pub cpu_arch: String,
    /// `properties.root_device`: root device hints, e.g. `{"name": "/dev/loop7"}`.
    pub root_device: Option<Value>,
    /// `properties.skip_block_devices`: hints of disks no step may erase or deploy onto.
    pub skip_block_devices: Option<Value>,
    /// `properties.capabilities`, e.g. `boot_mode:uefi` (without it the agent lays out
    /// partition images for the boot mode it runs in, as IPA does).
    pub capabilities: Option<String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            name: "e2e-node".into(),
            memory_mb: 2048,
            cpus: 1,
            local_gb: 1,
            cpu_arch: "x86_64".into(),
            root_device: None,
            skip_block_devices: None,
            capabilities: None,
        }
    }
}

impl NodeSpec {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "driver": "fake-hardware",
            "boot_interface": "fake",
            "deploy_interface": "direct",
            "power_interface": "fake",
            "management_interface": "fake",
            "network_interface": "noop",
            "properties": {
                "memory_mb": self.memory_mb,
                "cpus": self.cpus,
                "local_gb": self.local_gb,
                "cpu_arch": self.cpu_arch,
                // FakeManagement cannot set boot device "disk"; Ironic skips that call for
                // Lenovo + UEFI (bug 2053064 quirk), which lets a direct deploy finish.
                "vendor": "lenovo",
            },
        });
        if let Some(hints) = &self.root_device {
            v["properties"]["root_device"] = hints.clone();
        }
        if let Some(list) = &self.skip_block_devices {
            v["properties"]["skip_block_devices"] = list.clone();
        }
        if let Some(caps) = &self.capabilities {
            v["properties"]["capabilities"] = json!(caps);
        }
        v
    }
}

/// A provision-state change request (`PUT /v1/nodes/<id>/states/provision`).
#[derive(Clone)]
pub enum Provision {
    Manage,
    Provide,
    /// Manual cleaning with explicit steps, e.g.
    /// `{"interface": "deploy", "step": "erase_devices_metadata"}`.
    Clean(Vec<Value>),
    /// `active`: deploy the node's `instance_info`.
    Deploy,
    /// `active` with a config drive: gzipped and base64-encoded ISO 9660 or VFAT data (a
    /// string), or a JSON object Ironic builds the drive from.
    DeployWithConfigdrive(Value),
    /// `deleted`: undeploy (then automated cleaning).
    Undeploy,
    Abort,
}

/// Short: a config drive is shown by its size only.
impl std::fmt::Debug for Provision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provision::Manage => f.write_str("Manage"),
            Provision::Provide => f.write_str("Provide"),
            Provision::Clean(steps) => f.debug_tuple("Clean").field(steps).finish(),
            Provision::Deploy => f.write_str("Deploy"),
            Provision::DeployWithConfigdrive(cd) => write!(
                f,
                "DeployWithConfigdrive({} characters)",
                cd.to_string().len()
            ),
            Provision::Undeploy => f.write_str("Undeploy"),
            Provision::Abort => f.write_str("Abort"),
        }
    }
}

impl Provision {
    fn body(&self) -> Value {
        match self {
            Provision::Manage => json!({"target": "manage"}),
            Provision::Provide => json!({"target": "provide"}),
            Provision::Clean(steps) => json!({"target": "clean", "clean_steps": steps}),
            Provision::Deploy => json!({"target": "active"}),
            Provision::DeployWithConfigdrive(cd) => {
                json!({"target": "active", "configdrive": cd})
            }
            Provision::Undeploy => json!({"target": "deleted"}),
            Provision::Abort => json!({"target": "abort"}),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IronicClient {
    base: String,
    timeout: Duration,
}

impl IronicClient {
    /// `base` like `http://10.251.3.1:6385`.
    pub fn new(base: &str) -> IronicClient {
        IronicClient {
            base: base.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One API call; returns status and parsed JSON (`null` for an empty body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let data = body.map(serde_json::to_vec).transpose()?;
        let r = http::request(
            method,
            &url,
            &[
                ("X-OpenStack-Ironic-API-Version", API_VERSION),
                ("Content-Type", "application/json"),
            ],
            data.as_deref(),
            self.timeout,
        )?;
        let value = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(r.text()))
        };
        Ok((r.status, value))
    }

    /// Like [`IronicClient::call`], but any non-2xx status is an error with Ironic's message.
    fn expect(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!(
                "{method} {path} -> {status}: {}",
                fault_message(&value).unwrap_or_else(|| value.to_string())
            );
        }
        Ok(value)
    }

    pub fn create_node(&self, spec: &NodeSpec) -> Result<Node> {
        let v = self
            .expect("POST", "/v1/nodes", Some(&spec.to_json()))
            .context("creating node")?;
        serde_json::from_value(v).context("parsing created node")
    }

    /// A port with `mac`: how Ironic finds the node when the agent looks up by MAC.
    pub fn create_port(&self, node_uuid: &str, mac: &str) -> Result<Value> {
        self.expect(
            "POST",
            "/v1/ports",
            Some(&json!({"node_uuid": node_uuid, "address": mac})),
        )
        .with_context(|| format!("creating port {mac}"))
    }

    /// JSON-patch `add` operations, e.g. `("/instance_info/image_source", url)`.
    pub fn patch_node(&self, uuid: &str, adds: &[(&str, Value)]) -> Result<Node> {
        let ops: Vec<Value> = adds
            .iter()
            .map(|(path, value)| json!({"op": "add", "path": path, "value": value}))
            .collect();
        let v = self
            .expect(
                "PATCH",
                &format!("/v1/nodes/{uuid}"),
                Some(&Value::Array(ops)),
            )
            .context("patching node")?;
        serde_json::from_value(v).context("parsing patched node")
    }

    pub fn set_provision_state(&self, uuid: &str, target: &Provision) -> Result<()> {
        self.expect(
            "PUT",
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(&target.body()),
        )
        .with_context(|| format!("requesting provision state change {target:?}"))?;
        Ok(())
    }

    pub fn get_node(&self, uuid: &str) -> Result<Node> {
        let v = self.expect("GET", &format!("/v1/nodes/{uuid}"), None)?;
        serde_json::from_value(v).context("parsing node")
    }

    /// The node as raw JSON (for diagnostics).
    pub fn get_node_json(&self, uuid: &str) -> Result<Value> {
        self.expect("GET", &format!("/v1/nodes/{uuid}"), None)
    }

    /// Polls until the node is in `wanted`, printing every state transition as
    /// `[<seconds since epoch>] node <state> (+<seconds since this call>)`. Reaching another
    /// stable state (e.g. `clean failed` or `available`) than the one the node started in,
    /// or the timeout, is an error carrying `last_error`.
    pub fn wait_for_provision_state(
        &self,
        uuid: &str,
        wanted: &str,
        timeout: Duration,
        epoch: Instant,
    ) -> Result<Node> {
        self.wait_for_provision_state_with(uuid, wanted, timeout, epoch, &mut |_| Ok(()))
    }

    /// [`IronicClient::wait_for_provision_state`] with a `check` run on every poll; its
    /// error ends the wait (e.g. "the agent process died").
    pub fn wait_for_provision_state_with(
        &self,
        uuid: &str,
        wanted: &str,
        timeout: Duration,
        epoch: Instant,
        check: &mut dyn FnMut(&Node) -> Result<()>,
    ) -> Result<Node> {
        let start = Instant::now();
        let mut last_seen = String::new();
        let mut initial: Option<String> = None;
        loop {
            let node = self.get_node(uuid)?;
            let initial = initial.get_or_insert_with(|| node.provision_state.clone());
            let now = node.describe();
            if now != last_seen {
                println!(
                    "[{:6.1}s] node {now} (+{:.1}s)",
                    epoch.elapsed().as_secs_f64(),
                    start.elapsed().as_secs_f64()
                );
                last_seen = now;
            }
            if node.provision_state == wanted {
                return Ok(node);
            }
            check(&node)?;
            if STABLE_STATES.contains(&node.provision_state.as_str())
                && node.provision_state != *initial
            {
                bail!(
                    "node reached {:?} while waiting for {wanted:?}; last_error: {}",
                    node.provision_state,
                    node.last_error.as_deref().unwrap_or("(none)")
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "node still {:?} after {timeout:?} waiting for {wanted:?}; last_error: {}",
                    node.describe(),
                    node.last_error.as_deref().unwrap_or("(none)")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Ironic's error text from `{"error_message": "{\"faultstring\": ...}"}` or `{"faultstring"}`.
pub fn fault_message(v: &Value) -> Option<String> {
    if let Some(s) = v.get("faultstring").and_then(Value::as_str) {
        return Some(s.to_string());
    }
    let inner = v.get("error_message")?.as_str()?;
    match serde_json::from_str::<Value>(inner) {
        Ok(j) => j
            .get("faultstring")
            .and_then(Value::as_str)
            .map(str::to_string),
        Err(_) => Some(inner.to_string()),
    }
}
