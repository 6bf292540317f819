//! Inspection on emulated hardware: the ramdisk `ironic-agent-build` makes, booted by QEMU
//! (TCG) with SMBIOS strings, an emulated BMC (`ipmi-bmc-sim` behind a KCS interface, so the
//! ramdisk's kernel creates `/dev/ipmi0`) and a virtio disk with a serial number, posts its
//! inspection data to a callback server of this test. What the kernel really exports is
//! checked: the SMBIOS tables (vendor strings, installed memory, the `dmi-decode` records),
//! the IPMI device answering through the ioctl interface, PCI devices, the disk's serial.
//! All inside a network namespace with no way out (`e2e::qemu`). Needs root, tests/setup.sh.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::qemu::{self, QemuNetNs, SerialLog};
use e2e::ramdisk;
use e2e::testdir::TestDir;
use serde_json::{json, Value};

const MEMORY_MIB: u64 = 768;
const DISK_SIZE: u64 = 6 << 30;
const DISK_SERIAL: &str = "E2E-DISK-0001";
const UUID: &str = "8d1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b";

/// Accepts connections until the first POST, answers it like Ironic without a version
/// header (`202 {"uuid": ..}`), sends its body on `tx`.
fn callback_server(listener: TcpListener, tx: mpsc::Sender<(String, Vec<u8>)>) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut req = Vec::new();
        let mut buf = [0u8; 65536];
        let (head, body) = loop {
            let Ok(n) = s.read(&mut buf) else {
                break (String::new(), Vec::new());
            };
            if n == 0 {
                break (String::new(), Vec::new());
            }
            req.extend_from_slice(&buf[..n]);
            let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&req[..end]).to_string();
            let len = e2e::http::content_length(&head);
            if req.len() >= end + 4 + len {
                break (head, req[end + 4..end + 4 + len].to_vec());
            }
        };
        let reply = format!(r#"{{"uuid": "{UUID}"}}"#);
        let _ = write!(
            s,
            "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{reply}",
            reply.len()
        );
        if head.starts_with("POST ") {
            let _ = tx.send((head, body));
            return;
        }
    }
}

