//! Stub: /etc/passwd parsing.
