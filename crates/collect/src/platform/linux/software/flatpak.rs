//! Stub: being written.

use crate::{Collected, Context};

pub fn collect(_context: &Context) -> Collected {
    Ok(None)
}
