//! The seed operator's agent: the stock `ironic-agent` (same flags, kernel parameters and API)
//! with [`FlashCardManager`] loaded next to the built-in managers, so that `erase_devices`
//! secure-erases the I/O servers' flash cards with their vendor tool or NVMe sanitize/format
//! and leaves every other disk to the generic erase. Build it static and point `image-build`'s
//! `[agent] binary` at it (`image-build/examples/seed-operator.toml`).
//!
//! The cards and the vendor tool are described by [`FlashCardConfig`]: the defaults (Nytro
//! WarpDrive `1000:007e` through `/usr/sbin/ddcli`, NVMe cards by class code) unless the
//! ramdisk holds `/etc/ironic-agent/flash-card.json` (or the file named by the
//! `IRONIC_AGENT_FLASH_CARD_CONFIG` environment variable), a JSON [`FlashCardConfig`] whose
//! missing fields keep their defaults. A file that does not parse stops the agent at start-up:
//! cleaning with a half-understood card list would be worse.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flash_card_agent::{FlashCardConfig, FlashCardManager};

const DEFAULT_CONFIG: &str = "/etc/ironic-agent/flash-card.json";

/// The configuration from `path`, or the defaults when there is no such file.
fn load_config(path: &Path) -> Result<FlashCardConfig, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FlashCardConfig::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn main() -> ExitCode {
    let path = std::env::var_os("IRONIC_AGENT_FLASH_CARD_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = match load_config(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ironic-agent: flash card configuration: {e}");
            return ExitCode::from(2);
        }
    };
    ironic_agent::run_with(move |ctx| {
        vec![Box::new(FlashCardManager::new(ctx.guard.clone(), config))]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flash_card_agent::{CardErase, PciFormat};

    #[test]
    fn configuration_file_or_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        assert_eq!(load_config(&missing).unwrap(), FlashCardConfig::default());

        let file = dir.path().join("flash-card.json");
        std::fs::write(
            &file,
            r#"{"cards": [{"name": "Nytro BLP4-1600",
                           "pci": {"vendor": 4096, "device": 126, "subsystem_device": 1287},
                           "erase": "vendor_tool"}],
                "vendor_tool": {"path": "/opt/lsi/ddoemcli", "erase_timeout_secs": 7200}}"#,
        )
        .unwrap();
        let c = load_config(&file).unwrap();
        assert_eq!(c.cards.len(), 1);
        assert_eq!(c.cards[0].pci.subsystem_device, Some(0x0507));
        assert_eq!(c.cards[0].erase, CardErase::VendorTool);
        assert_eq!(c.vendor_tool.path, PathBuf::from("/opt/lsi/ddoemcli"));
        assert_eq!(c.vendor_tool.erase_timeout_secs, 7200);
        // Unset fields keep the WarpDrive utility's defaults.
        assert_eq!(c.vendor_tool.list_args, ["-listall"]);
        assert_eq!(c.vendor_tool.pci_format, PciFormat::Ddcli);

        std::fs::write(&file, r#"{"cards": [{"name": "x"}]}"#).unwrap();
        assert!(load_config(&file).unwrap_err().contains("flash-card.json"));
    }
}
