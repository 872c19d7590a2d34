"""IMAP protocol pieces the mailbox reader uses beside aioimaplib: its errors, a response check,
failing fast when the connection drops, SASL XOAUTH2 (which aioimaplib does not send itself), and
the UID FETCH commands the reader sends, with their responses read.
"""

from __future__ import annotations

import asyncio
import base64
import re

import aioimaplib

__all__ = ["COMMAND_TIMEOUT", "ImapError", "ImapTlsError", "authenticate_xoauth2", "close",
           "fail_fast_on_connection_loss", "fetch_bodies", "fetch_head", "fetch_sizes", "literals", "ok"]

COMMAND_TIMEOUT = 60.0
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")


class ImapError(RuntimeError):
    """The server said NO/BAD, or answered something we cannot read."""


class ImapTlsError(ImapError):
    """The TLS handshake failed (most often: the server's certificate is not trusted)."""


def ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {response.lines[-1:]!r}")
    return response


def fail_fast_on_connection_loss(imap: aioimaplib.IMAP4) -> None:
    """End every waiting command the moment the server drops the connection.

    aioimaplib only logs a lost connection: a command in flight (a FETCH when Dovecot
    restarts) then waits out its whole timeout, and later commands are written into the
    closed socket and wait too. Closing them with BYE and moving the protocol to LOGOUT
    (where aioimaplib refuses further commands at once) lets the reader reconnect now.
    """
    protocol = imap.protocol

    def lost(_exc: Exception | None) -> None:
        waiting = list(protocol.pending_async_commands.values())
        if protocol.pending_sync_command is not None:
            waiting.append(protocol.pending_sync_command)
        for command in waiting:
            command.close(b"connection lost", "BYE")
        protocol.state = aioimaplib.LOGOUT
        protocol.idle_queue.put_nowait([b"connection lost"])  # wakes a wait_server_push in IDLE

    protocol.conn_lost_cb = lost


class _SaslCommand(aioimaplib.Command):
    """AUTHENTICATE with an initial response (RFC 4959), answering a server challenge with an empty line.

    On a refused token the server sends a challenge carrying its JSON error and waits for the
    client (RFC 7628 3.2.2); aioimaplib's own `xoauth2` never answers it and hangs until its
    timeout, so a bad token would cost a minute per try.
    """

    def __init__(self, tag: str, mechanism: str, initial: str, transport: asyncio.BaseTransport,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__("AUTHENTICATE", tag, mechanism, initial, loop=loop)
        self._transport = transport
        self.challenges: list[bytes] = []

    def flush(self) -> None:
        # aioimaplib calls this after it appended a "+" continuation line, and at other times:
        # answer each continuation once, or the server reads a stray empty command (BAD).
        continuations = [bytes(line) for line in self.response.lines if bytes(line).startswith(b"+")]
        for challenge in continuations[len(self.challenges):]:
            self.challenges.append(challenge)
            self._transport.write(b"\r\n")  # type: ignore[attr-defined]


async def authenticate_xoauth2(imap: aioimaplib.IMAP4, user: str, token: str) -> aioimaplib.Response:
    protocol = imap.protocol
    initial = base64.b64encode(f"user={user}\1auth=Bearer {token}\1\1".encode()).decode("ascii")
    command = _SaslCommand(protocol.new_tag(), "XOAUTH2", initial, protocol.transport, protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command, scrub=initial), COMMAND_TIMEOUT)
    if response.result == "OK":
        protocol.state = aioimaplib.AUTH
    return response


def close(imap: aioimaplib.IMAP4) -> None:
    """Drop a connection that failed before it was ready (no LOGOUT: nothing to end politely)."""
    imap._client_task.cancel()  # still connecting: stop (a finished task ignores this)
    transport = imap.protocol.transport
    if transport is not None:
        transport.close()


def literals(response: aioimaplib.Response) -> list[bytes]:
    return [bytes(line) for line in response.lines if isinstance(line, bytearray)]


async def fetch_sizes(imap: aioimaplib.IMAP4, uids: list[int]) -> dict[int, int]:
    """RFC822.SIZE of many UIDs in one command (one round trip, not one per message)."""
    sized = ok(await imap.uid("fetch", ",".join(str(u) for u in uids), "(UID RFC822.SIZE)"), "FETCH SIZE")
    sizes: dict[int, int] = {}
    for line in sized.lines:
        if isinstance(line, bytes | bytearray):
            uid, size = _UID.search(bytes(line)), _SIZE.search(bytes(line))
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


async def fetch_head(imap: aioimaplib.IMAP4, uid: int, head_bytes: int) -> bytes:
    """Only the head of an over-size message: its headers and the first `head_bytes` of the body."""
    head = ok(await imap.uid("fetch", str(uid), f"(BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{head_bytes}>)"),
              "FETCH HEAD")
    return b"".join(literals(head))


async def fetch_bodies(imap: aioimaplib.IMAP4, uids: list[int]) -> dict[int, bytes | bytearray]:
    """BODY.PEEK[] of several UIDs in one command, each literal paired with its UID.

    RFC 3501 7.4.2 lets the server put UID before or after the literal, so both are read.
    """
    fetched = ok(await imap.uid("fetch", ",".join(str(u) for u in uids), "(UID BODY.PEEK[])"), "FETCH")
    bodies: dict[int, bytes | bytearray] = {}
    uid: int | None = None
    literal: bytes | bytearray | None = None
    for line in fetched.lines:
        if isinstance(line, bytearray):
            # Kept as the bytearray aioimaplib read into: a copy would double a 25 MB mail.
            literal = line
        elif isinstance(line, bytes):
            if b" FETCH " in line:  # a new message starts: forget the previous one's pieces
                uid, literal = None, None
            match = _UID.search(line)
            if match:
                uid = int(match.group(1))
        if uid is not None and literal is not None:
            bodies[uid] = literal
            uid, literal = None, None
    return bodies
