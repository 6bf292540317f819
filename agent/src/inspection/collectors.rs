//! Inspection collectors that read sysfs directly: `pci-devices`, `numa-topology` and
//! `usb-devices`, with IPA's output shapes (`inspector.py`, `numa_inspector.py`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

/// IPA's `pci_devices`: one entry per device of `/sys/bus/pci/devices`, ids without `0x`.
pub fn pci_devices(sys_root: &Path) -> Result<Value, String> {
    let dir = sys_root.join("bus/pci/devices");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("Failed to get list of PCI devices: {e}"))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for bus in names {
        let dev = dir.join(&bus);
        let hex = |file: &str| -> Option<String> {
            let text = std::fs::read_to_string(dev.join(file)).ok()?;
            Some(text.trim().split_once('x')?.1.to_string())
        };
        let (Some(vendor), Some(product), Some(class)) =
            (hex("vendor"), hex("device"), hex("class"))
        else {
            tracing::warn!(device = %bus, "no vendor, product or class id; skipping");
            continue;
        };
        let numa = std::fs::read_to_string(dev.join("numa_node"))
            .ok()
            .map(|s| s.trim().to_string());
        out.push(json!({
            "vendor_id": vendor,
            "product_id": product,
            "class": class,
            "revision": hex("revision"),
            "bus": bus,
            "numa_node_id": numa,
        }));
    }
    Ok(Value::Array(out))
}

/// IPA's `numa_topology`: memory per node, physical cores per node with their thread
/// siblings, NICs per node. `Err` (IPA then leaves the key out) on a sysfs it cannot read.
pub fn numa_topology(sys_root: &Path) -> Result<Value, String> {
    let node_dir = sys_root.join("devices/system/node");
    let mut nodes: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&node_dir)
        .map_err(|e| format!("NUMA node path {} unreadable: {e}", node_dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix("node")?.parse().ok()?;
            Some((id, e.path()))
        })
        .collect();
    nodes.sort();
    let mut ram = Vec::new();
    // (node, core id) -> thread ids, in first-seen order.
    let mut cores: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for (id, path) in &nodes {
        let meminfo = std::fs::read_to_string(path.join("meminfo"))
            .map_err(|e| format!("memory of NUMA node {id}: {e}"))?;
        // "Node 0 MemTotal:       16318476 kB"
        let kb = meminfo
            .lines()
            .find_map(|l| l.split_once("MemTotal:").map(|(_, v)| v.trim().to_string()))
            .and_then(|v| parse_kb(&v))
            .ok_or_else(|| format!("no MemTotal for NUMA node {id}"))?;
        ram.push(json!({"numa_node": id, "size_kb": kb}));
        let mut threads: Vec<u32> = std::fs::read_dir(path)
            .map_err(|e| format!("threads of NUMA node {id}: {e}"))?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix("cpu")?
                    .parse()
                    .ok()
            })
            .collect();
        threads.sort_unstable();
        for t in threads {
            let core_file = path.join(format!("cpu{t}/topology/core_id"));
            let core: u32 = std::fs::read_to_string(&core_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("no core id for CPU {t} of NUMA node {id}"))?;
            let siblings = cores.entry((*id, core)).or_default();
            if !siblings.contains(&t) {
                siblings.push(t);
            }
        }
    }
    let cpus: Vec<Value> = cores
        .into_iter()
        .map(|((node, core), siblings)| {
            json!({"cpu": core, "numa_node": node, "thread_siblings": siblings})
        })
        .collect();
    let net = sys_root.join("class/net");
    let mut nics = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&net)
        .map_err(|e| format!("NIC device path {}: {e}", net.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let Ok(text) = std::fs::read_to_string(net.join(&name).join("device/numa_node")) else {
            continue;
        };
        let node: i64 = text
            .trim()
            .parse()
            .map_err(|_| format!("NUMA node of NIC {name}: {:?}", text.trim()))?;
        nics.push(json!({"name": name, "numa_node": node}));
    }
    Ok(json!({"ram": ram, "cpus": cpus, "nics": nics}))
}

/// `16318476 kB` (also `MB`, `GB`) in KiB.
fn parse_kb(v: &str) -> Option<u64> {
    let mut parts = v.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    Some(match parts.next().unwrap_or("kB") {
        "kB" | "KB" => n,
        "MB" => n * 1024,
        "GB" => n * 1024 * 1024,
        _ => return None,
    })
}

