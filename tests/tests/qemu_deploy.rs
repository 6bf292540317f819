//! A QEMU machine provisioned by real Ironic through the ramdisk `ironic-agent-build` makes:
//! IPMI power (OpenIPMI's ipmi_sim driving QEMU), iPXE network boots through Ironic's own
//! `ipxe` boot interface, automated cleaning, a direct deploy to `active` with auto-TLS, and
//! the VM's disk checked on the host. All inside a network namespace with no way out
//! (`e2e::qemu`). Needs root, tests/setup.sh, and a few minutes of TCG.

use e2e::qemu_deploy::{self, Options};

#[test]
fn ipmi_and_ipxe_boots_clean_and_deploy_a_qemu_machine() {
    let outcome = qemu_deploy::run(&Options {
        name: "qemu-deploy".into(),
        ..Options::default()
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", qemu_deploy::summary(&outcome));
    assert_eq!(
        outcome.boots.len(),
        2,
        "one boot for cleaning, one for the deploy"
    );
    for b in &outcome.boots {
        assert!(
            b.power_on_to_heartbeat.is_some_and(|s| s < 180.0),
            "boot for {} too slow or not measured: {b:?}",
            b.phase
        );
    }
}

#[test]
fn the_builders_own_ipxe_script_boots_the_ramdisk() {
    let (console, seconds) = qemu_deploy::boot_builder_ipxe_script("qemu-ipxe-script")
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("agent looking up its node {seconds:.1}s after QEMU started");
    // iPXE rendered BOOTIF=${mac}; the init chose that NIC and got a lease from QEMU.
    assert!(console.contains("BOOTIF=52:54:00:12:34:56"), "{console}");
    assert!(
        console.contains("DHCP on eth0 (52:54:00:12:34:56)"),
        "{console}"
    );
    assert!(console.contains("DHCP lease 10.0.2.15/24"), "{console}");
    // The relative URLs of the script resolved against its own.
    assert!(console.contains("GET /ironic-agent.kernel "), "{console}");
    assert!(
        console.contains("GET /ironic-agent.initramfs "),
        "{console}"
    );
}

/// Issue "deploy latency", fast track in QEMU: with `[deploy] fast_track = true` cleaning
/// and the deploy run on one boot of the ramdisk (the namespace test adds inspection).
#[test]
fn fast_track_cleans_and_deploys_on_one_boot_of_the_ramdisk() {
    let o = qemu_deploy::run_fast_track("qemu-fast-track").unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "fast track: provide → available {:.1}s, deploy → active {:.1}s on the same ramdisk \
         (power-on → first heartbeat {:?}s)",
        o.provide_seconds, o.deploy_seconds, o.boot.power_on_to_heartbeat
    );
    assert_eq!(o.power_ons_before_deploy, 1, "the cleaning boot only");
    // The deploy's own power action: off after the image, on to boot the instance.
    assert_eq!(o.power_ons_at_active, 2, "no network boot for the deploy");
    assert_eq!(
        o.ramdisk_starts, 1,
        "one ramdisk start for cleaning and deploy"
    );
}
