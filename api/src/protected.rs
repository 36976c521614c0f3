//! Keys of the protected-settings Secret the agent writes beside a `FluxConfig`.
//!
//! They are the Azure `configurationProtectedSettings` names, so the agent copies them through
//! unchanged; the controller maps them onto the keys each Flux source expects.

use std::collections::BTreeMap;

/// Decoded protected settings of one configuration (key → value).
pub type ProtectedSettings = BTreeMap<String, String>;

pub const SSH_PRIVATE_KEY: &str = "sshPrivateKey";
pub const HTTPS_KEY: &str = "httpsKey";
pub const BUCKET_SECRET_KEY: &str = "bucketSecretKey";
pub const ACCOUNT_KEY: &str = "accountKey";
pub const SAS_TOKEN: &str = "sasToken";
pub const CLIENT_SECRET: &str = "clientSecret";
pub const CLIENT_CERTIFICATE: &str = "clientCertificate";
pub const CLIENT_CERTIFICATE_PASSWORD: &str = "clientCertificatePassword";
/// TLS client certificate and key for an OCI registry (base64 PEM in Azure).
pub const TLS_CLIENT_CERTIFICATE: &str = "tlsClientCertificate";
pub const TLS_PRIVATE_KEY: &str = "tlsPrivateKey";

/// Every key the controller understands; anything else in the Secret is ignored.
pub const KNOWN_KEYS: [&str; 10] = [
    SSH_PRIVATE_KEY,
    HTTPS_KEY,
    BUCKET_SECRET_KEY,
    ACCOUNT_KEY,
    SAS_TOKEN,
    CLIENT_SECRET,
    CLIENT_CERTIFICATE,
    CLIENT_CERTIFICATE_PASSWORD,
    TLS_CLIENT_CERTIFICATE,
    TLS_PRIVATE_KEY,
];
