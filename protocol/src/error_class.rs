//! The error classes the conductor sees in `command_error.type`, with IPA's `message` and
//! `code` for each (`ironic_python_agent/errors.py`; `InstanceDeployFailure` is
//! ironic-lib's).
//!
//! The conductor keys nothing on `message`; it logs the whole error and shows `details` as
//! the node's `last_error`. The class names must be IPA's exactly: operators' tooling and
//! Ironic's own handling of `VersionMismatch` match on them.

use serde::{Deserialize, Serialize};

macro_rules! classes {
    ($( $(#[doc = $doc:literal])* $name:ident = $code:literal, $message:literal; )*) => {
        /// An IPA error class.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorClass {
            $( $(#[doc = $doc])* $name, )*
        }

        impl ErrorClass {
            /// Every class, for tests and documentation.
            pub const ALL: &'static [ErrorClass] = &[$(ErrorClass::$name),*];

            /// The class name, `command_error.type`.
            pub const fn name(self) -> &'static str {
                match self { $(ErrorClass::$name => stringify!($name),)* }
            }

            /// IPA's `message` for the class.
            pub const fn message(self) -> &'static str {
                match self { $(ErrorClass::$name => $message,)* }
            }

            /// IPA's `code` (`status_code`) for the class.
            pub const fn code(self) -> u16 {
                match self { $(ErrorClass::$name => $code,)* }
            }
        }
    };
}

classes! {
    /// A disk could not be erased (`erase_devices`, `erase_devices_express`...).
    BlockDeviceEraseError = 500, "Error erasing block device";
    /// A clean step failed for a reason without a class of its own.
    CleaningError = 500, "Clean step failed";
    /// A command failed for a reason without a class of its own.
    CommandExecutionError = 500, "Command execution failed";
    /// A deploy step failed for a reason without a class of its own.
    DeploymentError = 500, "Deploy step failed";
    /// No disk (or partition) to deploy onto; IPA's is a `NotFound`, hence 404.
    DeviceNotFound = 404, "Error finding the disk or partition device to deploy the image onto";
    /// A partition image asked for a filesystem the agent cannot create.
    FileSystemNotSupported = 500, "Failed to create a file system";
    /// No hardware manager implements the step or method.
    HardwareManagerMethodNotFound = 500, "No HardwareManager found to handle method";
    /// The image does not match its checksum.
    ImageChecksumError = 500, "Error verifying image checksum";
    /// The image (or its checksum file, or the config drive) could not be downloaded.
    ImageDownloadError = 500, "Error downloading image";
    /// `image_download_max_duration` passed.
    ImageDownloadTimeoutError = 408, "Image download timeout";
    /// Writing the image to the disk failed.
    ImageWriteError = 500, "Error writing image to device";
    /// A manager implements the method, but not for this hardware.
    IncompatibleHardwareMethodError = 500, "HardwareManager method is not compatible with hardware";
    /// ironic-lib's deploy failure (a config drive that cannot be created).
    InstanceDeployFailure = 500, "Failed to deploy instance";
    /// The command's parameters are wrong (also answered as HTTP 400 before recording).
    InvalidCommandParamsError = 400, "Invalid command parameters";
    /// The image cannot be deployed as it is (format, size, layout).
    InvalidImage = 500, "The provided image is not valid for use";
    /// A shared-disk filesystem or partition stopped cleaning.
    ProtectedDeviceError = 500, "Protected device located, cleaning aborted.";
    /// A service step failed for a reason without a class of its own.
    ServicingError = 500, "Service step failed";
    /// Powering off or rebooting failed.
    SystemRebootError = 500, "Error rebooting system";
    /// The conductor's cached hardware manager versions differ from the agent's.
    VersionMismatch = 409, "Hardware managers version mismatch, reload agent with correct version";
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialise_as_the_class_name() {
        for class in ErrorClass::ALL {
            assert_eq!(
                serde_json::to_value(class).unwrap(),
                serde_json::Value::String(class.name().into())
            );
            assert!(!class.message().is_empty());
        }
        assert_eq!(ErrorClass::ALL.len(), 19);
    }

    #[test]
    fn codes_are_ipas() {
        assert_eq!(ErrorClass::InvalidCommandParamsError.code(), 400);
        assert_eq!(ErrorClass::DeviceNotFound.code(), 404);
        assert_eq!(ErrorClass::ImageDownloadTimeoutError.code(), 408);
        assert_eq!(ErrorClass::VersionMismatch.code(), 409);
        assert_eq!(ErrorClass::CleaningError.code(), 500);
    }
}
