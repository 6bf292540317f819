use std::path::PathBuf;

/// Errors of hardware managers. Each maps to the IPA error class the conductor knows, and its
/// text is what an operator reads in the node's `last_error`, so it names the device and what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// The manager does not implement this method; dispatch tries the next manager.
    #[error("method not implemented by this hardware manager")]
    NotHandled,

    /// The manager implements the method but not for this hardware; dispatch tries the next.
    #[error("{0}")]
    Incompatible(String),

    /// No manager handled the method (IPA's `HardwareManagerMethodNotFound`).
    #[error("Could not find method: {0}")]
    MethodNotFound(String),

    /// The agent is not in a ramdisk and the device was not allowed with `--allow-device`.
    #[error(transparent)]
    DeviceNotAllowed(#[from] blockdev::NotAllowed),

    /// A shared-disk cluster filesystem or partition was found (IPA's `ProtectedDeviceError`).
    #[error(
        "Protected {what} located on device {}. This volume or contents may be a shared block \
         device. Please consult your storage administrator, and restart cleaning after either \
         detaching the volumes, or instructing the agent to not protect contents \
         (driver_internal_info wipe_special_filesystems=false or \
         ipa-guard-special-filesystems=false).",
        device.display()
    )]
    ProtectedDevice { device: PathBuf, what: String },

    /// Erasing one or more devices failed (IPA's `BlockDeviceEraseError`).
    #[error("{0}")]
    BlockDeviceErase(String),

    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// No disk or partition to deploy onto (IPA's `DeviceNotFound`).
    #[error("{0}")]
    DeviceNotFound(String),

    /// A failure that already has its IPA error class, e.g. `ImageDownloadError` from a
    /// manager that writes images; reported to the conductor as is.
    #[error("{details}")]
    Ipa {
        kind: String,
        code: u16,
        message: String,
        details: String,
    },

    /// Step arguments that do not fit the step.
    #[error("{0}")]
    InvalidArguments(String),

    /// A step that failed for a reason of its own, e.g. an external manager's command that
    /// exited non-zero; reported as the generic error of the step's kind (`CleaningError`...).
    #[error("{0}")]
    StepFailed(String),
}

impl HardwareError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HardwareError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether dispatch should move on to the next manager.
    pub fn falls_through(&self) -> bool {
        matches!(
            self,
            HardwareError::NotHandled | HardwareError::Incompatible(_)
        )
    }

    /// The IPA error class name (`type` of `command_error`), or `None` for errors IPA would
    /// wrap into the generic step error of the step's kind.
    pub fn ipa_type(&self) -> Option<&str> {
        match self {
            HardwareError::Ipa { kind, .. } => Some(kind),
            HardwareError::NotHandled | HardwareError::Incompatible(_) => {
                Some("IncompatibleHardwareMethodError")
            }
            HardwareError::MethodNotFound(_) => Some("HardwareManagerMethodNotFound"),
            HardwareError::ProtectedDevice { .. } => Some("ProtectedDeviceError"),
            HardwareError::BlockDeviceErase(_) => Some("BlockDeviceEraseError"),
            HardwareError::InvalidArguments(_) => Some("InvalidCommandParamsError"),
            HardwareError::DeviceNotFound(_) => Some("DeviceNotFound"),
            HardwareError::DeviceNotAllowed(_)
            | HardwareError::Io { .. }
            | HardwareError::StepFailed(_) => None,
        }
    }

    /// IPA's `message` for the class returned by [`HardwareError::ipa_type`].
    pub fn ipa_message(&self) -> Option<&str> {
        if let HardwareError::Ipa { message, .. } = self {
            return Some(message);
        }
        Some(match self.ipa_type()? {
            "IncompatibleHardwareMethodError" => {
                "HardwareManager method is not compatible with hardware"
            }
            "HardwareManagerMethodNotFound" => "No HardwareManager found to handle method",
            "ProtectedDeviceError" => "Protected device located, cleaning aborted.",
            "BlockDeviceEraseError" => "Error erasing block device",
            "InvalidCommandParamsError" => "Invalid command parameters",
            "DeviceNotFound" => {
                "Error finding the disk or partition device to deploy the image onto"
            }
            _ => return None,
        })
    }

    /// The `code` of the IPA error: 500 but for classes IPA gives another one.
    pub fn ipa_code(&self) -> u16 {
        match self {
            HardwareError::Ipa { code, .. } => *code,
            HardwareError::InvalidArguments(_) => 400,
            _ => 500,
        }
    }
}
