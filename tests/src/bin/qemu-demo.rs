//! `cargo run -p e2e --bin qemu-demo` (what `tests/demo.sh` runs): the seed's job end to end
//! on a QEMU machine. Builds the ramdisk with `ironic-agent-build` (static agent and init, a
//! Debian kernel with the common server drivers), starts a real Ironic 39 with the `ipmi`
//! hardware type and its `ipxe` boot interface, gives a QEMU VM (software emulation) a BMC
//! (OpenIPMI's ipmi_sim) and lets Ironic provision it: IPMI power-on, DHCP → iPXE → kernel
//! and initramfs over HTTP, the agent looks up its node and heartbeats over auto-TLS,
//! automated cleaning, then a direct deploy of a raw image to `active`; finally the VM's
//! disk is checked on the host. Everything runs in a network namespace with no route out.
//!
//! Needs root and tests/setup.sh. Exits non-zero on failure after printing every log.

use std::process::ExitCode;

use e2e::qemu_deploy::{self, Options};

fn main() -> ExitCode {
    println!(
        "ironic-agent QEMU demo: build the ramdisk, real Ironic ({}), a QEMU machine with an IPMI BMC, \
         network boot over iPXE, cleaning, deploy to active",
        e2e::ironic::version().unwrap_or_else(|| "Ironic not found".into())
    );
    let opts = Options {
        name: "qemu-demo".into(),
        ..Options::default()
    };
    match qemu_deploy::run(&opts) {
        Ok(outcome) => {
            println!("\n== summary ==\n{}", qemu_deploy::summary(&outcome));
            println!("demo passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
