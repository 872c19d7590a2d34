"""The credential: requesting, renewing and revoking it (service), the state rules (lifecycle), the
activation data (issuer) and the e-mails that carry it (compose)."""
