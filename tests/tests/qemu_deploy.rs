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
