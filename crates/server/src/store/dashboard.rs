//! The store's what the dashboard reads and its login sessions.

#[allow(unused_imports)]
use super::{Backend, Store, StoreError, postgres, sqlite};

impl Store {}
