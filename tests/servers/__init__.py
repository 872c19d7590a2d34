"""Real mail servers (Dovecot IMAP/LMTP, an aiosmtpd SMTP relay) the test suite runs on loopback."""
