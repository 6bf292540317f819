use std::path::PathBuf;

use ironic_protocol::ErrorClass;

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
    Ipa { class: ErrorClass, details: String },

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

    /// A failure of IPA error class `class`.
    pub fn ipa(class: ErrorClass, details: impl Into<String>) -> Self {
        HardwareError::Ipa {
            class,
            details: details.into(),
        }
    }

    /// The IPA error class (`type` of `command_error`), or `None` for errors IPA would wrap
    /// into the generic step error of the step's kind.
    pub fn ipa_class(&self) -> Option<ErrorClass> {
        match self {
            HardwareError::Ipa { class, .. } => Some(*class),
            HardwareError::NotHandled | HardwareError::Incompatible(_) => {
                Some(ErrorClass::IncompatibleHardwareMethodError)
            }
            HardwareError::MethodNotFound(_) => Some(ErrorClass::HardwareManagerMethodNotFound),
            HardwareError::ProtectedDevice { .. } => Some(ErrorClass::ProtectedDeviceError),
            HardwareError::BlockDeviceErase(_) => Some(ErrorClass::BlockDeviceEraseError),
            HardwareError::InvalidArguments(_) => Some(ErrorClass::InvalidCommandParamsError),
            HardwareError::DeviceNotFound(_) => Some(ErrorClass::DeviceNotFound),
            HardwareError::DeviceNotAllowed(_)
            | HardwareError::Io { .. }
            | HardwareError::StepFailed(_) => None,
        }
    }

    /// The error as the conductor sees it: its own class, else `fallback` (the generic error
    /// of the step's kind, or of the command).
    pub fn to_command_error(&self, fallback: ErrorClass) -> ironic_protocol::CommandError {
        ironic_protocol::CommandError::new(self.ipa_class().unwrap_or(fallback), self.to_string())
    }
}
