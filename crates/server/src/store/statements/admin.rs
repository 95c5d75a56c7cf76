//! Admin reads and writes: tokens, agent listings, alerts.
