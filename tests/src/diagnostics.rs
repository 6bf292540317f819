//! What a failed test prints: everything needed to see why without re-running it.

use std::path::Path;

/// The last `lines` lines of a text file, or a note saying why there are none.
pub fn tail(path: &Path, lines: usize) -> String {
    tail_filtered(path, lines, &[])
}

/// Like [`tail`], leaving out lines that contain any of `noise`.
pub fn tail_filtered(path: &Path, lines: usize, noise: &[&str]) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text
                .lines()
                .filter(|l| !noise.iter().any(|n| l.contains(n)))
                .collect();
            let skip = all.len().saturating_sub(lines);
            let mut s = String::new();
            if skip > 0 {
                s.push_str(&format!(
                    "[... {skip} earlier lines in {}{}]\n",
                    path.display(),
                    if noise.is_empty() {
                        ""
                    } else {
                        ", noise left out"
                    }
                ));
            }
            s.push_str(&all[skip..].join("\n"));
            s
        }
        Err(e) => format!("[{}: {e}]", path.display()),
    }
}

/// A titled section of a failure report.
pub struct Section {
    pub title: String,
    pub body: String,
}

impl Section {
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            body: body.into(),
        }
    }

    pub fn file_tail(title: &str, path: &Path, lines: usize) -> Section {
        Section::new(format!("{title} ({})", path.display()), tail(path, lines))
    }
}

/// Prints the sections to stderr between clear markers (libtest shows it with the failure).
pub fn print_report(heading: &str, sections: &[Section]) {
    let mut out = format!("\n======== {heading} ========\n");
    for s in sections {
        out.push_str(&format!(
            "-------- {} --------\n{}\n",
            s.title,
            s.body.trim_end()
        ));
    }
    out.push_str("======== end of report ========\n");
    eprint!("{out}");
}
