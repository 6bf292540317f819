//! Writing images: IPA's `standby.prepare_image` / `cache_image` and the `write_image` deploy
//! step, on top of the streaming [`image_pipeline`] and the [`disk_layout`] helpers.

mod image_source;
mod manager;
mod prepare;

pub use image_source::{checksum_spec, download_settings};
pub use manager::DeployManager;
pub use prepare::{prepare_image, ImageRequest};
