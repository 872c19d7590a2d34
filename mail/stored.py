"""A stored inbound mail's raw bytes: written and read in pieces (core.storage.blobs), as it can be 25 MB.

Apart from mail.inbound, which stores and processes mail, so that the parse worker (mail.guard),
which only reads, needs nothing of the processing.
"""

from __future__ import annotations

from sqlmodel import Session

from core.storage.blobs import read_blob
from core.storage.models import InboundMailRaw

__all__ = ["RAW", "RAW_TABLE", "stored_raw"]

RAW = InboundMailRaw.__table__.c.raw  # type: ignore[attr-defined]
RAW_TABLE = InboundMailRaw.__table__  # type: ignore[attr-defined]


def stored_raw(session: Session, inbound_id: int) -> bytes | None:
    """The mail as fetched (only its head when it was over the size limit)."""
    return read_blob(session, RAW, inbound_id)
