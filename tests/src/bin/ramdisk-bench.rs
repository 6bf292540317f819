//! `cargo run -p e2e --bin ramdisk-bench -- [--runs N]` (what `tests/bench-ramdisk.sh`
//! runs): the ramdisk's figures on this machine. Sizes of what `ironic-agent-build` writes
//! (gzip, the default, and zstd), and over N runs of the QEMU job (each: a cleaning boot and
//! a deploy boot through IPMI and iPXE, see `e2e::qemu_deploy`): time from the IPMI power-on
//! (QEMU start) to the init's first console line and to the first heartbeat Ironic
//! accepted, and the agent's resident memory 5 s after it started (the init's report).
//! Medians over all boots. Needs root and tests/setup.sh.

use std::process::ExitCode;

use anyhow::{Context, Result};
use e2e::qemu_deploy::{self, Options};
use e2e::ramdisk;
use e2e::stats::median;

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn run(runs: usize) -> Result<()> {
    let bins = ramdisk::binaries()?;
    let dir = tempfile::tempdir()?;
    let gz = ramdisk::build(&dir.path().join("gzip"), &[])?;
    let zst = ramdisk::build(&dir.path().join("zstd"), &["--compression", "zstd"])?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let cpio = gz.manifest["initramfs_uncompressed_bytes"]
        .as_u64()
        .context("manifest without initramfs_uncompressed_bytes")?;
    let modules = gz.manifest["modules"].as_array().map_or(0, |a| a.len());

    let mut to_init = Vec::new();
    let mut to_heartbeat = Vec::new();
    let mut rss = Vec::new();
    let mut deploy = Vec::new();
    for i in 0..runs {
        println!("== run {}/{runs} ==", i + 1);
        let o = qemu_deploy::run(&Options {
            name: format!("ramdisk-bench-{i}"),
            ..Options::default()
        })?;
        for b in &o.boots {
            to_init.extend(b.power_on_to_init);
            to_heartbeat.extend(b.power_on_to_heartbeat);
            rss.extend(b.agent_rss_kb.map(|k| k as f64 / 1024.0));
        }
        deploy.push(o.deploy_seconds);
    }
    let fmt = |v: Option<f64>, unit: &str| {
        v.map(|x| format!("{x:.1} {unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    println!("\n| what | ironic-agent ramdisk |");
    println!("|---|---|");
    println!(
        "| kernel (Debian {}) | {} |",
        gz.manifest["kernel"]["version"].as_str().unwrap_or("?"),
        mib(size(&gz.kernel))
    );
    println!(
        "| initramfs, gzip -9 (default) | {} |",
        mib(size(&gz.initramfs))
    );
    println!("| initramfs, zstd -19 | {} |", mib(size(&zst.initramfs)));
    println!("| initramfs unpacked ({modules} modules) | {} |", mib(cpio));
    println!(
        "| agent binary (static, musl) | {} |",
        mib(size(&bins.agent))
    );
    println!("| init binary (static, musl) | {} |", mib(size(&bins.init)));
    println!(
        "| IPMI power-on → init starts (TCG, SeaBIOS, iPXE), median of {} boots | {} |",
        to_init.len(),
        fmt(median(to_init), "s")
    );
    println!(
        "| IPMI power-on → first heartbeat accepted by Ironic, median of {} boots | {} |",
        to_heartbeat.len(),
        fmt(median(to_heartbeat.clone()), "s")
    );
    println!(
        "| agent RSS 5 s after start, median of {} boots | {} |",
        rss.len(),
        fmt(median(rss), "MiB")
    );
    println!(
        "| deploy → active (one boot, 32 MiB image), median of {runs} | {} |",
        fmt(median(deploy), "s")
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut runs = 3usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => runs = n,
                _ => {
                    eprintln!("--runs needs a positive number");
                    return ExitCode::FAILURE;
                }
            },
            other => {
                eprintln!("unknown argument {other}; usage: ramdisk-bench [--runs N]");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ramdisk bench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
