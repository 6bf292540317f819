use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::config::{Options, Protocol};

/// `scheme://host:port` exactly as Ironic stores it; IPv6 in brackets, no trailing slash.
pub fn callback_url(protocol: Protocol, host: &str, port: u16) -> String {
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    };
    format!("{}://{host}:{port}", protocol.as_str())
}

#[derive(Debug, thiserror::Error)]
#[error("cannot determine the address to advertise to Ironic after {attempts} attempts: {last}")]
pub struct AdvertiseError {
    attempts: u32,
    last: String,
}

/// The host to put into the callback URL: `ipa-advertise-host` when given, else the IPv4
/// address of `ipa-network-interface`, else the source address the kernel would use to reach
/// the Ironic API (what `ip route get <api>` reports). `api_urls` should list the URL that
/// answered first.
pub async fn detect_advertise_address(
    options: &Options,
    api_urls: &[String],
) -> Result<String, AdvertiseError> {
    if let Some(host) = &options.advertise_host {
        return Ok(host.clone());
    }
    let attempts = options.ip_lookup_attempts.max(1);
    let mut last = String::from("no API URL configured");
    for attempt in 1..=attempts {
        let found = match &options.network_interface {
            Some(iface) => interface_ipv4(iface)
                .ok_or_else(|| format!("interface {iface} has no IPv4 address")),
            None => route_source(api_urls).await,
        };
        match found {
            Ok(ip) => {
                tracing::info!(address = %ip, "advertise address detected");
                return Ok(ip.to_string());
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "advertise address not found yet");
                last = e;
            }
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_secs(options.ip_lookup_sleep)).await;
        }
    }
    Err(AdvertiseError { attempts, last })
}

/// The local address of a UDP socket "connected" to the API host: the kernel picks it by
/// routing, which is what `ip route get` shows. No packet is sent.
async fn route_source(api_urls: &[String]) -> Result<IpAddr, String> {
    let mut errors = Vec::new();
    for url in api_urls {
        let Some((host, port)) = host_port(url) else {
            errors.push(format!("{url}: cannot parse host"));
            continue;
        };
        let addrs = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.collect::<Vec<_>>(),
            Err(e) => {
                errors.push(format!("{host}: {e}"));
                continue;
            }
        };
        for addr in addrs {
            match local_address_towards(addr) {
                Ok(ip) if !is_link_local(&ip) && !ip.is_unspecified() => return Ok(ip),
                Ok(ip) => errors.push(format!("{addr}: only {ip} routes there")),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
    }
    Err(errors.join("; "))
}

fn local_address_towards(addr: SocketAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let sock = UdpSocket::bind(bind)?;
    sock.connect(addr)?;
    Ok(sock.local_addr()?.ip())
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn interface_ipv4(name: &str) -> Option<IpAddr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        (a.interface_name == name)
            .then(|| {
                a.address
                    .and_then(|s| s.as_sockaddr_in().map(|sin| IpAddr::V4(sin.ip())))
            })
            .flatten()
    })
}

/// Host and port of an `http(s)://host[:port]/...` URL; IPv6 hosts come in brackets.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = if scheme == "https" { 443 } else { 80 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_url_shapes() {
        assert_eq!(
            callback_url(Protocol::Https, "192.0.2.10", 9999),
            "https://192.0.2.10:9999"
        );
        assert_eq!(
            callback_url(Protocol::Https, "2001:db8::5", 9999),
            "https://[2001:db8::5]:9999"
        );
        assert_eq!(
            callback_url(Protocol::Http, "agent.example", 1),
            "http://agent.example:1"
        );
    }

    #[test]
    fn parses_api_hosts() {
        assert_eq!(
            host_port("http://10.0.0.1:6385"),
            Some(("10.0.0.1".into(), 6385))
        );
        assert_eq!(
            host_port("https://ironic.example/baremetal"),
            Some(("ironic.example".into(), 443))
        );
        assert_eq!(
            host_port("http://[fd00::1]:6385/"),
            Some(("fd00::1".into(), 6385))
        );
        assert_eq!(host_port("http://u:p@h:1"), Some(("h".into(), 1)));
    }

    #[tokio::test]
    async fn loopback_route_uses_loopback_source() {
        let ip = route_source(&["http://127.0.0.1:6385".into()])
            .await
            .unwrap();
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
