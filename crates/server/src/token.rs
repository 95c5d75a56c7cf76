//! Bearer tokens: 32 random bytes shown once as `mst_<kind>_<base64url>`, stored only as the
//! SHA-256 of that text.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of randomness in a token (256 bits).
const TOKEN_BYTES: usize = 32;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Registers agents into its tenant (the seed's `API_TOKEN`).
    Enrol,
    /// The admin API and the dashboard of its tenant.
    Admin,
    /// One agent's own reports.
    Agent,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Enrol => "enrol",
            TokenKind::Admin => "admin",
            TokenKind::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        [TokenKind::Enrol, TokenKind::Admin, TokenKind::Agent]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A token's text. `Debug` and `Display` print `[redacted]`; [`Token::expose`] is called only to
/// show it once to whoever created it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token of `kind` from the system's CSPRNG.
    pub fn generate(kind: TokenKind) -> Token {
        let mut bytes = [0u8; TOKEN_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random generator is available");
        Token(format!(
            "mst_{}_{}",
            kind.as_str(),
            URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// A token presented by a client. Anything that is not shaped like one of ours is `None`,
    /// so garbage never reaches the database.
    pub fn parse(text: &str) -> Option<Token> {
        let rest = text.strip_prefix("mst_")?;
        let (kind, body) = rest.split_once('_')?;
        TokenKind::parse(kind)?;
        let decoded = URL_SAFE_NO_PAD.decode(body).ok()?;
        (decoded.len() == TOKEN_BYTES).then(|| Token(text.to_owned()))
    }

    /// The kind the token's text claims. The stored row, not this, is authoritative.
    pub fn claimed_kind(&self) -> Option<TokenKind> {
        TokenKind::parse(self.0.strip_prefix("mst_")?.split_once('_')?.0)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps: lowercase hex SHA-256 of the token's text.
    pub fn hash(&self) -> String {
        hash_hex(self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Lowercase hex SHA-256.
pub fn hash_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Whether two stored hashes are equal, in time independent of where they differ.
/// (ring's `verify_slices_are_equal` is deprecated for outside use; this is the same loop.)
pub fn hashes_equal(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a
        .bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_hide_themselves() {
        let token = Token::generate(TokenKind::Agent);
        assert!(token.expose().starts_with("mst_agent_"));
        assert_eq!(token.expose().len(), "mst_agent_".len() + 43);
        assert_eq!(Token::parse(token.expose()), Some(token.clone()));
        assert_eq!(token.claimed_kind(), Some(TokenKind::Agent));
        assert_eq!(format!("{token} {token:?}"), "[redacted] [redacted]");
        assert_ne!(token, Token::generate(TokenKind::Agent));
        assert_eq!(token.hash().len(), 64);
    }

    #[test]
    fn foreign_text_is_not_a_token() {
        for text in [
            "",
            "mst_",
            "mst_agent_",
            "mst_root_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "mst_agent_short",
            "mst_agent_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "enrol-secret",
        ] {
            assert_eq!(Token::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn hash_comparison() {
        let a = hash_hex(b"a");
        assert!(hashes_equal(&a, &hash_hex(b"a")));
        assert!(!hashes_equal(&a, &hash_hex(b"b")));
        assert!(!hashes_equal(&a, ""));
    }
}
