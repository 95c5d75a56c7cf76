//! The simulated agents: who each one is (derived from the seed and its index), what the
//! server gave it at registration, and the file that keeps those across runs so a rerun against
//! the same database does not register 150,000 agents again.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::rng::{Rng, base64};

/// What an agent says about itself at registration; the same for the same seed and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    /// 32 lowercase hex digits, like `/etc/machine-id`.
    pub machine_id: String,
    /// 32 random bytes, base64: registration is idempotent per key, and only checks its shape.
    pub public_key: String,
}

impl Identity {
    pub fn of(seed: u64, index: u32) -> Identity {
        let mut rng = Rng::new(&[seed, u64::from(index), 0x1d]);
        let machine_id = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let mut key = [0u8; 32];
        rng.fill(&mut key);
        Identity {
            hostname: format!("load-{index:06}.fleet.example"),
            machine_id,
            public_key: base64(&key),
        }
    }
}

/// An agent token. `Debug` prints `[redacted]`: enrolment lists end up in error messages.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(text: String) -> Token {
        Token(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One registered agent, as the enrolments file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolment {
    pub index: u32,
    pub agent_id: String,
    pub agent_token: Token,
    /// The inventory hash the server acknowledged last; `None` until a full inventory was
    /// taken, and the next inventory is then sent whole.
    pub hash: Option<String>,
    /// How many package upgrades (delta uploads) the agent has had; its inventory is the
    /// template varied by index and this.
    pub generation: u32,
}

/// The enrolments file: the registered agents of one tenant for one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolments {
    pub tenant_id: String,
    pub seed: u64,
    /// By index: `agents[i].index == i`.
    pub agents: Vec<Enrolment>,
}

impl Enrolments {
    pub fn new(tenant_id: &str, seed: u64) -> Enrolments {
        Enrolments {
            tenant_id: tenant_id.to_owned(),
            seed,
            agents: Vec::new(),
        }
    }

    /// Reads `path`; a missing file is an empty list. A file for another tenant or seed is
    /// an error: its tokens would all be refused, or belong to other identities.
    pub fn load(path: &Path, tenant_id: &str, seed: u64) -> anyhow::Result<Enrolments> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Enrolments::new(tenant_id, seed));
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: Enrolments = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not an enrolments file", path.display()))?;
        anyhow::ensure!(
            file.tenant_id == tenant_id && file.seed == seed,
            "{}: holds tenant {} seed {}, not tenant {tenant_id} seed {seed}",
            path.display(),
            file.tenant_id,
            file.seed
        );
        for (i, agent) in file.agents.iter().enumerate() {
            anyhow::ensure!(
                agent.index as usize == i,
                "{}: agent {i} has index {}",
                path.display(),
                agent.index
            );
        }
        Ok(file)
    }

    /// Writes `path` whole (temporary file, then rename): an interrupted write never leaves a
    /// file that loses the registrations.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            serde_json::to_writer(&mut file, self)?;
            file.flush()?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_distinct_stable_and_well_formed() {
        let a = Identity::of(1, 0);
        assert_eq!(a, Identity::of(1, 0));
        assert_ne!(a, Identity::of(1, 1));
        assert_ne!(a.public_key, Identity::of(2, 0).public_key);
        assert_eq!(a.hostname, "load-000000.fleet.example");
        assert_eq!(a.machine_id.len(), 32);
        assert!(a.machine_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a.public_key.len(), 44);
        let keys: std::collections::HashSet<_> =
            (0..10_000).map(|i| Identity::of(1, i).public_key).collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn enrolments_round_trip_and_refuse_another_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enrolments.json");
        assert!(Enrolments::load(&path, "t", 1).unwrap().agents.is_empty());
        let mut e = Enrolments::new("t", 1);
        e.agents.push(Enrolment {
            index: 0,
            agent_id: "a".into(),
            agent_token: Token::new("mst_agent_x".into()),
            hash: Some("h".into()),
            generation: 2,
        });
        e.save(&path).unwrap();
        assert_eq!(Enrolments::load(&path, "t", 1).unwrap(), e);
        assert!(Enrolments::load(&path, "u", 1).is_err());
        assert!(Enrolments::load(&path, "t", 2).is_err());
        assert_eq!(format!("{:?}", e.agents[0].agent_token), "[redacted]");
    }
}
