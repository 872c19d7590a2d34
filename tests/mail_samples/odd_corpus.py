"""A generated corpus of odd support mails (abuse test of issue 7): broken MIME, bad charsets, loops.

`corpus(support)` returns ~260 `OddMail`s, deterministic (seeded). Each raw message carries
its token (`ODD-0042.`) somewhere in its bytes, so a stored row can be traced back to it
even when its headers are garbage. `automatic` marks mail that must never get an automatic
answer (RFC 3834 and its real-world cousins, and our own answers coming back).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OddMail", "corpus"]

CRLF = b"\r\n"


@dataclass(frozen=True)
class OddMail:
    """One corpus mail: what it is, its bytes, and what the rules must do with it."""

    token: str
    kind: str
    raw: bytes
    automatic: bool = False  # must never be answered automatically
    envelope_from: str = "sender@example.org"  # "" for bounces (null reverse-path)
    duplicate_of: str | None = None  # a true duplicate (same Message-ID) of that token


def _msg(headers: list[tuple[str, bytes | str]], body: bytes | str) -> bytes:
    lines = [(name.encode() + b": " + (value.encode() if isinstance(value, str) else value)) for name, value in headers]
    data = body.encode() if isinstance(body, str) else body
    return CRLF.join(lines) + CRLF + CRLF + data


class _Builder:
    def __init__(self, support: str, seed: int = 2026) -> None:
        self.support = support
        self.rng = random.Random(seed)
        self.mails: list[OddMail] = []

    def token(self) -> str:
        return f"ODD-{len(self.mails):04d}."

    def add(self, kind: str, make: Callable[[str], bytes], *, automatic: bool = False,
            envelope_from: str = "sender@example.org") -> OddMail:
        token = self.token()
        mail = OddMail(token, kind, make(token), automatic, envelope_from)
        self.mails.append(mail)
        return mail

    def base(self, token: str, **extra: bytes | str) -> list[tuple[str, bytes | str]]:
        """Plain headers of a person's question; `extra` adds or replaces (None-like "" drops)."""
        n = token[4:8]
        headers: dict[str, bytes | str] = {
            "From": f"Student {n} <student{n}@example.org>", "To": self.support,
            "Subject": f"Pytanie {token}", "Date": "Mon, 05 Oct 2026 10:00:00 +0200",
            "Message-ID": f"<{token}odd@example.org>", "MIME-Version": "1.0",
            "Content-Type": "text/plain; charset=utf-8",
        }
        for key, value in extra.items():
            name = key.replace("_", "-")
            if value == "":
                headers.pop(name, None)
            else:
                headers[name] = value
        return list(headers.items())


def _question(token: str) -> str:
    return f"Dzień dobry, nie dostałem maila z kodem aktywacyjnym. {token}\r\n"


