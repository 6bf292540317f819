//! Every option the agent understands: IPA's names, kernel parameters, defaults and help,
//! declared once. The declaration generates the typed [`Options`], the `--help` text and the
//! lookup through the sources.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ironic_protocol::ApiVersion;

use super::error::ConfigError;
use super::ini;
use super::value::{ApiUrls, AuthStrategy, Curve, OptionValue, Protocol, TlsVersion};

/// A secret string (agent token, password): printed as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl OptionValue for Secret {
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(Secret(text.to_string()))
    }
}

/// Static description of one option.
#[derive(Debug)]
pub struct OptionSpec {
    /// The oslo.config name, as in IPA's config file; also the `--flag` with `-` for `_`.
    pub name: &'static str,
    /// The config file section.
    pub group: &'static str,
    /// The kernel command line key, when there is one.
    pub cmdline: Option<&'static str>,
    /// Text form of the default; empty means unset.
    pub default: &'static str,
    pub help: &'static str,
    /// Whether the value is parsed as a boolean (flags may then be given without a value).
    pub is_bool: bool,
}

impl OptionSpec {
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// Where an option's value came from, for error messages that point at the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    File(PathBuf),
    KernelCmdline,
    Default,
}

impl Origin {
    fn describe(&self, spec: &OptionSpec) -> String {
        match self {
            Origin::Flag => format!("--{}", spec.flag()),
            Origin::File(p) => format!("{} in [{}] of {}", spec.name, spec.group, p.display()),
            Origin::KernelCmdline => format!(
                "{} on the kernel command line",
                spec.cmdline.unwrap_or(spec.name)
            ),
            Origin::Default => format!("the default of {}", spec.name),
        }
    }
}

/// The raw text of every source, before typing.
#[derive(Debug, Default)]
pub struct Sources {
    pub(super) flags: BTreeMap<String, String>,
    /// Later files override earlier ones, like oslo.config's `--config-file` order.
    pub(super) files: Vec<(PathBuf, ini::Sections)>,
    pub(super) kernel: BTreeMap<String, String>,
}

impl Sources {
    pub(super) fn lookup(&self, spec: &OptionSpec) -> (String, Origin) {
        if let Some(v) = self.flags.get(spec.name) {
            return (v.clone(), Origin::Flag);
        }
        for (path, sections) in self.files.iter().rev() {
            if let Some(v) = sections.get(spec.group).and_then(|s| s.get(spec.name)) {
                return (v.clone(), Origin::File(path.clone()));
            }
        }
        if let Some(v) = spec.cmdline.and_then(|k| self.kernel.get(k)) {
            return (v.clone(), Origin::KernelCmdline);
        }
        (spec.default.to_string(), Origin::Default)
    }
}

macro_rules! first {
    () => {
        None
    };
    ($x:literal) => {
        Some($x)
    };
}

macro_rules! options {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident : $ty:ty = $default:literal, group $group:literal $(, cmdline $cmdline:literal)?;
    )*) => {
        /// The agent's effective settings.
        #[derive(Debug, Clone)]
        pub struct Options {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        /// All options, in declaration order.
        pub static SPECS: &[OptionSpec] = &[
            $( OptionSpec {
                name: stringify!($field),
                group: $group,
                cmdline: first!($($cmdline)?),
                default: $default,
                help: concat!($($doc),+),
                is_bool: matches!(stringify!($ty).as_bytes(), b"bool"),
            }, )*
        ];

        impl Options {
            pub(crate) fn resolve(sources: &Sources) -> Result<Self, ConfigError> {
                let mut specs = SPECS.iter();
                Ok(Options {
                    $( $field: {
                        let spec = specs.next().expect("one spec per field");
                        resolve_one::<$ty>(spec, sources)?
                    }, )*
                })
            }
        }
    };
}

fn resolve_one<T: OptionValue>(spec: &OptionSpec, sources: &Sources) -> Result<T, ConfigError> {
    let (text, origin) = sources.lookup(spec);
    T::parse_value(&text).map_err(|message| ConfigError::Invalid {
        option: origin.describe(spec),
        message,
    })
}

