//! The store's admin reads and writes: tokens, agent listings, alerts.

#[allow(unused_imports)]
use super::{Backend, Store, StoreError, postgres, sqlite};

impl Store {}
