"""Logging set-up, with a last-line filter that masks anything shaped like a PESEL or a code."""

from __future__ import annotations

import logging
import re

from core.security.redact import redact_personal

__all__ = ["RedactingFilter", "configure_logging", "redact_log_text"]

# Not inside a longer token: a hex Message-ID or a Maildir file name has digit runs that are no PESEL,
# and masking them sent operators looking for files that do not exist.
_PESEL_SHAPED = re.compile(r"(?<![0-9A-Za-z])(\d{2})\d{7}(\d{2})(?![0-9A-Za-z])")
# Message-IDs, addresses and paths: left to the mask above, which keeps their digit runs whole.
_IDENTIFIER = re.compile(r"(\S*[@/]\S*)")


def redact_log_text(message: str) -> str:
    """What the filter below does to a log line: for text a caller logs it cannot vouch for
    (an exception's message, a traceback), masked before it reaches any handler."""
    return "".join(
        part if index % 2 else redact_personal(part)
        for index, part in enumerate(_IDENTIFIER.split(_PESEL_SHAPED.sub(r"\1*******\2", message)))
    )


class RedactingFilter(logging.Filter):
    """Defence in depth: code never logs a PESEL or a code, and if it ever did, this masks it.

    Any 11-digit run first (valid or not: a log is no place to be choosy), then what
    core.security.redact finds in a student's own spelling (separated digits, a code in any case).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_log_text(message)
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
