//! In-band inspection (IPA's `inspector.py`): before lookup, collect the inventory and what
//! the configured collectors add, and POST it to Ironic's `/v1/continue_inspection` (or the
//! configured callback URL). Ironic stores the inventory, runs its inspection hooks (node
//! properties, ports) and answers with the node's UUID, which lookup then uses.
//!
//! As in IPA, collectors that fail do not stop the others: their errors are gathered into the
//! `error` field of what is posted (Ironic's `ramdisk-error` hook fails the inspection on it),
//! and the agent goes on to lookup whatever happens here.

pub mod collectors;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hardware_managers::generic::{root_device, smbios};
use ironic_protocol::Node;
use serde_json::{json, Map, Value};

use crate::agent::Agent;
use crate::conductor::{ClientError, IronicClient};
use crate::config::Options;

/// IPA's default collectors when inspection is on and none are configured.
pub const DEFAULT_COLLECTORS: &str = "default,logs";

/// Poll interval of the wait for the PXE NIC's DHCP address.
const DHCP_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    #[error("{0}")]
    Setup(String),
    #[error("posting the inspection data failed: {0}")]
    Post(String),
    /// Ironic refused the data (4xx other than 409).
    #[error("Ironic refused the inspection data: error {status}: {body}")]
    Refused { status: u16, body: String },
    /// Data was posted but collectors failed; Ironic got the errors in `error`.
    #[error("{0}")]
    Collectors(String),
}

/// IPA's `inspector.is_enabled`: a callback URL, or collectors together with an API URL.
pub fn enabled(opts: &Options) -> bool {
    opts.inspection_callback_url.is_some()
        || (opts.inspection_collectors.is_some() && !opts.api_url.0.is_empty())
}

/// Where the data goes: the callback URL(s), else `<api>/v1/continue_inspection` for every
/// API URL.
pub fn callback_urls(opts: &Options) -> Vec<String> {
    match &opts.inspection_callback_url {
        Some(urls) => urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect(),
        None => opts
            .api_url
            .0
            .iter()
            .map(|u| format!("{}/v1/continue_inspection", u.trim_end_matches('/')))
            .collect(),
    }
}

pub fn collector_names(opts: &Options) -> Vec<String> {
    opts.inspection_collectors
        .as_deref()
        .unwrap_or(DEFAULT_COLLECTORS)
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// IPA's retry of the POST: connection errors, 5xx and 409 are retried, 5 attempts, waits of
/// tenacity's `wait_exponential(multiplier=1.5, min=5, max=30)`.
#[derive(Debug, Clone)]
pub struct Retry {
    pub waits: Vec<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            waits: [5.0, 5.0, 6.0, 12.0]
                .into_iter()
                .map(Duration::from_secs_f64)
                .collect(),
        }
    }
}

