//! The agent's life: start-up in IPA's order (hardware managers, NICs, lookup, TLS, API,
//! heartbeats) and the state every command shares.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use blockdev::DeviceGuard;
use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
use hardware_managers::{HardwareManager, Managers};
use ironic_protocol::{ApiVersion, LookupConfig, LookupResponse, Node};
use tokio::sync::{watch, Notify};

use crate::commands::Executor;
use crate::conductor::{self, HeartbeatSettings, Heartbeater, IronicClient, LookupSettings};
use crate::config::{Config, Protocol};
use crate::logging::LogBuffer;
use crate::{api, extensions, tls};

/// What happens after the API stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// `system.lockdown`: take the NICs down and idle (ramdisk only).
    Lockdown,
    /// `rescue.finalize_rescue`: keep the network, idle; the rescue user takes over.
    Rescue,
}

/// Marker IPA leaves once rescue is finalised; a restarted agent must not serve again.
const RESCUED_MARKER: &str = "/etc/.rescued";

/// State shared by the API, the heartbeat loop and the commands.
pub struct Agent {
    config: Config,
    guard: DeviceGuard,
    managers: Arc<Managers>,
    executor: Executor,
    token: RwLock<Option<String>>,
    node: RwLock<Option<Node>>,
    lookup_config: RwLock<Option<LookupConfig>>,
    force_heartbeat: Arc<Notify>,
    stop_api: watch::Sender<bool>,
    after_stop: Mutex<Option<AfterStop>>,
    api_scheme: RwLock<&'static str>,
    /// `get_partition_uuids` answer, recorded when an image is written.
    partition_uuids: Mutex<Option<serde_json::Value>>,
    /// `image_info.id` of the image on the install disk (IPA's `cached_image_id`).
    cached_image_id: Mutex<Option<String>>,
    started_at: f64,
    logs: LogBuffer,
}

impl Agent {
    /// Loads the hardware managers and the command extensions.
    pub fn new(config: Config, logs: LogBuffer) -> anyhow::Result<Arc<Agent>> {
        Self::with_extensions(config, logs, extensions::all())
    }

