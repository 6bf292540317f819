//! The flash-card manager against a fake machine: a sysfs tree with a Nytro WarpDrive
//! (1000:007e, subsystem 1000:0507 = BLP4-1600) whose disk is `sdb`, an AHCI disk `sda`, both
//! disks regular files, and a recording stand-in for the vendor tool (a shell script that
//! logs its arguments, prints what `ddcli` prints and erases the card's file, or fails in a
//! chosen way). `erase_devices` runs through [`Managers`] with the generic manager, as in the
//! agent.

use std::path::{Path, PathBuf};

use blockdev::DeviceGuard;
use flash_card_agent::{FlashCardConfig, FlashCardManager, VendorTool};
use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
use hardware_managers::{HardwareError, HardwareManager, Managers, StepCall, SupportLevel};
use ironic_protocol::Node;
use serde_json::{Map, Value};

const DISK: usize = 16 << 20;
const WARPDRIVE: &str = "devices/pci0000:00/0000:00:02.0/0000:02:00.0";
const AHCI: &str = "devices/pci0000:00/0000:00:1f.2";

struct Machine {
    root: tempfile::TempDir,
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

impl Machine {
    fn new(with_card: bool) -> Machine {
        let m = Machine {
            root: tempfile::tempdir().unwrap(),
        };
        let sys = m.sys();
        let pci = |dir: &str, vendor: &str, device: &str, sub: (&str, &str), class: &str| {
            let d = sys.join(dir);
            write(d.join("vendor"), vendor);
            write(d.join("device"), device);
            write(d.join("subsystem_vendor"), sub.0);
            write(d.join("subsystem_device"), sub.1);
            write(d.join("class"), class);
            let name = Path::new(dir).file_name().unwrap();
            std::fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
            std::os::unix::fs::symlink(&d, sys.join("bus/pci/devices").join(name)).unwrap();
        };
        pci(
            "devices/pci0000:00/0000:00:02.0",
            "0x8086",
            "0x3c04",
            ("0x8086", "0x0000"),
            "0x060400",
        );
        pci(AHCI, "0x8086", "0x1d02", ("0x15d9", "0x0624"), "0x010601");
        m.disk(
            "sda",
            "8:0",
            &format!("{AHCI}/ata1/host0/target0:0:0/0:0:0:0"),
        );
        if with_card {
            pci(
                WARPDRIVE,
                "0x1000",
                "0x007e",
                ("0x1000", "0x0507"),
                "0x010700",
            );
            m.disk(
                "sdb",
                "8:16",
                &format!("{WARPDRIVE}/host3/target3:1:0/3:1:0:0"),
            );
        }
        m
    }

    fn sys(&self) -> PathBuf {
        self.root.path().join("sys")
    }

    fn dev(&self) -> PathBuf {
        self.root.path().join("dev")
    }

    /// A SCSI disk below `parent`, its node a file of random bytes.
    fn disk(&self, name: &str, devno: &str, parent: &str) {
        let sys = self.sys();
        let d = sys.join(parent).join("block").join(name);
        write(d.join("dev"), devno);
        write(d.join("size"), &(DISK / 512).to_string());
        write(d.join("ro"), "0");
        write(d.join("removable"), "0");
        write(d.join("queue/rotational"), "0");
        write(d.join("queue/logical_block_size"), "512");
        write(d.join("queue/physical_block_size"), "4096");
        write(d.join("queue/discard_max_bytes"), "0");
        std::fs::create_dir_all(d.join("holders")).unwrap();
        std::fs::create_dir_all(sys.join("block")).unwrap();
        std::os::unix::fs::symlink(&d, sys.join("block").join(name)).unwrap();
        std::os::unix::fs::symlink(sys.join(parent), d.join("device")).unwrap();
        std::fs::create_dir_all(self.dev()).unwrap();
        // Random bytes from the kernel: much faster than a generator in a debug build.
        let mut data = vec![0u8; DISK];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
            .unwrap();
        std::fs::write(self.dev().join(name), data).unwrap();
    }

    fn guard(&self) -> DeviceGuard {
        // Fixture disks are regular files: only a ramdisk guard lets them be written.
        DeviceGuard::new(true, vec![], self.sys())
    }

