//! The ramdisk description: one TOML file (the keys are in the README's "The ramdisk";
//! `image-build/examples/seed-operator.toml` is a complete one). Relative paths are relative
//! to the file's directory; command line flags override the file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Drivers included when the config names none: the NICs and storage controllers common in
/// servers and VMs. Their dependencies are added automatically; a driver the kernel lacks
/// (e.g. the `cloud` flavour has no e1000e) is reported and skipped.
pub const DEFAULT_DRIVERS: &[&str] = &[
    // NICs
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "bnxt_en",
    "tg3",
    "bnx2x",
    "mlx4_en",
    "mlx5_core",
    "qede",
    "vmxnet3",
    "r8169",
    // storage
    "virtio_blk",
    "virtio_scsi",
    "virtio_pci",
    "nvme",
    "ahci",
    "ata_piix",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
    "hpsa",
    "sd_mod",
    // management: the BMC through /dev/ipmi0 (inventory), UEFI variables (boot entries)
    "ipmi_si",
    "ipmi_devintf",
    "efivarfs",
];

/// Modules loaded at every boot whatever the hardware.
pub const DEFAULT_LOAD_ALWAYS: &[&str] = &["efivarfs", "ipmi_devintf"];

/// Kernel parameters of the generated iPXE script when the config gives none.
pub const DEFAULT_KERNEL_PARAMS: &[&str] = &["console=tty0", "console=ttyS0,115200n8"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output file prefix: `<name>.kernel`, `<name>.initramfs`.
    pub name: Option<String>,
    #[serde(default)]
    pub kernel: KernelConfig,
    #[serde(default)]
    pub modules: ModulesConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub files: Vec<ExtraFile>,
    #[serde(default)]
    pub boot: BootConfig,
    #[serde(default)]
    pub output: OutputConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// A Debian `linux-image-*` package (`apt-get download linux-image-6.1.0-56-amd64`).
    pub deb: Option<PathBuf>,
    /// Or a kernel image and its modules tree (`/lib/modules/<version>`).
    pub vmlinuz: Option<PathBuf>,
    pub modules: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesConfig {
    /// Replaces [`DEFAULT_DRIVERS`]; every name must exist in the kernel.
    pub drivers: Option<Vec<String>>,
    /// Added to the drivers (default or given); must exist.
    #[serde(default)]
    pub extra_drivers: Vec<String>,
    /// Loaded at boot whatever the hardware (default [`DEFAULT_LOAD_ALWAYS`]).
    pub load_always: Option<Vec<String>>,
    /// Where firmware files the modules declare are looked up (e.g. `/lib/firmware` with
    /// Debian's firmware packages installed). Files not found are listed in the manifest.
    #[serde(default)]
    pub firmware_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The static (musl) `ironic-agent`.
    pub binary: Option<PathBuf>,
    /// The static `ironic-agent-init` (crate `initramfs/`).
    pub init: Option<PathBuf>,
    /// Extra command line arguments of the agent.
    #[serde(default)]
    pub args: Vec<String>,
    /// An IPA-style INI file, installed as `/etc/ironic-python-agent.conf`.
    pub config: Option<PathBuf>,
    /// A directory of external hardware managers, installed as
    /// `/etc/ironic-agent/managers.d/`.
    pub hardware_managers: Option<PathBuf>,
    /// Started by the init once rescue is finalised (e.g. an SSH server in `files`).
    #[serde(default)]
    pub rescue_command: Vec<String>,
    /// `bootif` (default), `all` or `none`.
    pub dhcp: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Absolute path in the ramdisk.
    pub path: String,
    /// A file or a directory (copied recursively, symlinks kept).
    pub source: PathBuf,
    /// Octal, e.g. `"0755"`; default: 0755 if the source is executable, else 0644.
    pub mode: Option<String>,
    /// Skip silently (noted in the manifest) when the source does not exist: a slot for a
    /// vendor tool the operator may or may not supply.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// Kernel parameters of the iPXE script (default [`DEFAULT_KERNEL_PARAMS`]).
    pub kernel_params: Option<Vec<String>>,
    /// `ipa-api-url` for the iPXE script; without it the script passes none (the agent
    /// then finds no conductor unless another source configures it).
    pub api_url: Option<String>,
    /// URL prefix under which the kernel and initramfs are served; default: relative to
    /// the script's own URL.
    pub http_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `gzip` (default) or `zstd`. gzip because Ironic serves it as it is: Ironic's image
    /// cache decompresses a zstd ramdisk (needing the `zstd` tool on the conductor) and
    /// serves the bare cpio, four times larger.
    pub compression: Option<String>,
    /// gzip 1-9 (default 9), zstd 1-19 (default 19).
    pub level: Option<i32>,
}

impl Config {
    /// Reads `path` and makes its relative paths relative to its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        c.resolve(base);
        Ok(c)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(x) = p {
                if x.is_relative() {
                    *x = base.join(&*x);
                }
            }
        };
        fix(&mut self.kernel.deb);
        fix(&mut self.kernel.vmlinuz);
        fix(&mut self.kernel.modules);
        fix(&mut self.agent.binary);
        fix(&mut self.agent.init);
        fix(&mut self.agent.config);
        fix(&mut self.agent.hardware_managers);
        for d in &mut self.modules.firmware_dirs {
            if d.is_relative() {
                *d = base.join(&*d);
            }
        }
        for f in &mut self.files {
            if f.source.is_relative() {
                f.source = base.join(&f.source);
            }
        }
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("ironic-agent")
    }

    /// The drivers asked for, and whether each was asked for explicitly (a missing explicit
    /// one is an error, a missing default one a note).
    pub fn drivers(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = match &self.modules.drivers {
            Some(d) => d.iter().map(|n| (n.clone(), true)).collect(),
            None => DEFAULT_DRIVERS
                .iter()
                .map(|n| (n.to_string(), false))
                .collect(),
        };
        v.extend(self.modules.extra_drivers.iter().map(|n| (n.clone(), true)));
        v
    }

    pub fn load_always(&self) -> Vec<String> {
        match &self.modules.load_always {
            Some(v) => v.clone(),
            None => DEFAULT_LOAD_ALWAYS.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn kernel_params(&self) -> Vec<String> {
        match &self.boot.kernel_params {
            Some(v) => v.clone(),
            None => DEFAULT_KERNEL_PARAMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    pub fn compression(&self) -> Result<Compression> {
        match self.output.compression.as_deref().unwrap_or("gzip") {
            "zstd" => {
                let level = self.output.level.unwrap_or(19);
                if !(1..=19).contains(&level) {
                    bail!("zstd level must be 1-19, not {level}");
                }
                Ok(Compression::Zstd(level))
            }
            "gzip" => {
                let level = self.output.level.unwrap_or(9);
                if !(1..=9).contains(&level) {
                    bail!("gzip level must be 1-9, not {level}");
                }
                Ok(Compression::Gzip(level as u32))
            }
            other => bail!("compression must be zstd or gzip, not {other:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd(i32),
    Gzip(u32),
}

pub fn parse_mode(s: &str) -> Result<u32> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .with_context(|| format!("bad file mode {s:?} (octal, e.g. \"0755\")"))?;
    if m > 0o7777 {
        bail!("bad file mode {s:?}");
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ramdisk.toml");
        std::fs::write(
            &p,
            r#"
name = "seed"
[kernel]
deb = "linux.deb"
[modules]
extra_drivers = ["mpt3sas"]
[agent]
binary = "/abs/ironic-agent"
hardware_managers = "managers.d"
[[files]]
path = "/usr/local/bin/ddcli"
source = "vendor/ddcli"
mode = "0755"
optional = true
[boot]
api_url = "http://10.0.0.1:6385"
[output]
compression = "gzip"
"#,
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.name(), "seed");
        assert_eq!(
            c.kernel.deb.as_deref(),
            Some(dir.path().join("linux.deb").as_path())
        );
        assert_eq!(
            c.agent.binary.as_deref(),
            Some(Path::new("/abs/ironic-agent"))
        );
        assert_eq!(c.files[0].source, dir.path().join("vendor/ddcli"));
        assert_eq!(c.compression().unwrap(), Compression::Gzip(9));
        let d = c.drivers();
        assert!(d.contains(&("virtio_net".to_string(), false)));
        assert!(d.contains(&("mpt3sas".to_string(), true)));
        assert_eq!(
            c.kernel_params(),
            ["console=tty0", "console=ttyS0,115200n8"]
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "[kernel]\ndebb = \"x\"\n").unwrap();
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert!(e.contains("debb"), "{e}");
        let c = Config {
            output: OutputConfig {
                compression: Some("lz4".into()),
                level: None,
            },
            ..Config::default()
        };
        assert!(c.compression().is_err());
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert!(parse_mode("9").is_err());
    }
}
