//! Operations: Prometheus metrics, per-agent rate limits, the periodic jobs.