/// Errors gathered while collecting (IPA's `AccumulatedFailures`).
#[derive(Debug, Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, msg: String) {
        tracing::error!("{msg}");
        self.0.push(msg);
    }

    fn message(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            format!(
                "The following errors were encountered:\n{}",
                self.0
                    .iter()
                    .map(|f| format!("* {f}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }
}

/// Runs inspection: collects, posts, and returns the node UUID Ironic answered with.
pub async fn inspect(agent: &Arc<Agent>) -> Result<Option<String>, InspectionError> {
    let opts = &agent.config().options;
    let urls = callback_urls(opts);
    if urls.iter().any(|u| u == "mdns") {
        return Err(InspectionError::Setup(
            "ipa-inspection-callback-url=mdns: mDNS discovery is not supported by this agent; \
             give the URL"
                .into(),
        ));
    }
    if urls.is_empty() {
        return Err(InspectionError::Setup("no inspection callback URL".into()));
    }
    let names = collector_names(opts);
    tracing::info!(collectors = %names.join(","), urls = %urls.join(","), "inspection is enabled");
    let started = Instant::now();
    let a = agent.clone();
    let (data, failures) = tokio::task::spawn_blocking(move || collect(&a, &names))
        .await
        .map_err(|e| InspectionError::Setup(format!("the collectors crashed: {e}")))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "inspection data collected"
    );
    let client =
        IronicClient::with_urls(opts, urls).map_err(|e| InspectionError::Setup(e.to_string()))?;
    let reply = post(&client, &Value::Object(data), &Retry::default()).await?;
    if let Some(error) = failures.message() {
        return Err(InspectionError::Collectors(error));
    }
    let uuid = reply
        .get("uuid")
        .and_then(Value::as_str)
        .map(str::to_string);
    tracing::info!(
        node = uuid.as_deref().unwrap_or("-"),
        "inspection finished successfully"
    );
    Ok(uuid)
}

/// Runs the collectors in order (blocking: reads sysfs, may wait for DHCP and LLDP).
fn collect(agent: &Agent, names: &[String]) -> (Map<String, Value>, Failures) {
    let mut data = Map::new();
    let mut failures = Failures::default();
    for name in names {
        tracing::info!(collector = %name, "running inspection collector");
        if let Err(e) = run_collector(agent, name, &mut data) {
            failures.add(format!("collector {name} failed: {e}"));
        }
    }
    data.insert(
        "error".into(),
        failures.message().map(Value::String).unwrap_or(Value::Null),
    );
    (data, failures)
}

fn run_collector(agent: &Agent, name: &str, data: &mut Map<String, Value>) -> Result<(), String> {
    let sys = agent.guard().sys_root().to_path_buf();
    match name {
        "default" => collect_default(agent, data),
        "logs" => {
            let bundle = crate::extensions::log::build_bundle(agent)
                .map_err(|e| format!("building the log bundle: {e}"))?;
            data.insert(
                "logs".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(bundle)),
            );
            Ok(())
        }
        "lldp" => {
            let managers = agent.managers();
            let interfaces: Vec<String> = managers
                .list_network_interfaces()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|i| i.name)
                .collect();
            let timeout = Duration::from_secs_f64(agent.config().options.lldp_timeout.max(0.0));
            let lldp = managers
                .collect_lldp_data(&interfaces, timeout)
                .map_err(|e| e.to_string())?;
            data.insert("lldp_raw".into(), json!(lldp));
            Ok(())
        }
        "pci-devices" => {
            data.insert("pci_devices".into(), collectors::pci_devices(&sys)?);
            Ok(())
        }
        "usb-devices" => {
            data.insert("usb_devices".into(), collectors::usb_devices(&sys)?);
            Ok(())
        }
        "dmi-decode" => {
            // As dmidecode on a machine without SMBIOS: no entries, no failure.
            let table = std::fs::read(sys.join(smbios::TABLE)).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no SMBIOS table; the dmi data is empty");
                Vec::new()
            });
            data.insert("dmi".into(), smbios::dmi_inspection_data(&table));
            Ok(())
        }
        "numa-topology" => {
            match collectors::numa_topology(&sys) {
                Ok(v) => {
                    data.insert("numa_topology".into(), v);
                }
                // IPA leaves the key out and does not count it as a failure.
                Err(e) => tracing::warn!("failed to get some NUMA information ({e})"),
            }
            Ok(())
        }
        "extra-hardware" | "benchmark" => Err(format!(
            "the {name} collector runs IPA's python `hardware-detect` tool, which this agent \
             does not ship"
        )),
        other => Err(format!("unknown collector {other:?}")),
    }
}

/// IPA's `collect_default`: the inventory, the disk the deploy would pick, the PXE interface
/// and the configuration.
fn collect_default(agent: &Agent, data: &mut Map<String, Value>) -> Result<(), String> {
    wait_for_dhcp(agent);
    let managers = agent.managers();
    let inventory = managers
        .list_hardware_info(&agent.inventory_request())
        .map_err(|e| format!("collecting the inventory: {e}"))?;
    match root_device::select_root_device(&Node::default(), inventory.disks.clone()) {
        Ok(disk) => {
            tracing::debug!(disk = %disk.name, "default root device");
            data.insert("root_disk".into(), json!(disk));
        }
        Err(e) => tracing::warn!("no suitable root device detected: {e}"),
    }
    data.insert(
        "boot_interface".into(),
        json!(inventory.boot.pxe_interface.clone()),
    );
    data.insert(
        "inventory".into(),
        serde_json::to_value(&inventory).map_err(|e| e.to_string())?,
    );
    let managers_list: Vec<Value> = managers
        .versions()
        .into_iter()
        .map(|(name, version)| json!({"name": name, "version": version}))
        .collect();
    data.insert(
        "configuration".into(),
        json!({
            "collectors": collector_names(&agent.config().options),
            "managers": managers_list,
        }),
    );
    Ok(())
}

