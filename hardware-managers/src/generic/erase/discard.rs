//! Erase by discarding every block (`BLKSECDISCARD`, else `BLKDISCARD`), as IPA's opt-in
//! discard path does with `blkdiscard`: only where the operator enabled it
//! (`driver_internal_info.agent_enable_discard_erase` or `ipa-enable-discard-erase`), only on
//! devices whose queue advertises discard, and only counted as an erase when the markers
//! planted beforehand read back as zeros. A device that ignores the discard, or leaves the
//! old contents readable, fails the verification and the erase moves on to the overwrite.

use std::io;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};

use blockdev::{ioctl, WritableDisk};

use super::Refusal;

/// `queue/discard_max_bytes` of the disk; 0 when the device cannot discard.
pub fn discard_max_bytes(sys_root: &Path, kname: &str) -> u64 {
    std::fs::read_to_string(
        sys_root
            .join("block")
            .join(kname)
            .join("queue/discard_max_bytes"),
    )
    .ok()
    .and_then(|t| t.trim().parse().ok())
    .unwrap_or(0)
}

/// Whether the disk can be discarded at all.
pub fn plan(sys_root: &Path, kname: &str) -> Result<u64, Refusal> {
    match discard_max_bytes(sys_root, kname) {
        0 => Err(Refusal::Unsupported(
            "the device does not support discard (queue/discard_max_bytes is 0)".into(),
        )),
        n => Ok(n),
    }
}

/// Discards `[0, size)` of the device: a secure discard if the device implements one, else a
/// plain discard; then drops the device's page cache.
pub fn run(disk: &WritableDisk, size: u64, max_bytes: u64) -> Result<Map<String, Value>, String> {
    let started = Instant::now();
    let method = match ioctl::secure_discard(disk.file(), 0, size) {
        Ok(()) => "secure_discard",
        Err(e) => {
            tracing::info!(device = %disk.path().display(), error = %e,
                "secure discard not available, discarding");
            ioctl::discard(disk.file(), 0, size).map_err(|e| format!("BLKDISCARD failed: {e}"))?;
            "discard"
        }
    };
    blockdev::rescan::flush_buffers(disk.path())
        .map_err(|e: io::Error| format!("flushing the device's buffers: {e}"))?;
    let mut report = Map::new();
    report.insert("method".into(), json!(method));
    report.insert("discard_max_bytes".into(), json!(max_bytes));
    report.insert(
        "seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_support_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let q = sys.path().join("block/sda/queue");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("discard_max_bytes"), "0\n").unwrap();
        assert!(matches!(
            plan(sys.path(), "sda"),
            Err(Refusal::Unsupported(_))
        ));
        std::fs::write(q.join("discard_max_bytes"), "2147450880\n").unwrap();
        assert_eq!(plan(sys.path(), "sda").unwrap(), 2147450880);
        assert!(plan(sys.path(), "sdz").is_err());
    }
}
