//! Who this agent is: its ed25519 key pair and what the server said at enrolment.
//!
//! The key pair, created at first start, is the agent's identity: the server registers an
//! agent per (tenant, public key), so a cloned VM (which gets a new state directory or
//! deletes it) or a renamed host stays distinct. Both files live in the state directory and
//! are readable by their owner only:
//!
//! - `agent.key`: the key pair, PKCS#8 DER.
//! - `enrolment.json`: agent id, agent token, the tenant's command-signing key, and the server
//!   URL it was issued for (an agent pointed at another server enrols again).

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

const KEY_FILE: &str = "agent.key";
const ENROLMENT_FILE: &str = "enrolment.json";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid ed25519 key pair (delete it to create a new identity)")]
    BadKey { path: PathBuf },
    #[error("{path}: {message}")]
    BadEnrolment { path: PathBuf, message: String },
}

/// The agent's ed25519 key pair.
pub struct Keys {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("public_key", &self.public_key_base64())
            .finish()
    }
}

impl Keys {
    /// Loads `agent.key` from `state_dir`, creating the key pair on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Keys, IdentityError> {
        let path = state_dir.join(KEY_FILE);
        let der = match std::fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let der = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| IdentityError::BadKey { path: path.clone() })?;
                write_private(&path, der.as_ref()).map_err(|source| IdentityError::Io {
                    path: path.clone(),
                    source,
                })?;
                der.as_ref().to_vec()
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| IdentityError::BadKey { path })?;
        Ok(Keys { pair })
    }

    /// The public key, base64: what the server knows the agent by.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.pair.public_key().as_ref())
    }

    /// An ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// What the server issued at enrolment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolment {
    pub agent_id: String,
    #[serde(with = "secret_string")]
    pub agent_token: Secret,
    #[serde(default)]
    pub command_signing_key: Option<String>,
    /// The API base URL the enrolment was made with.
    pub base_url: String,
}

impl Enrolment {
    /// The stored enrolment, if the agent has one.
    pub fn load(state_dir: &Path) -> Result<Option<Enrolment>, IdentityError> {
        let path = state_dir.join(ENROLMENT_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| IdentityError::BadEnrolment {
                path,
                message: e.to_string(),
            })
    }

    /// Stores the enrolment (owner-only, atomically).
    pub fn save(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let path = state_dir.join(ENROLMENT_FILE);
        let json = serde_json::to_vec_pretty(self).expect("an enrolment always serializes");
        write_private(&path, &json).map_err(|source| IdentityError::Io { path, source })
    }

    /// Forgets the enrolment, so the next start enrols again (the server rejected the token).
    pub fn remove(state_dir: &Path) -> Result<(), IdentityError> {
        let path = state_dir.join(ENROLMENT_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(IdentityError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }
}

/// Writes `bytes` to `path` readable and writable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic::write(path, bytes, Some(0o600))
}

/// The token is stored in the file (that is the point of the file) but never printed.
mod secret_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::Secret;

    pub fn serialize<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_key_pair_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Keys::load_or_create(dir.path()).unwrap();
        let again = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_key_base64(), again.public_key_base64());
        assert_eq!(BASE64.decode(first.public_key_base64()).unwrap().len(), 32);
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
        let other = Keys::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(
            first.public_key_base64(),
            other.public_key_base64(),
            "each agent its own key"
        );
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let public = BASE64.decode(keys.public_key_base64()).unwrap();
        let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        let signature = keys.sign(b"hello");
        assert!(verifier.verify(b"hello", &signature).is_ok());
        assert!(verifier.verify(b"hellO", &signature).is_err());
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        let err = Keys::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("agent.key") && err.contains("not a valid ed25519 key pair"),
            "{err}"
        );
    }

    #[test]
    fn enrolment_round_trips_privately_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Enrolment::load(dir.path()).unwrap(), None);
        let enrolment = Enrolment {
            agent_id: "a-1".into(),
            agent_token: Secret::new("tok"),
            command_signing_key: None,
            base_url: "http://127.0.0.1:3000/api".into(),
        };
        enrolment.save(dir.path()).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join(ENROLMENT_FILE)), 0o600);
        assert_eq!(
            Enrolment::load(dir.path()).unwrap(),
            Some(enrolment.clone())
        );
        assert!(
            !format!("{enrolment:?}").contains("tok\""),
            "Debug hides the token"
        );
        Enrolment::remove(dir.path()).unwrap();
        Enrolment::remove(dir.path()).unwrap();
        assert_eq!(Enrolment::load(dir.path()).unwrap(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "no temporary files left: {leftovers:?}"
        );
    }
}