    /// As [`Agent::new`] with a chosen set of extensions (tests add their own).
    pub fn with_extensions(
        config: Config,
        logs: LogBuffer,
        extensions: Vec<(&'static str, Vec<crate::commands::CommandDef>)>,
    ) -> anyhow::Result<Arc<Agent>> {
        Self::build(config, logs, extensions, None)
    }

    /// The agent with its extensions, the built-in hardware managers, the operator's compiled-in
    /// managers (`plugins`, see [`crate::plugins`]) and the external managers of
    /// `config.managers_dir`. A broken external manifest or a name used twice stops start-up.
    pub fn build(
        config: Config,
        logs: LogBuffer,
        extensions: Vec<(&'static str, Vec<crate::commands::CommandDef>)>,
        plugins: Option<crate::plugins::ManagerFactory>,
    ) -> anyhow::Result<Arc<Agent>> {
        let guard = DeviceGuard::detect(&config.allow_devices)?;
        if guard.in_ramdisk() {
            tracing::info!("running in a ramdisk: all local devices are available to steps");
        } else {
            let allowed: Vec<_> = guard
                .allowed_paths()
                .map(|p| p.display().to_string())
                .collect();
            tracing::warn!(
                allowed = %allowed.join(","),
                "not running in a ramdisk: only explicitly allowed devices will be listed or touched, \
                 power_off and lockdown only log"
            );
        }
        let generic = GenericHardwareManager::new(
            guard.clone(),
            GenericOptions {
                guard_special_filesystems: config.options.guard_special_filesystems,
                enable_discard_erase: config.options.enable_discard_erase,
            },
        );
        let mut extra: Vec<Box<dyn HardwareManager>> = Vec::new();
        if let Some(factory) = plugins {
            extra.extend(factory(&crate::plugins::ManagerContext {
                guard: &guard,
                config: &config,
            }));
        }
        for m in hardware_managers::external::load_dir(&config.managers_dir, &guard)
            .context("loading external hardware managers")?
        {
            extra.push(Box::new(m));
        }
        crate::plugins::check_unique(
            &[(
                GenericHardwareManager::NAME,
                GenericHardwareManager::VERSION_NAME,
            )],
            &extra,
        )?;
        let runtime = tokio::runtime::Handle::try_current()
            .context("the agent must be created inside its async runtime")?;
        let token = config.options.agent_token.as_ref().map(|s| s.0.clone());
        let agent = Arc::new_cyclic(|weak| {
            let managers: Vec<Box<dyn HardwareManager>> = vec![
                Box::new(generic),
                Box::new(crate::deploy::DeployManager::new(
                    weak.clone(),
                    runtime.clone(),
                )),
            ];
            let managers: Vec<Box<dyn HardwareManager>> =
                managers.into_iter().chain(extra).collect();
            // Managers::new fails only when no manager supports the machine, and the generic
            // one supports every machine.
            let managers =
                Managers::new(managers).expect("the generic manager is always supported");
            tracing::info!(managers = ?managers, "hardware managers loaded");
            Agent {
                executor: Executor::new(extensions),
                guard,
                managers: Arc::new(managers),
                token: RwLock::new(token),
                node: RwLock::new(None),
                lookup_config: RwLock::new(None),
                force_heartbeat: Arc::new(Notify::new()),
                stop_api: watch::channel(false).0,
                after_stop: Mutex::new(None),
                api_scheme: RwLock::new("http"),
                partition_uuids: Mutex::new(None),
                cached_image_id: Mutex::new(None),
                started_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default(),
                logs,
                config,
            }
        });
        Ok(agent)
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

    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    pub fn started_at(&self) -> f64 {
        self.started_at
    }

    pub fn api_scheme(&self) -> &'static str {
        *self.api_scheme.read().expect("scheme lock")
    }

    /// Whether `candidate` is our agent token. Without a token nothing matches.
    pub fn token_matches(&self, candidate: &str) -> bool {
        match self.token.read().expect("token lock").as_deref() {
            Some(token) => constant_time_eq(token.as_bytes(), candidate.as_bytes()),
            None => false,
        }
    }

    /// Adopts a token (as lookup does).
    pub fn set_token(&self, token: &str) {
        *self.token.write().expect("token lock") = Some(token.to_string());
    }

    /// The node as last sent by the conductor (lookup or a command's `node` parameter).
    pub fn node(&self) -> Option<Node> {
        self.node.read().expect("node lock").clone()
    }

    pub fn cache_node(&self, node: &Node) {
        *self.node.write().expect("node lock") = Some(node.clone());
    }

    pub fn lookup_config(&self) -> Option<LookupConfig> {
        self.lookup_config.read().expect("lookup lock").clone()
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
        self.partition_uuids.lock().expect("uuids lock").clone()
    }

    pub fn set_partition_uuids(&self, uuids: serde_json::Value) {
        *self.partition_uuids.lock().expect("uuids lock") = Some(uuids);
    }

    pub fn cached_image_id(&self) -> Option<String> {
        self.cached_image_id.lock().expect("cache lock").clone()
    }

    pub fn set_cached_image_id(&self, id: Option<String>) {
        *self.cached_image_id.lock().expect("cache lock") = id;
    }

    /// Called when an async command finishes: heartbeat early so the conductor notices.
    pub fn command_finished(&self, command: &str) {
        tracing::debug!(
            command,
            "async command finished, requesting an early heartbeat"
        );
        self.force_heartbeat.notify_one();
    }

    /// Stops serving the API and heartbeating, then does `after`.
    pub fn stop_api(&self, after: AfterStop) {
        *self.after_stop.lock().expect("after-stop lock") = Some(after);
        self.stop_api.send_replace(true);
    }

    /// Runs the agent until it is told to stop. Returns an error for conditions after which
    /// IPA exits (lookup timeout, unusable configuration) so the service manager restarts it.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        if std::path::Path::new(RESCUED_MARKER).exists() && self.guard.in_ramdisk() {
            tracing::warn!("{RESCUED_MARKER} exists: rescue was finalised, not serving the API");
            return idle_forever().await;
        }
        let opts = &self.config.options;
        if opts.hardware_initialization_delay > 0 {
            tracing::info!(
                seconds = opts.hardware_initialization_delay,
                "hardware initialisation delay"
            );
            tokio::time::sleep(Duration::from_secs(opts.hardware_initialization_delay)).await;
        }
        let macs = self.wait_for_nics().await;
        // IPA's order: inspection before lookup; its node UUID helps lookup; its failure is
        // logged and lookup goes on.
        let mut inspected_uuid = None;
        if crate::inspection::enabled(opts) {
            match crate::inspection::inspect(&self).await {
                Ok(uuid) => inspected_uuid = uuid,
                Err(e) => tracing::error!("inspection failed: {e}; proceeding with lookup"),
            }
        }

        if opts.api_url.0.is_empty() {
            if opts.inspection_callback_url.is_some() {
                tracing::info!("no ipa-api-url: lookup and heartbeats skipped after inspection");
            }
            tracing::warn!("no ipa-api-url: serving the API without lookup or heartbeats");
            let listener = api::bind(&opts.listen_host, opts.listen_port)
                .await
                .context("binding the API")?;
            let identity = self.static_identity()?;
            return self.serve_until_stopped(listener, identity, None).await;
        }

        let client = Arc::new(IronicClient::new(opts)?);
        if let Some(uuid) = &inspected_uuid {
            tracing::info!(node = %uuid, "looking up the node inspection named");
        }
        let lookup = conductor::lookup_node(
            &client,
            &macs,
            inspected_uuid.as_deref(),
            &LookupSettings {
                timeout: Duration::from_secs(opts.lookup_timeout),
                interval: Duration::from_secs(opts.lookup_interval.max(1)),
            },
        )
        .await?;
        let node_uuid = lookup.node.uuid().unwrap_or_default().to_string();
        let heartbeat_timeout = lookup.config.heartbeat_timeout_secs();
        self.process_lookup(lookup).await?;

        let version = client.api_version().await;
        let advertise = conductor::detect_advertise_address(opts, &client.urls()).await?;
        let identity = match self.static_identity()? {
            Some(id) => Some(id),
            None if opts.enable_auto_tls && version >= ApiVersion::AGENT_VERIFY_CA => Some(
                tls::auto_tls(
                    &advertise,
                    opts.tls_certificate_curve,
                    opts.auto_tls_allowed_clock_skew,
                    &self.config.state_dir,
                    self.effective_tls_min_version(),
                    opts.tls_cipher_suites.as_deref(),
                )
                .context("setting up auto-TLS")?,
            ),
            None => None,
        };
        let protocol = if identity.is_some() {
            Protocol::Https
        } else {
            opts.advertise_protocol
        };
        let callback_url = conductor::callback_url(protocol, &advertise, opts.advertise_port);
        let listener = api::bind(&opts.listen_host, opts.listen_port)
            .await
            .with_context(|| {
                format!(
                    "binding the API to [{}]:{}",
                    opts.listen_host, opts.listen_port
                )
            })?;
        tracing::info!(%callback_url, tls = identity.is_some(), "agent API listening");

        let settings = HeartbeatSettings {
            node_uuid,
            callback_url,
            token: self.token.read().expect("token lock").clone(),
            verify_ca: identity.as_ref().and_then(|i| i.verify_ca_pem.clone()),
            heartbeat_timeout,
        };
        let heartbeater = Heartbeater::new(client, settings, self.force_heartbeat.clone());
        self.serve_until_stopped(listener, identity, Some(heartbeater))
            .await
    }

