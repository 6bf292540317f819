//! Configuration, as IPA reads it: kernel command line parameters are the defaults, IPA's
//! INI config file overrides them, and command-line flags override both.

mod cmdline;
mod error;
mod ini;
mod options;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use options::{OptionSpec, Options, Origin, Secret, Sources, SPECS};
pub use value::{ApiUrls, AuthStrategy, Curve, Protocol, TlsVersion};

/// Config files read when none is given, as IPA's packaging installs them.
const DEFAULT_CONFIG_FILES: &[&str] = &[
    "/etc/ironic-python-agent/ironic-python-agent.conf",
    "/etc/ironic-python-agent.conf",
];

/// Everything the agent was told at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: Options,
    /// Every `key=value` of the kernel command line, for the raw parameters IPA reads
    /// directly (`BOOTIF`, `boot_method`, `ipa-inspection-benchmarks`).
    pub kernel_params: BTreeMap<String, String>,
    /// Block devices that destructive steps may touch outside a ramdisk.
    pub allow_devices: Vec<PathBuf>,
    /// Where generated state (TLS certificate and key) lives.
    pub state_dir: PathBuf,
    /// Also write the log here (it is part of `log.collect_system_logs`).
    pub log_file: Option<PathBuf>,
    /// Manifests of external hardware managers (`*.toml`, `*.json`).
    pub managers_dir: PathBuf,
}

impl Config {
    /// `BOOTIF` as given (PXELINUX `01-aa-bb-..` or plain `aa:bb:..`).
    pub fn bootif(&self) -> Option<&str> {
        self.kernel_params.get("BOOTIF").map(String::as_str)
    }

    /// Loads the configuration from command-line arguments (including `argv[0]`).
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = command()
            .try_get_matches_from(args)
            .map_err(|e| ConfigError::Usage(e.render().to_string()))?;

        let cmdline_path = matches
            .get_one::<PathBuf>("cmdline-file")
            .cloned()
            .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
        let cmdline_text = read(&cmdline_path)?;

        let explicit: Vec<PathBuf> = matches
            .get_many::<PathBuf>("config-file")
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        let files = if explicit.is_empty() {
            DEFAULT_CONFIG_FILES
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect()
        } else {
            explicit
        };

        let mut sources = Sources {
            kernel: cmdline::parse(&cmdline_text),
            ..Sources::default()
        };
        for path in files {
            let text = read(&path)?;
            let sections = ini::parse(&text).map_err(|source| ConfigError::Ini {
                path: path.clone(),
                source,
            })?;
            sources.files.push((path, sections));
        }
        for spec in SPECS {
            if let Some(v) = matches.get_one::<String>(spec.name) {
                sources.flags.insert(spec.name.to_string(), v.clone());
            }
        }
        let options = Options::resolve(&sources)?;
        let mut kernel_params = sources.kernel;
        // The typed option holds it; the raw map is for logs and raw parameters.
        kernel_params.retain(|k, _| !is_secret_param(k));
        Ok(Config {
            options,
            kernel_params,
            allow_devices: matches
                .get_many::<PathBuf>("allow-device")
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
            state_dir: matches
                .get_one::<PathBuf>("state-dir")
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/run/ironic-python-agent")),
            log_file: matches.get_one::<PathBuf>("log-file").cloned(),
            managers_dir: matches
                .get_one::<PathBuf>("managers-dir")
                .cloned()
                .unwrap_or_else(|| PathBuf::from(ramdisk_contract::paths::MANAGERS_DIR)),
        })
    }
}

/// Kernel parameters whose values must never be logged or copied around.
pub fn is_secret_param(key: &str) -> bool {
    ramdisk_contract::cmdline::is_secret_param(key)
}

