//! Fast track against a real Ironic 39 (`[deploy] fast_track = true`, Metal3's default): a
//! node that was just inspected keeps its ramdisk running, is cleaned by it and deployed by
//! it, with no reboot in between. The agent must keep heartbeating while the node waits in
//! `manageable` and `available` (Ironic only records those heartbeats), keep its token and
//! callback URL as Ironic expects in that mode (Ironic keeps the token; a second lookup would
//! only get `******`), and take the cleaning and the deploy when the conductor calls.
//!
//! Needs root, the Ironic venv (tests/setup.sh) and the agent binary; see tests/README.md.

use std::time::{Duration, Instant};

use e2e::agent::AgentOptions;
use e2e::deploy::{
    self, node_spec, set_instance_info, ImageChecksum, InstanceInfo, DEPLOY_TIMEOUT, DISK_SIZE,
};
use e2e::harness::Harness;
use e2e::images::{self, WholeDiskImage};
use e2e::inspection;
use e2e::ironic_api::Provision;
use e2e::loopdev::Fill;
use serde_json::json;

const MAC: &str = "52:54:00:e2:30:01";

/// Waits until Ironic has recorded a heartbeat newer than `after` (its
/// `driver_internal_info.agent_last_heartbeat`).
fn wait_for_heartbeat_after(h: &Harness, after: Option<&str>, timeout: Duration) -> String {
    let t = Instant::now();
    loop {
        let node = h
            .client()
            .get_node_json(h.node_uuid().expect("node"))
            .expect("node");
        let last = node["driver_internal_info"]["agent_last_heartbeat"]
            .as_str()
            .map(str::to_string);
        if let Some(last) = last {
            if after.is_none_or(|a| last.as_str() > a) {
                return last;
            }
        }
        assert!(
            t.elapsed() < timeout,
            "no new heartbeat recorded within {timeout:?} (last {after:?}):\n{}",
            h.ironic_log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn inspect_clean_and_deploy_on_one_boot() {
    let mut h = Harness::start("fast-track", MAC, |c| {
        c.fast_track = true;
        c.automated_clean = true;
    })
    .expect("harness");
    let disk = h.add_disk(DISK_SIZE, Fill::Zeros).expect("disk");
    let image = WholeDiskImage::build(h.dir().path(), "disk.raw", 16, 16).expect("image");
    let digests = images::digests(&image.path).expect("digests");
    let nginx = h.start_nginx().expect("nginx");
    std::fs::copy(&image.path, nginx.root().join("disk.raw")).expect("publishing the image");
    let url = nginx.url("disk.raw");

    let node = h
        .enroll_node(&node_spec("fast-track", None))
        .expect("enroll");
    h.client()
        .patch_node(&node.uuid, &[("/inspect_interface", json!("agent"))])
        .expect("inspect_interface=agent");
    h.provision(Provision::Manage).expect("manage");
    h.wait_for("manageable", Duration::from_secs(30))
        .expect("manageable");
    // The machine is on while its ramdisk runs; fast track requires Ironic to know it (fake
    // power only changes on request; unmanaged inspection does not power on).
    let (status, body) = h
        .client()
        .call(
            "PUT",
            &format!("/v1/nodes/{}/states/power", node.uuid),
            Some(&json!({"target": "power on"})),
        )
        .expect("power on");
    assert_eq!(status, 202, "power on: {body}");

    // 1. Inspection: the one boot of the ramdisk.
    inspection::request_inspection(&h).expect("inspect");
    h.wait_for("inspect wait", Duration::from_secs(30))
        .expect("inspect wait");
    let api = h.ironic().api_url();
    // No LLDP switch here: the default collectors only, nothing waits for frames.
    let cmdline = vec![
        format!("ipa-inspection-callback-url={api}/v1/continue_inspection"),
        "ipa-inspection-collectors=default,logs".to_string(),
    ];
    h.start_agent(AgentOptions {
        extra_cmdline: cmdline,
        ..AgentOptions::default()
    })
    .expect("agent");
    let node = h
        .wait_for("manageable", Duration::from_secs(180))
        .expect("inspection finishes");
    assert_eq!(node.last_error, None);
    // Inspection found BIOS boot here; FakeManagement cannot set boot device "disk", which
    // Ironic skips only for Lenovo + UEFI (see NodeSpec::to_json).
    h.client()
        .patch_node(
            &node.uuid,
            &[
                ("/properties/capabilities", json!("boot_mode:uefi")),
                ("/properties/vendor", json!("lenovo")),
            ],
        )
        .expect("boot mode for the fake management interface");

    // 2. The agent stays up and heartbeats while the node is manageable: Ironic records it.
    let first = wait_for_heartbeat_after(&h, None, Duration::from_secs(30));
    let second = wait_for_heartbeat_after(&h, Some(&first), Duration::from_secs(30));
    h.progress(&format!(
        "heartbeats recorded in manageable: {first}, {second}"
    ));

    // 3. Cleaning on the running ramdisk (automated cleaning: erase_devices_metadata).
    let t = Instant::now();
    h.provision(Provision::Provide).expect("provide");
    let node = h
        .wait_for("available", Duration::from_secs(180))
        .expect("cleaning on the running agent");
    assert_eq!(node.last_error, None);
    h.progress(&format!(
        "provide → available on the running agent: {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    let after_clean = wait_for_heartbeat_after(&h, Some(&second), Duration::from_secs(30));
    h.progress(&format!("heartbeat recorded in available: {after_clean}"));

    // 4. Deploy on the same ramdisk.
    set_instance_info(
        &h,
        &InstanceInfo::whole_disk(url, ImageChecksum::sha256(&digests)),
    )
    .expect("instance_info");
    let t = Instant::now();
    h.provision(Provision::Deploy).expect("deploy");
    let node = h.wait_for("active", DEPLOY_TIMEOUT).expect("deploy");
    assert_eq!(node.last_error, None);
    h.progress(&format!(
        "fast-track deploy → active: {:.1}s",
        t.elapsed().as_secs_f64()
    ));

    // One boot: the first agent did all three, and is still the one running.
    assert_eq!(h.agent_starts(), 1);
    assert!(
        h.agent().expect("agent").exited().is_none(),
        "the agent exited"
    );
    let ironic = h.ironic_log();
    assert!(
        ironic.contains("has recently checked in, and the node power will remain unmodified"),
        "Ironic did not take the fast-track path for the deploy"
    );
    for needle in [
        "Refused",
        "Invalid or missing agent token",
        "is currently locked",
    ] {
        assert!(
            !h.agent_logs().contains(needle) && !ironic.contains(needle),
            "{needle:?} in the logs"
        );
    }
    // The agent looked the node up once and kept its token throughout.
    // (agent_logs holds the log file and the console, which repeat the same lines.)
    let logs = h.agent_logs();
    let lookups: std::collections::BTreeSet<&str> = logs
        .lines()
        .filter(|l| l.contains("lookup succeeded"))
        .collect();
    assert_eq!(lookups.len(), 1, "lookups: {lookups:#?}");
    deploy::verify_agent_commands(
        &h,
        &[
            "clean.get_clean_steps",
            "clean.execute_clean_step",
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
        ],
    )
    .expect("the conductor drove cleaning and deployment through the agent");
    deploy::verify_raw_image(&h, disk, &image.path).expect("disk after deploy");
}
