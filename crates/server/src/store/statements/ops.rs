//! Operations: retention, online counts.
