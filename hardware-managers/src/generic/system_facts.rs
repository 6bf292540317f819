//! CPU, memory, firmware and boot facts of the inventory, from procfs, sysfs and the SMBIOS
//! tables the kernel exports (no dmidecode, no lscpu).

use std::collections::BTreeSet;
use std::path::Path;

use ironic_protocol::{Boot, Cpu, Memory, SystemFirmware, SystemVendor};

/// Where the facts are read from; tests point these at fixtures.
#[derive(Debug, Clone)]
pub struct FactSources<'a> {
    pub proc_root: &'a Path,
    pub sys_root: &'a Path,
}

/// lscpu's view of the processors, from `/proc/cpuinfo` and sysfs: `count` is the number of
/// logical CPUs, `socket_count` the number of distinct physical packages (the `physical id`
/// lines, or sysfs topology where cpuinfo has none, as on ARM), `frequency` the maximum
/// frequency when cpufreq knows it, else the first CPU's current one.
pub fn cpu(src: &FactSources<'_>) -> Cpu {
    let text = std::fs::read_to_string(src.proc_root.join("cpuinfo")).unwrap_or_default();
    let mut count = 0u32;
    let mut sockets = BTreeSet::new();
    let mut cpu = Cpu {
        architecture: architecture(),
        ..Cpu::default()
    };
    let mut mhz = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => count += 1,
            // x86 "model name"; ARM's cpuinfo has none, s390x/ppc name it otherwise.
            "model name" | "cpu model" | "cpu" if cpu.model_name.is_none() => {
                cpu.model_name = Some(value.to_string())
            }
            "cpu MHz" if mhz.is_none() => mhz = Some(value.to_string()),
            // x86 "flags", ARM "Features".
            "flags" | "Features" if cpu.flags.is_empty() => {
                cpu.flags = value.split_whitespace().map(str::to_string).collect()
            }
            "physical id" => {
                sockets.insert(value.to_string());
            }
            _ => {}
        }
    }
    let cpus = src.sys_root.join("devices/system/cpu");
    if count == 0 {
        count = online_cpus(&cpus);
    }
    if sockets.is_empty() {
        for entry in std::fs::read_dir(&cpus).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_cpu = name
                .strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_cpu {
                let id = entry.path().join("topology/physical_package_id");
                if let Ok(id) = std::fs::read_to_string(id) {
                    sockets.insert(id.trim().to_string());
                }
            }
        }
    }
    cpu.count = count;
    cpu.socket_count = Some(sockets.len().max(usize::from(count > 0)) as u32);
    let max_khz = std::fs::read_to_string(cpus.join("cpu0/cpufreq/cpuinfo_max_freq"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok());
    cpu.frequency = max_khz.map(|k| format!("{:.4}", k / 1000.0)).or(mhz);
    cpu
}

/// The number of CPUs in `online` (`0-3,8-11`).
fn online_cpus(cpus: &Path) -> u32 {
    let text = std::fs::read_to_string(cpus.join("online")).unwrap_or_default();
    text.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u32::from(r.parse::<u32>().is_ok()),
        })
        .sum()
}

