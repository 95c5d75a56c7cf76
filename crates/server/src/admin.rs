//! Operator actions on the database: what `muster-server admin` does.

use uuid::Uuid;

use crate::store::{NewToken, Store, StoreError, Tenant, TokenInfo};
use crate::token::{Token, TokenKind};

/// A tenant just created, with its tokens in the clear: the only time they are.
#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub enrol_token: Token,
    pub admin_token: Token,
}

/// Creates a tenant with an enrolment token and an admin token.
pub async fn create_tenant(store: &Store, name: &str) -> Result<CreatedTenant, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(StoreError::Conflict(
            "a tenant name is 1 to 255 bytes".into(),
        ));
    }
    let tenant = Tenant {
        id: Uuid::now_v7().to_string(),
        name: name.to_owned(),
        created_at: jiff::Timestamp::now().as_second(),
    };
    let enrol_token = Token::generate(TokenKind::Enrol);
    let admin_token = Token::generate(TokenKind::Admin);
    store
        .create_tenant(
            &tenant,
            &[
                NewToken::new(TokenKind::Enrol, enrol_token.hash(), None),
                NewToken::new(TokenKind::Admin, admin_token.hash(), None),
            ],
        )
        .await?;
    // The key that signs the tenant's commands, made now so agents enrolling get it pinned.
    crate::commands::tenant_key(store, &tenant.id).await?;
    Ok(CreatedTenant {
        tenant,
        enrol_token,
        admin_token,
    })
}

/// Why an operator's or an admin's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong (a bad kind, name or expiry).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest token name, bytes.
pub const MAX_TOKEN_NAME_LEN: usize = 255;

/// The most registrations one enrolment token may be limited to (more is "unlimited").
pub const MAX_TOKEN_USES: i64 = 1_000_000;

/// Limits on a new token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenLimits {
    /// Unix seconds after `now`; `None`: never expires.
    pub expires_at: Option<i64>,
    /// Enrolment tokens only: how many agents may register with it (1 is single-use);
    /// `None`: any number. A re-registration of an agent already counted is not a use.
    pub max_uses: Option<i64>,
}

/// Creates an admin or enrolment token for the tenant with `limits`. Returns what is stored
/// and the token in the clear, which is shown this once. Agent tokens come only from
/// registration.
pub async fn create_token(
    store: &Store,
    tenant_id: &str,
    kind: TokenKind,
    name: Option<&str>,
    limits: TokenLimits,
    now: i64,
) -> Result<(TokenInfo, Token), AdminError> {
    let TokenLimits {
        expires_at,
        max_uses,
    } = limits;
    if kind == TokenKind::Agent {
        return Err(AdminError::Invalid(
            "agent tokens are issued by registration; create `admin` or `enrol` tokens".into(),
        ));
    }
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_TOKEN_NAME_LEN) {
        return Err(AdminError::Invalid(format!(
            "a token name is at most {MAX_TOKEN_NAME_LEN} bytes"
        )));
    }
    if expires_at.is_some_and(|at| at <= now) {
        return Err(AdminError::Invalid(
            "the expiry is not in the future".into(),
        ));
    }
    if let Some(uses) = max_uses {
        if kind != TokenKind::Enrol {
            return Err(AdminError::Invalid(
                "only enrolment tokens have a number of uses".into(),
            ));
        }
        if !(1..=MAX_TOKEN_USES).contains(&uses) {
            return Err(AdminError::Invalid(format!(
                "the number of uses must be from 1 to {MAX_TOKEN_USES}, got {uses}"
            )));
        }
    }
    let token = Token::generate(kind);
    let mut new = NewToken::new(kind, token.hash(), None);
    new.expires_at = expires_at;
    new.max_uses = max_uses;
    let info = store.create_token(tenant_id, &new, name, now).await?;
    Ok((info, token))
}

/// The tenant whose id or name is `id_or_name` (an operator's look-up: ids first).
pub async fn find_tenant(store: &Store, id_or_name: &str) -> Result<Option<Tenant>, StoreError> {
    let tenants = store.list_tenants().await?;
    Ok(tenants
        .iter()
        .find(|t| t.id == id_or_name)
        .or_else(|| tenants.iter().find(|t| t.name == id_or_name))
        .cloned())
}

/// A duration as operators write it: a number of seconds, or a number followed by `s`, `m`,
/// `h`, `d` or `w` (`30d`, `12h`). `None` when it is not one, zero, or over a hundred years.
pub fn parse_duration(text: &str) -> Option<i64> {
    const MAX_S: i64 = 100 * 365 * 86_400;
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    let seconds = number.parse::<i64>().ok()?.checked_mul(scale)?;
    (1..=MAX_S).contains(&seconds).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration("12h"), Some(12 * 3_600));
        assert_eq!(parse_duration("90m"), Some(5_400));
        assert_eq!(parse_duration("2w"), Some(14 * 86_400));
        assert_eq!(parse_duration("3600"), Some(3_600));
        assert_eq!(parse_duration(" 5s "), Some(5));
        for bad in [
            "",
            "d",
            "0",
            "0d",
            "-1d",
            "1y",
            "1.5d",
            "99999999999999999999",
            "101000000w",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
