"""Security and privacy: keyed hashes and encryption of personal data, redaction of logs, guess limits
and lockouts, control-character stripping of untrusted text, and erasure on request (/forget)."""
