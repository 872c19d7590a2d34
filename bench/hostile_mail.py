"""Hostile mail bodies at 100 KB and 1 MB: reading them must cost ten times as much, not a hundred.

    .venv/bin/python -m bench.hostile_mail [--sizes 100000,1000000] [--repeat 3]

For each pathological body (an HTML part of `<style` or `<` repeated, a comment run, 50,000
short lines, one huge line, a run of digits for the PESEL masking) it prints the best of
`--repeat` runs of what the serving process does with an inbound mail's text: the MIME parse
with the HTML-to-text (mail.parse.parse_inbound), the sender's own words
(core.support.mail_text.question_text), the language, and the masking of what staff see
(core.security.redact.redact_personal). The ratio column is time(largest) / time(smallest): linear
code gives about the size ratio (10), quadratic code its square (100). The last lines time
one mail through the worker process with its time limit (mail.guard.read_inbound): the
price of the isolation per mail.
"""

from __future__ import annotations

import argparse
import base64
import functools
import textwrap
import time
from collections.abc import Callable

from core.security.redact import redact_personal
from core.support.mail_text import question_text
from mail import guard
from mail.parse import parse_inbound

HEAD = "From: a@example.org\r\nTo: b@example.org\r\nSubject: bench\r\nMIME-Version: 1.0\r\n"


def _mail(body: str, subtype: str = "html") -> bytes:
    encoded = "\r\n".join(textwrap.wrap(base64.b64encode(body.encode()).decode(), 76))
    return (HEAD + f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + encoded + "\r\n").encode()


BODIES: dict[str, Callable[[int], bytes]] = {
    "html <style run": lambda n: _mail("<style" * (n // 6)),
    "html < run": lambda n: _mail("<" * n),
    "html <!--<x run": lambda n: _mail("<!--<x" * (n // 6)),
    "html many tags": lambda n: _mail("<b>x</b>" * (n // 8)),
    "short lines": lambda n: _mail("a\n" * (n // 2), "plain"),
    "one huge line": lambda n: _mail("Regards" + " " * n + "1", "plain"),
    "digit groups": lambda n: _mail("12 " * (n // 3), "plain"),
}


def _read(raw: bytes) -> None:
    facts = parse_inbound(raw)
    question_text(facts.subject, facts.text)
    redact_personal(facts.text[:20_000])  # what core.support.mailbox_rules keeps for staff


def _best(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_mail", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="body sizes in characters, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes every benchmark's options to each
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'body':18}" + "".join(f"{size:>12,}" for size in sizes) + f"{'ratio':>8}")
    for name, make in BODIES.items():
        times = [_best(functools.partial(_read, make(size)), args.repeat) for size in sizes]
        ratio = times[-1] / times[0] if times[0] else float("nan")
        print(f"{name:18}" + "".join(f"{t * 1000:>10.1f}ms" for t in times) + f"{ratio:>8.1f}")
    raw = BODIES["html <style run"](sizes[-1])
    started = time.perf_counter()
    guard.read_inbound(raw, size=len(raw), oversize=False, timeout=30)
    first = time.perf_counter() - started
    again = _best(lambda: guard.read_inbound(raw, size=len(raw), oversize=False, timeout=30), args.repeat)
    print(f"worker process, {sizes[-1]:,} chars: first mail (worker start) {first * 1000:.0f} ms, "
          f"then {again * 1000:.1f} ms per mail")
    guard.stop_worker()


if __name__ == "__main__":
    main()
