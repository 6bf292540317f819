//! The agent's open-files limit.
//!
//! The soft `RLIMIT_NOFILE` is 1024 unless someone raises it, and running out of descriptors
//! fails heartbeats, image downloads, disk opens and external managers mid-deploy with EMFILE.
//! The ramdisk's init raises it; the agent makes sure of it wherever it runs.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use ramdisk_contract::limits;

/// Raises the open-files limit toward [`limits::OPEN_FILES`]: soft and hard when the process
/// may raise the hard limit (root in the ramdisk), else the soft one up to the hard one.
/// Returns the `(soft, hard)` limit in force afterwards.
pub fn raise_open_files_limit() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let wanted = limits::open_files(soft, hard, true);
    if wanted != (soft, hard) && setrlimit(Resource::RLIMIT_NOFILE, wanted.0, wanted.1).is_err() {
        // Not allowed to raise the hard limit (not root, or no CAP_SYS_RESOURCE).
        let (soft, hard) = limits::open_files(soft, hard, false);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
    }
    getrlimit(Resource::RLIMIT_NOFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_target_or_the_hard_limit() {
        let (soft, hard) = raise_open_files_limit().unwrap();
        assert!(soft <= hard);
        assert!(
            soft >= limits::OPEN_FILES.min(hard),
            "soft {soft}, hard {hard}"
        );
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (soft, hard));
        // Raising again changes nothing.
        assert_eq!(raise_open_files_limit().unwrap(), (soft, hard));
    }
}
