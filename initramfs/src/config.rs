//! `/etc/ironic-agent/init.conf`: what `ironic-agent-build` tells the init.
//!
//! ```text
//! # comment
//! agent = /usr/bin/ironic-agent
//! agent_arg = --log-file
//! agent_arg = /var/log/ironic-agent.log
//! load_module = efivarfs
//! rescue_command = /usr/sbin/dropbear -F -E
//! dhcp = bootif
//! ```
//!
//! One `key = value` per line; repeatable keys accumulate. A line-based format keeps a TOML
//! parser out of PID 1.

/// Where the builder writes the file in the ramdisk.
pub use ramdisk_contract::paths::INIT_CONFIG as PATH;

/// Which NICs get DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// The `BOOTIF` NIC when the command line names one, else every NIC.
    Bootif,
    /// Every physical NIC, in parallel.
    All,
    /// None: the operator configures the network (e.g. a static config in extra files).
    None,
}

impl DhcpMode {
    pub fn parse(s: &str) -> Option<DhcpMode> {
        match s {
            "bootif" => Some(DhcpMode::Bootif),
            "all" => Some(DhcpMode::All),
            "none" => Some(DhcpMode::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    pub agent: String,
    pub agent_args: Vec<String>,
    /// Modules loaded at boot whatever the hardware (e.g. `efivarfs`).
    pub load_modules: Vec<String>,
    /// Started once rescue is finalised (`/etc/.rescued`), e.g. an SSH server the operator
    /// put into the ramdisk.
    pub rescue_command: Vec<String>,
    pub dhcp: DhcpMode,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            agent: ramdisk_contract::paths::AGENT.into(),
            agent_args: Vec::new(),
            load_modules: Vec::new(),
            rescue_command: Vec::new(),
            dhcp: DhcpMode::Bootif,
        }
    }
}

impl InitConfig {
    /// Parses the file; unknown keys and bad lines are reported, not fatal (PID 1 must get
    /// the agent started whatever the file says).
    pub fn parse(text: &str) -> (InitConfig, Vec<String>) {
        let mut c = InitConfig::default();
        let mut warnings = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                warnings.push(format!("{PATH}:{}: not key = value: {line:?}", n + 1));
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "agent" => c.agent = value.to_string(),
                "agent_arg" => c.agent_args.push(value.to_string()),
                "load_module" => c.load_modules.push(value.to_string()),
                "rescue_command" => {
                    c.rescue_command = value.split_whitespace().map(str::to_string).collect()
                }
                "dhcp" => match DhcpMode::parse(value) {
                    Some(m) => c.dhcp = m,
                    None => warnings.push(format!(
                        "{PATH}:{}: dhcp must be bootif, all or none, not {value:?}",
                        n + 1
                    )),
                },
                _ => warnings.push(format!("{PATH}:{}: unknown key {key:?}", n + 1)),
            }
        }
        (c, warnings)
    }

    /// The file's text for this configuration.
    pub fn render(&self) -> String {
        let mut s =
            String::from("# ironic-agent-init configuration, written by ironic-agent-build\n");
        s.push_str(&format!("agent = {}\n", self.agent));
        for a in &self.agent_args {
            s.push_str(&format!("agent_arg = {a}\n"));
        }
        for m in &self.load_modules {
            s.push_str(&format!("load_module = {m}\n"));
        }
        if !self.rescue_command.is_empty() {
            s.push_str(&format!(
                "rescue_command = {}\n",
                self.rescue_command.join(" ")
            ));
        }
        let dhcp = match self.dhcp {
            DhcpMode::Bootif => "bootif",
            DhcpMode::All => "all",
            DhcpMode::None => "none",
        };
        s.push_str(&format!("dhcp = {dhcp}\n"));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_bad_lines() {
        let c = InitConfig {
            agent: "/usr/bin/ironic-agent".into(),
            agent_args: vec!["--log-file".into(), "/var/log/a.log".into()],
            load_modules: vec!["efivarfs".into()],
            rescue_command: vec!["/usr/sbin/dropbear".into(), "-F".into()],
            dhcp: DhcpMode::All,
        };
        let (back, warnings) = InitConfig::parse(&c.render());
        assert_eq!(back, c);
        assert!(warnings.is_empty());
        let (d, warnings) = InitConfig::parse("dhcp = sometimes\nfoo = 1\nnonsense\n");
        assert_eq!(d, InitConfig::default());
        assert_eq!(warnings.len(), 3);
    }
}
