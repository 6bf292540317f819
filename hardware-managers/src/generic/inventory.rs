//! The generic manager's inventory (IPA's `list_hardware_info`), from sysfs, procfs, the
//! SMBIOS tables, netlink-free `getifaddrs`, packet sockets (LLDP) and the IPMI device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ironic_protocol::{BlockDevice, Interface, Inventory};

use super::{bmc, lldp, system_facts};
use crate::InventoryRequest;

/// BMC answers per IPMI device directory: asking the BMC takes up to a second per channel,
/// and its addresses do not change while the agent runs (IPA caches them too).
static BMC_CACHE: Mutex<BTreeMap<PathBuf, Option<bmc::BmcInfo>>> = Mutex::new(BTreeMap::new());

fn bmc_info(dev_root: &Path) -> Option<bmc::BmcInfo> {
    let mut cache = BMC_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(dev_root.to_path_buf())
        .or_insert_with(|| bmc::detect(dev_root))
        .clone()
}

/// Where the facts come from: `/proc`, `/sys` and `/dev`, or fixtures in tests.
pub(super) struct Roots<'a> {
    pub proc: &'a Path,
    pub sys: &'a Path,
    pub dev: &'a Path,
}

/// The inventory of the machine whose NICs and disks the manager listed.
pub(super) fn collect(
    roots: &Roots<'_>,
    mut interfaces: Vec<Interface>,
    disks: Vec<BlockDevice>,
    request: &InventoryRequest,
) -> Inventory {
    let started = Instant::now();
    let src = system_facts::FactSources {
        proc_root: roots.proc,
        sys_root: roots.sys,
    };
    if let Some(timeout) = request.lldp_timeout {
        let names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
        let mut frames = lldp::collect(&names, timeout);
        for iface in &mut interfaces {
            iface.lldp = frames.remove(&iface.name);
        }
    }
    let (bmc_address, bmc_v6address, bmc_mac) = if request.skip_bmc_detect {
        tracing::info!("skipping BMC detection as the conductor asked");
        (None, None, None)
    } else {
        match bmc_info(roots.dev) {
            Some(b) => (b.address, b.v6address, b.mac),
            None => (None, None, None),
        }
    };
    let mut boot = system_facts::boot(&src);
    boot.pxe_interface = request.pxe_interface.clone();
    let inventory = Inventory {
        interfaces,
        cpu: system_facts::cpu(&src),
        disks,
        memory: system_facts::memory(&src),
        bmc_address,
        bmc_v6address,
        bmc_mac,
        system_vendor: system_facts::system_vendor(&src),
        boot,
        hostname: system_facts::hostname(),
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "inventory collected"
    );
    inventory
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::block_devices::tests::SysFixture;
    use crate::generic::{GenericHardwareManager, GenericOptions};
    use crate::HardwareManager;
    use blockdev::DeviceGuard;

    #[test]
    fn inventory_from_a_fixture_machine() {
        let fx = SysFixture::new();
        fx.disk("sda", "8:0", 2 << 21);
        fx.scsi("sda", "0:0:0:0");
        let sys = fx.sys();
        // A NIC, DMI ids, an EFI firmware directory.
        let nic = sys.join("class/net/eno1");
        std::fs::create_dir_all(&nic).unwrap();
        std::fs::write(nic.join("address"), "3c:ec:ef:12:34:56\n").unwrap();
        std::fs::write(nic.join("type"), "1\n").unwrap();
        std::fs::write(nic.join("carrier"), "1\n").unwrap();
        std::fs::write(nic.join("speed"), "25000\n").unwrap();
        let pci = sys.join("devices/pci0000:00/0000:3b:00.0");
        std::fs::create_dir_all(&pci).unwrap();
        std::fs::write(pci.join("vendor"), "0x15b3\n").unwrap();
        std::fs::write(pci.join("device"), "0x1017\n").unwrap();
        std::os::unix::fs::symlink(&pci, nic.join("device")).unwrap();
        std::fs::create_dir_all(sys.join("firmware/efi")).unwrap();
        let tables = sys.join("firmware/dmi/tables");
        std::fs::create_dir_all(&tables).unwrap();
        std::fs::write(
            tables.join("DMI"),
            super::super::smbios::tests::server_table(),
        )
        .unwrap();
        let proc = fx.root.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(
            proc.join("cpuinfo"),
            include_str!("fixtures/cpuinfo-2socket-xeon.txt"),
        )
        .unwrap();
        std::fs::write(proc.join("meminfo"), "MemTotal:       98765432 kB\n").unwrap();

        let guard = DeviceGuard::new(true, vec![], &sys);
        let m =
            GenericHardwareManager::new(guard, GenericOptions::default()).with_dev_root(fx.dev());
        let request = InventoryRequest {
            pxe_interface: Some("01-3c-ec-ef-12-34-56".into()),
            ..InventoryRequest::default()
        };
        let inv = m.collect_inventory(&proc, &request).unwrap();
        let v = serde_json::to_value(&inv).unwrap();
        assert_eq!(v["interfaces"][0]["name"], "eno1");
        assert_eq!(v["interfaces"][0]["mac_address"], "3c:ec:ef:12:34:56");
        assert_eq!(v["interfaces"][0]["speed_mbps"], 25000);
        assert_eq!(v["interfaces"][0]["vendor"], "0x15b3");
        assert_eq!(v["interfaces"][0]["lldp"], serde_json::Value::Null);
        assert_eq!(v["cpu"]["count"], 8);
        assert_eq!(v["cpu"]["socket_count"], 2);
        assert_eq!(v["memory"]["total"], 98765432u64 * 1024);
        assert_eq!(v["memory"]["physical_mb"], 16384 + 65536);
        assert_eq!(v["disks"][0]["serial"], "S3Z1NB0K");
        assert_eq!(v["disks"][0]["size"], 2u64 << 30);
        assert_eq!(v["system_vendor"]["product_name"], "PowerEdge R640");
        assert_eq!(v["boot"]["current_boot_mode"], "uefi");
        assert_eq!(v["boot"]["pxe_interface"], "01-3c-ec-ef-12-34-56");
        // No IPMI device in the fixture: unknown, and no bmc_mac key at all.
        assert_eq!(v["bmc_address"], serde_json::Value::Null);
        assert!(v.get("bmc_mac").is_none());

        let skipped = m
            .collect_inventory(
                &proc,
                &InventoryRequest {
                    skip_bmc_detect: true,
                    ..request
                },
            )
            .unwrap();
        assert_eq!(skipped.bmc_address, None);
        assert_eq!(skipped.bmc_v6address, None);
    }

    #[test]
    fn disks_with_and_without_serial_and_wwn() {
        let fx = SysFixture::new();
        let sys = fx.sys();
        let w = |rel: &str, text: &str| {
            let p = sys.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        // NVMe: serial and model in the controller's sysfs, EUI-64 wwid on the namespace.
        fx.disk("nvme0n1", "259:0", 1 << 21);
        let ctrl = sys.join("devices/pci0000:00/0000:00:04.0/nvme/nvme0");
        std::fs::create_dir_all(&ctrl).unwrap();
        std::fs::write(ctrl.join("serial"), "S4EWNX0R123456      \n").unwrap();
        std::fs::write(
            ctrl.join("model"),
            "Samsung SSD 980 PRO 1TB                 \n",
        )
        .unwrap();
        std::os::unix::fs::symlink(&ctrl, sys.join("block/nvme0n1/device")).unwrap();
        w("block/nvme0n1/wwid", "eui.002538b111b2c3d4\n");
        // SAS disk: 32-digit NAA wwid (with vendor extension), serial in VPD page 0x80,
        // rotational, 4K physical sectors.
        fx.disk("sdb", "8:16", 1 << 22);
        let sas = sys.join(
            "devices/pci0000:00/0000:18:00.0/host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0",
        );
        std::fs::create_dir_all(&sas).unwrap();
        std::fs::write(sas.join("model"), "ST4000NM0025    \n").unwrap();
        std::fs::write(sas.join("vendor"), "SEAGATE \n").unwrap();
        std::fs::write(sas.join("wwid"), "naa.6000c29a1b2c3d4e5f60718293a4b5c6\n").unwrap();
        let mut vpd = vec![0u8, 0x80, 0, 10];
        vpd.extend_from_slice(b"ZC1ABCD9  ");
        std::fs::write(sas.join("vpd_pg80"), vpd).unwrap();
        std::os::unix::fs::symlink(&sas, sys.join("block/sdb/device")).unwrap();
        w("block/sdb/queue/rotational", "1\n");
        // virtio disk: no serial, no wwn, no hctl.
        fx.disk("vda", "254:0", 1 << 20);

        let guard = DeviceGuard::new(true, vec![], &sys);
        let m =
            GenericHardwareManager::new(guard, GenericOptions::default()).with_dev_root(fx.dev());
        let disks = m.list_block_devices(false).unwrap();
        let by = |n: &str| disks.iter().find(|d| d.name.ends_with(n)).unwrap();
        let nvme = by("/nvme0n1");
        assert_eq!(nvme.serial.as_deref(), Some("S4EWNX0R123456"));
        assert_eq!(nvme.model, "Samsung SSD 980 PRO 1TB");
        assert_eq!(nvme.wwn.as_deref(), Some("eui.002538b111b2c3d4"));
        assert_eq!(nvme.tran.as_deref(), Some("nvme"));
        assert_eq!(nvme.hctl, None);
        assert_eq!(nvme.size, 1 << 30);
        let sdb = by("/sdb");
        assert_eq!(sdb.serial.as_deref(), Some("ZC1ABCD9"));
        assert_eq!(sdb.vendor.as_deref(), Some("SEAGATE"));
        assert_eq!(sdb.wwn.as_deref(), Some("0x6000c29a1b2c3d4e"));
        assert_eq!(
            sdb.wwn_vendor_extension.as_deref(),
            Some("0x5f60718293a4b5c6")
        );
        assert_eq!(
            sdb.wwn_with_extension.as_deref(),
            Some("0x6000c29a1b2c3d4e5f60718293a4b5c6")
        );
        assert_eq!(sdb.hctl.as_deref(), Some("2:0:0:0"));
        assert_eq!(sdb.tran.as_deref(), Some("sas"));
        assert!(sdb.rotational);
        assert_eq!(
            (sdb.logical_sectors, sdb.physical_sectors),
            (Some(512), Some(4096))
        );
        let vda = by("/vda");
        assert_eq!(
            (
                vda.serial.as_deref(),
                vda.wwn.as_deref(),
                vda.hctl.as_deref()
            ),
            (None, None, None)
        );
        assert_eq!(vda.model, "");
        assert!(!vda.rotational);
        // In the JSON, absent values are null, as IPA reports them.
        let v = serde_json::to_value(vda).unwrap();
        assert_eq!(v["serial"], serde_json::Value::Null);
        assert_eq!(v["wwn"], serde_json::Value::Null);
    }
}
