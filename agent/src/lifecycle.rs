//! The agent's life: assembly (hardware managers, command extensions) and start-up in IPA's
//! order (NICs, inspection, lookup, TLS, API, heartbeats), until lockdown, rescue or a
//! termination signal.
//!
//! This is the top of the crate: it composes the state ([`Agent`]), the commands
//! ([`Executor`]), the API, the conductor client and inspection, and nothing below imports it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use blockdev::DeviceGuard;
use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
use hardware_managers::{HardwareManager, Managers};
use ironic_protocol::{ApiVersion, LookupResponse};
// IPA's marker of a finalised rescue: a restarted agent must not serve again.
use ramdisk_contract::paths::RESCUED_MARKER;

use crate::agent::{AfterStop, Agent};
use crate::commands::{CommandDef, Executor};
use crate::conductor::{self, HeartbeatSettings, Heartbeater, IronicClient, LookupSettings};
use crate::config::{Config, Protocol, TlsVersion};
use crate::logging::LogBuffer;
use crate::plugins::{ManagerContext, ManagerFactory};
use crate::{api, extensions, inspection, lockdown, tls};

/// The assembled agent: its shared state and the commands the API runs on it.
#[derive(Clone)]
pub struct Service {
    pub agent: Arc<Agent>,
    pub executor: Arc<Executor>,
}

impl Service {
    /// The stock agent: IPA's extensions and the built-in hardware managers.
    pub fn new(config: Config, logs: LogBuffer) -> anyhow::Result<Service> {
        Self::build(config, logs, extensions::all(), None)
    }

