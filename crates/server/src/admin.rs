//! Operator actions on the database: what `muster-server admin` does.

use uuid::Uuid;

use crate::store::{NewToken, Store, StoreError, Tenant};
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
    Ok(CreatedTenant {
        tenant,
        enrol_token,
        admin_token,
    })
}
