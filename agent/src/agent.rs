//! The state every command, the API and the heartbeat loop share, and its accessors.
//!
//! This file only holds state: the start-up sequence that builds an [`Agent`] and runs it is
//! [`crate::lifecycle`]. What the conductor gives the agent over its life (the token, the
//! node, the lookup settings) and what deploy commands record for later ones (the image on
//! the disk, its partition UUIDs) is one `Session` behind one lock, so a reader never sees a
//! half-applied lookup.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blockdev::DeviceGuard;
use hardware_managers::Managers;
use ironic_protocol::{LookupConfig, LookupResponse, Node};
use tokio::sync::watch;

use crate::commands::{CommandHistory, Delivery};
use crate::config::Config;
use crate::logging::LogBuffer;

/// What happens after the API stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// `system.lockdown`: take the NICs down and idle (ramdisk only).
    Lockdown,
    /// `rescue.finalize_rescue`: keep the network, idle; the rescue user takes over.
    Rescue,
}

/// What the conductor told the agent and what commands recorded, changed together.
#[derive(Debug, Default)]
struct Session {
    token: Option<String>,
    /// The node as last sent by the conductor (lookup or a command's `node` parameter).
    node: Option<Node>,
    lookup_config: Option<LookupConfig>,
    /// `get_partition_uuids` answer, recorded when an image is written.
    partition_uuids: Option<serde_json::Value>,
    /// `image_info.id` of the image on the install disk (IPA's `cached_image_id`).
    cached_image_id: Option<String>,
    /// `https` once the API serves TLS.
    api_scheme: &'static str,
    after_stop: Option<AfterStop>,
}

/// State shared by the API, the heartbeat loop and the commands.
pub struct Agent {
    config: Config,
    guard: DeviceGuard,
    managers: Arc<Managers>,
    history: CommandHistory,
    session: Mutex<Session>,
    delivery: Arc<Delivery>,
    stop_api: watch::Sender<bool>,
    started_at: f64,
    logs: LogBuffer,
}

impl Agent {
    /// An agent whose hardware managers may hold a weak reference to it (the deploy manager
    /// writes images with the agent's settings): `managers` builds them.
    pub fn new_cyclic(
        config: Config,
        guard: DeviceGuard,
        logs: LogBuffer,
        managers: impl FnOnce(&Weak<Agent>) -> Managers,
    ) -> Arc<Agent> {
        let token = config.options.agent_token.as_ref().map(|s| s.0.clone());
        Arc::new_cyclic(|weak| Agent {
            managers: Arc::new(managers(weak)),
            guard,
            history: CommandHistory::default(),
            session: Mutex::new(Session {
                token,
                api_scheme: "http",
                ..Session::default()
            }),
            delivery: Arc::new(Delivery::default()),
            stop_api: watch::channel(false).0,
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            logs,
            config,
        })
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        // Nothing panics while holding the lock (plain field updates), so a poisoned lock
        // still holds consistent state.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn guard(&self) -> &DeviceGuard {
        &self.guard
    }

    pub fn managers(&self) -> Arc<Managers> {
        self.managers.clone()
    }

    /// Every command call and its outcome, in order, as the conductor polls them.
    pub fn history(&self) -> &CommandHistory {
        &self.history
    }

    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    pub fn started_at(&self) -> f64 {
        self.started_at
    }

