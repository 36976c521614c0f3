//! SSH deploy keys for git sources given as `ssh://` without `sshPrivateKey`: an ed25519 pair is
//! generated once, its private half stored as `sshPrivateKey` in the protected-settings Secret
//! (marked as generated, see [`crate::apply`]) and its public half reported as
//! `repositoryPublicKey`, for the user to add as a deploy key.

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    #[error("generating an ed25519 key: {0}")]
    Generate(ssh_key::Error),
    #[error("encoding the SSH key: {0}")]
    Encode(ssh_key::Error),
    /// Deliberately without the parser's message, which could quote key material.
    #[error("the stored private key is not a valid unencrypted OpenSSH key")]
    Invalid,
}

/// A generated key pair; `Debug` shows only the public half.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... comment`.
    pub public_openssh: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_openssh", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

/// Generates a fresh ed25519 pair; `comment` names the configuration so users can tell deploy
/// keys apart.
pub fn generate(comment: &str) -> Result<KeyPair, SshKeyError> {
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(SshKeyError::Generate)?;
    key.set_comment(comment);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(SshKeyError::Encode)?
        .to_string();
    let public_openssh = key.public_key().to_openssh().map_err(SshKeyError::Encode)?;
    Ok(KeyPair {
        private_openssh,
        public_openssh,
    })
}

/// The public half of a stored private key, for reporting after a restart.
pub fn public_from_private(private_openssh: &str) -> Result<String, SshKeyError> {
    let key = PrivateKey::from_openssh(private_openssh.trim()).map_err(|_| SshKeyError::Invalid)?;
    if key.is_encrypted() {
        return Err(SshKeyError::Invalid);
    }
    key.public_key().to_openssh().map_err(SshKeyError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxconfig_api::protected::ProtectedSettings;
    use fluxconfig_api::validation::validate_raw;
    use serde_json::json;

    #[test]
    fn generated_key_is_valid_and_matches() {
        let pair = generate("fluxconfig:flux/cluster-config").expect("generate");
        assert!(pair
            .private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(pair.public_openssh.starts_with("ssh-ed25519 AAAA"));
        assert!(pair
            .public_openssh
            .ends_with(" fluxconfig:flux/cluster-config"));
        assert_eq!(
            public_from_private(&pair.private_openssh).expect("parse"),
            pair.public_openssh
        );
        assert!(!format!("{pair:?}").contains("PRIVATE"));
        let other = generate("x").expect("generate");
        assert_ne!(other.private_openssh, pair.private_openssh);

        // The foundation's validation accepts it as sshPrivateKey for an ssh:// source.
        let spec = json!({
            "namespace": "flux",
            "gitRepository": {
                "url": "ssh://git@github.com/org/repo",
                "repositoryRef": {"branch": "main"},
            },
            "kustomizations": {"infra": {"path": "./infra"}},
        });
        let mut protected = ProtectedSettings::new();
        protected.insert("sshPrivateKey".into(), pair.private_openssh.clone());
        validate_raw("cluster-config", "flux", &spec, &protected).expect("valid");
    }

    #[test]
    fn garbage_is_rejected_without_echo() {
        let err = public_from_private("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n")
            .expect_err("invalid");
        assert!(!err.to_string().contains("c2VjcmV0"));
    }
}
