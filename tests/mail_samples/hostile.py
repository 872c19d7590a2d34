"""Hostile mails: bodies built to make a naive text transformation quadratic, and ESC sequences.

- `html_bomb`: an HTML part of `<style` repeated (no `>` anywhere), 1 MB by default: each
  position made `<[^>]+>` and the invisible-element pattern scan to the end.
- `many_lines`: 50,000 short lines (then an attachment up to the size): `strip_signature`
  counted the non-blank lines after every line anew.
- `escapes`: ESC sequences (clear screen, hidden text, window title), C1 controls and a NUL
  in the display name, the subject and the body.
"""

from __future__ import annotations

import base64
import textwrap

MB = 1024 * 1024
# What a terminal obeys: clear screen, hidden text, set the window title (OSC ... BEL), and the
# 8-bit CSI (U+009B) some terminals read too.
ESCAPES = "\x1b[2J\x1b[8mhidden\x1b[0m\x1b]0;pwned\x07\x9b31m"


def _b64(data: bytes) -> str:
    return "\r\n".join(textwrap.wrap(base64.b64encode(data).decode(), 76))


def html_bomb(sender: str, to: str, token: str, size: int = MB, unit: str = "<style") -> bytes:
    markup = "<p>Pytanie " + token + "</p>" + unit * (size // len(unit))
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: HTML {token}\r\nMessage-ID: <html-{token}@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + _b64(markup.encode()) + "\r\n").encode()


def many_lines(sender: str, to: str, token: str, lines: int = 50_000, size: int = MB) -> bytes:
    # Base64, so the text has bare "\n" line ends: all 50,000 lines fit in what is read (100,000 chars).
    text = f"Pytanie {token}\n" + "a\n" * lines
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: Linie {token}\r\nMessage-ID: <lines-{token}@example.org>\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + _b64(text.encode()))
    pad = max(size - len(head), 0) * 3 // 4  # base64 grows it by a third
    return (head + "\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="dane.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + _b64(b"\0" * pad) + "\r\n--b1--\r\n").encode()


def escapes(sender: str, to: str, token: str) -> bytes:
    """ESC sequences in the display name, the subject (raw 8-bit UTF-8) and the body."""
    return (f'From: "Jan{ESCAPES}" <{sender}>\r\nTo: {to}\r\nSubject: Pytanie {token}{ESCAPES}\r\n'
            f"Message-ID: <esc-{token}@example.org>\r\nIn-Reply-To: <old\x1b[2J@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"Nie dostałem maila z kodem.{ESCAPES}\r\nDruga linia\tz tabulatorem.\x00\r\n").encode()
