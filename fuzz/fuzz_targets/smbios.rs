//! SMBIOS tables (`/sys/firmware/dmi/tables/DMI`): firmware-supplied, and in a ramdisk on
//! unknown hardware as good as arbitrary. Structure splitting and string sets, then every
//! decoder the inventory and the `dmi-decode` collector use.
//!
//! Invariants: structures lie inside the table, in order, without overlap; every string
//! reference resolves to a string of the structure or to none; what goes to Ironic
//! serializes as JSON.

#![no_main]

use hardware_managers::generic::smbios::{
    bios_information, dmi_inspection_data, installed_memory_mb, structures, system_information,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|table: &[u8]| {
    let found = structures(table);
    let base = table.as_ptr() as usize;
    let mut after = 0usize;
    for s in &found {
        let at = s.formatted.as_ptr() as usize - base;
        assert!(at >= after, "structures overlap or go backwards");
        assert!(s.formatted.len() >= 4 && at + s.formatted.len() <= table.len());
        after = at + s.formatted.len();
        for off in 0..s.formatted.len() {
            if let Some(text) = s.string(off) {
                assert!(s.strings.iter().any(|t| t.trim() == text));
            }
        }
    }
    let _ = installed_memory_mb(table);
    let _ = system_information(table);
    let _ = bios_information(table);
    let data = dmi_inspection_data(table);
    serde_json::to_vec(&data).expect("inspection data serializes");
});