/// `BOOTIF` (`01-aa-bb-..` or `aa:bb:..`) as `aa:bb:..`.
pub fn normalize_mac(mac: &str) -> String {
    let mac = match mac.split_once('-') {
        Some((_, rest)) => rest.replace('-', ":"),
        None => mac.to_string(),
    };
    mac.to_ascii_lowercase()
}

/// IPA's `wait_for_dhcp`: up to `inspection_dhcp_wait_timeout` for the PXE NIC (or every NIC
/// with `inspection_dhcp_all_interfaces`) to have an IPv4 address. Never fails: inspection
/// goes on with what there is.
fn wait_for_dhcp(agent: &Agent) {
    let opts = &agent.config().options;
    if opts.inspection_dhcp_wait_timeout == 0 {
        return;
    }
    let pxe_mac = agent.config().bootif().map(normalize_mac);
    if pxe_mac.is_none() && !opts.inspection_dhcp_all_interfaces {
        tracing::warn!("no PXE boot interface known (BOOTIF) - not waiting for its IP address");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(opts.inspection_dhcp_wait_timeout);
    loop {
        let missing: Vec<String> = agent
            .managers()
            .list_network_interfaces()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| {
                opts.inspection_dhcp_all_interfaces
                    || i.mac_address.as_deref().map(str::to_ascii_lowercase) == pxe_mac
            })
            .filter(|i| i.ipv4_address.is_none())
            .map(|i| i.name)
            .collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(missing = %missing.join(","), timeout_s = opts.inspection_dhcp_wait_timeout,
                "not all network interfaces received IP addresses");
            return;
        }
        tracing::debug!(missing = %missing.join(","), "waiting for interfaces to get IP addresses");
        std::thread::sleep(DHCP_RETRY);
    }
}

