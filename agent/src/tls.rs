//! TLS for the agent API: IPA's auto-TLS (a self-signed certificate for the advertise
//! address, handed to Ironic in heartbeats) or an operator's static certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, SupportedCipherSuite};

use crate::config::{Curve, TlsVersion};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("auto-TLS needs an IP address to certify, got {0:?}")]
    NotAnIp(String),
    #[error("generating the auto-TLS certificate: {0}")]
    Generate(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("unknown TLS 1.2 cipher suite {name:?}; supported: {supported}")]
    UnknownCipher { name: String, supported: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate the agent serves, with its PEM when Ironic must be told about it.
pub struct ServerIdentity {
    pub config: Arc<ServerConfig>,
    /// Sent as `agent_verify_ca` (auto-TLS only).
    pub verify_ca_pem: Option<String>,
}

/// Validity of an auto-generated certificate (IPA: 30 days).
const AUTO_TLS_DAYS: i64 = 30;

/// Generates IPA's auto-TLS identity: an EC key and a self-signed certificate with
/// `CN=<hostname>` and the advertise IP as its subject alternative name (the conductor checks
/// the IP against the callback URL), valid from `now - clock_skew` for 30 days. Certificate
/// and key are written to `state_dir` (`agent.crt`, `agent.key`, mode 0600).
pub fn auto_tls(
    advertise_host: &str,
    curve: Curve,
    clock_skew_s: u64,
    state_dir: &Path,
    min_version: TlsVersion,
    cipher_suites: Option<&str>,
) -> Result<ServerIdentity, TlsError> {
    let ip: IpAddr = advertise_host
        .parse()
        .map_err(|_| TlsError::NotAnIp(advertise_host.to_string()))?;
    let alg = match curve {
        Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        // ring cannot sign with P-521; the next strongest curve keeps auto-TLS working.
        Curve::P521 => {
            tracing::warn!("P-521 is not available; the auto-TLS key uses P-384");
            &rcgen::PKCS_ECDSA_P384_SHA384
        }
    };
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate_for(alg).map_err(gen)?;
    let mut params = rcgen::CertificateParams::default();
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ironic-agent".to_string());
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(clock_skew_s.min(i64::MAX as u64) as i64);
    params.not_after = now + time::Duration::days(AUTO_TLS_DAYS);
    let serial: [u8; 16] = rand::random();
    // A positive serial: clear the top bit.
    let mut serial = serial.to_vec();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(gen)?;
    let cert_pem = cert.pem();

    std::fs::create_dir_all(state_dir).map_err(|source| TlsError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?;
    write_file(&state_dir.join("agent.crt"), cert_pem.as_bytes(), 0o644)?;
    write_file(
        &state_dir.join("agent.key"),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;

    let config = server_config(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        min_version,
        cipher_suites,
    )?;
    Ok(ServerIdentity {
        config,
        verify_ca_pem: Some(cert_pem),
    })
}

/// The operator's certificate (`listen_tls`, `tls_cert_file`, `tls_key_file`).
pub fn static_tls(
    cert_file: &Path,
    key_file: &Path,
    min_version: TlsVersion,
    cipher_suites: Option<&str>,
) -> Result<ServerIdentity, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let pem_err = |p: &Path, m: String| TlsError::Pem {
        path: p.to_path_buf(),
        message: m,
    };
    let cert_pem = read(cert_file)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert_file, "no certificate found".into()));
    }
    let key_pem = read(key_file)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| pem_err(key_file, e.to_string()))?
        .ok_or_else(|| pem_err(key_file, "no private key found".into()))?;
    Ok(ServerIdentity {
        config: server_config(chain, key, min_version, cipher_suites)?,
        verify_ca_pem: None,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    min_version: TlsVersion,
    cipher_suites: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = select_suites(&provider, cipher_suites)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// All TLS 1.3 suites, and the TLS 1.2 suites named in `list` (colon-separated, OpenSSL or
/// IANA spelling) or all of them when no list is given.
fn select_suites(
    provider: &CryptoProvider,
    list: Option<&str>,
) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok(provider.cipher_suites.clone());
    };
    let tls12: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_none())
        .collect();
    let mut chosen: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_some())
        .copied()
        .collect();
    for name in list.split(':').map(str::trim).filter(|n| !n.is_empty()) {
        let iana = openssl_to_iana(name).unwrap_or(name);
        match tls12.iter().find(|s| format!("{:?}", s.suite()) == iana) {
            Some(s) => chosen.push(**s),
            None => {
                return Err(TlsError::UnknownCipher {
                    name: name.to_string(),
                    supported: tls12
                        .iter()
                        .map(|s| format!("{:?}", s.suite()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }
    Ok(chosen)
}

fn openssl_to_iana(name: &str) -> Option<&'static str> {
    Some(match name {
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // `mode` applies only when the file is created: a key file left by an earlier run (or
    // planted with wider permissions) gets it before the key is written into it.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(data).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tls_certificate_names_the_ip() {
        let dir = tempfile::tempdir().unwrap();
        // A key file from before, readable by all: it must end up 0600 all the same.
        std::fs::write(dir.path().join("agent.key"), "old").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let wide = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(dir.path().join("agent.key"), wide).unwrap();
        }
        let id = auto_tls(
            "192.0.2.10",
            Curve::P384,
            3600,
            dir.path(),
            TlsVersion::V1_2,
            None,
        )
        .unwrap();
        let pem = id.verify_ca_pem.unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let written = std::fs::read_to_string(dir.path().join("agent.crt")).unwrap();
        assert_eq!(written, pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The SAN carries the address bytes.
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert!(der.windows(4).any(|w| w == [192, 0, 2, 10]));
        assert!(auto_tls(
            "agent.example",
            Curve::P384,
            0,
            dir.path(),
            TlsVersion::V1_2,
            None
        )
        .is_err());
    }

    #[test]
    fn cipher_lists() {
        let p = rustls::crypto::ring::default_provider();
        let all = select_suites(&p, None).unwrap();
        let some = select_suites(
            &p,
            Some("ECDHE-ECDSA-AES256-GCM-SHA384:TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        )
        .unwrap();
        assert!(some.len() < all.len());
        assert_eq!(some.iter().filter(|s| s.tls13().is_none()).count(), 2);
        let e = select_suites(&p, Some("RC4-MD5")).unwrap_err().to_string();
        assert!(e.contains("RC4-MD5") && e.contains("supported"), "{e}");
    }
}
