//! A real nginx (Debian's) serving test images, as an operator's image server would.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// nginx serving `root` on `addr:port`, stopped on Drop.
pub struct Nginx {
    child: Child,
    base_url: String,
    root: PathBuf,
    log_dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in the foreground with a private config under `dir`. Query strings are
    /// ignored for static files, so temp-URL-shaped URLs (`?temp_url_sig=..`) serve the file.
    pub fn start(dir: &Path, addr: Ipv4Addr, port: u16) -> Result<Nginx> {
        let root = dir.join("www");
        let log_dir = dir.join("nginx");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(log_dir.join("tmp"))?;
        let conf = log_dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
                 pid {log}/nginx.pid;\nerror_log {log}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {log}/access.log;\n  sendfile on;\n  tcp_nopush on;\n\
                 \x20 client_body_temp_path {log}/tmp;\n  proxy_temp_path {log}/tmp;\n\
                 \x20 fastcgi_temp_path {log}/tmp;\n  uwsgi_temp_path {log}/tmp;\n  scgi_temp_path {log}/tmp;\n\
                 \x20 default_type application/octet-stream;\n\
                 \x20 server {{ listen {addr}:{port}; root {root}; }}\n}}\n",
                log = log_dir.display(),
                root = root.display(),
            ),
        )?;
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(log_dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_dir.join("stderr.log"))?)
            .spawn()
            .context("starting nginx (Debian package nginx)")?;
        let mut n = Nginx {
            child,
            base_url: format!("http://{addr}:{port}"),
            root,
            log_dir,
        };
        n.wait_ready(addr, port)?;
        Ok(n)
    }

    fn wait_ready(&mut self, addr: Ipv4Addr, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("nginx exited with {status}: {}", self.error_log());
            }
            if std::net::TcpStream::connect((addr, port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "nginx did not listen on {addr}:{port}: {}",
            self.error_log()
        )
    }

    /// Where files to serve go.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// URL of `name` under the root.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM the master: fast shutdown of it and its worker.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_files_with_temp_url_queries() {
        if !crate::cmd::on_path("nginx") && !nginx_binary().exists() {
            eprintln!("nginx not installed; run tests/setup.sh");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let n = Nginx::start(dir.path(), Ipv4Addr::LOCALHOST, port).unwrap();
        std::fs::write(n.root().join("img.raw"), b"hello image").unwrap();
        let url = format!("{}?temp_url_sig=abc&temp_url_expires=1", n.url("img.raw"));
        let out = std::process::Command::new("curl")
            .args(["-sf", &url])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hello image");
    }
}