struct Vm(std::process::Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(dir: &TestDir) -> Result<(String, Value, String, f64)> {
    let rd = ramdisk::build(&dir.join("ramdisk"), &["--kernel-param", "console=ttyS0"])?;
    let ns = QemuNetNs::create()?;
    ns.enter()?;
    let listener = TcpListener::bind(("0.0.0.0", qemu::HTTP_PORT))
        .context("binding the callback server in the namespace")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || callback_server(listener, tx));

    let disk = dir.join("vm-disk.img");
    std::fs::File::create(&disk)?.set_len(DISK_SIZE)?;
    let serial = dir.join("serial.log");
    let cmdline = format!(
        "console=ttyS0 BOOTIF=01-{} ipa-inspection-callback-url=http://{}:{}/v1/continue_inspection \
         ipa-inspection-collectors=default,logs,pci-devices,dmi-decode,numa-topology ipa-debug=1",
        qemu::MAC.replace(':', "-"),
        qemu::HOST,
        qemu::HTTP_PORT
    );
    let args: Vec<String> = vec![
        "-accel".into(),
        "tcg".into(),
        "-m".into(),
        MEMORY_MIB.to_string(),
        "-smp".into(),
        "2".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        rd.kernel.display().to_string(),
        "-initrd".into(),
        rd.initramfs.display().to_string(),
        "-append".into(),
        cmdline,
        "-chardev".into(),
        format!("file,id=ser0,path={},append=on", serial.display()),
        "-serial".into(),
        "chardev:ser0".into(),
        "-smbios".into(),
        "type=0,vendor=E2E BIOS Vendor,version=9.8.7,date=11/25/2026".into(),
        "-smbios".into(),
        "type=1,manufacturer=E2E Systems,product=Inspection Box,serial=SN-E2E-42".into(),
        "-device".into(),
        "ipmi-bmc-sim,id=bmc0".into(),
        "-device".into(),
        "isa-ipmi-kcs,bmc=bmc0".into(),
        "-drive".into(),
        format!("file={},if=none,id=d0,format=raw", disk.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive=d0,serial={DISK_SERIAL}"),
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={}", qemu::MAC),
    ];
    let started = Instant::now();
    let _vm = Vm(std::process::Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.out"))?)
        .spawn()
        .context("starting QEMU")?);
    let mut console = SerialLog::new(&serial);
    let mut text = String::new();
    let posted = loop {
        for l in console.new_lines() {
            text.push_str(&l);
            text.push('\n');
        }
        if let Ok(p) = rx.recv_timeout(Duration::from_millis(500)) {
            break p;
        }
        if text.contains("Kernel panic") {
            bail!("kernel panic\n{text}");
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("no inspection data within 300 s\n--- console ---\n{text}");
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    // The agent logs what it did with the answer; give it a moment.
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until && !text.contains("inspection finished successfully") {
        for l in console.new_lines() {
            text.push_str(&l);
            text.push('\n');
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let body: Value = serde_json::from_slice(&posted.1).context("the posted body is not JSON")?;
    Ok((posted.0, body, text, seconds))
}

#[test]
fn inspection_on_qemu_reads_smbios_ipmi_and_pci() {
    e2e::cmd::check_prerequisites(&["qemu-system-x86_64", "ip"]).expect("tools");
    let mut dir = TestDir::new("qemu-inspect").expect("temp dir");
    let (head, data, console, seconds) = match run(&dir) {
        Ok(r) => r,
        Err(e) => {
            dir.keep();
            panic!("{e:#}\nfiles kept in {}", dir.path().display());
        }
    };
    println!("inspection data posted {seconds:.1}s after QEMU started");
    let inv = &data["inventory"];
    let mut shown = inv.clone();
    if let Some(f) = shown["cpu"]["flags"].as_array_mut() {
        let n = f.len();
        f.truncate(4);
        f.push(json!(format!("... {n} flags")));
    }
    println!("{}", serde_json::to_string_pretty(&shown).unwrap());
    let check = || -> Result<()> {
        let lower = head.to_ascii_lowercase();
        anyhow::ensure!(lower.starts_with("post /v1/continue_inspection"), "{head}");
        anyhow::ensure!(!lower.contains("x-openstack-ironic-api-version"), "{head}");

        // SMBIOS: QEMU's tables with our strings, read from /sys/firmware/dmi.
        let v = &inv["system_vendor"];
        anyhow::ensure!(v["manufacturer"] == "E2E Systems", "{v}");
        anyhow::ensure!(v["product_name"] == "Inspection Box", "{v}");
        anyhow::ensure!(v["serial_number"] == "SN-E2E-42", "{v}");
        anyhow::ensure!(v["firmware"]["vendor"] == "E2E BIOS Vendor", "{v}");
        anyhow::ensure!(v["firmware"]["version"] == "9.8.7", "{v}");
        anyhow::ensure!(
            inv["memory"]["physical_mb"] == json!(MEMORY_MIB),
            "physical_mb from the SMBIOS memory devices: {}",
            inv["memory"]
        );
        let dmi = &data["dmi"];
        anyhow::ensure!(dmi["bios"]["Vendor"] == "E2E BIOS Vendor", "{dmi}");
        anyhow::ensure!(dmi["bios"]["Release Date"] == "11/25/2026", "{dmi}");
        anyhow::ensure!(
            dmi["cpu"].as_array().is_some_and(|c| !c.is_empty()),
            "{dmi}"
        );
        let devices = dmi["memory"]["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        anyhow::ensure!(
            devices
                .iter()
                .any(|d| d["Size"] == format!("{MEMORY_MIB} MB")),
            "no {MEMORY_MIB} MB memory device: {dmi}"
        );

        // The BMC answered through /dev/ipmi0 (Get Device ID): a device that did not would
        // leave bmc_address null.
        anyhow::ensure!(
            console.contains("BMC answered Get Device ID"),
            "the agent never talked to the BMC"
        );
        anyhow::ensure!(!inv["bmc_address"].is_null(), "{}", inv["bmc_address"]);

        // The machine's devices.
        anyhow::ensure!(inv["cpu"]["count"] == 2, "{}", inv["cpu"]);
        let disk = &inv["disks"][0];
        anyhow::ensure!(disk["name"] == "/dev/vda", "{disk}");
        anyhow::ensure!(disk["size"] == json!(DISK_SIZE), "{disk}");
        anyhow::ensure!(disk["serial"] == DISK_SERIAL, "{disk}");
        anyhow::ensure!(
            data["root_disk"]["name"] == "/dev/vda",
            "{}",
            data["root_disk"]
        );
        let nic = &inv["interfaces"][0];
        anyhow::ensure!(nic["mac_address"] == qemu::MAC, "{nic}");
        anyhow::ensure!(nic["driver"] == "virtio_net", "{nic}");
        anyhow::ensure!(nic["ipv4_address"] == "10.0.2.15", "{nic}");
        let pci = data["pci_devices"].as_array().cloned().unwrap_or_default();
        // virtio-net (1af4:1000) and virtio-blk (1af4:1001), transitional devices.
        for product in ["1000", "1001"] {
            anyhow::ensure!(
                pci.iter()
                    .any(|d| d["vendor_id"] == "1af4" && d["product_id"] == product),
                "no 1af4:{product} in {pci:?}"
            );
        }
        // No udev in the ramdisk: by_path is derived from sysfs the way udev's path_id
        // names a virtio disk, after the virtio-blk PCI function.
        let blk = pci
            .iter()
            .find(|d| d["vendor_id"] == "1af4" && d["product_id"] == "1001")
            .and_then(|d| d["bus"].as_str())
            .unwrap_or_default();
        anyhow::ensure!(
            disk["by_path"] == format!("/dev/disk/by-path/pci-{blk}"),
            "by_path {} for the virtio-blk function {blk}",
            disk["by_path"]
        );
        anyhow::ensure!(data["error"].is_null(), "{}", data["error"]);
        anyhow::ensure!(data["logs"].as_str().is_some_and(|l| l.len() > 100));
        anyhow::ensure!(
            console.contains("inspection finished successfully"),
            "the agent did not take the answer"
        );
        Ok(())
    };
    if let Err(e) = check() {
        dir.keep();
        panic!(
            "{e:#}\n--- console (tail) ---\n{}\nfiles kept in {}",
            console
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
            dir.path().display()
        );
    }
}