/// A kernel command line with secret values replaced by `***`, for logs and log bundles.
pub fn redact_cmdline(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .map(|tok| match tok.trim_matches('"').split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
            _ => tok.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The command-line interface: the agent's own flags, then one flag per option.
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let mut cmd = clap::Command::new("ironic-agent")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Ironic ramdisk agent, a drop-in replacement for ironic-python-agent.\n\n\
             Settings come from the kernel command line (ipa-* parameters, the defaults), then \
             IPA's INI config files, then these flags.",
        )
        .max_term_width(100)
        .arg(
            Arg::new("cmdline-file")
                .long("cmdline-file")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Read kernel parameters from this file instead of /proc/cmdline"),
        )
        .arg(
            Arg::new("config-file")
                .long("config-file")
                .value_name("PATH")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "IPA-format INI config file; repeatable, later files win [default: \
                     /etc/ironic-python-agent/ironic-python-agent.conf and \
                     /etc/ironic-python-agent.conf when present]",
                ),
        )
        .arg(
            Arg::new("allow-device")
                .long("allow-device")
                .value_name("PATH")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "Block device that destructive steps may touch although the agent is not \
                     running in a ramdisk; repeatable. Outside a ramdisk no other device is \
                     listed or touched",
                ),
        )
        .arg(
            Arg::new("state-dir")
                .long("state-dir")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Directory for generated state such as the auto-TLS certificate [default: /run/ironic-python-agent]"),
        )
        .arg(
            Arg::new("managers-dir")
                .long("managers-dir")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!(
                    "Directory of external hardware manager manifests (*.toml, *.json) \
                     [default: {}]",
                    ramdisk_contract::paths::MANAGERS_DIR
                )),
        )
        .arg(
            Arg::new("log-file")
                .long("log-file")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also append the log to this file"),
        );
    for spec in SPECS {
        let mut help = spec.help.trim().to_string();
        if let Some(k) = spec.cmdline {
            help.push_str(&format!(" [kernel: {k}]"));
        }
        if !spec.default.is_empty() {
            help.push_str(&format!(" [default: {}]", spec.default));
        }
        if spec.group != "DEFAULT" {
            help.push_str(&format!(" [config: [{}] {}]", spec.group, spec.name));
        }
        let mut arg = Arg::new(spec.name)
            .long(spec.flag())
            .help(help)
            .action(ArgAction::Set);
        arg = if spec.is_bool {
            arg.value_name("BOOL")
                .num_args(0..=1)
                .default_missing_value("true")
                .require_equals(true)
        } else {
            arg.value_name("VALUE")
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(cmdline: &str, ini: Option<&str>, flags: &[&str]) -> Result<Config, ConfigError> {
        let c = file(cmdline);
        let i = ini.map(file);
        let mut args = vec![
            "ironic-agent".to_string(),
            "--cmdline-file".into(),
            c.path().display().to_string(),
        ];
        if let Some(i) = &i {
            args.push("--config-file".into());
            args.push(i.path().display().to_string());
        }
        args.extend(flags.iter().map(|s| s.to_string()));
        Config::from_args(args)
    }

    #[test]
    fn defaults_match_ipa() {
        let c = load("", None, &[]).unwrap();
        let o = &c.options;
        assert!(o.api_url.0.is_empty());
        assert_eq!(o.listen_host, "::");
        assert_eq!(o.listen_port, 9999);
        assert_eq!(o.advertise_port, 9999);
        assert_eq!(o.lookup_timeout, 600);
        assert_eq!(o.lookup_interval, 1);
        assert_eq!(o.ip_lookup_attempts, 6);
        assert_eq!(o.http_request_timeout, 30);
        assert_eq!(o.tls_min_version, TlsVersion::V1_2);
        assert_eq!(o.tls_certificate_curve, Curve::P384);
        assert!(o.enable_auto_tls && o.guard_special_filesystems && !o.insecure);
        assert_eq!(o.permitted_image_formats, ["raw", "gpt", "qcow2"]);
        assert_eq!(c.state_dir, PathBuf::from("/run/ironic-python-agent"));
    }

    #[test]
    fn kernel_then_file_then_flags() {
        let c = load(
            "ipa-api-url=http://k:6385 ipa-lookup-timeout=5 ipa-listen-port=1 BOOTIF=01-52-54-00-12-34-56",
            Some("[DEFAULT]\nlookup_timeout = 7\nlisten_port = 2\n"),
            &["--listen-port", "3", "--insecure"],
        )
        .unwrap();
        assert_eq!(c.options.api_url.0, ["http://k:6385"]);
        assert_eq!(c.options.lookup_timeout, 7, "file beats kernel");
        assert_eq!(c.options.listen_port, 3, "flag beats file");
        assert!(c.options.insecure);
        assert_eq!(c.bootif(), Some("01-52-54-00-12-34-56"));
    }

    #[test]
    fn malformed_values_name_the_key_and_source() {
        let e = load("ipa-lookup-timeout=soon", None, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ipa-lookup-timeout on the kernel command line"),
            "{e}"
        );
        assert!(e.contains("\"soon\""), "{e}");

        let e = load("", Some("[DEFAULT]\ninsecure = maybe\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("insecure in [DEFAULT] of"), "{e}");

        let e = load("", None, &["--listen-port", "99999"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen-port"), "{e}");

        let e = load("", Some("[DEFAULT]\nbroken line\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let c = load(
            "ipa-no-such-thing=1 console=ttyS0",
            Some("[DEFAULT]\nnope = 1\n[x]\ny=2\n"),
            &[],
        );
        assert!(c.is_ok());
    }

    #[test]
    fn secrets_from_cmdline_are_not_debug_printed() {
        let c = load("ipa-agent-token=supersecrettokenvalue", None, &[]).unwrap();
        assert_eq!(
            c.options.agent_token.as_ref().unwrap().0,
            "supersecrettokenvalue"
        );
        assert!(!format!("{c:?}").contains("supersecret"));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_cmdline("quiet ipa-agent-token=abc ipa-api-url=http://x\n"),
            "quiet ipa-agent-token=*** ipa-api-url=http://x"
        );
    }

    #[test]
    fn other_sections() {
        let c = load(
            "",
            Some("[disk_utils]\nefi_system_partition_size = 260\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.options.efi_system_partition_size, 260);
    }

    #[test]
    fn help_documents_every_option() {
        let help = command().render_long_help().to_string();
        for spec in SPECS {
            assert!(
                help.contains(&format!("--{}", spec.flag())),
                "{} missing",
                spec.name
            );
        }
        assert!(help.contains("--allow-device"));
        assert!(help.contains("ipa-lookup-timeout"));
    }
}
