//! The data plane's throwaway CA and serving certificate.
//!
//! With a TLS directory the CA key is kept (`ca.key`, mode 0600) and reused at the next start, so
//! an agent that trusts `ca.crt` keeps trusting a restarted data plane.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::dataplane::state::write_atomically;
use crate::dataplane::Error;

const CA_NAME: &str = "fluxconfig-testbed-dataplane-ca";

pub struct Tls {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// Existing `ca.key` + `ca.crt` in `dir`, if both are there.
fn saved_ca(dir: Option<&Path>) -> Option<(KeyPair, String)> {
    let dir = dir?;
    let key = std::fs::read_to_string(dir.join("ca.key")).ok()?;
    let crt = std::fs::read_to_string(dir.join("ca.crt")).ok()?;
    Some((KeyPair::from_pem(&key).ok()?, crt))
}

/// Generates (or reloads) the CA and issues a server certificate for `localhost`, 127.0.0.1,
/// ::1, `ip` and `extra_sans` (host names or IP addresses).
pub fn generate(ip: IpAddr, dir: Option<&Path>, extra_sans: &[String]) -> Result<Tls, Error> {
    let (ca_key, saved_pem) = match saved_ca(dir) {
        Some((key, pem)) => (key, Some(pem)),
        None => (KeyPair::generate().map_err(tls_err)?, None),
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, CA_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key_pem = ca_key.serialize_pem();
    // Same name and key as the saved CA: certificates it issues chain to the saved `ca.crt`.
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err)?;

    let server_key = KeyPair::generate().map_err(tls_err)?;
    let mut names = vec!["localhost".to_string()];
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    for san in extra_sans {
        match san.parse::<IpAddr>() {
            Ok(extra) if !ips.contains(&extra) => ips.push(extra),
            Ok(_) => {}
            Err(_) => names.push(san.clone()),
        }
    }
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "fluxconfig-dataplane");
    if !ip.is_unspecified() && !ips.contains(&ip) {
        ips.push(ip);
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&server_key, &ca).map_err(tls_err)?;

    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let ca_pem = saved_pem.unwrap_or_else(|| ca.pem());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let key_path = dir.join("ca.key");
        write_atomically(&key_path, key_pem.as_bytes()).map_err(|source| Error::Write {
            path: key_path,
            source,
        })?;
    }
    Ok(Tls {
        ca_pem,
        server_config: Arc::new(config),
    })
}