/// POSTs with IPA's retries; the reply's JSON (`{"uuid": ..}` from Ironic without a version
/// header).
pub async fn post(
    client: &IronicClient,
    body: &Value,
    retry: &Retry,
) -> Result<Value, InspectionError> {
    let mut attempt = 0usize;
    loop {
        let outcome = client.post_to_urls(body).await;
        let retryable = match &outcome {
            Err(ClientError::Unreachable(_)) => true,
            Ok((status, _)) => *status >= 500 || *status == 409,
            Err(_) => false,
        };
        if retryable && attempt < retry.waits.len() {
            let wait = retry.waits[attempt];
            tracing::warn!(attempt = attempt + 1, wait_s = wait.as_secs_f64(),
                outcome = %describe(&outcome), "posting inspection data failed, retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
            continue;
        }
        return match outcome {
            Ok((status, reply)) if status < 400 => {
                Ok(serde_json::from_slice(&reply).unwrap_or(Value::Null))
            }
            Ok((status, reply)) => Err(InspectionError::Refused {
                status,
                body: String::from_utf8_lossy(&reply).chars().take(1000).collect(),
            }),
            Err(e) => Err(InspectionError::Post(e.to_string())),
        };
    }
}

fn describe(outcome: &Result<(u16, Vec<u8>), ClientError>) -> String {
    match outcome {
        Ok((status, body)) => format!(
            "HTTP {status}: {}",
            crate::conductor::fault_reason_text(body)
        ),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn options(cmdline: &str) -> Options {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), cmdline).unwrap();
        crate::config::Config::from_args([
            "ironic-agent".to_string(),
            "--cmdline-file".into(),
            f.path().display().to_string(),
        ])
        .unwrap()
        .options
    }

    #[test]
    fn enabling_conditions_and_urls_follow_ipa() {
        let o = options("ipa-api-url=http://a:6385/,http://b:6385");
        assert!(!enabled(&o), "an API URL alone does not enable inspection");
        let o =
            options("ipa-api-url=http://a:6385/,http://b:6385 ipa-inspection-collectors=default");
        assert!(enabled(&o));
        assert_eq!(
            callback_urls(&o),
            [
                "http://a:6385/v1/continue_inspection",
                "http://b:6385/v1/continue_inspection"
            ]
        );
        assert_eq!(collector_names(&o), ["default"]);
        let o = options("ipa-inspection-callback-url=http://i:5050/v1/continue");
        assert!(enabled(&o));
        assert_eq!(callback_urls(&o), ["http://i:5050/v1/continue"]);
        assert_eq!(collector_names(&o), ["default", "logs"]);
        let o = options("ipa-inspection-collectors=default,logs");
        assert!(!enabled(&o), "collectors without an API URL");
        assert_eq!(normalize_mac("01-52-54-00-AB-cd-EF"), "52:54:00:ab:cd:ef");
        assert_eq!(normalize_mac("52:54:00:AB:CD:EF"), "52:54:00:ab:cd:ef");
    }

    #[test]
    fn failures_read_like_ipa() {
        let mut f = Failures::default();
        assert_eq!(f.message(), None);
        f.add("collector x failed: boom".into());
        f.add("collector y failed: bang".into());
        assert_eq!(
            f.message().unwrap(),
            "The following errors were encountered:\n* collector x failed: boom\n* collector y \
             failed: bang"
        );
    }

    /// A server answering each connection with the next canned response, recording requests.
    async fn server(
        replies: Vec<(u16, &'static str)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/continue_inspection", l.local_addr().unwrap());
        let h = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (status, body) in replies {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let mut req = Vec::new();
                // Headers, then the body by Content-Length.
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(String::from_utf8_lossy(&req).to_string());
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            }
            seen
        });
        (url, h)
    }

    fn fast() -> Retry {
        Retry {
            waits: vec![Duration::from_millis(10); 4],
        }
    }

    #[tokio::test]
    async fn post_retries_5xx_and_409_then_returns_the_uuid() {
        let (url, h) = server(vec![
            (503, "{}"),
            (
                409,
                r#"{"error_message": "{\"faultstring\": \"Node locked\"}"}"#,
            ),
            (202, r#"{"uuid": "0b6b9e0e-1b1c-4b43-9e37-1d2a9a2f9c8e"}"#),
        ])
        .await;
        let o = options("ipa-global-request-id=req-1234");
        let client = IronicClient::with_urls(&o, vec![url]).unwrap();
        let reply = post(&client, &json!({"inventory": {"interfaces": []}}), &fast())
            .await
            .unwrap();
        assert_eq!(reply["uuid"], "0b6b9e0e-1b1c-4b43-9e37-1d2a9a2f9c8e");
        let seen = h.await.unwrap();
        assert_eq!(seen.len(), 3);
        let req = seen[2].to_ascii_lowercase();
        assert!(
            req.starts_with("post /v1/continue_inspection http/1.1"),
            "{req}"
        );
        assert!(req.contains("content-type: application/json"), "{req}");
        assert!(req.contains("accept: application/json"), "{req}");
        assert!(req.contains("x-openstack-request-id: req-1234"), "{req}");
        assert!(
            !req.contains("x-openstack-ironic-api-version"),
            "no version header: Ironic then answers {{\"uuid\"}}: {req}"
        );
        assert!(req.ends_with(r#"{"inventory":{"interfaces":[]}}"#), "{req}");
    }

    #[tokio::test]
    async fn post_gives_up_on_4xx_and_after_five_attempts() {
        let (url, h) = server(vec![(400, r#"{"error_message": "bad"}"#)]).await;
        let client = IronicClient::with_urls(&options(""), vec![url]).unwrap();
        let e = post(&client, &json!({}), &fast()).await.unwrap_err();
        assert!(
            matches!(e, InspectionError::Refused { status: 400, .. }),
            "{e}"
        );
        assert_eq!(h.await.unwrap().len(), 1, "4xx is not retried");

        let (url, h) = server(vec![(500, "{}"); 5]).await;
        let client = IronicClient::with_urls(&options(""), vec![url]).unwrap();
        let e = post(&client, &json!({}), &fast()).await.unwrap_err();
        assert!(
            matches!(e, InspectionError::Refused { status: 500, .. }),
            "{e}"
        );
        assert_eq!(h.await.unwrap().len(), 5);

        // Nobody listening: connection errors are retried, then reported.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = IronicClient::with_urls(
            &options(""),
            vec![format!("http://127.0.0.1:{port}/v1/continue_inspection")],
        )
        .unwrap();
        let e = post(&client, &json!({}), &fast()).await.unwrap_err();
        assert!(matches!(e, InspectionError::Post(_)), "{e}");
    }
}
