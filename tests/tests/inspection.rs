//! In-band inspection against a real Ironic 39: `baremetal node inspect` with the `agent`
//! inspect interface. The agent boots with `ipa-inspection-callback-url`, posts its inventory
//! to `/v1/continue_inspection`, Ironic's hooks set the node's properties, and the node comes
//! back `manageable`. A fake switch on the host end of the veth sends LLDP frames, which must
//! come back decoded by Ironic's own `parse-lldp` hook.
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use std::time::Duration;

use e2e::agent::AgentOptions;
use e2e::harness::Harness;
use e2e::inspection::{self, LldpSender};
use e2e::ironic_api::{NodeSpec, Provision};
use e2e::loopdev::Fill;
use serde_json::{json, Value};

/// 5 GiB (sparse): the smallest disk the agent and Ironic's root-device hook accept as root
/// disk is 4 GiB.
const DISK: u64 = 5 << 30;

/// What the test expects the machine to be, found independently of the agent.
struct Machine {
    cpus: u64,
    arch: String,
    /// Online memory blocks (there are no SMBIOS tables on the CI machines).
    memory_blocks_mb: Option<u64>,
}

fn this_machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64;
    let arch = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let dir = std::path::Path::new("/sys/devices/system/memory");
    let memory_blocks_mb = std::fs::read_to_string(dir.join("block_size_bytes"))
        .ok()
        .and_then(|b| u64::from_str_radix(b.trim(), 16).ok())
        .map(|block| {
            let online = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("memory"))
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("online")).is_ok_and(|s| s.trim() == "1")
                })
                .count() as u64;
            (online * block) >> 20
        });
    Machine {
        cpus,
        arch,
        memory_blocks_mb,
    }
}

