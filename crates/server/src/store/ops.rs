//! The store's operations: retention, online counts.

#[allow(unused_imports)]
use super::{Backend, Store, StoreError, postgres, sqlite};

impl Store {}