    fn static_identity(&self) -> anyhow::Result<Option<tls::ServerIdentity>> {
        let opts = &self.config.options;
        if !opts.listen_tls {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&opts.tls_cert_file, &opts.tls_key_file) else {
            bail!("listen_tls is set but tls_cert_file and tls_key_file are not both given");
        };
        Ok(Some(tls::static_tls(
            cert.as_ref(),
            key.as_ref(),
            self.effective_tls_min_version(),
            opts.tls_cipher_suites.as_deref(),
        )?))
    }

    /// The conductor may raise the TLS minimum at lookup (`tls_min_version`).
    fn effective_tls_min_version(&self) -> crate::config::TlsVersion {
        use crate::config::TlsVersion;
        let from_lookup = self
            .lookup_config()
            .and_then(|c| c.tls_min_version)
            .and_then(|v| match v.as_str() {
                "1.3" => Some(TlsVersion::V1_3),
                "1.2" => Some(TlsVersion::V1_2),
                _ => None,
            });
        match (self.config.options.tls_min_version, from_lookup) {
            (TlsVersion::V1_3, _) | (_, Some(TlsVersion::V1_3)) => TlsVersion::V1_3,
            _ => TlsVersion::V1_2,
        }
    }

    async fn serve_until_stopped(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        identity: Option<tls::ServerIdentity>,
        heartbeater: Option<Heartbeater>,
    ) -> anyhow::Result<()> {
        if identity.is_some() {
            *self.api_scheme.write().expect("scheme lock") = "https";
        }
        let server = tokio::spawn(api::serve(
            listener,
            identity.map(|i| i.config),
            api::router(self.clone()),
            self.stop_api.subscribe(),
        ));
        let heartbeats = heartbeater.map(|h| tokio::spawn(h.run(self.stop_api.subscribe())));
        let mut stop = self.stop_api.subscribe();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = shutdown_signal() => {
                tracing::info!("termination signal received, exiting");
                self.stop_api.send_replace(true);
                let _ = server.await;
                return Ok(());
            }
        }
        let _ = server.await;
        if let Some(h) = heartbeats {
            let _ = h.await;
        }
        let after = *self.after_stop.lock().expect("after-stop lock");
        match after {
            Some(AfterStop::Lockdown) => crate::extensions::system::take_network_down(&self.guard),
            Some(AfterStop::Rescue) => {
                tracing::info!("rescue finalised; the API is stopped, the network stays up")
            }
            None => {}
        }
        idle_forever().await
    }

    /// Waits up to 60 s for a NIC with a MAC address; returns every MAC (for lookup).
    async fn wait_for_nics(&self) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let macs: Vec<String> = match self.managers.list_network_interfaces() {
                Ok(list) => list.into_iter().filter_map(|i| i.mac_address).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "listing network interfaces failed");
                    Vec::new()
                }
            };
            if !macs.is_empty() || tokio::time::Instant::now() >= deadline {
                tracing::info!(macs = %macs.join(","), "network interfaces found");
                return macs;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// IPA's `process_lookup_data`: adopt the token, cache the node and conductor settings.
    /// `Err` when the conductor already issued the token and we have none: nobody may drive
    /// this agent then.
    pub fn apply_lookup(&self, lookup: LookupResponse) -> Result<(), TokenAlreadyIssued> {
        match lookup.config.agent_token.as_deref() {
            Some(t) if t.len() >= 32 => {
                self.set_token(t);
                tracing::info!("agent token received at lookup");
            }
            Some(LookupConfig::TOKEN_ALREADY_ISSUED) => {
                if self.token.read().expect("token lock").is_none() {
                    return Err(TokenAlreadyIssued);
                }
                tracing::info!("the conductor already issued our pre-shared token; keeping it");
            }
            _ => tracing::warn!("lookup returned no usable agent token"),
        }
        self.cache_node(&lookup.node);
        *self.lookup_config.write().expect("lookup lock") = Some(lookup.config);
        Ok(())
    }

    async fn process_lookup(&self, lookup: LookupResponse) -> anyhow::Result<()> {
        if let Err(e) = self.apply_lookup(lookup) {
            tracing::error!("{e}");
            if self.guard.in_ramdisk() {
                crate::extensions::system::take_network_down(&self.guard);
                return idle_forever().await;
            }
            bail!(e);
        }
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn idle_forever() -> anyhow::Result<()> {
    shutdown_signal().await;
    Ok(())
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