/// The machine's architecture as `uname -m` says it.
fn architecture() -> String {
    nix::sys::utsname::uname()
        .ok()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn memory(src: &FactSources<'_>) -> Memory {
    let total = std::fs::read_to_string(src.proc_root.join("meminfo"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kib| kib * 1024);
    let physical_mb = std::fs::read(src.sys_root.join(super::smbios::TABLE))
        .ok()
        .and_then(|t| super::smbios::installed_memory_mb(&t))
        .or_else(|| memory_blocks_mb(src.sys_root));
    Memory { total, physical_mb }
}

/// Memory the kernel manages in hot-pluggable blocks (`/sys/devices/system/memory`), in MiB:
/// all RAM, reserved areas included, in block granularity. Where there are no SMBIOS tables
/// (some VMs) this is what `lshw`, and so IPA, reports as physical memory, near enough.
fn memory_blocks_mb(sys_root: &Path) -> Option<u64> {
    let dir = sys_root.join("devices/system/memory");
    let block = u64::from_str_radix(
        std::fs::read_to_string(dir.join("block_size_bytes"))
            .ok()?
            .trim(),
        16,
    )
    .ok()?;
    let online = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("memory"))
        .filter(|e| std::fs::read_to_string(e.path().join("online")).is_ok_and(|s| s.trim() == "1"))
        .count() as u64;
    let mb = online * block / (1024 * 1024);
    (mb > 0).then_some(mb)
}

/// From `/sys/class/dmi/id`, else straight from the SMBIOS tables (system and BIOS
/// information structures) when the kernel exports those but not the id files.
pub fn system_vendor(src: &FactSources<'_>) -> SystemVendor {
    let dmi = |name: &str| {
        std::fs::read_to_string(src.sys_root.join("class/dmi/id").join(name))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut v = SystemVendor {
        product_name: dmi("product_name"),
        serial_number: dmi("product_serial"),
        manufacturer: dmi("sys_vendor"),
        firmware: SystemFirmware {
            vendor: dmi("bios_vendor"),
            version: dmi("bios_version"),
            build_date: dmi("bios_date"),
        },
    };
    if v.manufacturer.is_none() && v.product_name.is_none() && v.firmware.vendor.is_none() {
        if let Ok(table) = std::fs::read(src.sys_root.join(super::smbios::TABLE)) {
            if let Some((manufacturer, product, serial)) = super::smbios::system_information(&table)
            {
                v.manufacturer = manufacturer;
                v.product_name = product;
                v.serial_number = serial;
            }
            if let Some((vendor, version, date)) = super::smbios::bios_information(&table) {
                v.firmware = SystemFirmware {
                    vendor,
                    version,
                    build_date: date,
                };
            }
        }
    }
    v
}

pub fn boot(src: &FactSources<'_>) -> Boot {
    Boot {
        current_boot_mode: if src.sys_root.join("firmware/efi").exists() {
            "uefi"
        } else {
            "bios"
        }
        .to_string(),
        pxe_interface: None,
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n\
        cpu MHz\t\t: 2100.000\nphysical id\t: 0\nflags\t\t: fpu vme de pse vmx\n\n\
        processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\ncpu MHz\t\t: 1000.000\n\
        physical id\t: 1\nflags\t\t: fpu vme de pse vmx\n\n";

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(d.path().join("proc/cpuinfo"), CPUINFO).unwrap();
        std::fs::write(
            d.path().join("proc/meminfo"),
            "MemTotal:       16314604 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        let dmi = d.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(dmi.join("sys_vendor"), "Dell Inc.\n").unwrap();
        std::fs::write(dmi.join("product_name"), "PowerEdge R640\n").unwrap();
        std::fs::write(dmi.join("bios_version"), "2.11.2\n").unwrap();
        d
    }

    #[test]
    fn cpu_memory_vendor_from_fixtures() {
        let d = fixture();
        let src = FactSources {
            proc_root: &d.path().join("proc"),
            sys_root: &d.path().join("sys"),
        };
        let c = cpu(&src);
        assert_eq!(c.count, 2);
        assert_eq!(c.socket_count, Some(2));
        assert_eq!(
            c.model_name.as_deref(),
            Some("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz")
        );
        assert_eq!(c.frequency.as_deref(), Some("2100.000"));
        assert_eq!(c.flags, ["fpu", "vme", "de", "pse", "vmx"]);
        assert_eq!(memory(&src).total, 16314604 * 1024);
        assert_eq!(memory(&src).physical_mb, None);
        let v = system_vendor(&src);
        assert_eq!(v.manufacturer.as_deref(), Some("Dell Inc."));
        assert_eq!(v.firmware.version.as_deref(), Some("2.11.2"));
        assert_eq!(v.serial_number, None);
        assert_eq!(boot(&src).current_boot_mode, "bios");
    }

    /// A two-socket Xeon (2 sockets x 2 cores x 2 threads), cpuinfo as the kernel prints it.
    const CPUINFO_2S: &str = include_str!("fixtures/cpuinfo-2socket-xeon.txt");
    /// An Ampere Altra (aarch64): no model name, "Features", no physical id.
    const CPUINFO_ARM: &str = include_str!("fixtures/cpuinfo-aarch64.txt");

    #[test]
    fn multi_socket_cpuinfo() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(d.path().join("proc/cpuinfo"), CPUINFO_2S).unwrap();
        let freq = d.path().join("sys/devices/system/cpu/cpu0/cpufreq");
        std::fs::create_dir_all(&freq).unwrap();
        std::fs::write(freq.join("cpuinfo_max_freq"), "3900000\n").unwrap();
        let src = FactSources {
            proc_root: &d.path().join("proc"),
            sys_root: &d.path().join("sys"),
        };
        let c = cpu(&src);
        assert_eq!(c.count, 8);
        assert_eq!(c.socket_count, Some(2));
        assert_eq!(
            c.model_name.as_deref(),
            Some("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz")
        );
        assert_eq!(
            c.frequency.as_deref(),
            Some("3900.0000"),
            "cpufreq maximum wins"
        );
        assert!(c.flags.contains(&"avx512f".to_string()) && c.flags.contains(&"vmx".to_string()));
        assert_eq!(c.flags.first().map(String::as_str), Some("fpu"));
    }

    #[test]
    fn arm_cpuinfo_uses_sysfs_topology() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(d.path().join("proc/cpuinfo"), CPUINFO_ARM).unwrap();
        let cpus = d.path().join("sys/devices/system/cpu");
        for n in 0..4 {
            let t = cpus.join(format!("cpu{n}/topology"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("physical_package_id"), format!("{}\n", n / 2)).unwrap();
        }
        let src = FactSources {
            proc_root: &d.path().join("proc"),
            sys_root: &d.path().join("sys"),
        };
        let c = cpu(&src);
        assert_eq!(c.count, 4);
        assert_eq!(c.socket_count, Some(2));
        assert_eq!(c.model_name, None);
        assert_eq!(c.frequency, None);
        assert_eq!(c.flags[..3], ["fp", "asimd", "evtstrm"]);
    }

    #[test]
    fn online_cpu_ranges() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("online"), "0-3,8-11,15\n").unwrap();
        assert_eq!(online_cpus(d.path()), 9);
    }

    #[test]
    fn physical_memory_from_smbios_else_memory_blocks() {
        let d = fixture();
        let src = FactSources {
            proc_root: &d.path().join("proc"),
            sys_root: &d.path().join("sys"),
        };
        // Memory blocks of 128 MiB, 3 online, one offline.
        let mem = d.path().join("sys/devices/system/memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("block_size_bytes"), "8000000\n").unwrap();
        for (n, online) in [(0, "1"), (1, "1"), (2, "0"), (3, "1")] {
            std::fs::create_dir_all(mem.join(format!("memory{n}"))).unwrap();
            std::fs::write(mem.join(format!("memory{n}/online")), online).unwrap();
        }
        assert_eq!(memory(&src).physical_mb, Some(384));

        let tables = d.path().join("sys/firmware/dmi/tables");
        std::fs::create_dir_all(&tables).unwrap();
        std::fs::write(
            tables.join("DMI"),
            crate::generic::smbios::tests::server_table(),
        )
        .unwrap();
        assert_eq!(memory(&src).physical_mb, Some(16384 + 65536));
    }

    #[test]
    fn vendor_from_smbios_when_sysfs_has_no_dmi_id() {
        let d = tempfile::tempdir().unwrap();
        let tables = d.path().join("sys/firmware/dmi/tables");
        std::fs::create_dir_all(&tables).unwrap();
        std::fs::write(
            tables.join("DMI"),
            crate::generic::smbios::tests::server_table(),
        )
        .unwrap();
        let src = FactSources {
            proc_root: d.path(),
            sys_root: &d.path().join("sys"),
        };
        let v = system_vendor(&src);
        assert_eq!(v.manufacturer.as_deref(), Some("Dell Inc."));
        assert_eq!(v.product_name.as_deref(), Some("PowerEdge R640"));
        assert_eq!(v.serial_number.as_deref(), Some("4XJ9KL2"));
        assert_eq!(v.firmware.version.as_deref(), Some("2.11.2"));
        assert_eq!(v.firmware.build_date.as_deref(), Some("04/23/2021"));
    }
}
