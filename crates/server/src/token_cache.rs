//! Agent tokens recently found live, so an agent's requests (a heartbeat a minute, telemetry,
//! inventory) do not each cost a token look-up in the database.
//!
//! An entry lasts `[limits] token_cache_s` (default 120 s, longer than the agent's heartbeat
//! interval so a steady agent is looked up about once per entry); 0 turns the cache off. What
//! it costs: a token revoked elsewhere — by `muster-server admin token revoke`, or by another
//! replica — keeps working on this server until its entry ends. Revocations made through this
//! server (the admin API, an agent registering again) empty the cache at once.
//!
//! Only live agent tokens are kept (an entry also remembers the token's expiry, checked on
//! every use); a miss goes to the database as before. The cache holds at most
//! [`MAX_ENTRIES`]; when full, ended entries are swept, and if none had ended it starts empty.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::TokenRecord;
use crate::token::TokenKind;

/// Entries at most: ~200 bytes each, so ~200 MB at the bound; a fleet of 150,000 agents
/// needs 150,000.
pub const MAX_ENTRIES: usize = 1_000_000;

/// What a cached agent token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAgent {
    pub tenant_id: String,
    pub agent_id: String,
    /// Unix seconds; the token stops working then, cached or not.
    pub expires_at: Option<i64>,
}

#[derive(Debug)]
struct Entry {
    agent: CachedAgent,
    until: Instant,
}

/// The cache; keys are the tokens' SHA-256 (the stored hash), never the tokens.
#[derive(Debug)]
pub struct TokenCache {
    lifetime: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl TokenCache {
    /// A cache whose entries last `lifetime`; zero keeps nothing.
    pub fn new(lifetime: Duration) -> TokenCache {
        TokenCache {
            lifetime,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The agent behind the token whose hash (lowercase hex) is `hash`, if cached, live and
    /// unexpired at `now` (unix seconds).
    pub fn get(&self, hash: &str, now: i64) -> Option<CachedAgent> {
        let key = key(hash)?;
        let entries = self.entries.lock().expect("token cache lock");
        let entry = entries.get(&key)?;
        (entry.until > Instant::now() && entry.agent.expires_at.is_none_or(|at| at > now))
            .then(|| entry.agent.clone())
    }

    /// Keeps `record` (found in the database, live) under its hash, if it is an agent's.
    pub fn insert(&self, record: &TokenRecord) {
        if self.lifetime.is_zero() || record.kind != TokenKind::Agent {
            return;
        }
        let (Some(key), Some(agent_id)) = (key(&record.hash), record.agent_id.clone()) else {
            return;
        };
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                agent: CachedAgent {
                    tenant_id: record.tenant_id.clone(),
                    agent_id,
                    expires_at: record.expires_at,
                },
                until: now + self.lifetime,
            },
        );
    }

    /// Forgets everything: a token was revoked.
    pub fn clear(&self) {
        self.entries.lock().expect("token cache lock").clear();
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("token cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The 32 bytes of a lowercase hex SHA-256; `None` for anything else.
fn key(hash: &str) -> Option<[u8; 32]> {
    let bytes = hash.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (k, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        key[k] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: TokenKind, hash: &str, expires_at: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: "t".into(),
            tenant_id: "tenant".into(),
            kind,
            hash: hash.into(),
            agent_id: (kind == TokenKind::Agent).then(|| "agent".into()),
            expires_at,
            revoked_at: None,
            last_used_at: None,
            max_uses: None,
            uses: 0,
        }
    }

    const HASH: &str = "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff";

    #[test]
    fn agent_tokens_are_kept_until_their_entry_or_the_token_ends() {
        let cache = TokenCache::new(Duration::from_secs(60));
        cache.insert(&record(TokenKind::Agent, HASH, Some(1_000)));
        let agent = cache.get(HASH, 999).expect("cached");
        assert_eq!(
            (agent.tenant_id.as_str(), agent.agent_id.as_str()),
            ("tenant", "agent")
        );
        assert_eq!(cache.get(HASH, 1_000), None, "the token has expired");
        assert_eq!(cache.get(&HASH.replace("ff", "fe"), 0), None);

        let short = TokenCache::new(Duration::from_millis(1));
        short.insert(&record(TokenKind::Agent, HASH, None));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(HASH, 0), None, "the entry has ended");

        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn other_tokens_and_a_zero_lifetime_keep_nothing() {
        let cache = TokenCache::new(Duration::from_secs(60));
        cache.insert(&record(TokenKind::Admin, HASH, None));
        cache.insert(&record(TokenKind::Enrol, HASH, None));
        cache.insert(&record(TokenKind::Agent, "not hex", None));
        assert!(cache.is_empty());
        let off = TokenCache::new(Duration::ZERO);
        off.insert(&record(TokenKind::Agent, HASH, None));
        assert!(off.is_empty());
    }
}
