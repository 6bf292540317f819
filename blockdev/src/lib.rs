//! Linux block devices: the bottom floor of everything the agent does to a disk.
//!
//! One crate owns the block-device facts and ioctls, as coreos-installer's `blockdev.rs` does,
//! so that the image writer (`image-pipeline`), the layout code (`disk-layout`) and the erase
//! steps (`hardware-managers`) build on the same primitives instead of each defining its own:
//!
//! * [`ioctl`]: every `BLK*` request, defined once, behind safe functions.
//! * [`DeviceGuard`] and [`WritableDisk`]: which devices destructive code may touch, and the
//!   one way to open a disk for writing, which asks the guard first.
//! * [`region`]: byte extents of a disk and positional reads ([`ReadAt`], [`Region`]).
//! * [`partition_table`]: GPT and MBR reading, damaged tables included.
//! * [`signatures`]: `wipefs`-style probing and erasing of filesystem, RAID, LVM and
//!   partition-table magics.
//! * [`rescan`]: making the kernel drop the partitions and pages it cached.
//! * [`watch`]: seeing that a disk stopped completing requests.
//! * [`progress`]: how far long disk work has got, for the operator.

mod disk;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod guard;
pub mod ioctl;
pub mod partition_table;
pub mod progress;
pub mod region;
pub mod rescan;
pub mod signatures;
pub mod watch;

pub use disk::{OpenError, WritableDisk};
pub use guard::{running_in_ramdisk, DeviceGuard, GuardError, NotAllowed};
pub use region::{Extent, ReadAt, Region};
pub use watch::{IoWatch, Stall};