    /// The stand-in for the vendor tool: logs its arguments to `tool.log`; `-listall` prints
    /// two cards (ours second); the erase does what `tool.mode` says.
    fn tool(&self) -> VendorTool {
        let dir = self.root.path();
        let script = dir.join("ddcli");
        let text = format!(
            r#"#!/bin/sh
echo "$*" >> {log}
case "$1" in
-listall)
    cat <<EOF
   SEAGATE WarpDrive Management Utility
ID    WarpDrive     Package Version    PCI Address
--    ---------     ---------------    -----------
1     NWD-BLP4-1600      12.22.00.00        00:04:00:00
2     NWD-BLP4-1600      12.22.00.00        00:02:00:00

Seagate WarpDrive Management Utility: Execution completed successfully.
EOF
    exit 0 ;;
esac
case "$(cat {mode})" in
ok)
    dd if=/dev/zero of={card} bs=1M count=16 conv=notrunc 2>/dev/null
    echo "Seagate WarpDrive Management Utility: Please wait. Format of WarpDrive is in progress....."
    echo "Seagate WarpDrive Management Utility: WarpDrive format successfully completed."
    exit 0 ;;
fail)
    echo "Seagate WarpDrive Management Utility: Format of WarpDrive failed, controller busy"
    echo "ddcli: error 0x21" >&2
    exit 3 ;;
lie)
    echo "Seagate WarpDrive Management Utility: WarpDrive format successfully completed."
    exit 0 ;;
quiet)
    dd if=/dev/zero of={card} bs=1M count=16 conv=notrunc 2>/dev/null
    exit 0 ;;
hang)
    sleep 30 ;;
esac
"#,
            log = dir.join("tool.log").display(),
            mode = dir.join("tool.mode").display(),
            card = self.dev().join("sdb").display(),
        );
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        VendorTool {
            path: script,
            ..VendorTool::default()
        }
    }

    fn mode(&self, mode: &str) {
        std::fs::write(self.root.path().join("tool.mode"), mode).unwrap();
    }

    fn tool_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.path().join("tool.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn flash_manager(&self, tool: VendorTool) -> FlashCardManager {
        FlashCardManager::new(
            self.guard(),
            FlashCardConfig {
                vendor_tool: tool,
                ..FlashCardConfig::default()
            },
        )
    }

    fn managers(&self, tool: VendorTool) -> Managers {
        let generic = GenericHardwareManager::new(self.guard(), GenericOptions::default())
            .with_dev_root(self.dev());
        Managers::new(vec![Box::new(generic), Box::new(self.flash_manager(tool))]).unwrap()
    }

    fn data(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dev().join(name)).unwrap()
    }
}

fn erase_devices(m: &Managers) -> Result<Value, HardwareError> {
    let node = Node::default();
    let args = Map::new();
    m.execute_step("erase_devices", &StepCall::new(&node, &[], &args))
}

#[test]
fn detection_by_pci_id() {
    let machine = Machine::new(true);
    let m = machine.flash_manager(VendorTool::default());
    assert_eq!(
        m.evaluate_hardware_support(),
        SupportLevel::SERVICE_PROVIDER
    );
    let cards = m.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].function.address, "0000:02:00.0");
    assert_eq!(cards[0].model.name, "LSI/Seagate Nytro WarpDrive");
    assert_eq!(
        (
            cards[0].function.subsystem_vendor,
            cards[0].function.subsystem_device
        ),
        (0x1000, 0x0507)
    );
    // The disk below the card, not the one on the AHCI controller.
    assert_eq!(
        m.card_of("sdb").map(|c| c.function.address),
        Some("0000:02:00.0".to_string())
    );
    assert!(m.card_of("sda").is_none());

    let none = Machine::new(false);
    let m = none.flash_manager(VendorTool::default());
    assert_eq!(m.evaluate_hardware_support(), SupportLevel::NONE);
    assert!(
        Managers::new(vec![Box::new(m)]).is_err(),
        "not loaded without a card"
    );
}