/// IPA's `usb_devices`: `{"product", "vendor", "handle"}` per USB device (not interface),
/// the handle as lshw writes it (`USB:<bus>:<device>`).
pub fn usb_devices(sys_root: &Path) -> Result<Value, String> {
    let dir = sys_root.join("bus/usb/devices");
    let mut out = Vec::new();
    let mut entries: Vec<std::path::PathBuf> = match std::fs::read_dir(&dir) {
        Ok(e) => e.flatten().map(|e| e.path()).collect(),
        // No USB controller at all.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Value::Array(out)),
        Err(e) => return Err(format!("listing {}: {e}", dir.display())),
    };
    entries.sort();
    for dev in entries {
        if !dev.join("idVendor").exists() {
            continue; // an interface, not a device
        }
        let read = |f: &str| {
            std::fs::read_to_string(dev.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let (Some(bus), Some(num)) = (read("busnum"), read("devnum")) else {
            continue;
        };
        out.push(json!({
            "product": read("product"),
            "vendor": read("manufacturer"),
            "handle": format!("USB:{bus}:{num}"),
        }));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn pci_devices_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (bus, v, p, c, rev, numa) in [
            (
                "0000:3b:00.0",
                "0x15b3",
                "0x1017",
                "0x020000",
                Some("0x00"),
                "0",
            ),
            (
                "0000:00:00.0",
                "0x8086",
                "0x2020",
                "0x060000",
                Some("0x04"),
                "-1",
            ),
            ("0000:d8:00.0", "0x1000", "0x00af", "0x010700", None, "1"),
        ] {
            let dev = format!("bus/pci/devices/{bus}");
            w(r, &format!("{dev}/vendor"), &format!("{v}\n"));
            w(r, &format!("{dev}/device"), &format!("{p}\n"));
            w(r, &format!("{dev}/class"), &format!("{c}\n"));
            w(r, &format!("{dev}/numa_node"), &format!("{numa}\n"));
            if let Some(rev) = rev {
                w(r, &format!("{dev}/revision"), &format!("{rev}\n"));
            }
        }
        w(r, "bus/pci/devices/0000:ff:00.0/vendor", "garbage\n");
        let v = pci_devices(r).unwrap();
        assert_eq!(
            v,
            json!([
                {"vendor_id": "8086", "product_id": "2020", "class": "060000", "revision": "04",
                 "bus": "0000:00:00.0", "numa_node_id": "-1"},
                {"vendor_id": "15b3", "product_id": "1017", "class": "020000", "revision": "00",
                 "bus": "0000:3b:00.0", "numa_node_id": "0"},
                {"vendor_id": "1000", "product_id": "00af", "class": "010700", "revision": null,
                 "bus": "0000:d8:00.0", "numa_node_id": "1"},
            ])
        );
        assert!(pci_devices(&r.join("nowhere")).is_err());
    }

    #[test]
    fn numa_topology_of_two_nodes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        w(
            r,
            "devices/system/node/node0/meminfo",
            "Node 0 MemTotal:       16318476 kB\nNode 0 MemFree: 1 kB\n",
        );
        w(
            r,
            "devices/system/node/node1/meminfo",
            "Node 1 MemTotal:       16384000 kB\n",
        );
        w(r, "devices/system/node/possible", "0-1\n");
        // node0: cpu0+cpu2 are core 0, cpu1+cpu3 core 1; node1: cpu4+cpu5 core 0.
        for (node, cpu, core) in [
            (0, 0, 0),
            (0, 1, 1),
            (0, 2, 0),
            (0, 3, 1),
            (1, 4, 0),
            (1, 5, 0),
        ] {
            w(
                r,
                &format!("devices/system/node/node{node}/cpu{cpu}/topology/core_id"),
                &format!("{core}\n"),
            );
        }
        w(r, "class/net/eno1/device/numa_node", "0\n");
        w(r, "class/net/ens2f0/device/numa_node", "1\n");
        w(r, "class/net/lo/address", "00:00:00:00:00:00\n");
        let v = numa_topology(r).unwrap();
        assert_eq!(
            v,
            json!({
                "ram": [{"numa_node": 0, "size_kb": 16318476},
                        {"numa_node": 1, "size_kb": 16384000}],
                "cpus": [{"cpu": 0, "numa_node": 0, "thread_siblings": [0, 2]},
                         {"cpu": 1, "numa_node": 0, "thread_siblings": [1, 3]},
                         {"cpu": 0, "numa_node": 1, "thread_siblings": [4, 5]}],
                "nics": [{"name": "eno1", "numa_node": 0},
                         {"name": "ens2f0", "numa_node": 1}],
            })
        );
        // A node without memory information: IPA gives up on the whole topology.
        w(r, "devices/system/node/node1/meminfo", "nothing\n");
        assert!(numa_topology(r)
            .unwrap_err()
            .contains("no MemTotal for NUMA node 1"));
    }

    #[test]
    fn usb_devices_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        w(r, "bus/usb/devices/usb1/idVendor", "1d6b\n");
        w(r, "bus/usb/devices/usb1/busnum", "1\n");
        w(r, "bus/usb/devices/usb1/devnum", "1\n");
        w(r, "bus/usb/devices/usb1/product", "xHCI Host Controller\n");
        w(
            r,
            "bus/usb/devices/usb1/manufacturer",
            "Linux 6.1.0 xhci-hcd\n",
        );
        w(r, "bus/usb/devices/1-1/idVendor", "0624\n");
        w(r, "bus/usb/devices/1-1/busnum", "1\n");
        w(r, "bus/usb/devices/1-1/devnum", "2\n");
        w(r, "bus/usb/devices/1-1/product", "Virtual Keyboard\n");
        w(r, "bus/usb/devices/1-1:1.0/bInterfaceClass", "03\n");
        assert_eq!(
            usb_devices(r).unwrap(),
            json!([
                {"product": "Virtual Keyboard", "vendor": null, "handle": "USB:1:2"},
                {"product": "xHCI Host Controller", "vendor": "Linux 6.1.0 xhci-hcd",
                 "handle": "USB:1:1"},
            ])
        );
        assert_eq!(usb_devices(&r.join("none")).unwrap(), json!([]));
    }
}
