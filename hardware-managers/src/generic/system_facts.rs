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

pub fn cpu(src: &FactSources<'_>) -> Cpu {
    let text = std::fs::read_to_string(src.proc_root.join("cpuinfo")).unwrap_or_default();
    let mut count = 0u32;
    let mut sockets = BTreeSet::new();
    let mut cpu = Cpu {
        architecture: std::env::consts::ARCH.to_string(),
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
            "model name" if cpu.model_name.is_none() => cpu.model_name = Some(value.to_string()),
            "cpu MHz" if mhz.is_none() => mhz = Some(value.to_string()),
            "flags" if cpu.flags.is_empty() => {
                cpu.flags = value.split_whitespace().map(str::to_string).collect()
            }
            "physical id" => {
                sockets.insert(value.to_string());
            }
            _ => {}
        }
    }
    cpu.count = count;
    cpu.socket_count = Some(sockets.len().max(usize::from(count > 0)) as u32);
    // The maximum frequency when cpufreq knows it (kHz), else the current one (as lscpu).
    let max_khz = std::fs::read_to_string(
        src.sys_root
            .join("devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
    )
    .ok()
    .and_then(|s| s.trim().parse::<f64>().ok());
    cpu.frequency = max_khz.map(|k| format!("{:.4}", k / 1000.0)).or(mhz);
    cpu
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
    let physical_mb = std::fs::read(src.sys_root.join("firmware/dmi/tables/DMI"))
        .ok()
        .and_then(|t| smbios_memory_mb(&t));
    Memory { total, physical_mb }
}

/// Sum of the sizes of SMBIOS type 17 (memory device) structures, in MiB.
fn smbios_memory_mb(table: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = false;
    let mut pos = 0usize;
    while pos + 4 <= table.len() {
        let kind = table[pos];
        let len = usize::from(table[pos + 1]);
        if len < 4 || pos + len > table.len() {
            break;
        }
        let formatted = &table[pos..pos + len];
        if kind == 17 && len >= 0x0e {
            let size = u16::from_le_bytes([formatted[0x0c], formatted[0x0d]]);
            let mb = match size {
                0 | 0xffff => 0,
                0x7fff if len >= 0x20 => u64::from(
                    u32::from_le_bytes([
                        formatted[0x1c],
                        formatted[0x1d],
                        formatted[0x1e],
                        formatted[0x1f],
                    ]) & 0x7fff_ffff,
                ),
                s if s & 0x8000 != 0 => u64::from(s & 0x7fff) / 1024,
                s => u64::from(s),
            };
            total += mb;
            seen = true;
        }
        if kind == 127 {
            break;
        }
        // Skip the string set, which ends with two NULs.
        let mut end = pos + len;
        while end + 1 < table.len() && !(table[end] == 0 && table[end + 1] == 0) {
            end += 1;
        }
        pos = end + 2;
    }
    (seen && total > 0).then_some(total)
}

pub fn system_vendor(src: &FactSources<'_>) -> SystemVendor {
    let dmi = |name: &str| {
        std::fs::read_to_string(src.sys_root.join("class/dmi/id").join(name))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    SystemVendor {
        product_name: dmi("product_name"),
        serial_number: dmi("product_serial"),
        manufacturer: dmi("sys_vendor"),
        firmware: SystemFirmware {
            vendor: dmi("bios_vendor"),
            version: dmi("bios_version"),
            build_date: dmi("bios_date"),
        },
    }
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

    fn type17(size: u16, extended: u32) -> Vec<u8> {
        let mut s = vec![0u8; 0x28];
        s[0] = 17;
        s[1] = 0x28;
        s[0x0c..0x0e].copy_from_slice(&size.to_le_bytes());
        s[0x1c..0x20].copy_from_slice(&extended.to_le_bytes());
        s.extend_from_slice(b"DIMM A1\0\0");
        s
    }

    #[test]
    fn smbios_memory_devices_are_summed() {
        let mut t = vec![0u8, 4, 0, 0, 0, 0]; // a type-0 stub with an empty string set
        t.extend(type17(16384, 0)); // 16 GiB in MiB
        t.extend(type17(0x7fff, 65536)); // 64 GiB via the extended size
        t.extend(type17(0x8000 | 512, 0)); // 512 KiB: rounds to 0 MiB
        t.extend(type17(0, 0)); // empty slot
        t.extend([127u8, 4, 0, 0, 0, 0]);
        assert_eq!(smbios_memory_mb(&t), Some(16384 + 65536));
        assert_eq!(smbios_memory_mb(&[]), None);
        assert_eq!(smbios_memory_mb(&[17, 2, 0]), None, "truncated table");
    }
}
