//! Inventory history and the fleet-wide software index.
