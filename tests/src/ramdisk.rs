//! The ramdisk under test: the static (musl) release builds of `ironic-agent` and
//! `ironic-agent-init`, the release `ironic-agent-build`, and a Debian kernel package that
//! `tests/setup.sh` fetched with `apt-get download` (never installed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::agent::workspace_root;
use crate::cmd;

/// Where `tests/setup.sh` puts kernel packages (`IRONIC_AGENT_KERNEL_DIR` overrides).
pub const KERNEL_CACHE: &str = "/var/cache/ironic-agent-test/kernel";
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The kernel package: `IRONIC_AGENT_KERNEL_DEB`, else the generic (not `cloud`)
/// `linux-image-*-amd64_*.deb` in the cache with the highest name.
pub fn kernel_deb() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRONIC_AGENT_KERNEL_DEB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("IRONIC_AGENT_KERNEL_DEB={} does not exist", p.display());
        }
        return Ok(p);
    }
    let dir = std::env::var_os("IRONIC_AGENT_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(KERNEL_CACHE));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap_or_default().to_string_lossy();
                    n.starts_with("linux-image-")
                        && n.ends_with("_amd64.deb")
                        && !n.contains("-cloud-")
                        && !n.contains("-rt-")
                        && !n.contains("-dbg")
                })
                .collect()
        })
        .unwrap_or_default();
    debs.sort();
    debs.pop().with_context(|| {
        format!(
            "no Debian kernel package in {} (tests/setup.sh fetches one with `apt-get download \
             linux-image-<version>-amd64`; or set IRONIC_AGENT_KERNEL_DEB)",
            dir.display()
        )
    })
}

/// The three release binaries the ramdisk is built from.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub agent: PathBuf,
    pub init: PathBuf,
    pub builder: PathBuf,
}

fn target_dir() -> PathBuf {
    let workspace = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| workspace.join(t))
        .unwrap_or_else(|| workspace.join("target"))
}

/// Builds (cargo decides what is stale) and returns the release binaries, once per process.
pub fn binaries() -> Result<Binaries> {
    static BINS: OnceLock<std::result::Result<Binaries, String>> = OnceLock::new();
    BINS.get_or_init(|| build_binaries().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_binaries() -> Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = workspace_root();
    let t = Instant::now();
    // A prebuilt static agent (e.g. an operator's build with its own managers) replaces
    // the workspace's.
    let agent_override = std::env::var_os("IRONIC_AGENT_STATIC_BIN").map(PathBuf::from);
    let mut musl = vec!["build", "--release", "--target", MUSL_TARGET];
    if agent_override.is_none() {
        musl.extend(["-p", "ironic-agent"]);
    }
    musl.extend(["-p", "ironic-agent-init"]);
    for args in [musl, vec!["build", "--release", "-p", "ironic-agent-build"]] {
        let status = Command::new(&cargo)
            .args(&args)
            .current_dir(&workspace)
            .status()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!(
                "cargo {} failed ({status}); the musl target needs `rustup target add {MUSL_TARGET}` \
                 and Debian's musl-tools (tests/setup.sh installs both)",
                args.join(" ")
            );
        }
    }
    let target = target_dir();
    let b = Binaries {
        agent: agent_override
            .unwrap_or_else(|| target.join(MUSL_TARGET).join("release/ironic-agent")),
        init: target.join(MUSL_TARGET).join("release/ironic-agent-init"),
        builder: target.join("release/ironic-agent-build"),
    };
    for p in [&b.agent, &b.init, &b.builder] {
        if !p.is_file() {
            bail!("{} missing after the build", p.display());
        }
    }
    eprintln!(
        "release binaries ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(b)
}

/// What `ironic-agent-build` wrote.
#[derive(Debug, Clone)]
pub struct Ramdisk {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub ipxe: PathBuf,
    pub manifest: Value,
    /// The builder's stdout (its summary).
    pub summary: String,
    pub build_seconds: f64,
}

impl Ramdisk {
    pub fn initramfs_size(&self) -> u64 {
        std::fs::metadata(&self.initramfs)
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// Runs `ironic-agent-build -o out --kernel-deb <cache> --agent A --init I <extra>` with a
/// fixed `SOURCE_DATE_EPOCH` (`--agent`/`--init` in `extra` replace the test's binaries).
pub fn build(out: &Path, extra: &[&str]) -> Result<Ramdisk> {
    let bins = binaries()?;
    let deb = kernel_deb()?;
    let mut c = Command::new(&bins.builder);
    c.arg("--output").arg(out).arg("--kernel-deb").arg(&deb);
    // The test's own binaries unless it names others.
    if !extra.contains(&"--agent") {
        c.arg("--agent").arg(&bins.agent);
    }
    if !extra.contains(&"--init") {
        c.arg("--init").arg(&bins.init);
    }
    c.args(extra).env("SOURCE_DATE_EPOCH", "1700000000");
    let t = Instant::now();
    let output = cmd::run(&mut c)?;
    let build_seconds = t.elapsed().as_secs_f64();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    let name = "ironic-agent";
    let manifest_path = out.join(format!("{name}.manifest.json"));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )?;
    Ok(Ramdisk {
        dir: out.to_path_buf(),
        kernel: out.join(format!("{name}.kernel")),
        initramfs: out.join(format!("{name}.initramfs")),
        ipxe: out.join("boot.ipxe"),
        manifest,
        summary,
        build_seconds,
    })
}