    /// As [`Service::new`] with a chosen set of extensions (tests add their own).
    pub fn with_extensions(
        config: Config,
        logs: LogBuffer,
        extensions: Vec<(&'static str, Vec<CommandDef>)>,
    ) -> anyhow::Result<Service> {
        Self::build(config, logs, extensions, None)
    }

    /// The agent with its extensions, the built-in hardware managers, the operator's compiled-in
    /// managers (`plugins`, see [`crate::plugins`]) and the external managers of
    /// `config.managers_dir`. A broken external manifest or a name used twice stops start-up.
    pub fn build(
        config: Config,
        logs: LogBuffer,
        extensions: Vec<(&'static str, Vec<CommandDef>)>,
        plugins: Option<ManagerFactory>,
    ) -> anyhow::Result<Service> {
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
            extra.extend(factory(&ManagerContext {
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
        let agent = Agent::new_cyclic(config, guard, logs, |weak| {
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
            managers
        });
        Ok(Service {
            agent,
            executor: Arc::new(Executor::new(extensions)),
        })
    }

    /// The API router on this agent.
    pub fn router(&self) -> axum::Router {
        api::router(self.agent.clone(), self.executor.clone())
    }

    /// Runs the agent until it is told to stop. Returns an error for conditions after which
    /// IPA exits (lookup timeout, unusable configuration) so the service manager restarts it.
    pub async fn run(self) -> anyhow::Result<()> {
        let agent = &self.agent;
        if std::path::Path::new(RESCUED_MARKER).exists() && agent.guard().in_ramdisk() {
            tracing::warn!("{RESCUED_MARKER} exists: rescue was finalised, not serving the API");
            return idle_forever().await;
        }
        let opts = &agent.config().options;
        if opts.hardware_initialization_delay > 0 {
            tracing::info!(
                seconds = opts.hardware_initialization_delay,
                "hardware initialisation delay"
            );
            tokio::time::sleep(Duration::from_secs(opts.hardware_initialization_delay)).await;
        }
        let macs = wait_for_nics(agent).await;
        // IPA's order: inspection before lookup; its node UUID helps lookup; its failure is
        // logged and lookup goes on.
        let mut inspected_uuid = None;
        if inspection::enabled(opts) {
            match inspection::inspect(agent).await {
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
            let identity = static_identity(agent)?;
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
        process_lookup(agent, lookup).await?;

        let version = client.api_version().await;
        let advertise = conductor::detect_advertise_address(opts, &client.urls()).await?;
        let identity = match static_identity(agent)? {
            Some(id) => Some(id),
            None if opts.enable_auto_tls && version >= ApiVersion::AGENT_VERIFY_CA => Some(
                tls::auto_tls(
                    &advertise,
                    opts.tls_certificate_curve,
                    opts.auto_tls_allowed_clock_skew,
                    &agent.config().state_dir,
                    effective_tls_min_version(agent),
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
            token: {
                let agent = Arc::downgrade(agent);
                Arc::new(move || {
                    agent
                        .upgrade()
                        .and_then(|a| a.token())
                        .map(ironic_protocol::Secret::new)
                })
            },
            verify_ca: identity.as_ref().and_then(|i| i.verify_ca_pem.clone()),
            heartbeat_timeout,
        };
        let heartbeater = Heartbeater::new(client, settings, agent.delivery());
        self.serve_until_stopped(listener, identity, Some(heartbeater))
            .await
    }

    async fn serve_until_stopped(
        &self,
        listener: tokio::net::TcpListener,
        identity: Option<tls::ServerIdentity>,
        heartbeater: Option<Heartbeater>,
    ) -> anyhow::Result<()> {
        let agent = &self.agent;
        if identity.is_some() {
            agent.set_https();
        }
        let limits = api::Limits {
            max_connections: agent.config().options.api_max_connections as usize,
            ..api::Limits::default()
        };
        let server = tokio::spawn(api::serve(
            listener,
            identity.map(|i| i.config),
            self.router(),
            limits,
            agent.stopping(),
        ));
        let heartbeats = heartbeater.map(|h| tokio::spawn(h.run(agent.stopping())));
        if supervise(agent, server, heartbeats, shutdown_signal()).await? == Ended::Signalled {
            return Ok(());
        }
        match agent.after_stop() {
            Some(AfterStop::Lockdown) => lockdown::take_network_down(agent.guard()),
            Some(AfterStop::Rescue) => {
                tracing::info!("rescue finalised; the API is stopped, the network stays up")
            }
            None => {}
        }
        idle_forever().await
    }
}

/// How serving ended, when it ended well.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The agent stopped its API (lockdown, finalised rescue).
    Stopped,
    /// A termination signal.
    Signalled,
}

/// Serves until the agent stops its API or `signal` comes, then waits for the API server and
/// the heartbeats to stop. Either task ending while the agent still serves (a panic, or a
/// return it makes only when told to stop) is fatal: a ramdisk whose API or heartbeats are dead
/// looks alive to nobody, so the agent exits non-zero and the init restarts it.
async fn supervise(
    agent: &Agent,
    mut server: tokio::task::JoinHandle<()>,
    mut heartbeats: Option<tokio::task::JoinHandle<()>>,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Ended> {
    let mut stop = agent.stopping();
    let heartbeats_ended = async {
        match heartbeats.as_mut() {
            Some(h) => h.await,
            None => std::future::pending().await,
        }
    };
    let stopping = || *agent.stopping().borrow();
    tokio::select! {
        // First, so a task that ended because it was told to stop is not taken for dead.
        biased;
        _ = stop.wait_for(|s| *s) => {}
        _ = signal => {
            tracing::info!("termination signal received, exiting");
            agent.stop_serving();
            joined("API server", server.await)?;
            return Ok(Ended::Signalled);
        }
        ended = &mut server, if !stopping() => return Err(died("API server", ended)),
        ended = heartbeats_ended, if !stopping() => return Err(died("heartbeat", ended)),
    }
    joined("API server", server.await)?;
    if let Some(h) = heartbeats {
        joined("heartbeat", h.await)?;
    }
    Ok(Ended::Stopped)
}

fn joined(task: &str, ended: Result<(), tokio::task::JoinError>) -> anyhow::Result<()> {
    ended.map_err(|e| anyhow::anyhow!("the {task} task failed: {e}"))
}

fn died(task: &str, ended: Result<(), tokio::task::JoinError>) -> anyhow::Error {
    let error = match ended {
        Ok(()) => anyhow::anyhow!("the {task} task ended while the agent was serving"),
        Err(e) => anyhow::anyhow!("the {task} task failed: {e}"),
    };
    tracing::error!("{error}");
    error
}

fn static_identity(agent: &Agent) -> anyhow::Result<Option<tls::ServerIdentity>> {
    let opts = &agent.config().options;
    if !opts.listen_tls {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&opts.tls_cert_file, &opts.tls_key_file) else {
        bail!("listen_tls is set but tls_cert_file and tls_key_file are not both given");
    };
    Ok(Some(tls::static_tls(
        cert.as_ref(),
        key.as_ref(),
        effective_tls_min_version(agent),
        opts.tls_cipher_suites.as_deref(),
    )?))
}

/// The conductor may raise the TLS minimum at lookup (`tls_min_version`).
fn effective_tls_min_version(agent: &Agent) -> TlsVersion {
    let from_lookup = agent
        .lookup_config()
        .and_then(|c| c.tls_min_version)
        .and_then(|v| match v.as_str() {
            "1.3" => Some(TlsVersion::V1_3),
            "1.2" => Some(TlsVersion::V1_2),
            _ => None,
        });
    match (agent.config().options.tls_min_version, from_lookup) {
        (TlsVersion::V1_3, _) | (_, Some(TlsVersion::V1_3)) => TlsVersion::V1_3,
        _ => TlsVersion::V1_2,
    }
}

/// Waits up to 60 s for a NIC with a MAC address; returns every MAC (for lookup).
async fn wait_for_nics(agent: &Agent) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let macs: Vec<String> = match agent.managers().list_network_interfaces() {
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

/// Adopts the lookup; an agent that may not be driven (the token went to someone else) cuts
/// itself off the network in a ramdisk, and exits elsewhere.
async fn process_lookup(agent: &Agent, lookup: LookupResponse) -> anyhow::Result<()> {
    if let Err(e) = agent.apply_lookup(lookup) {
        tracing::error!("{e}");
        if agent.guard().in_ramdisk() {
            lockdown::take_network_down(agent.guard());
            return idle_forever().await;
        }
        bail!(e);
    }
    Ok(())
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

    fn service() -> Service {
        let config = Config::from_args(["ironic-agent", "--cmdline-file", "/dev/null"]).unwrap();
        Service::new(config, LogBuffer::new(1024)).unwrap()
    }

    fn serving_until_stopped(agent: &Agent) -> tokio::task::JoinHandle<()> {
        let mut stop = agent.stopping();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    }

    #[tokio::test]
    async fn a_panicking_api_server_ends_serving_with_an_error() {
        let s = service();
        let server = tokio::spawn(async { panic!("API boom") });
        let heartbeats = serving_until_stopped(&s.agent);
        let error = supervise(&s.agent, server, Some(heartbeats), std::future::pending())
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("API server task failed"), "{text}");
        assert!(text.contains("API boom"), "{text}");
    }

    #[tokio::test]
    async fn a_panicking_heartbeater_ends_serving_with_an_error() {
        let s = service();
        let server = serving_until_stopped(&s.agent);
        let heartbeats = tokio::spawn(async { panic!("heartbeat boom") });
        let error = supervise(&s.agent, server, Some(heartbeats), std::future::pending())
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("heartbeat task failed"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn stopping_and_signals_end_serving_cleanly() {
        let s = service();
        let (server, heartbeats) = (
            serving_until_stopped(&s.agent),
            serving_until_stopped(&s.agent),
        );
        s.agent.stop_serving();
        let ended = supervise(&s.agent, server, Some(heartbeats), std::future::pending()).await;
        assert_eq!(ended.unwrap(), Ended::Stopped);

        let s = service();
        let server = serving_until_stopped(&s.agent);
        let ended = supervise(&s.agent, server, None, async {}).await;
        assert_eq!(ended.unwrap(), Ended::Signalled);
        assert!(*s.agent.stopping().borrow(), "a signal stops the API");
    }
}
