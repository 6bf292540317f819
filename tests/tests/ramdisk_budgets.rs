//! Budgets and reproducibility of the ramdisk, as CI checks (firecracker-style "tests as
//! policy"): the agent and init binaries are static and small, the initramfs with the
//! common server drivers stays under its budget, and rebuilding gives identical bytes.
//! Needs the kernel package tests/setup.sh fetches and the musl target.

use std::io::Read;
use std::path::Path;

use e2e::ramdisk;
use ironic_agent_build::{cpio, elf};

/// The static agent: 8.3 MiB measured (musl, LTO, stripped, November 2026), plus room for
/// the features still to come. Over budget means: find what grew (`cargo bloat`), don't
/// just raise the number.
const AGENT_BUDGET: u64 = 12 << 20;
/// The init: 0.7 MiB measured.
const INIT_BUDGET: u64 = 2 << 20;
/// The initramfs (gzip -9) with the default drivers, among them every driver below:
/// 9.9 MiB measured with the 8.3 MiB agent. The goal is < 30 MiB.
const INITRAMFS_BUDGET: u64 = 16 << 20;
/// Drivers real servers and the CI VM need; each must be in the initramfs.
const REQUIRED_DRIVERS: &[&str] = &[
    "virtio_net",
    "virtio_blk",
    "virtio_pci",
    "e1000e",
    "ixgbe",
    "i40e",
    "mlx5_core",
    "nvme",
    "ahci",
    "megaraid_sas",
];

fn check_static(path: &Path, budget: u64) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        elf::interpreter(&bytes).unwrap(),
        None,
        "{} asks for a program interpreter: not static",
        path.display()
    );
    let out = std::process::Command::new("file")
        .arg(path)
        .output()
        .expect("`file` (Debian package file)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("statically linked") || text.contains("static-pie linked"),
        "file(1) does not call {} static: {text}",
        path.display()
    );
    let size = bytes.len() as u64;
    println!(
        "{}: {size} bytes ({:.2} MiB), budget {:.0} MiB",
        path.display(),
        size as f64 / (1 << 20) as f64,
        budget as f64 / (1 << 20) as f64
    );
    assert!(
        size <= budget,
        "{} is {size} bytes, over its budget of {budget}",
        path.display()
    );
}

#[test]
fn agent_and_init_are_static_and_within_budget() {
    let bins = ramdisk::binaries().unwrap_or_else(|e| panic!("{e:#}"));
    check_static(&bins.agent, AGENT_BUDGET);
    check_static(&bins.init, INIT_BUDGET);
}

fn unpack(initramfs: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut cpio_bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(initramfs).unwrap())
        .read_to_end(&mut cpio_bytes)
        .unwrap();
    cpio::read(&cpio_bytes).unwrap()
}

