//! Test helpers: temporary disk files and the system tools that validate what we wrote.

use std::path::PathBuf;
use std::process::Command;

use blockdev::WritableDisk;

use crate::DiskTarget;

/// A sparse temporary file of `len` bytes opened as a target with `sector_size` sectors.
pub fn temp_disk(len: u64, sector_size: u64) -> (tempfile::NamedTempFile, DiskTarget) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(len).unwrap();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let target = DiskTarget::new(WritableDisk::from_file(file, tmp.path()).unwrap())
        .with_sector_size(sector_size);
    (tmp, target)
}

/// Where a system tool is, looking in the sbin directories too.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Runs a validation tool: `None` (with a note) when it is not installed, else whether it
/// succeeded and what it printed.
pub fn run(name: &str, args: &[&str]) -> Option<(bool, String)> {
    let Some(exe) = tool(name) else {
        eprintln!("note: {name} not installed, skipping that check");
        return None;
    };
    let out = Command::new(exe).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// `sgdisk -v` must find no problem.
pub fn assert_sgdisk_clean(path: &std::path::Path) {
    if let Some((ok, text)) = run("sgdisk", &["-v", path.to_str().unwrap()]) {
        assert!(
            ok && text.contains("No problems found"),
            "sgdisk -v:\n{text}"
        );
    }
}
