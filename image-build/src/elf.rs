//! Just enough ELF64 (little-endian) for the builder: a named section's bytes (a kernel
//! module's `.modinfo`) and whether an executable asks for a program interpreter
//! (`PT_INTERP`: dynamically linked, so unusable in a ramdisk without a libc).

use anyhow::{bail, ensure, Context, Result};

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    let s = b.get(o..o + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    let s = b.get(o..o + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> Result<u64> {
    let s = b.get(o..o + 8).context("ELF truncated")?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn check_header(b: &[u8]) -> Result<()> {
    ensure!(b.len() >= 64 && b[..4] == *b"\x7fELF", "not an ELF file");
    ensure!(
        b[4] == 2 && b[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    Ok(())
}

/// The bytes of the section called `name`, if there is one.
pub fn section<'a>(b: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    check_header(b)?;
    let shoff = u64_at(b, 0x28)? as usize;
    let shentsize = u16_at(b, 0x3a)? as usize;
    let shnum = u16_at(b, 0x3c)? as usize;
    let shstrndx = u16_at(b, 0x3e)? as usize;
    ensure!(shentsize >= 64, "bad ELF section header size {shentsize}");
    let header = |i: usize| -> Result<(u32, usize, usize)> {
        let o = shoff + i * shentsize;
        Ok((
            u32_at(b, o)?,
            u64_at(b, o + 0x18)? as usize,
            u64_at(b, o + 0x20)? as usize,
        ))
    };
    let (_, stroff, strsize) = header(shstrndx)?;
    let strtab = b
        .get(stroff..stroff + strsize)
        .context("ELF section name table out of bounds")?;
    for i in 0..shnum {
        let (name_off, off, size) = header(i)?;
        let n = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|&c| c == 0).next())
            .unwrap_or_default();
        if n == name.as_bytes() {
            let data = b
                .get(off..off + size)
                .with_context(|| format!("ELF section {name} out of bounds"))?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The program interpreter an executable asks for (`/lib64/ld-linux-x86-64.so.2`), or
/// `None` for a static executable.
pub fn interpreter(b: &[u8]) -> Result<Option<String>> {
    check_header(b)?;
    let e_type = u16_at(b, 0x10)?;
    if e_type != 2 && e_type != 3 {
        bail!("not an executable (ELF type {e_type})");
    }
    let phoff = u64_at(b, 0x20)? as usize;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if u32_at(b, o)? == PT_INTERP {
            let off = u64_at(b, o + 0x08)? as usize;
            let size = u64_at(b, o + 0x20)? as usize;
            let s = b.get(off..off + size).context("PT_INTERP out of bounds")?;
            return Ok(Some(
                String::from_utf8_lossy(s)
                    .trim_end_matches('\0')
                    .to_string(),
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_is_dynamic_or_static_but_parses() {
        // Whatever the host toolchain produced, its own executable must parse.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = interpreter(&me).unwrap();
        if let Some(i) = interp {
            assert!(i.contains("ld"), "{i}");
        }
        assert!(section(&me, ".text").unwrap().is_some());
        assert!(section(&me, ".no-such-section").unwrap().is_none());
    }

    #[test]
    fn rejects_non_elf() {
        assert!(interpreter(b"#!/bin/sh\necho hi\n").is_err());
        assert!(section(&[0u8; 10], ".modinfo").is_err());
    }
}
