"""Support: escalated threads, the support mailbox's rules, the FAQ, mail text handling, sender
verification and the staff accounts of the web console."""
