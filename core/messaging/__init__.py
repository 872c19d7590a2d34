"""Messaging: the durable outbox every outgoing message goes through, the message type, and what
happens when a delivery fails (recorded, retried, said to staff)."""