    pub fn api_scheme(&self) -> &'static str {
        self.session().api_scheme
    }

    /// The API serves TLS from now on (for the links it answers with).
    pub fn set_https(&self) {
        self.session().api_scheme = "https";
    }

    /// Whether `candidate` is our agent token. Without a token nothing matches.
    pub fn token_matches(&self, candidate: &str) -> bool {
        match self.session().token.as_deref() {
            Some(token) => constant_time_eq(token.as_bytes(), candidate.as_bytes()),
            None => false,
        }
    }

    /// The token, for the heartbeat loop.
    pub fn token(&self) -> Option<String> {
        self.session().token.clone()
    }

    /// Adopts a token (as lookup does).
    pub fn set_token(&self, token: &str) {
        self.session().token = Some(token.to_string());
    }

    /// The node as last sent by the conductor (lookup or a command's `node` parameter).
    pub fn node(&self) -> Option<Node> {
        self.session().node.clone()
    }

    pub fn cache_node(&self, node: &Node) {
        self.session().node = Some(node.clone());
    }

    pub fn lookup_config(&self) -> Option<LookupConfig> {
        self.session().lookup_config.clone()
    }

    /// What the inventory needs from the agent: `BOOTIF`, the conductor's
    /// `agent_skip_bmc_detect` (known after lookup), `ipa-collect-lldp`/`ipa-lldp-timeout`.
    pub fn inventory_request(&self) -> hardware_managers::InventoryRequest {
        let opts = &self.config.options;
        hardware_managers::InventoryRequest {
            pxe_interface: self.config.bootif().map(str::to_string),
            skip_bmc_detect: self
                .lookup_config()
                .and_then(|c| c.agent_skip_bmc_detect)
                .unwrap_or(false),
            lldp_timeout: opts
                .collect_lldp
                .then(|| Duration::from_secs_f64(opts.lldp_timeout.max(0.0))),
        }
    }

    pub fn partition_uuids(&self) -> Option<serde_json::Value> {
        self.session().partition_uuids.clone()
    }

    pub fn set_partition_uuids(&self, uuids: serde_json::Value) {
        self.session().partition_uuids = Some(uuids);
    }

    pub fn cached_image_id(&self) -> Option<String> {
        self.session().cached_image_id.clone()
    }

    pub fn set_cached_image_id(&self, id: Option<String>) {
        self.session().cached_image_id = id;
    }

    /// The disks no longer hold the image last written (a write began, or a step erased
    /// them): `prepare_image` of that image must write it again, and its partition UUIDs
    /// are stale.
    pub fn forget_written_image(&self) {
        let mut session = self.session();
        session.cached_image_id = None;
        session.partition_uuids = None;
    }

    /// Whether the conductor has read the last asynchronous result: drives the early
    /// heartbeat (see [`Delivery`]).
    pub fn delivery(&self) -> Arc<Delivery> {
        self.delivery.clone()
    }

    /// Stops serving the API and heartbeating, then does `after`.
    pub fn stop_api(&self, after: AfterStop) {
        self.session().after_stop = Some(after);
        self.stop_api.send_replace(true);
    }

    /// Stops serving the API without anything to do afterwards (a termination signal).
    pub fn stop_serving(&self) {
        self.stop_api.send_replace(true);
    }

    /// Becomes `true` when the API is to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop_api.subscribe()
    }

    /// What [`Agent::stop_api`] asked to do once the API stopped.
    pub fn after_stop(&self) -> Option<AfterStop> {
        self.session().after_stop
    }

    /// IPA's `process_lookup_data`: adopt the token, cache the node and conductor settings.
    /// `Err` when the conductor already issued the token and we have none: nobody may drive
    /// this agent then.
    pub fn apply_lookup(&self, lookup: LookupResponse) -> Result<(), TokenAlreadyIssued> {
        let mut session = self.session();
        match lookup
            .config
            .agent_token
            .as_ref()
            .map(ironic_protocol::Secret::expose)
        {
            Some(t) if t.len() >= 32 => {
                session.token = Some(t.to_string());
                tracing::info!("agent token received at lookup");
            }
            Some(LookupConfig::TOKEN_ALREADY_ISSUED) => {
                if session.token.is_none() {
                    return Err(TokenAlreadyIssued);
                }
                tracing::info!("the conductor already issued our pre-shared token; keeping it");
            }
            _ => tracing::warn!("lookup returned no usable agent token"),
        }
        session.node = Some(lookup.node);
        session.lookup_config = Some(lookup.config);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the conductor says a token was already issued for this node, and we have none: another \
     agent or an earlier run of this one holds it. Refusing to serve; power-cycle the node (or \
     restart the agent with ipa-agent-token) to get a new token"
)]
pub struct TokenAlreadyIssued;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
