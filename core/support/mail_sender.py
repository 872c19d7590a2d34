"""Who sent a support mail: is the From address proven, and the key that caps count it under.

Anyone can write any From header. What proves it is the receiving mail server's check of
the mail's DKIM signature and the domain's DMARC policy, which that server writes into an
`Authentication-Results` header (RFC 8601). Only the headers of the server the installation
names (`imap.authserv_id`, the first word of the header) are read: every other one may have
been written by the sender. RFC 8601 section 5 asks that server to remove headers that
carry its own authserv-id from incoming mail, so what is left under that id is its own.

A sender is verified when one of those headers says either
- `dmarc=pass` for the From domain (`header.from`), or
- `dkim=pass` by the From domain or a parent of it (`header.d`, else the domain of `header.i`).
SPF alone is not enough: it checks the envelope sender, not From, and a domain's SPF record
often admits every customer of a shared mail provider. And a `dmarc` result other than pass
for the From domain in any of those headers makes the sender unverified whatever else they say.
Without `imap.authserv_id` nothing can be verified, so nobody is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import authres  # type: ignore[import-untyped]

__all__ = ["MAX_RESULTS_HEADERS", "SenderCheck", "address_key", "check_sender", "domain_of"]

log = logging.getLogger(__name__)
# A mail carries a few; more is a sender padding them. Each is cut before it is parsed.
MAX_RESULTS_HEADERS = 20
MAX_RESULTS_CHARS = 8192
_TAG = re.compile(r"\+.*$")


@dataclass(frozen=True)
class SenderCheck:
    """Whether the From address is proven, and in a few words why (staff read it)."""

    verified: bool
    reason: str


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def address_key(address: str) -> str:
    """The address per-sender limits count under: lower case, without a `+tag` in the local part.

    `Jan+1@x.pl`, `jan+2@x.pl` and `jan@x.pl` reach one mailbox, so they are one sender.
    """
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    return f"{_TAG.sub('', local) or local}@{domain}"


def _aligned(signer: str, domain: str) -> bool:
    """The signing domain is the From domain or a parent of it (DMARC's relaxed alignment,
    without a public-suffix list: a key under a public suffix cannot be published by a sender)."""
    signer = signer.strip().lower().rstrip(".").lstrip("@")
    return bool(signer) and (domain == signer or domain.endswith("." + signer))


def _property(result: object, ptype: str, name: str) -> str | None:
    for prop in getattr(result, "properties", None) or []:
        if str(prop.type).lower() == ptype and str(prop.name).lower() == name:
            return str(prop.value)
    return None


def _parse(value: str) -> object | None:
    value = " ".join(value.split())[:MAX_RESULTS_CHARS]
    try:
        return authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:  # authres raises its own errors, and others on odd input: unreadable is "no result"
        return None


def check_sender(sender: str, results_headers: list[str], authserv_id: str | None) -> SenderCheck:
    """Decide from the mail's Authentication-Results values (top first) whether `sender` is proven."""
    if not sender or "@" not in sender:
        return SenderCheck(False, "no sender address")
    if not authserv_id:
        return SenderCheck(False, "no authserv-id configured (MLEG_IMAP__AUTHSERV_ID)")
    wanted = authserv_id.strip().lower()
    domain = domain_of(sender)
    trusted = []
    for value in results_headers[:MAX_RESULTS_HEADERS]:
        # A cheap look at the first word before parsing: most foreign headers stop here.
        first = value.split(";", 1)[0].split()[:1]
        if [word.lower() for word in first] != [wanted]:
            continue
        parsed = _parse(value)
        if parsed is not None and str(getattr(parsed, "authserv_id", "")).lower() == wanted:
            trusted.append(parsed)
    if not trusted:
        return SenderCheck(False, f"no Authentication-Results from {wanted}")
    seen: list[str] = []
    verified_by: str | None = None
    for header in trusted:
        for result in getattr(header, "results", None) or []:
            method, outcome = str(result.method).lower(), str(result.result).lower()
            seen.append(f"{method}={outcome}")
            if method == "dmarc":
                about = (_property(result, "header", "from") or "").lower().rstrip(".")
                if about and about != domain:
                    continue  # a result about another domain says nothing about this From
                if outcome != "pass":
                    return SenderCheck(False, f"dmarc={outcome} for {domain}")
                if about == domain and verified_by is None:
                    verified_by = "dmarc=pass"
            elif method == "dkim" and outcome == "pass" and verified_by is None:
                signer = _property(result, "header", "d") or domain_of(_property(result, "header", "i") or "")
                if _aligned(signer, domain):
                    verified_by = f"dkim=pass (header.d={signer.lower()})"
    if verified_by is not None:
        return SenderCheck(True, verified_by)
    summary = ", ".join(dict.fromkeys(seen)) or "no results"
    return SenderCheck(False, f"not proven for {domain} ({summary[:120]})")
