//! `ironic-agent-build --config ramdisk.toml --output out/`: see the crate documentation.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ironic_agent_build::build::{self, Inputs};
use ironic_agent_build::config::{Config, ExtraFile};

/// Builds the ironic-agent ramdisk: <name>.kernel, <name>.initramfs (reproducible newc cpio,
/// gzip or zstd), boot.ipxe, <name>.manifest.json and SHA256SUMS. Flags override the config
/// file; without a config file the defaults apply (common NIC and storage drivers).
#[derive(Parser, Debug)]
#[command(name = "ironic-agent-build", version)]
struct Cli {
    /// The ramdisk description (TOML); relative paths in it are relative to the file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Directory for the outputs (created if needed).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// A Debian linux-image package (e.g. from `apt-get download linux-image-6.1.0-56-amd64`).
    #[arg(long, conflicts_with_all = ["vmlinuz", "modules_dir"])]
    kernel_deb: Option<PathBuf>,
    /// A kernel image, with --modules-dir.
    #[arg(long, requires = "modules_dir")]
    vmlinuz: Option<PathBuf>,
    /// The kernel's modules tree, /lib/modules/<version>.
    #[arg(long, requires = "vmlinuz")]
    modules_dir: Option<PathBuf>,
    /// The static ironic-agent binary.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// The static ironic-agent-init binary.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Adds a driver (module name) to the list; repeatable.
    #[arg(long = "driver")]
    drivers: Vec<String>,
    /// Replaces the iPXE script's kernel parameters; repeatable.
    #[arg(long = "kernel-param")]
    kernel_params: Vec<String>,
    /// ipa-api-url for the iPXE script.
    #[arg(long)]
    api_url: Option<String>,
    /// URL prefix of the kernel and initramfs in the iPXE script (default: relative).
    #[arg(long)]
    http_url: Option<String>,
    /// gzip (default) or zstd.
    #[arg(long)]
    compression: Option<String>,
    /// Adds a file: PATH_IN_RAMDISK=SOURCE; repeatable.
    #[arg(long = "file", value_name = "PATH=SOURCE")]
    files: Vec<String>,
}

fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let mut config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = cli.kernel_deb {
        config.kernel.deb = Some(d);
        config.kernel.vmlinuz = None;
        config.kernel.modules = None;
    }
    if let (Some(v), Some(m)) = (cli.vmlinuz, cli.modules_dir) {
        config.kernel.deb = None;
        config.kernel.vmlinuz = Some(v);
        config.kernel.modules = Some(m);
    }
    if cli.agent.is_some() {
        config.agent.binary = cli.agent;
    }
    if cli.init.is_some() {
        config.agent.init = cli.init;
    }
    config.modules.extra_drivers.extend(cli.drivers);
    if !cli.kernel_params.is_empty() {
        config.boot.kernel_params = Some(cli.kernel_params);
    }
    if cli.api_url.is_some() {
        config.boot.api_url = cli.api_url;
    }
    if cli.http_url.is_some() {
        config.boot.http_url = cli.http_url;
    }
    if cli.compression.is_some() {
        config.output.compression = cli.compression;
    }
    for f in cli.files {
        let (path, source) = f
            .split_once('=')
            .with_context(|| format!("--file {f:?}: expected PATH_IN_RAMDISK=SOURCE"))?;
        config.files.push(ExtraFile {
            path: path.to_string(),
            source: PathBuf::from(source),
            mode: None,
            optional: false,
        });
    }
    let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a Unix time"))?,
        Err(_) => 0,
    };
    let report = build::build(&Inputs {
        config,
        output: cli.output.clone(),
        mtime,
    })?;
    println!(
        "kernel {} ({}), {} modules: {}",
        report.kernel_version,
        report.kernel_source,
        report.modules.len(),
        report.modules.join(" ")
    );
    if !report.builtin.is_empty() {
        println!("built into the kernel: {}", report.builtin.join(" "));
    }
    if !report.unavailable.is_empty() {
        println!(
            "default drivers this kernel does not have (skipped): {}",
            report.unavailable.join(" ")
        );
    }
    if !report.firmware.is_empty() {
        println!("firmware: {}", report.firmware.join(" "));
    }
    if !report.firmware_missing.is_empty() {
        println!(
            "firmware declared by the modules but not found in the firmware dirs: {}",
            report.firmware_missing.len()
        );
    }
    for f in &report.skipped_files {
        println!("optional file not supplied, skipped: {f}");
    }
    println!(
        "initramfs: {} entries, {} bytes uncompressed",
        report.archive_entries, report.cpio_bytes
    );
    for (file, size, sha) in &report.outputs {
        println!(
            "{:>12} bytes  {}  {}",
            size,
            &sha[..16],
            cli.output.join(file).display()
        );
    }
    println!("built in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironic-agent-build: {e:#}");
            ExitCode::FAILURE
        }
    }
}
