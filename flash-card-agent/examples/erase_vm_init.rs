//! `/init` of the erase VM test (`tests/qemu_erase.rs`): runs the real `erase_devices` of
//! the generic and flash-card managers on the VM's emulated disks and prints a JSON report on
//! the console, then powers the VM off.
//!
//! Kernel parameters (all `erase.*`):
//! * `erase.expect=nvme0n1,sda,...`: block devices to wait for (20 s);
//! * `erase.ceiling=sdb`, `erase.ceiling_mib=N`: before the erase, `busybox dd` of N MiB of
//!   zeros with `oflag=direct conv=fsync` to that disk, three times (the median is the
//!   device's write ceiling, flushed as each overwrite pass is), then the disk is made
//!   read-only so that the erase skips it (`agent_erase_skip_read_only`);
//! * `erase.card=VVVV:DDDD`: PCI vendor:device the flash-card manager treats as its card;
//! * `erase.timeout=S`: power off after S seconds whatever happens.
//!
//! Lines the test reads: `FIXTURE <name> <hex>` (identify data captured from the emulated
//! devices), `ERASE-REPORT <json>`, `ERASE-DONE`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use blockdev::DeviceGuard;
use flash_card_agent::{CardErase, CardModel, FlashCardConfig, FlashCardManager, PciMatch};
use hardware_managers::generic::erase::{ata, nvme, sg};
use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
use hardware_managers::{HardwareManager, Managers, StepCall};
use ironic_protocol::Node;
use serde_json::{json, Map, Value};

fn power_off() -> ! {
    let _ = std::io::stdout().flush();
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn mount(fstype: &str, target: &str) {
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        println!("mount {fstype} on {target}: {e}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Loads the modules listed in `/modules/order`, in order.
fn load_modules() {
    let Ok(order) = std::fs::read_to_string("/modules/order") else {
        return;
    };
    for name in order.lines().filter(|l| !l.trim().is_empty()) {
        let path = Path::new("/modules").join(name);
        let result = File::open(&path)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))
            .and_then(|f| nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()));
        match result {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => println!("loading {name}: {e}"),
        }
    }
}

fn pci_id(kname: &str) -> Option<String> {
    let dev = std::fs::canonicalize(format!("/sys/block/{kname}/device/device")).ok()?;
    let read = |f: &str| std::fs::read_to_string(dev.join(f)).ok();
    Some(format!(
        "{}:{}",
        read("vendor")?.trim().trim_start_matches("0x"),
        read("device")?.trim().trim_start_matches("0x")
    ))
}

/// Identify data of the devices, for the unit tests' fixtures.
fn capture_fixtures(devices: &[String]) {
    for d in devices {
        let Ok(file) = File::open(format!("/dev/{d}")) else {
            continue;
        };
        if d.starts_with("sd") {
            match ata::identify(&sg::SgDevice::new(&file)) {
                Ok(id) => println!("FIXTURE ata-identify-{d} {}", hex(&id.to_bytes())),
                Err(e) => println!("IDENTIFY DEVICE on {d}: {e}"),
            }
        }
        if d.starts_with("nvme") {
            let t = nvme::NvmeDevice::new(&file);
            let nsid = nvme::NvmeTransport::namespace_id(&t).unwrap_or(1);
            for (name, cns, ns) in [
                ("id-ctrl", nvme::IDENTIFY_CNS_CONTROLLER, 0),
                ("id-ns", nvme::IDENTIFY_CNS_NAMESPACE, nsid),
            ] {
                let mut buf = vec![0u8; 4096];
                match nvme::NvmeTransport::admin(
                    &t,
                    &nvme::AdminCommand::identify(cns, ns),
                    Some(&mut buf),
                ) {
                    Ok(_) => println!(
                        "FIXTURE nvme-{name}-{d}-{} {}",
                        pci_id(d).unwrap_or_default(),
                        hex(&buf)
                    ),
                    Err(e) => println!("Identify {name} on {d}: {e}"),
                }
            }
            let log = nvme::sanitize_status(&t);
            println!("NVME-SANITIZE-LOG {d} {log:?}");
        }
    }
}

