//! What the dashboard reads and its login sessions.