#[test]
fn inspection_sets_properties_and_stores_the_inventory() {
    let mut h = Harness::start("inspect", "52:54:00:e2:05:01", |_| {}).expect("harness");
    let disk = h.add_disk(DISK, Fill::Zeros).expect("disk");
    let loop_dev = h.disk(disk).device().display().to_string();
    let machine = this_machine();

    // Properties Ironic must overwrite, and the agent inspect interface.
    let node = h
        .enroll_node(&NodeSpec {
            cpus: 1,
            memory_mb: 1,
            local_gb: 1,
            cpu_arch: "placeholder".into(),
            ..NodeSpec::default()
        })
        .expect("enroll");
    h.client()
        .patch_node(&node.uuid, &[("/inspect_interface", json!("agent"))])
        .expect("inspect_interface=agent");
    h.provision(Provision::Manage).expect("manage");
    h.wait_for("manageable", Duration::from_secs(30))
        .expect("manageable");

    inspection::request_inspection(&h).expect("inspect");
    h.wait_for("inspect wait", Duration::from_secs(30))
        .expect("inspect wait");

    // The switch starts talking before the "machine" boots, as a real one would.
    let _switch = LldpSender::start(
        h.netns().host_if(),
        inspection::switch_frame(),
        Duration::from_millis(300),
    )
    .expect("LLDP sender");
    let api = h.ironic().api_url();
    h.start_agent(AgentOptions {
        extra_cmdline: inspection::inspection_cmdline(&api),
        ..AgentOptions::default()
    })
    .expect("agent");
    let t = std::time::Instant::now();
    let node = h
        .wait_for("manageable", Duration::from_secs(180))
        .expect("inspection finishes");
    h.progress(&format!(
        "inspection took {:.1}s from the agent's start",
        t.elapsed().as_secs_f64()
    ));
    assert_eq!(node.last_error, None);
    // Ironic powers the machine off after inspection.
    h.stop_agent();

    let stored = inspection::stored_inventory(&h).expect("stored inventory");
    let inv = &stored["inventory"];
    let plugin = &stored["plugin_data"];
    print_trimmed(inv, plugin);

    // Properties, from Ironic's cpus/memory/root-device/architecture hooks.
    let props = h.client().get_node_json(&node.uuid).unwrap()["properties"].clone();
    assert_eq!(props["cpus"], json!(machine.cpus), "{props}");
    assert_eq!(props["cpu_arch"], json!(machine.arch), "{props}");
    assert_eq!(props["memory_mb"], inv["memory"]["physical_mb"], "{props}");
    if let Some(mb) = machine.memory_blocks_mb {
        assert_eq!(props["memory_mb"], json!(mb), "{props}");
    }
    // 5 GiB root disk, less the 1 GiB Ironic keeps for partitioning.
    assert_eq!(props["local_gb"], json!(4), "{props}");
    assert_eq!(props["capabilities"], json!("boot_mode:bios"), "{props}");

    // The inventory reflects the machine.
    let eth0 = &inv["interfaces"][0];
    assert_eq!(eth0["name"], "eth0");
    assert_eq!(eth0["mac_address"], json!(h.netns().mac()));
    assert_eq!(eth0["ipv4_address"], json!(h.netns().ns_addr().to_string()));
    assert_eq!(eth0["has_carrier"], true);
    assert_eq!(inv["boot"]["pxe_interface"], json!(h.netns().bootif()));
    assert_eq!(inv["cpu"]["count"], json!(machine.cpus));
    assert!(inv["cpu"]["flags"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));
    let disks = inv["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 1, "only the allowed loop device: {disks:?}");
    assert_eq!(disks[0]["name"], json!(loop_dev));
    assert_eq!(disks[0]["size"], json!(DISK));
    assert_eq!(plugin["root_disk"]["name"], json!(loop_dev));
    assert_eq!(plugin["local_gb"], json!(4));
    // No IPMI device here: unknown, as IPA reports it.
    assert_eq!(inv["bmc_address"], Value::Null);

    // LLDP: raw TLVs in the inventory and from the lldp collector, decoded by Ironic.
    let tlvs = eth0["lldp"].as_array().expect("interfaces[0].lldp");
    let name_hex: String = inspection::SWITCH_NAME
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        tlvs.contains(&json!([5, name_hex])),
        "system name TLV missing: {tlvs:?}"
    );
    assert_eq!(&plugin["lldp_raw"]["eth0"], &eth0["lldp"]);
    let parsed = &plugin["parsed_lldp"]["eth0"];
    assert_eq!(
        parsed["switch_system_name"],
        inspection::SWITCH_NAME,
        "{parsed}"
    );
    assert_eq!(
        parsed["switch_port_id"],
        inspection::SWITCH_PORT,
        "{parsed}"
    );
    assert_eq!(parsed["switch_chassis_id"], "00:1c:73:12:34:00", "{parsed}");
    assert_eq!(
        parsed["switch_port_untagged_vlan_id"],
        json!(inspection::SWITCH_VLAN),
        "{parsed}"
    );
    assert_eq!(parsed["switch_port_mtu"], json!(9214), "{parsed}");
    assert_eq!(
        parsed["switch_mgmt_addresses"],
        json!(["192.0.2.7"]),
        "{parsed}"
    );

    // The other collectors.
    let pci = plugin["pci_devices"].as_array().expect("pci_devices");
    let on_host = std::fs::read_dir("/sys/bus/pci/devices").map_or(0, |d| d.count());
    assert_eq!(pci.len(), on_host);
    assert!(plugin["numa_topology"]["ram"][0]["size_kb"].as_u64() > Some(0));
    assert!(plugin["dmi"].is_object());
    // (Ironic stores the "logs" bundle apart from the plugin data and drops it here.)
    assert_eq!(plugin["error"], Value::Null);
    assert_eq!(
        plugin["configuration"]["collectors"],
        json!([
            "default",
            "logs",
            "lldp",
            "pci-devices",
            "dmi-decode",
            "numa-topology"
        ])
    );

    // The agent looked the node up with the UUID inspection returned.
    let log = h.agent_logs();
    assert!(
        log.contains(&format!(
            "inspection finished successfully node=\"{}\"",
            node.uuid
        )),
        "agent log"
    );
    assert!(
        log.contains(&format!(
            "looking up the node inspection named node={}",
            node.uuid
        )),
        "lookup did not use the UUID inspection returned"
    );
}

/// The inventory as the README shows it: flags and logs trimmed.
fn print_trimmed(inv: &Value, plugin: &Value) {
    let mut inv = inv.clone();
    if let Some(flags) = inv["cpu"]["flags"].as_array_mut() {
        let n = flags.len();
        flags.truncate(4);
        flags.push(json!(format!("... {n} flags")));
    }
    println!(
        "inventory stored by Ironic:\n{}",
        serde_json::to_string_pretty(&inv).unwrap()
    );
    let mut p = plugin.clone();
    if let Some(o) = p.as_object_mut() {
        o.insert("logs".into(), json!("<base64 tar.gz>"));
        o.remove("inventory");
        if let Some(pci) = o.get_mut("pci_devices").and_then(Value::as_array_mut) {
            pci.truncate(2);
        }
        o.remove("all_interfaces");
        o.remove("valid_interfaces");
    }
    println!(
        "plugin data (trimmed):\n{}",
        serde_json::to_string_pretty(&p).unwrap()
    );
}