#[test]
fn initramfs_is_within_budget_and_rebuilds_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let one = ramdisk::build(&dir.path().join("one"), &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let two = ramdisk::build(&dir.path().join("two"), &[]).unwrap_or_else(|e| panic!("{e:#}"));
    print!("{}", one.summary);

    // Identical bytes, every output.
    for f in [
        "ironic-agent.kernel",
        "ironic-agent.initramfs",
        "boot.ipxe",
        "ironic-agent.manifest.json",
        "SHA256SUMS",
    ] {
        let a = std::fs::read(one.dir.join(f)).unwrap();
        let b = std::fs::read(two.dir.join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between two builds from the same inputs"
        );
    }
    let sums = std::fs::read_to_string(one.dir.join("SHA256SUMS")).unwrap();
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&one.dir)
        .status()
        .unwrap();
    assert!(check.success(), "sha256sum -c fails:\n{sums}");

    // The budget, with the drivers real servers need.
    let size = one.initramfs_size();
    println!(
        "initramfs: {size} bytes ({:.2} MiB), budget {:.0} MiB",
        size as f64 / (1 << 20) as f64,
        INITRAMFS_BUDGET as f64 / (1 << 20) as f64
    );
    let modules: Vec<&str> = one.manifest["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    for d in REQUIRED_DRIVERS {
        assert!(
            modules.contains(d),
            "{d} is not in the initramfs: {modules:?}"
        );
    }
    assert!(
        size <= INITRAMFS_BUDGET,
        "the initramfs is {size} bytes, over its budget of {INITRAMFS_BUDGET}"
    );

    // What the kernel and the init need is there, owned by root, with fixed times.
    let entries = unpack(&one.initramfs);
    let find = |p: &str| entries.iter().find(|(n, _, _)| n == p);
    let init = find("init").expect("/init");
    assert_eq!(init.1, 0o100755);
    assert!(find("usr/bin/ironic-agent").is_some());
    assert_eq!(find("dev/console").expect("/dev/console").1, 0o020600);
    assert!(find("etc/ironic-agent/init.conf").is_some());
    assert!(find("etc/ironic-agent/managers.d").is_some());
    let kver = one.manifest["kernel"]["version"].as_str().unwrap();
    let dep = find(&format!("lib/modules/{kver}/modules.dep")).expect("modules.dep");
    let dep = String::from_utf8_lossy(&dep.2);
    // mlx5_core needs mlxfw among others: the closure is resolved.
    let mlx5 = dep
        .lines()
        .find(|l| l.contains("/mlx5_core.ko:"))
        .expect("mlx5_core in modules.dep");
    assert!(mlx5.contains("mlxfw.ko"), "{mlx5}");
    for line in dep.lines() {
        for path in line.split([':', ' ']).filter(|p| p.ends_with(".ko")) {
            assert!(
                find(&format!("lib/modules/{kver}/{path}")).is_some(),
                "modules.dep names {path}, which is not in the initramfs"
            );
        }
    }
    let ipxe = std::fs::read_to_string(&one.ipxe).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"));
    assert!(ipxe.contains("BOOTIF=${mac}") && ipxe.contains("initrd --timeout"));
}

#[test]
fn seed_operator_example_builds_with_its_vendor_tool_slot() {
    let dir = tempfile::tempdir().unwrap();
    // The example with a vendor tool supplied and a managers directory.
    let example = e2e::agent::workspace_root().join("image-build/examples/seed-operator.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let text = text.replace(
        "# hardware_managers = \"seed/managers.d\"",
        "hardware_managers = \"seed/managers.d\"",
    );
    std::fs::write(dir.path().join("seed-operator.toml"), text).unwrap();
    std::fs::create_dir_all(dir.path().join("seed/vendor")).unwrap();
    std::fs::create_dir_all(dir.path().join("seed/managers.d")).unwrap();
    std::fs::write(
        dir.path().join("seed/vendor/ddcli"),
        b"vendor tool stand-in",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seed/managers.d/site.toml"),
        "name = \"SiteManager\"\nversion = \"1.0\"\n",
    )
    .unwrap();
    let config = dir.path().join("seed-operator.toml");
    let out = dir.path().join("out");
    let built = ramdisk::build(&out, &["--config", config.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let entries = unpack(&built.initramfs);
    let find = |p: &str| entries.iter().find(|(n, _, _)| n == p);
    let ddcli = find("usr/sbin/ddcli").expect("the vendor tool in its slot");
    assert_eq!(ddcli.1, 0o100755);
    assert_eq!(ddcli.2, b"vendor tool stand-in");
    assert!(find("etc/ironic-agent/managers.d/site.toml").is_some());
    assert!(built.manifest["modules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "sg"));
    let ipxe = std::fs::read_to_string(&built.ipxe).unwrap();
    assert!(ipxe.contains("console=ttyS1,115200n8"), "{ipxe}");

    // Without the vendor tool the slot is skipped and said so.
    std::fs::remove_file(dir.path().join("seed/vendor/ddcli")).unwrap();
    let built = ramdisk::build(
        &dir.path().join("out2"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        built.manifest["optional_files_skipped"],
        serde_json::json!(["/usr/sbin/ddcli"])
    );
    assert!(built
        .summary
        .contains("optional file not supplied, skipped: /usr/sbin/ddcli"));
}

#[test]
fn a_dynamically_linked_agent_is_refused() {
    let bins = ramdisk::binaries().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    // The host's own (glibc, dynamic) builder binary stands in for a non-musl agent build.
    let err = ramdisk::build(
        &dir.path().join("out"),
        &["--agent", bins.builder.to_str().unwrap()],
    )
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("dynamically linked"), "{text}");
    assert!(text.contains("x86_64-unknown-linux-musl"), "{text}");
}
