//! Stub: being written.

use crate::{CollectError, Collected, Context};

pub fn collect(_context: &Context) -> Collected {
    Err(CollectError::Other("not implemented yet".into()))
}
