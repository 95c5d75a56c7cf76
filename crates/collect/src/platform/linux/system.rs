//! Stub: being written.

use crate::{CollectError, Collected, Context};

pub fn collect(_context: &Context) -> Collected {
    Err(CollectError::Other("not implemented yet".into()))
}

pub fn hostname(_context: &Context) -> Option<String> {
    None
}

pub fn machine_id(_context: &Context) -> Option<String> {
    None
}