#[test]
fn the_card_is_erased_by_its_tool_and_the_other_disk_by_the_generic_manager() {
    let machine = Machine::new(true);
    machine.mode("ok");
    let m = machine.managers(machine.tool());
    assert_eq!(m.names(), ["FlashCardManager", "GenericHardwareManager"]);
    let report = erase_devices(&m).unwrap();
    let sdb = &report[machine.dev().join("sdb").to_str().unwrap()];
    let sda = &report[machine.dev().join("sda").to_str().unwrap()];

    assert_eq!(sdb["manager"], "FlashCardManager");
    assert_eq!(sdb["method"], "vendor_tool");
    assert_eq!(sdb["card"], "LSI/Seagate Nytro WarpDrive");
    assert_eq!(sdb["pci"]["address"], "0000:02:00.0");
    assert_eq!(sdb["verification"]["ok"], true);
    assert_eq!(sdb["verification"]["expected"], "markers gone");
    assert!(sdb["output"]
        .as_str()
        .unwrap()
        .contains("format successfully completed"));
    // The exact commands: the listing, then the format of controller 2, found by its PCI
    // address 00:02:00:00.
    assert_eq!(
        machine.tool_log(),
        ["-listall", "-c 2 -format -op -level nom -s"]
    );
    assert!(machine.data("sdb").iter().all(|b| *b == 0));

    assert_eq!(sda["manager"], "GenericHardwareManager");
    assert_eq!(sda["method"], "overwrite");
    assert!(machine.data("sda").iter().all(|b| *b == 0));
}

fn card_error(machine: &Machine, tool: VendorTool) -> String {
    let m = machine.managers(tool);
    match erase_devices(&m) {
        Err(HardwareError::BlockDeviceErase(msg)) => {
            let sdb = machine.dev().join("sdb").display().to_string();
            assert!(msg.contains(&format!("\"{sdb}\"")), "{msg}");
            assert!(msg.contains("Secure erase of flash card"), "{msg}");
            assert!(
                msg.contains("PCI 0000:02:00.0 [1000:007e, subsystem 1000:0507]"),
                "{msg}"
            );
            assert!(msg.contains("may still hold tenant data"), "{msg}");
            msg
        }
        other => panic!("expected a failed erase, got {other:?}"),
    }
}

#[test]
fn a_failing_tool_fails_the_step_with_its_output() {
    let machine = Machine::new(true);
    machine.mode("fail");
    let msg = card_error(&machine, machine.tool());
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("controller busy"), "{msg}");
    assert!(msg.contains("error 0x21"), "stderr is included: {msg}");
    assert_eq!(machine.tool_log().len(), 2);
    // The other disk was still erased by the generic manager.
    assert!(machine.data("sda").iter().all(|b| *b == 0));
}

#[test]
fn a_tool_that_claims_success_but_erases_nothing_fails_verification() {
    let machine = Machine::new(true);
    machine.mode("lie");
    let msg = card_error(&machine, machine.tool());
    assert!(msg.contains("verification failed"), "{msg}");
    assert!(
        msg.contains("still hold the data written there before the erase"),
        "{msg}"
    );
}

#[test]
fn a_tool_without_its_success_line_fails() {
    let machine = Machine::new(true);
    machine.mode("quiet");
    let msg = card_error(&machine, machine.tool());
    assert!(
        msg.contains("did not print \"format successfully completed\""),
        "{msg}"
    );
}

#[test]
fn a_hanging_tool_is_killed() {
    let machine = Machine::new(true);
    machine.mode("hang");
    let tool = VendorTool {
        erase_timeout_secs: 1,
        ..machine.tool()
    };
    let started = std::time::Instant::now();
    let msg = card_error(&machine, tool);
    assert!(msg.contains("did not finish within 1.0 s"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_missing_tool_or_unknown_card_fails_before_writing() {
    let machine = Machine::new(true);
    let before = machine.data("sdb");
    let msg = card_error(
        &machine,
        VendorTool {
            path: machine.root.path().join("no-such-ddcli"),
            ..VendorTool::default()
        },
    );
    assert!(msg.contains("is not in the ramdisk"), "{msg}");
    assert_eq!(
        machine.data("sdb"),
        before,
        "nothing was written to the card"
    );

    // A listing without our card's address.
    let machine = Machine::new(true);
    machine.mode("ok");
    let tool = VendorTool {
        pci_format: flash_card_agent::PciFormat::Sysfs,
        ..machine.tool()
    };
    let before = machine.data("sdb");
    let msg = card_error(&machine, tool);
    assert!(
        msg.contains("no card with PCI address 0000:02:00.0"),
        "{msg}"
    );
    assert_eq!(machine.data("sdb"), before);
}
