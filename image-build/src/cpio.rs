//! A reproducible `newc` cpio writer (the initramfs format the kernel unpacks).
//!
//! Reproducible by construction: entries are written sorted by path, every parent
//! directory is present before its children, owners are root, every mtime is the one given
//! (`SOURCE_DATE_EPOCH`), inode numbers count up in path order, and file modes are
//! normalised (0755/0644 unless given). Device nodes are plain entries, so no root is
//! needed to build an initramfs with `/dev/console`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// The tree to write, keyed by absolute path (`/usr/bin/ironic-agent`).
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

fn normalize(path: &str) -> Result<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        bail!("bad path in the ramdisk: {path:?}");
    }
    Ok(parts.join("/"))
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds `node` at `path`, creating parent directories (0755). A file may replace a
    /// file (later sources win: an operator's extra file over a default); anything else
    /// colliding is an error.
    pub fn add(&mut self, path: &str, node: Node) -> Result<()> {
        let p = normalize(path)?;
        let mut parent = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => bail!("/{parent} is not a directory, cannot add /{p}"),
            }
        }
        match (self.entries.get(&p), &node) {
            (None, _) => {}
            (Some(Node::Dir { .. }), Node::Dir { .. }) => {}
            (Some(Node::File { .. }), Node::File { .. }) => {}
            (Some(old), _) => bail!("/{p} is already in the ramdisk as {}", kind(old)),
        }
        self.entries.insert(p, node);
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        self.add(path, Node::File { mode, data })
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.add(path, Node::Dir { mode: 0o755 })
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        normalize(path).ok().and_then(|p| self.entries.get(&p))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of file data in the archive.
    pub fn data_len(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive (sorted, then the `TRAILER!!!`), padded to 512 bytes.
    pub fn write(&self, mtime: u32, out: &mut impl Write) -> io::Result<u64> {
        let mut w = Counting { inner: out, n: 0 };
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let (mode, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match node {
                Node::Dir { mode } => (0o040000 | mode, &[], 2, (0, 0)),
                Node::File { mode, data } => (0o100000 | mode, data, 1, (0, 0)),
                Node::Symlink { target } => (0o120777, target.as_bytes(), 1, (0, 0)),
                Node::CharDev { mode, major, minor } => (0o020000 | mode, &[], 1, (*major, *minor)),
            };
            header(
                &mut w,
                ino as u32 + 1,
                mode,
                nlink,
                mtime,
                data.len(),
                rdev,
                path,
            )?;
            w.write_all(data)?;
            pad(&mut w, 4)?;
        }
        header(&mut w, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!")?;
        pad(&mut w, 512)?;
        Ok(w.n)
    }
}

fn kind(n: &Node) -> &'static str {
    match n {
        Node::Dir { .. } => "a directory",
        Node::File { .. } => "a file",
        Node::Symlink { .. } => "a symlink",
        Node::CharDev { .. } => "a device node",
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<'_, W>, to: u64) -> io::Result<()> {
    let rem = (to - w.n % to) % to;
    w.write_all(&vec![0u8; rem as usize])
}

#[allow(clippy::too_many_arguments)]
fn header<W: Write>(
    w: &mut Counting<'_, W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    if size > u32::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: larger than newc's 4 GiB limit"),
        ));
    }
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime,
        size as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 4)
}

/// Reads a newc archive back (for tests and `--list`): path, mode, data.
pub fn read(mut b: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    loop {
        if b.len() < 110 || &b[..6] != b"070701" {
            bail!("bad cpio header at byte {offset}");
        }
        let field = |i: usize| -> Result<usize> {
            let s = std::str::from_utf8(&b[6 + i * 8..6 + (i + 1) * 8])?;
            Ok(usize::from_str_radix(s, 16)?)
        };
        let (mode, size, namesize) = (field(1)? as u32, field(6)?, field(11)?);
        let name_end = 110 + namesize;
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size;
        if data_end > b.len() {
            bail!("cpio entry {name} runs past the end");
        }
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        out.push((name, mode, b[data_start..data_end].to_vec()));
        let next = data_end.div_ceil(4) * 4;
        offset += next;
        b = &b[next.min(b.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sorted_reproducible_newc_with_parents() {
        let mut a = Archive::new();
        a.file("/usr/bin/ironic-agent", 0o755, b"agent".to_vec())
            .unwrap();
        a.file("/init", 0o755, b"init!".to_vec()).unwrap();
        a.add(
            "/dev/console",
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        )
        .unwrap();
        a.add(
            "/sbin/init",
            Node::Symlink {
                target: "/init".into(),
            },
        )
        .unwrap();
        let mut one = Vec::new();
        let n = a.write(1_700_000_000, &mut one).unwrap();
        assert_eq!(n as usize, one.len());
        assert_eq!(one.len() % 512, 0);
        let mut two = Vec::new();
        a.clone().write(1_700_000_000, &mut two).unwrap();
        assert_eq!(one, two);

        let entries = read(&one).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "sbin",
                "sbin/init",
                "usr",
                "usr/bin",
                "usr/bin/ironic-agent"
            ]
        );
        assert_eq!(entries[2].1, 0o100755);
        assert_eq!(entries[2].2, b"init!");
        assert_eq!(entries[1].1, 0o020600);
        assert_eq!(entries[4].2, b"/init");
        // mtime field of the first header
        assert_eq!(
            &one[6 + 5 * 8..6 + 6 * 8],
            format!("{:08x}", 1_700_000_000u32).as_bytes()
        );
    }

    #[test]
    fn cpio_tool_reads_it() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cpio not installed; skipping the cross-check");
            return;
        }
        let mut a = Archive::new();
        a.file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n".to_vec())
            .unwrap();
        let mut b = Vec::new();
        a.write(0, &mut b).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&b).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "etc\netc/hosts\n");
    }

    #[test]
    fn collisions_and_bad_paths_are_errors() {
        let mut a = Archive::new();
        a.file("/etc/x", 0o644, vec![]).unwrap();
        a.file("/etc/x", 0o600, b"new".to_vec()).unwrap();
        assert!(a.dir("/etc/x").is_err());
        assert!(a.file("/etc/x/y", 0o644, vec![]).is_err());
        assert!(a.file("/../etc", 0o644, vec![]).is_err());
        assert!(a.file("/", 0o644, vec![]).is_err());
    }
}
