//! Cutting the agent off the network: what `system.lockdown` ends with, and what an agent
//! that may not be driven (its token went to someone else) does to itself.

use blockdev::DeviceGuard;

// The ramdisk's init (`ironic-agent-init`) never restarts an agent that left this file: a
// locked-down machine must stay unreachable even if the agent later dies.
use ramdisk_contract::paths::LOCKDOWN_MARKER;

/// Marks the agent locked down for the init and sets every interface but loopback down.
/// Outside a ramdisk only logs: the agent must not cut a developer's machine off the network.
pub fn take_network_down(guard: &DeviceGuard) {
    if !guard.in_ramdisk() {
        tracing::warn!("not running in a ramdisk: leaving network interfaces up");
        return;
    }
    if let Err(e) = leave_marker(std::path::Path::new(LOCKDOWN_MARKER)) {
        tracing::error!(path = LOCKDOWN_MARKER, error = %e, "cannot leave the lockdown marker");
    }
    let Ok(names) = std::fs::read_dir("/sys/class/net") else {
        tracing::error!("cannot list network interfaces to take them down");
        return;
    };
    for entry in names.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        match set_link_down(&name) {
            Ok(()) => tracing::info!(interface = %name, "interface down"),
            Err(e) => tracing::error!(interface = %name, error = %e, "cannot take interface down"),
        }
    }
}

fn leave_marker(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, b"")
}

fn set_link_down(name: &str) -> std::io::Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data; the name is copied with a terminating NUL within
    // IFNAMSIZ, and both ioctls only read/write that struct.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        let bytes = name.as_bytes();
        if bytes.len() >= libc::IFNAMSIZ {
            return Err(std::io::Error::other("interface name too long"));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_left_where_the_init_looks() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("run/ironic-agent/lockdown");
        leave_marker(&marker).unwrap();
        assert!(marker.is_file());
        // Idempotent: a second lockdown must not fail.
        leave_marker(&marker).unwrap();
        let init = include_str!("../../initramfs/src/main.rs");
        assert!(
            init.contains("LOCKDOWN_MARKER") && init.contains("ramdisk_contract::paths::"),
            "the init reads another path than the contract's"
        );
    }
}
