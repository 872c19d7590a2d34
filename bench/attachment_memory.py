"""Benchmark P5: peak memory while the mailbox reader handles one support mail with a 25 MB attachment.

    .venv/bin/python -m bench.attachment_memory [--limit-mb 25]

A private Dovecot is started and two mails are delivered over LMTP: one whose size on
the wire is just under the size limit (`imap.max_message_bytes`, 25 MB by default: it is
fetched, stored and parsed whole) and one just over it (only its head is fetched; the
sender gets a notice). Each is processed by `MailFrontend.process_once()` in a fresh
subprocess, twice: once under tracemalloc (peak of Python allocations during the cycle)
and once without it (peak resident set during the cycle minus the resident set before it:
VmHWM after a reset, the counter ru_maxrss reports; see `_rss`).

Printed next to the mail's size and its attachment's size: growth / size (target: at most 2).
No timed or sized asserts: the figures are for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from bench.targets import verdict
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import load_settings
from core.storage.db import make_engine, upgrade
from mail.frontend import MailFrontend

__all__ = ["big_mail", "main"]

SECRET = "bench-secret-key-long-enough-0123456789-abcdef"
NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
MB = 1024 * 1024


def big_mail(support: str, wire_bytes: int) -> tuple[bytes, int]:
    """A support mail with one video attachment whose whole size on the wire is `wire_bytes`
    (give or take a base64 line); returns (raw, attachment size)."""
    def build(attachment_bytes: int) -> bytes:
        message = EmailMessage()
        message["From"] = "Duzy Zalacznik <big@example.org>"
        message["To"] = support
        message["Subject"] = "Nagranie ekranu"
        message["Message-ID"] = f"<big-{wire_bytes}@example.org>"
        message.set_content("W załączniku nagranie ekranu: mObywatel się zawiesza przy skanowaniu kodu.")
        # Incompressible-looking bytes, as a real video is; base64 makes it 4/3 larger on the wire.
        payload = bytes(range(256)) * (attachment_bytes // 256) + b"\0" * (attachment_bytes % 256)
        message.add_attachment(payload, maintype="video", subtype="mp4", filename="ekran.mp4")
        return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    attachment = wire_bytes * 3 // 4
    raw = build(attachment)
    attachment -= (len(raw) - wire_bytes) * 3 // 4 + 57  # trim the headers' and line ends' share
    raw = build(attachment)
    return raw, attachment


def _rss() -> tuple[int, int]:
    """(resident now, resident high-water mark) in bytes, the mark reset first if never read.

    ru_maxrss cannot be used as is: Linux carries it across exec from the parent's memory
    image (here the parent built a 25 MB mail), so a fresh process starts with the parent's
    peak. VmHWM is the same counter per process, and `/proc/self/clear_refs` resets it.
    """
    status = Path("/proc/self/status")
    if not status.exists():  # not Linux: fall back to ru_maxrss (kB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak, peak
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: resets VmHWM to VmRSS


def _child(args: argparse.Namespace) -> None:
    """One cycle in this (fresh) process; prints a JSON line with the figures."""
    settings = load_settings(
        mode="production", secret_key=SECRET, var_dir=Path(args.var), database_url=args.db_url,
        imap={"host": args.host, "port": args.port, "security": "none", "username": args.user,
              "password": args.password, "max_message_bytes": args.limit},
        smtp={"host": "127.0.0.1", "port": 1, "security": "none", "sender": args.user},
        university={"help_desk_email": args.user},
    )
    engine = make_engine(args.db_url)  # migrated by the parent: Alembic's own peak must not hide ours
    ctx = AppContext(settings=settings, engine=engine, clock=FixedClock(NOW))
    reader = MailFrontend(ctx)
    ctx.faq  # noqa: B018  # trained at start-up (as `mleg serve` does), not charged to the mail
    result: dict[str, object] = {}
    if args.child == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        report = asyncio.run(reader.process_once())
        result["peak"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    else:
        gc.collect()
        _reset_peak()
        before, _ = _rss()
        report = asyncio.run(reader.process_once())
        _, high = _rss()
        result["rss"] = high - before
    result["outcome"] = [p.outcome.reason if p.outcome else p.status for p in report.processed]
    print(json.dumps(result))


def _run_child(mode: str, dovecot_host: str, port: int, user: str, password: str, limit: int,
               tmp: Path) -> dict[str, object]:
    db = tmp / f"{mode}-{user.split('@')[0]}.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    engine.dispose()
    out = subprocess.run(
        [sys.executable, "-m", "bench.attachment_memory", "--child", mode, "--host", dovecot_host,
         "--port", str(port), "--user", user, "--password", password, "--limit", str(limit),
         "--db-url", f"sqlite:///{db}", "--var", str(tmp / "var")],
        capture_output=True, text=True, check=True, timeout=600,
    )
    figures: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-mb", type=int, default=25)
    parser.add_argument("--child", choices=["tracemalloc", "rss"], help=argparse.SUPPRESS)
    for name in ("--host", "--user", "--password", "--db-url", "--var"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.child:
        _child(args)
        return
    from tests.servers.dovecot import DovecotServer

    limit = args.limit_mb * MB
    print(f"peak memory for one support mail with a big attachment (size limit {limit / MB:.0f} MB):")
    with DovecotServer() as dovecot, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for label, wire in (("at the limit", limit - 4096), ("just over", limit + 64 * 1024)):
            figures: dict[str, dict[str, object]] = {}
            raw, attachment = big_mail("x", wire)
            size = len(raw)
            del raw
            for mode in ("tracemalloc", "rss"):
                user = dovecot.new_user(prefix="support")
                raw, _ = big_mail(user, wire)
                dovecot.deliver(user, raw)
                del raw
                figures[mode] = _run_child(mode, dovecot.host, dovecot.imap_port, user, dovecot.password, limit, tmp)
            peak, rss = int(figures["tracemalloc"]["peak"]), int(figures["rss"]["rss"])  # type: ignore[call-overload]
            print(f"  {label:12s} mail {size / MB:6.2f} MB (attachment {attachment / MB:6.2f} MB): "
                  f"tracemalloc peak {peak / MB:7.2f} MB = {peak / size:4.2f}x mail, {peak / attachment:4.2f}x "
                  f"attachment; peak RSS growth {rss / MB:7.2f} MB = {rss / size:4.2f}x mail, "
                  f"{rss / attachment:4.2f}x attachment")
            print(f"  {'':12s} heap peak / mail {peak / size:4.2f} "
                  + verdict(f"P5 memory ({label}): heap peak / mail size", peak / size, "<=", 2.0)
                  + f"   RSS growth / mail {rss / size:4.2f} "
                  + verdict(f"P5 memory ({label}): RSS growth / mail size", rss / size, "<=", 2.0))
            print(f"  {'':12s} outcome: {figures['rss']['outcome']}")


if __name__ == "__main__":
    main()
