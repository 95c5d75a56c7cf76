//! The store's inventory history and the fleet-wide software index.

#[allow(unused_imports)]
use super::{Backend, Store, StoreError, postgres, sqlite};

impl Store {}
