//! Seeds that need the agent's own encoders (`fuzz/make-corpus.sh` runs this): DHCP replies
//! built with the init's `Packet::encode`, and ESPs formatted by `mkfs.vfat` and filled with
//! `esp::write_file`. Usage: `seeds <corpus dir> <vfat image>...` (each image is filled with
//! a boot loader tree and copied to `<corpus>/esp_walk/`).

use std::net::Ipv4Addr;
use std::path::Path;

use blockdev::region::Extent;
use blockdev::WritableDisk;
use disk_layout::esp::{open, write_file};
use disk_layout::DiskTarget;
use ironic_agent_init::dhcp::Packet;

const XID: u32 = 0x3903_f326;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn reply(kind: u8, extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut p = Packet::discover(XID, MAC, 0);
    p.op = 2;
    p.yiaddr = Ipv4Addr::new(10, 251, 3, 2);
    p.siaddr = Ipv4Addr::new(10, 251, 3, 1);
    p.options = vec![
        (53, vec![kind]),
        (54, vec![10, 251, 3, 1]),
        (51, 3600u32.to_be_bytes().to_vec()),
        (1, vec![255, 255, 255, 0]),
        (3, vec![10, 251, 3, 1]),
        (6, vec![10, 251, 3, 1, 8, 8, 8, 8]),
        (12, b"node-0".to_vec()),
        (15, b"example.org".to_vec()),
        (26, 1500u16.to_be_bytes().to_vec()),
    ];
    p.options.extend_from_slice(extra);
    p.encode()
}

fn datagrams(list: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in list {
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let corpus = Path::new(&args[0]);
    let dhcp = corpus.join("dhcp");
    std::fs::create_dir_all(&dhcp).unwrap();
    let search = b"\x07example\x03org\x00\x04test\xc0\x08".to_vec();
    let routes = vec![24, 10, 9, 8, 10, 251, 3, 1, 0, 10, 251, 3, 254];
    let offer = reply(2, &[(119, search.clone()), (121, routes.clone())]);
    let ack = reply(5, &[(119, search), (121, routes), (58, vec![0, 0, 7, 8])]);
    let nak = reply(6, &[]);
    std::fs::write(dhcp.join("offer-ack"), datagrams(&[offer.clone(), ack])).unwrap();
    std::fs::write(dhcp.join("offer-nak"), datagrams(&[offer, nak])).unwrap();

    let esp = corpus.join("esp_walk");
    std::fs::create_dir_all(&esp).unwrap();
    for image in &args[1..] {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(image)
            .unwrap();
        let len = file.metadata().unwrap().len();
        let target = DiskTarget::new(WritableDisk::from_file(file, image).unwrap());
        {
            let fs = open(&target, Extent::new(0, len)).unwrap();
            write_file(&fs, "EFI/BOOT/BOOTX64.EFI", b"MZ not really a loader").unwrap();
            write_file(&fs, "EFI/debian/shimx64.efi", b"MZ shim").unwrap();
            let csv: Vec<u8> = "shimx64.efi,debian,,This is the boot entry for debian\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            write_file(&fs, "EFI/debian/BOOTX64.CSV", &csv).unwrap();
            write_file(&fs, "EFI/Microsoft/Boot/Fonts/wgl4_boot.ttf", b"font").unwrap();
        }
        let name = Path::new(image).file_name().unwrap();
        std::fs::copy(image, esp.join(name)).unwrap();
    }
}