/// `busybox dd` of `mib` MiB of zeros to the device, direct and flushed, three times (the
/// median is the ceiling: the host is shared); then the device is made read-only.
fn ceiling(device: &str, mib: u64) -> Value {
    let command = format!(
        "busybox dd if=/dev/zero of=/dev/{device} bs=4M count={} oflag=direct conv=fsync",
        mib / 4
    );
    let mut runs = Vec::new();
    let mut ok = true;
    let mut text = String::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = std::process::Command::new("/bin/busybox")
            .args(command.split_whitespace().skip(1))
            .output();
        let seconds = started.elapsed().as_secs_f64();
        match out {
            Ok(o) => {
                ok &= o.status.success();
                text = String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .replace('\n', " | ");
            }
            Err(e) => {
                ok = false;
                text = e.to_string();
            }
        }
        runs.push(((mib as f64 / seconds) * 10.0).round() / 10.0);
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    if let Ok(f) = File::open(format!("/dev/{device}")) {
        if let Err(e) = blockdev::ioctl::set_read_only(&f, true) {
            println!("BLKROSET {device}: {e}");
        }
    }
    json!({
        "device": device,
        "command": command,
        "ok": ok,
        "dd_output": text,
        "bytes": mib << 20,
        "runs_mib_per_second": runs,
        "mib_per_second": sorted[1],
    })
}

fn main() {
    mount("proc", "/proc");
    mount("sysfs", "/sys");
    mount("devtmpfs", "/dev");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params: BTreeMap<&str, &str> = cmdline
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| k.starts_with("erase."))
        .collect();
    let timeout: u64 = params
        .get("erase.timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(100);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(timeout));
        println!("ERASE-TIMEOUT after {timeout} s");
        power_off();
    });
    std::panic::set_hook(Box::new(|info| {
        println!("ERASE-PANIC {info}");
        power_off();
    }));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter("info")
        .init();
    println!(
        "ERASE-INIT kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    load_modules();
    let expect: Vec<String> = params
        .get("erase.expect")
        .map(|e| e.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !expect
        .iter()
        .all(|d| Path::new("/sys/block").join(d).exists())
    {
        if Instant::now() > deadline {
            println!("devices missing: {expect:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    capture_fixtures(&expect);

    let ceiling = params.get("erase.ceiling").map(|d| {
        let mib = params
            .get("erase.ceiling_mib")
            .and_then(|m| m.parse().ok())
            .unwrap_or(256);
        ceiling(d, mib)
    });

    let guard = DeviceGuard::new(true, vec![], "/sys");
    let generic = GenericHardwareManager::new(guard.clone(), GenericOptions::default());
    let mut managers: Vec<Box<dyn HardwareManager>> = vec![Box::new(generic)];
    if let Some((vendor, device)) = params.get("erase.card").and_then(|c| c.split_once(':')) {
        let config = FlashCardConfig {
            cards: vec![CardModel {
                name: "QEMU NVMe standing in for a flash card".into(),
                pci: PciMatch {
                    vendor: u16::from_str_radix(vendor, 16).ok(),
                    device: u16::from_str_radix(device, 16).ok(),
                    ..PciMatch::default()
                },
                erase: CardErase::Nvme,
            }],
            ..FlashCardConfig::default()
        };
        managers.push(Box::new(FlashCardManager::new(guard.clone(), config)));
    }
    let managers = Managers::new(managers).expect("the generic manager is always supported");
    let node: Node = serde_json::from_value(json!({
        "uuid": "00000000-0000-0000-0000-00000000e5a5",
        "driver_internal_info": {
            "agent_erase_devices_iterations": 1,
            "agent_erase_devices_zeroize": true,
            "agent_erase_skip_read_only": true,
            "disk_erasure_concurrency": 4,
        }
    }))
    .expect("a valid node");
    let args = Map::new();
    let started = Instant::now();
    let result = managers.execute_step("erase_devices", &StepCall::new(&node, &[], &args));
    let seconds = started.elapsed().as_secs_f64();
    let report = json!({
        "managers": managers.names(),
        "ceiling": ceiling,
        "erase_seconds": (seconds * 10.0).round() / 10.0,
        "result": match result {
            Ok(v) => json!({"ok": v}),
            Err(e) => json!({"error": e.to_string()}),
        },
    });
    println!("ERASE-REPORT {report}");
    println!("ERASE-DONE");
    power_off();
}
