"""Logging set-up, with a last-line filter that masks anything shaped like a PESEL."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "configure_logging"]

# Not inside a longer token: a hex Message-ID or a Maildir file name has digit runs that are no PESEL,
# and masking them sent operators looking for files that do not exist.
_PESEL_SHAPED = re.compile(r"(?<![0-9A-Za-z])(\d{2})\d{7}(\d{2})(?![0-9A-Za-z])")


class RedactingFilter(logging.Filter):
    """Defence in depth: code never logs a PESEL, and if it ever did, this masks it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _PESEL_SHAPED.sub(r"\1*******\2", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL, and a Bot API URL carries the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aioimaplib logs every IMAP line at DEBUG, whole mails (PESELs, activation codes) included.
    logging.getLogger("aioimaplib").setLevel(logging.WARNING)