def corpus(support: str) -> list[OddMail]:
    """Every odd mail, in delivery order."""
    b = _Builder(support)
    rng = b.rng

    # --- broken MIME structure -------------------------------------------------------
    for variant in range(12):
        def broken(token: str, v: int = variant) -> bytes:
            declared, used = f"b{v}", (f"b{v}" if v % 3 else f"other{v}")
            parts = [f"--{used}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{_question(token)}",
                     f"--{used}\r\nContent-Type: application/pdf; name=\"a{v}.pdf\"\r\n"
                     f"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK{'%%' * v}\r\n"]
            closing = "" if v % 2 else f"--{used}--\r\n"
            ctype = f"multipart/mixed; boundary=\"{declared}\"" if v != 4 else "multipart/mixed"
            if v == 5:
                ctype = "multipart/mixed; boundary="
            return _msg(b.base(token, Content_Type=ctype), "".join(parts) + closing)
        b.add("broken-boundary", broken)

    # --- charsets ----------------------------------------------------------------------
    polish = "Zażółć gęślą jaźń: nie dostałem kodu aktywacyjnego"
    labels = ["x-unknown", "unknown-8bit", "win-1250", "cp-1250", "latin2", "iso8859-2", "utf8", "klingon",
              "", "\"utf-8", "utf-7", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "gb2312"]
    encodings = ["utf-8", "cp1250", "iso-8859-2"]
    for i, label in enumerate(labels):
        def charset(token: str, label: str = label, enc: str = encodings[i % 3]) -> bytes:
            return _msg(b.base(token, Content_Type=f"text/plain; charset={label}",
                               Content_Transfer_Encoding="8bit"),
                        (polish + " " + token + "\r\n").encode(enc, errors="replace"))
        b.add("charset", charset)
    for enc in ("cp1250", "iso-8859-2"):  # declared UTF-8, sent in another charset
        b.add("mislabelled", lambda t, e=enc: _msg(b.base(t), (polish + " " + t).encode(e)))
    b.add("qp-cp1250", lambda t: _msg(b.base(t, Content_Type="text/plain; charset=windows-1250",
                                             Content_Transfer_Encoding="quoted-printable"),
                                      "Nie dosta=B3em kodu =3D=3 " + t))

    # --- huge headers (100 KB) ---------------------------------------------------------
    b.add("huge-subject", lambda t: _msg(b.base(t, Subject="Pomoc " + "bardzo " * 15_000 + t), _question(t)))
    b.add("many-received", lambda t: _msg(
        [("Received", f"from relay{i}.example.org by mx.example.org; Mon, 5 Oct 2026 10:00:{i % 60:02d} +0200")
         for i in range(1500)] + b.base(t), _question(t)))
    b.add("huge-references", lambda t: _msg(b.base(t, References=" ".join(
        f"<ref{i}@example.org>" for i in range(6000)), In_Reply_To="<ref5999@example.org>"), _question(t)))
    b.add("huge-folded-header", lambda t: _msg(b.base(t, X_Long="x" + "\r\n x" * 40_000), _question(t)))
    b.add("huge-from", lambda t: _msg(b.base(t, From=("A" * 100_000) + " <long@example.org>"), _question(t)))
    b.add("header-no-colon", lambda t: _msg([*b.base(t), ("Bogus line without colon" + "y" * 100, "")],
                                            _question(t)).replace(b"y: \r\n", b"y\r\n"))

    # --- nested multiparts -------------------------------------------------------------
    for depth in (10, 50, 50, 120):
        def nested(token: str, depth: int = depth) -> bytes:
            body = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{_question(token)}"
            for level in range(depth):
                body = (f"Content-Type: multipart/mixed; boundary=\"n{level}\"\r\n\r\n--n{level}\r\n{body}\r\n"
                        f"--n{level}--\r\n")
            head, _, rest = body.partition("\r\n\r\n")
            return _msg([h for h in b.base(token) if h[0] != "Content-Type"] + [("Content-Type", head[14:])], rest)
        b.add(f"nested-{depth}", nested)

    # --- identity: no Message-ID, duplicates ---------------------------------------------
    for i in range(10):
        b.add("no-message-id", lambda t, i=i: _msg(b.base(t, Message_ID="" if i % 2 else "<>"), _question(t)))
    for i in range(6):
        first = b.add("duplicate", lambda t: _msg(b.base(t), _question(t)))
        again = OddMail(first.token, "duplicate", first.raw, duplicate_of=first.token)
        b.mails.append(again)
        if i % 2:  # a different body, the same Message-ID (a resend through another route)
            other = first.raw.replace(b"Dzie", b"Hej, dzie")
            b.mails.append(OddMail(first.token, "duplicate", other, duplicate_of=first.token))

    # --- empty and garbage bodies ------------------------------------------------------
    b.add("empty-body", lambda t: _msg(b.base(t), b""))
    b.add("headers-only-no-blank-line", lambda t: CRLF.join(
        n.encode() + b": " + (v.encode() if isinstance(v, str) else v) for n, v in b.base(t)) + CRLF)
    b.add("only-whitespace", lambda t: _msg(b.base(t), "   \r\n\t\r\n"))
    b.add("empty-multipart", lambda t: _msg(b.base(t, Content_Type="multipart/mixed; boundary=e"), "--e--\r\n"))
    b.add("html-only", lambda t: _msg(b.base(t, Content_Type="text/html; charset=utf-8"),
                                      f"<html><body><p>Nie dostałem maila<br>{t}</p><script>x</script></body>"))
    for i in range(12):
        def garbage(token: str, i: int = i) -> bytes:
            noise = bytes(rng.randrange(256) for _ in range(2000 + 500 * i))
            if i < 4:  # no headers at all: only bytes
                return token.encode() + noise
            if i < 8:
                return _msg(b.base(token, Content_Type="application/octet-stream"), noise)
            return _msg(b.base(token), noise)  # "text/plain; utf-8" that is not
        b.add("binary-garbage", garbage)

    # --- transfer encodings ------------------------------------------------------------
    bad_b64 = ["!!!!not base64!!!!", "SGVsbG8", "SGVsbG8===", "=====", "SGVs\x00bG8=", "ü€ß", "SGVsbG8gd29y bGQ=",
               "A" * 10_001, "", "SGVsbG8\r\n.\r\nd29ybGQ="]
    for text in bad_b64:
        b.add("base64-error", lambda t, text=text: _msg(
            b.base(t, Content_Transfer_Encoding="base64"), (text + "\r\n" + base64.b64encode(t.encode()).decode())
            .encode("utf-8")))
    b.add("unknown-cte", lambda t: _msg(b.base(t, Content_Transfer_Encoding="x-uuencode-ish"), _question(t)))
    b.add("attachment-bad-b64", lambda t: _msg(b.base(t, Content_Type="multipart/mixed; boundary=q"),
                                              f"--q\r\nContent-Type: text/plain\r\n\r\n{_question(t)}--q\r\n"
                                              "Content-Type: image/png; name=x.png\r\nContent-Transfer-Encoding: "
                                              "base64\r\n\r\n%%%%\r\n--q--\r\n"))

    # --- RFC 2047 / 2231 garbage ---------------------------------------------------------
    words = ["=?utf-8?B?!!!?=", "=?utf-8?Q?=ZZ=?=", "=?klingon?Q?abc?=", "=?utf-8?B?", "=??B?YWJj?=",
             "=?utf-8?X?abc?=", "=?iso-8859-2?Q?=B3=B1=BF?=", "=?utf-8?B?" + "QUFB" * 5000 + "?=",
             "=?utf-8*pl?Q?Za=C5=BC=C3=B3=C5=82=C4=87?=", "=?windows-1250?B?" + base64.b64encode(
                 "Łódź".encode("cp1250")).decode() + "?=", "=?utf-8?Q?a?==?utf-8?Q?b?=", "=?utf-16?B?//4A?=",
             "=?utf-8?q?with space inside?=", "=?=?=?=", "=?utf-8?B?4pyT?= =?us-ascii?Q?_?="]
    for i, word in enumerate(words):
        def rfc2047(token: str, word: str = word, i: int = i) -> bytes:
            headers = b.base(token, Subject=f"{word} {token}",
                             From=f"{word} <w{i}@example.org>" if i % 2 else f"\"{word}\" <w{i}@example.org>")
            if i % 3 == 0:
                headers = b.base(token, Content_Type="multipart/mixed; boundary=r", From=f"w{i}@example.org")
                body = (f"--r\r\nContent-Type: text/plain\r\n\r\n{_question(token)}--r\r\nContent-Type: "
                        f"application/pdf\r\nContent-Disposition: attachment; filename=\"{word}\"; "
                        f"filename*=utf-8''%ZZ%C5\r\n\r\nJVBERi0=\r\n--r--\r\n")
                return _msg(headers, body)
            return _msg(headers, _question(token))
        b.add("rfc2047-garbage", rfc2047)

    # --- 8-bit headers -----------------------------------------------------------------
    for i, enc in enumerate(["utf-8", "cp1250", "iso-8859-2", "utf-8", "cp1250", "latin-1", "utf-8", "cp1250"]):
        def eight_bit(token: str, enc: str = enc, i: int = i) -> bytes:
            name = "Paweł Łęcki Żółć".encode(enc, errors="replace")
            subject = "Nie dostałem kodu — pomóż ".encode(enc, errors="replace") + token.encode()
            return _msg(b.base(token, Subject=subject,
                               From=b"\"" + name + b"\" <p8bit" + str(i).encode() + b"@example.org>"),
                        _question(token).encode(enc, errors="replace"))
        b.add("8bit-header", eight_bit)

    # --- senders ---------------------------------------------------------------------
    for _ in range(5):
        b.add("missing-from", lambda t: _msg(b.base(t, From=""), _question(t)), automatic=True)
    for name in ["Jan Kowalski", "\"Kowalski, Jan\"", "=?utf-8?Q?Pawe=C5=82?=", "undisclosed-recipients:;", "<>",
                 "@", "jan@", "<jan at example.org>"]:
        b.add("display-name-only-from", lambda t, name=name: _msg(b.base(t, From=name), _question(t)), automatic=True)
    b.add("two-from", lambda t: _msg([*b.base(t), ("From", "second@example.org")], _question(t)))
    b.add("from-group", lambda t: _msg(b.base(t, From="Grupa: a@example.org, b@example.org;"), _question(t)))

    # --- very long lines, null bytes -------------------------------------------------------
    for size in (20_000, 200_000, 1_100_000):
        b.add("very-long-line", lambda t, size=size: _msg(b.base(t), _question(t).strip() + " " + "x" * size))
    b.add("long-line-attachment", lambda t: _msg(b.base(t, Content_Type="multipart/mixed; boundary=L"),
                                                f"--L\r\nContent-Type: text/plain\r\n\r\n{_question(t)}--L\r\n"
                                                "Content-Type: application/zip; name=big.zip\r\n"
                                                "Content-Transfer-Encoding: base64\r\n\r\n"
                                                + "QUJD" * 400_000 + "\r\n--L--\r\n"))
    for i in range(5):
        def nulls(token: str, i: int = i) -> bytes:
            raw = _msg(b.base(token), _question(token).encode() + b"\0" * (i + 1) + b"po\0lish\r\n")
            return raw.replace(b"Subject: Pytanie", b"Subject: Pyt\0anie") if i % 2 else raw
        b.add("null-bytes", nulls)

    # --- hostile bodies (issue 13): quadratic for a naive reader; ESC sequences ------------
    def _b64(text: str) -> bytes:
        data = base64.b64encode(text.encode())
        return CRLF.join(data[i:i + 76] for i in range(0, len(data), 76)) + CRLF

    for unit in ("<style", "<", "<a ", "<!--<title"):
        b.add("html-bomb", lambda t, unit=unit: _msg(
            b.base(t, Content_Type="text/html; charset=utf-8", Content_Transfer_Encoding="base64"),
            _b64(f"<p>{_question(t)}</p>" + unit * (200_000 // len(unit)))))
    b.add("short-lines-50000", lambda t: _msg(b.base(t, Content_Transfer_Encoding="base64"),
                                              _b64(_question(t) + "a\n" * 50_000)))
    b.add("escape-sequences", lambda t: _msg(
        b.base(t, From=f'"Jan\x1b[8m\x9b2J" <esc{t[4:8]}@example.org>', Subject=f"Pytanie {t}\x1b]0;x\x07\x1b[2J"),
        _question(t) + "\x1b[2J\x1b[8mukryte\r\n"))

    # --- look like our own answers -----------------------------------------------------
    own = [
        {"From": support, "Auto_Submitted": "auto-replied"},
        {"From": support},
        {"From": f"Help desk <{support.upper()}>"},
        {"Message_ID": "<0123456789abcdef.mleg@example.edu.pl>", "Auto_Submitted": "auto-replied",
         "X_Auto_Response_Suppress": "All", "From": "mlegitymacja@example.edu.pl"},
        {"Subject": "Re: Pytanie [MLEG-1]", "Auto_Submitted": "auto-replied", "From": "loop@example.org"},
    ]
    for extra in own:
        b.add("own-answer", lambda t, e=extra: _msg(b.base(t, **e), "Dzień dobry,\r\n\r\n" + _question(t)),
              automatic=True)

    # --- automatic mail of every shape --------------------------------------------------
    auto_headers: list[dict[str, str]] = [
        {"Auto_Submitted": v} for v in ("auto-replied", "auto-generated", "auto-notified", "AUTO-REPLIED",
                                        "auto-replied; owner-email=\"x@example.org\"", "yes", " auto-generated ")
    ] + [
        {"Precedence": v} for v in ("bulk", "list", "junk", "BULK", " list ")
    ] + [
        {"List_Id": "<studenci.lists.example.edu.pl>"}, {"List_Unsubscribe": "<mailto:u@example.org>"},
        {"List_Post": "<mailto:l@example.org>"}, {"list-help": "<mailto:h@example.org>"},
        {"X_Auto_Response_Suppress": "All"}, {"X_Auto_Response_Suppress": "OOF, AutoReply"},
        {"From": "MAILER-DAEMON@mx.example.org"}, {"From": "postmaster@example.org"},
        {"From": "Mail Delivery System <Mailer-Daemon@mx.example.org>"},
        {"From": "noreply@example.org"}, {"From": "no-reply@uczelnia.example.edu.pl"},
        {"From": "do-not-reply@example.org"}, {"From": "donotreply+x@example.org"}, {"From": "bounces+abc@example.org"},
        {"Return_Path": "<>"},
    ]
    for extra in auto_headers:
        null = extra.get("Return_Path") == "<>"
        b.add("auto", lambda t, e=extra: _msg(b.base(t, **e), "Jestem na urlopie. " + t), automatic=True,
              envelope_from="" if null else "sender@example.org")
    for i in range(4):  # delivery reports (RFC 3464), with and without the null reverse-path
        def dsn(token: str, i: int = i) -> bytes:
            body = (f"--dsn\r\nContent-Type: text/plain\r\n\r\nDelivery failed. {token}\r\n--dsn\r\n"
                    "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
                    "Final-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
                    "--dsn\r\nContent-Type: message/rfc822\r\n\r\nFrom: " + support + "\r\nSubject: Re: x\r\n"
                    "Auto-Submitted: auto-replied\r\n\r\nanswer\r\n--dsn--\r\n")
            return _msg(b.base(token, From=f"bounce-handler{i}@example.org",
                               Content_Type="multipart/report; report-type=delivery-status; boundary=dsn"), body)
        b.add("dsn", dsn, automatic=True, envelope_from="" if i % 2 else "sender@example.org")
    b.add("outlook-oof", lambda t: _msg(b.base(t, Subject="Automatic reply: Pytanie", Auto_Submitted="auto-generated",
                                               X_Auto_Response_Suppress="All", Content_Type="text/html; charset=utf-8"),
                                        f"<p>I am out of office. {t}</p>"), automatic=True)

    # --- people among the odd ones: ordinary questions, pl and en --------------------------
    for i in range(40):
        text = _question if i % 2 else (lambda t: f"Hello, the activation email did not arrive. {t}\r\n")
        b.add("ordinary", lambda t, text=text: _msg(b.base(t), text(t)))
    rng.shuffle(b.mails)
    # A duplicate must come after its original for "stored once" to mean the first one.
    seen: set[str] = set()
    ordered: list[OddMail] = []
    later: list[OddMail] = []
    for mail in b.mails:
        if mail.duplicate_of is not None and mail.duplicate_of not in seen:
            later.append(mail)
            continue
        seen.add(mail.token)
        ordered.append(mail)
    return ordered + later