options! {
    /// Ironic API URL(s), comma separated; each request fails over to the next URL.
    api_url: ApiUrls = "", group "DEFAULT", cmdline "ipa-api-url";
    /// Global request id sent as X-OpenStack-Request-ID with every API call.
    global_request_id: Option<String> = "", group "DEFAULT", cmdline "ipa-global-request-id";
    /// Address the agent API listens on.
    listen_host: String = "::", group "DEFAULT", cmdline "ipa-listen-host";
    /// Port the agent API listens on.
    listen_port: u16 = "9999", group "DEFAULT", cmdline "ipa-listen-port";
    /// Most API connections open at once; at the limit an idle connection that never showed the agent token is dropped first (not an IPA option).
    api_max_connections: u32 = "64", group "DEFAULT", cmdline "ipa-api-max-connections";
    /// Serve the API over TLS with tls_cert_file/tls_key_file instead of auto-TLS.
    listen_tls: bool = "false", group "DEFAULT";
    /// PEM certificate (chain) for listen_tls.
    tls_cert_file: Option<String> = "", group "DEFAULT";
    /// PEM private key for listen_tls.
    tls_key_file: Option<String> = "", group "DEFAULT";
    /// Generate a self-signed certificate and send it to Ironic when its API supports it (>= 1.68).
    enable_auto_tls: bool = "true", group "DEFAULT";
    /// Seconds the auto-TLS certificate is valid before now, for clock skew.
    auto_tls_allowed_clock_skew: u64 = "3600", group "DEFAULT";
    /// Minimum TLS version, server and client: 1.2 or 1.3.
    tls_min_version: TlsVersion = "1.2", group "DEFAULT", cmdline "ipa-tls-min-version";
    /// Colon-separated TLS 1.2 cipher suites (OpenSSL or IANA names); TLS 1.3 suites are fixed.
    tls_cipher_suites: Option<String> = "", group "DEFAULT", cmdline "ipa-tls-cipher-suites";
    /// Curve of the auto-TLS key: p256, p384 or p521 (p521 is served as p384: rustls has no P-521 signer).
    tls_certificate_curve: Curve = "p384", group "DEFAULT", cmdline "ipa-tls-certificate-curve";
    /// Host put in the callback URL; detected from the route to the API when unset.
    advertise_host: Option<String> = "", group "DEFAULT", cmdline "ipa-advertise-host";
    /// Port put in the callback URL.
    advertise_port: u16 = "9999", group "DEFAULT", cmdline "ipa-advertise-port";
    /// Scheme of the callback URL: http or https (auto-TLS forces https).
    advertise_protocol: Protocol = "http", group "DEFAULT", cmdline "ipa-advertise-protocol";
    /// Attempts to detect the advertise address.
    ip_lookup_attempts: u32 = "6", group "DEFAULT", cmdline "ipa-ip-lookup-attempts";
    /// Seconds between advertise-address attempts.
    ip_lookup_sleep: u64 = "10", group "DEFAULT", cmdline "ipa-ip-lookup-timeout";
    /// Advertise this interface's IPv4 address instead of detecting it from routes.
    network_interface: Option<String> = "", group "DEFAULT", cmdline "ipa-network-interface";
    /// Seconds to keep retrying lookup before exiting with an error.
    lookup_timeout: u64 = "600", group "DEFAULT", cmdline "ipa-lookup-timeout";
    /// Initial lookup retry interval in seconds (randomised exponential back-off, at most 60 s).
    lookup_interval: u64 = "1", group "DEFAULT", cmdline "ipa-lookup-interval";
    /// Seconds one disk request of write_image or of an erase step may take before the disk counts as stalled and the command fails naming it; 0 waits forever (not an IPA option: IPA waits forever, and so does Ironic while heartbeats come).
    disk_stall_timeout: u64 = "300", group "DEFAULT", cmdline "ipa-disk-stall-timeout";
    /// Milliseconds the answer to an asynchronous command's POST waits for the command to finish, so that a short command is answered with its result (not an IPA option: IPA answers RUNNING at once, and Ironic, polling `install_bootloader`, then sleeps 6 s).
    async_command_grace_ms: u64 = "500", group "DEFAULT", cmdline "ipa-async-command-grace-ms";
    /// Seconds to wait for LLDP frames during inventory.
    lldp_timeout: f64 = "30.0", group "DEFAULT", cmdline "ipa-lldp-timeout";
    /// Include raw LLDP TLVs in the inventory.
    collect_lldp: bool = "false", group "DEFAULT", cmdline "ipa-collect-lldp";
    /// Inspection callback URL; inspection runs before lookup when set.
    inspection_callback_url: Option<String> = "", group "DEFAULT", cmdline "ipa-inspection-callback-url";
    /// Comma-separated inspection collectors.
    inspection_collectors: Option<String> = "", group "DEFAULT", cmdline "ipa-inspection-collectors";
    /// Seconds to wait for the PXE interface to get an IPv4 address before inspection.
    inspection_dhcp_wait_timeout: u64 = "60", group "DEFAULT", cmdline "ipa-inspection-dhcp-wait-timeout";
    /// Wait for all interfaces, not only the PXE one, before inspection.
    inspection_dhcp_all_interfaces: bool = "false", group "DEFAULT", cmdline "ipa-inspection-dhcp-all-interfaces";
    /// Seconds to sleep at start-up before touching hardware.
    hardware_initialization_delay: u64 = "0", group "DEFAULT", cmdline "ipa-hardware-initialization-delay";
    /// Checks for a usable disk before giving up waiting for one.
    disk_wait_attempts: u32 = "10", group "DEFAULT", cmdline "ipa-disk-wait-attempts";
    /// Seconds between those checks.
    disk_wait_delay: u64 = "3", group "DEFAULT", cmdline "ipa-disk-wait-delay";
    /// Do not verify TLS certificates of outgoing HTTPS connections.
    insecure: bool = "false", group "DEFAULT", cmdline "ipa-insecure";
    /// PEM CA bundle for outgoing HTTPS connections (default: system CAs).
    cafile: Option<String> = "", group "DEFAULT";
    /// PEM client certificate for outgoing HTTPS connections.
    certfile: Option<String> = "", group "DEFAULT";
    /// PEM client key for outgoing HTTPS connections.
    keyfile: Option<String> = "", group "DEFAULT";
    /// NTP server to sync the clock with at start-up.
    ntp_server: Option<String> = "", group "DEFAULT", cmdline "ipa-ntp-server";
    /// Pre-shared agent token (virtual media boots).
    agent_token: Option<Secret> = "", group "DEFAULT", cmdline "ipa-agent-token";
    /// User for HTTP basic auth against the image server.
    image_server_user: Option<String> = "", group "DEFAULT";
    /// Password for HTTP basic auth against the image server.
    image_server_password: Option<Secret> = "", group "DEFAULT";
    /// Image server authentication: noauth or http_basic.
    image_server_auth_strategy: AuthStrategy = "noauth", group "DEFAULT";
    /// Connect/read timeout of image downloads in seconds.
    image_download_connection_timeout: u64 = "60", group "DEFAULT", cmdline "ipa-image-download-connection-timeout";
    /// Retries of an image download.
    image_download_connection_retries: u32 = "9", group "DEFAULT", cmdline "ipa-image-download-connection-retries";
    /// Seconds between image download retries.
    image_download_connection_retry_interval: u64 = "10", group "DEFAULT", cmdline "ipa-image-download-connection-retry-interval";
    /// Abort an image download after this many seconds (0 = no limit).
    image_download_max_duration: u64 = "0", group "DEFAULT", cmdline "ipa-image-download-max-duration";
    /// Connections an image download uses when the server serves byte ranges, in ordered windows; 1 is one stream, as IPA; each one beyond the first costs ~6 MiB of memory and pays off where the server caps each connection (not an IPA option).
    image_download_connections: u32 = "2", group "DEFAULT", cmdline "ipa-image-download-connections";
    /// MiB per window of a download over several connections; memory grows by (connections - 1) windows (not an IPA option).
    image_download_window_mib: u32 = "2", group "DEFAULT", cmdline "ipa-image-download-window-mib";
    /// Ironic API version to use (X.Y); disables version discovery.
    ironic_api_version: Option<ApiVersion> = "", group "DEFAULT", cmdline "ipa-ironic-api-version";
    /// VLAN interfaces to create: iface.vlan, iface or all.
    enable_vlan_interfaces: Option<String> = "", group "DEFAULT", cmdline "ipa-enable-vlan-interfaces";
    /// Ignore boot loader (efibootmgr) failures.
    ignore_bootloader_failure: Option<bool> = "", group "DEFAULT", cmdline "ipa-ignore-bootloader-failure";
    /// Priority of the inject_files deploy step (0 disables it).
    inject_files_priority: u32 = "0", group "DEFAULT", cmdline "ipa-inject-files-priority";
    /// Refuse to erase disks holding shared-disk cluster filesystems (GPFS, VMFS, GFS2).
    guard_special_filesystems: bool = "true", group "DEFAULT", cmdline "ipa-guard-special-filesystems";
    /// Allow discard as an erase method when no secure erase is available.
    enable_discard_erase: bool = "false", group "DEFAULT", cmdline "ipa-enable-discard-erase";
    /// Accept MD5 image checksums (normally set by Ironic at lookup).
    md5_enabled: bool = "false", group "DEFAULT";
    /// Timeout in seconds of each request to the Ironic API.
    http_request_timeout: u64 = "30", group "DEFAULT", cmdline "ipa-http-request-timeout";
    /// Skip the deep inspection of image formats before writing.
    disable_deep_image_inspection: bool = "false", group "DEFAULT";
    /// Image formats allowed for deployment.
    permitted_image_formats: Vec<String> = "raw,gpt,qcow2", group "DEFAULT";
    /// Allow installing a legacy BIOS boot loader for partition images.
    enable_bios_bootloader_install: bool = "false", group "DEFAULT";
    /// Log at debug level.
    debug: bool = "false", group "DEFAULT", cmdline "ipa-debug";
    /// Size of the EFI system partition in MiB.
    efi_system_partition_size: u64 = "550", group "disk_utils";
    /// Size of the BIOS boot partition in MiB.
    bios_boot_partition_size: u64 = "1", group "disk_utils";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cmdline_keys_are_ipa_style() {
        let mut names: Vec<_> = SPECS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SPECS.len());
        for s in SPECS {
            if let Some(k) = s.cmdline {
                assert!(k.starts_with("ipa-"), "{k}");
            }
            assert!(!s.help.trim().is_empty(), "{} has no help", s.name);
        }
    }

    #[test]
    fn bool_detection() {
        let spec = |n| SPECS.iter().find(|s| s.name == n).unwrap();
        assert!(spec("insecure").is_bool);
        assert!(!spec("ignore_bootloader_failure").is_bool);
        assert!(!spec("lookup_timeout").is_bool);
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Some(Secret("tok".into()))), "Some(***)");
    }
}
