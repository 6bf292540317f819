//! `EFI_LOAD_OPTION`, the contents of a `Boot####` variable (UEFI specification, "Load
//! Options"), with the device paths `efibootmgr -c` puts in one: a hard drive media node
//! (`HD(partition, GPT|MBR, signature, start, size)`), a file path node, and the end node.

use blockdev::partition_table::Guid;

/// `LOAD_OPTION_ACTIVE`.
pub const LOAD_OPTION_ACTIVE: u32 = 0x0000_0001;

const MEDIA_DEVICE_PATH: u8 = 0x04;
const MEDIA_HARDDRIVE_DP: u8 = 0x01;
const MEDIA_FILEPATH_DP: u8 = 0x04;
const END_DEVICE_PATH: [u8; 4] = [0x7f, 0xff, 0x04, 0x00];

/// How the hard drive node identifies the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionSignature {
    /// The partition's unique GUID of a GPT disk.
    Gpt(Guid),
    /// The disk signature of an MBR disk (the 4 bytes at offset 440).
    Mbr(u32),
}

/// A hard drive media device path node. `start` and `size` are in logical blocks.
pub fn hard_drive_node(partition: u32, start: u64, size: u64, sig: PartitionSignature) -> Vec<u8> {
    let mut n = Vec::with_capacity(42);
    n.extend_from_slice(&[MEDIA_DEVICE_PATH, MEDIA_HARDDRIVE_DP, 42, 0]);
    n.extend_from_slice(&partition.to_le_bytes());
    n.extend_from_slice(&start.to_le_bytes());
    n.extend_from_slice(&size.to_le_bytes());
    let (signature, mbr_type, sig_type) = match sig {
        PartitionSignature::Gpt(g) => (g.0, 2u8, 2u8),
        PartitionSignature::Mbr(s) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&s.to_le_bytes());
            (b, 1, 1)
        }
    };
    n.extend_from_slice(&signature);
    n.push(mbr_type);
    n.push(sig_type);
    n
}

/// A file path media node: `path` in UCS-2 with its terminating NUL, e.g.
/// `\EFI\BOOT\BOOTX64.EFI`.
pub fn file_path_node(path: &str) -> Vec<u8> {
    let units: Vec<u16> = path.encode_utf16().chain([0]).collect();
    let len = 4 + 2 * units.len();
    let mut n = Vec::with_capacity(len);
    n.extend_from_slice(&[MEDIA_DEVICE_PATH, MEDIA_FILEPATH_DP]);
    n.extend_from_slice(&(len as u16).to_le_bytes());
    for u in units {
        n.extend_from_slice(&u.to_le_bytes());
    }
    n
}

/// A decoded or to-be-encoded load option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    /// The device path list, end node included.
    pub file_path_list: Vec<u8>,
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// An active boot entry for `loader` (`\`-separated) on a partition of a disk, as
    /// `efibootmgr -c -d DISK -p PART -L LABEL -l LOADER` writes it.
    pub fn for_loader(
        label: &str,
        partition: u32,
        start: u64,
        size: u64,
        sig: PartitionSignature,
        loader: &str,
    ) -> Self {
        let mut path = hard_drive_node(partition, start, size, sig);
        path.extend(file_path_node(loader));
        path.extend_from_slice(&END_DEVICE_PATH);
        LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: label.to_string(),
            file_path_list: path,
            optional_data: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.attributes.to_le_bytes());
        v.extend_from_slice(&(self.file_path_list.len() as u16).to_le_bytes());
        for u in self.description.encode_utf16().chain([0]) {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(&self.file_path_list);
        v.extend_from_slice(&self.optional_data);
        v
    }

    /// Parses a variable's data (without efivarfs' attribute prefix); `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let attributes = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
        let path_len = usize::from(u16::from_le_bytes(data.get(4..6)?.try_into().ok()?));
        let mut at = 6;
        let mut units = Vec::new();
        loop {
            let u = u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?);
            at += 2;
            if u == 0 {
                break;
            }
            units.push(u);
        }
        let file_path_list = data.get(at..at + path_len)?.to_vec();
        Some(LoadOption {
            attributes,
            description: String::from_utf16_lossy(&units),
            file_path_list,
            optional_data: data[at + path_len..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `efibootmgr -c -d /dev/loop0 -p 1 -L ironic1 -l '\EFI\BOOT\BOOTX64.EFI'` (efibootmgr 17,
    /// libefiboot with its efivarfs directory pointed at a scratch directory) on a GPT disk
    /// whose partition 1 (GUID AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE) spans LBAs 2048-67583.
    /// The first 4 bytes are efivarfs' attributes.
    const EFIBOOTMGR_GPT: &str = "
        0700 0000 0100 0000 5e00 6900 7200 6f00 6e00 6900 6300 3100 0000 0401 2a00 0100
        0000 0008 0000 0000 0000 0000 0100 0000 0000 aaaa aaaa bbbb cccc dddd eeee eeee
        eeee 0202 0404 3000 5c00 4500 4600 4900 5c00 4200 4f00 4f00 5400 5c00 4200 4f00
        4f00 5400 5800 3600 3400 2e00 4500 4600 4900 0000 7fff 0400";

    /// The same for an MBR disk with signature 0x1234abcd, partition 1 of type EF at
    /// 2048+65536, loader `\EFI\debian\shimx64.efi`, label `debian`.
    const EFIBOOTMGR_MBR: &str = "
        0700 0000 0100 0000 6200 6400 6500 6200 6900 6100 6e00 0000 0401 2a00 0100 0000
        0008 0000 0000 0000 0000 0100 0000 0000 cdab 3412 0000 0000 0000 0000 0000 0000
        0101 0404 3400 5c00 4500 4600 4900 5c00 6400 6500 6200 6900 6100 6e00 5c00 7300
        6800 6900 6d00 7800 3600 3400 2e00 6500 6600 6900 0000 7fff 0400";

    #[test]
    fn matches_efibootmgr_byte_for_byte() {
        let guid =
            blockdev::partition_table::Guid::parse("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE").unwrap();
        let gpt = LoadOption::for_loader(
            "ironic1",
            1,
            2048,
            65536,
            PartitionSignature::Gpt(guid),
            "\\EFI\\BOOT\\BOOTX64.EFI",
        );
        assert_eq!(gpt.encode(), unhex(EFIBOOTMGR_GPT)[4..]);
        let mbr = LoadOption::for_loader(
            "debian",
            1,
            2048,
            65536,
            PartitionSignature::Mbr(0x1234_abcd),
            "\\EFI\\debian\\shimx64.efi",
        );
        assert_eq!(mbr.encode(), unhex(EFIBOOTMGR_MBR)[4..]);
        assert_eq!(
            LoadOption::decode(&unhex(EFIBOOTMGR_MBR)[4..]).unwrap(),
            mbr
        );
        assert_eq!(LoadOption::decode(&[1, 0, 0]), None);
    }
}
