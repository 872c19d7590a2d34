"""A private Dovecot (IMAP + LMTP on loopback) started from a temp dir for the test suite."""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from tests.servers.ports import free_port

if TYPE_CHECKING:
    # Only a type: smtp_relay imports this module, so a runtime import would be circular.
    from tests.servers.smtp_relay import TlsCertificate

DEFAULT_PASSWORD = "student-pass"
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class DovecotUnavailable(RuntimeError):
    """Dovecot is not installed (or cannot run here); the message says why."""


def find_dovecot() -> str | None:
    """Path of the dovecot binary, also looking in sbin dirs a non-root PATH may lack."""
    found = shutil.which("dovecot")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / "dovecot"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def dovecot_version(binary: str) -> tuple[int, ...]:
    """Numeric version of the installed Dovecot, e.g. (2, 3, 19, 1)."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    match = re.match(r"\s*(\d+(?:\.\d+)*)", out)
    if not match:
        raise DovecotUnavailable(f"cannot parse `dovecot --version` output: {out!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def unavailable_reason() -> str | None:
    """Why a private Dovecot cannot be started here, or None when it can."""
    binary = find_dovecot()
    if binary is None:
        return (
            "dovecot is not installed (Debian packages dovecot-imapd dovecot-lmtpd); "
            "run scripts/install-test-deps.sh"
        )
    if os.geteuid() == 0:
        for user in ("dovecot", "dovenull"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"system user {user!r} is missing (reinstall dovecot-core)"
    for extra in ("imap", "lmtp"):
        if not any(
            (Path(d) / extra).exists() for d in ("/usr/lib/dovecot", "/usr/libexec/dovecot")
        ):
            return f"dovecot {extra} binary missing (install dovecot-{extra}d)"
    return None


class DovecotServer:
    """One private Dovecot instance: IMAP and LMTP on 127.0.0.1, any user, one password.

    Mail lives in ``<tmp>/mail/<user>/Maildir``; ``restart()`` keeps mail and ports.
    Without ``tls`` it speaks plain IMAP only (``ssl = no``: no STARTTLS offered). With a
    ``tls`` certificate (``smtp_relay.generate_certificate``) it also offers STARTTLS on
    ``imap_port`` and IMAP over TLS on ``imaps_port``; plain login stays allowed on loopback.
    """

    def __init__(
        self, password: str = DEFAULT_PASSWORD, host: str = "127.0.0.1", tls: TlsCertificate | None = None,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        binary = find_dovecot()
        reason = unavailable_reason()
        if binary is None or reason is not None:
            raise DovecotUnavailable(reason or "dovecot not found")
        self.binary: str = binary
        self.version: tuple[int, ...] = dovecot_version(binary)
        self.host: str = host
        self.password: str = password
        self.tls: TlsCertificate | None = tls
        # With it, XOAUTH2 logins are checked at this RFC 7662 endpoint (the oauth2 passdb);
        # the static password still works for PLAIN/LOGIN, so test helpers can read mail.
        self.oauth2_introspection_url = oauth2_introspection_url
        self.imap_port: int = 0
        self.imaps_port: int = 0  # stays 0 without tls
        self.lmtp_port: int = 0
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """Path of the generated dovecot.conf."""
        return self._dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        """Dovecot's own log file (read it when a test fails mysteriously)."""
        return self._dir / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        """Directory holding one home per user."""
        return self._dir / "mail"

    @property
    def running(self) -> bool:
        """True while the dovecot master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def _dir(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("DovecotServer not started")
        return self.tmpdir

    def start(self, timeout: float = 20.0) -> None:
        """Write the config (first time only), start ``dovecot -F`` and wait until it answers."""
        if self.running:
            return
        if self.tmpdir is None:
            self.tmpdir = Path(tempfile.mkdtemp(prefix="mleg-dovecot-"))
            # Mail processes (uid dovecot) and imap-login (dovenull) must traverse this dir.
            self.tmpdir.chmod(0o755)
            self._pick_ports()
            self._prepare_dirs()
            self.config_path.write_text(self._render_config())
        stderr = (self._dir / "dovecot.stderr").open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._terminate()
            raise

    def stop(self) -> None:
        """Stop dovecot and delete its temp dir (mail included)."""
        self._terminate()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, wait ``down_for`` seconds, start again on the same ports; mail is kept.

        Open IMAP sessions end too, as on a real restart: stopping the master alone leaves
        each session's `imap` process serving its client, so they are killed with it.
        """
        session = self._proc.pid if self._proc is not None else None
        self._terminate()
        if session is not None:  # the master was started in a session of its own (start_new_session)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(session, signal.SIGKILL)
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def kill(self) -> None:
        """Stop dovecot but keep config and mail, so ``start()`` brings it back ("server down")."""
        self._terminate()

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for tests -------------------------------------------------------------

    @staticmethod
    def new_user(prefix: str = "student", domain: str = "example.test") -> str:
        """A fresh address, so tests sharing the session server never see each other's mail."""
        return f"{prefix}-{secrets.token_hex(4)}@{domain}"

    def deliver(self, recipient: str, raw: bytes, mail_from: str = "sender@example.test") -> None:
        """Deliver ``raw`` into ``recipient``'s INBOX over LMTP (raises if refused)."""
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=15) as lmtp:
            lmtp.sendmail(mail_from, [recipient], raw)

    def fetch_all(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """Every message in ``user``'s mailbox, as raw bytes, in UID order."""
        with imaplib.IMAP4(self.host, self.imap_port, timeout=15) as imap:
            imap.login(user, self.password)
            typ, _ = imap.select(mailbox, readonly=True)
            if typ != "OK":
                return []
            typ, data = imap.uid("SEARCH", "ALL")
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            messages: list[bytes] = []
            for uid in uids:
                typ, parts = imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        messages.append(part[1])
            imap.logout()
            return messages

    def wait_for_messages(
        self, user: str, count: int = 1, timeout: float = 10.0, mailbox: str = "INBOX"
    ) -> list[bytes]:
        """Poll until ``user`` has at least ``count`` messages; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.fetch_all(user, mailbox)
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{user} has {len(messages)} message(s), wanted {count}")
            time.sleep(0.1)

    def kick(self, user: str) -> None:
        """Drop ``user``'s IMAP connections from the server side, at once (``doveadm kick``).

        ``restart()`` is no such cut: established connections (TLS ones proxied by
        imap-login) outlive the old master for seconds.
        """
        doveadm = shutil.which("doveadm") or str(Path(self.binary).parents[1] / "bin" / "doveadm")
        subprocess.run(
            [doveadm, "-c", str(self.config_path), "kick", user],
            capture_output=True, timeout=10, check=True,
        )

    def read_log(self) -> str:
        """Dovecot's log plus anything it printed before logging was up."""
        parts = []
        for path in (self._dir / "dovecot.stderr", self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------------------

    def _identity(self) -> tuple[str, str, str, str]:
        """(internal user, login user, mail uid name, mail gid name) for our privileges."""
        if os.geteuid() == 0:
            return "dovecot", "dovenull", "dovecot", "dovecot"
        # Rootless Dovecot: every process runs as the invoking user.
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return user, user, user, group

    def _pick_ports(self) -> None:
        """Distinct free ports for IMAP, LMTP and (with tls) IMAPS."""
        ports: list[int] = []
        while len(ports) < (3 if self.tls is not None else 2):
            port = free_port(self.host)
            if port not in ports:
                ports.append(port)
        self.imap_port, self.lmtp_port = ports[0], ports[1]
        if self.tls is not None:
            self.imaps_port = ports[2]

    def _ssl_config(self, cert_key: str, key_key: str, reader: str) -> str:
        """The ``ssl`` lines: off, or on with our certificate (setting names differ by version)."""
        if self.tls is None:
            return "ssl = no\n"
        return (
            f"ssl = yes\n{cert_key} = {reader}{self.tls.cert_path}\n"
            f"{key_key} = {reader}{self.tls.key_path}\n"
        )

    def _imaps_listener(self, address_key: str) -> str:
        """The imaps listener: disabled (port 0) without tls, else TLS on ``imaps_port``."""
        if self.tls is None:
            return "  inet_listener imaps {\n    port = 0\n  }\n"
        return (
            f"  inet_listener imaps {{\n    {address_key} = {self.host}\n"
            f"    port = {self.imaps_port}\n    ssl = yes\n  }}\n"
        )

    def _oauth2_mechanisms(self) -> str:
        return " xoauth2 oauthbearer" if self.oauth2_introspection_url else ""

    def _static_mechanisms(self) -> str:
        # A token must never pass as the static password.
        return "\n  mechanisms = plain login" if self.oauth2_introspection_url else ""

    def _oauth2_passdb(self) -> str:
        if not self.oauth2_introspection_url:
            return ""
        if self.version >= (2, 4):
            raise DovecotUnavailable("the oauth2 test set-up is written for Dovecot 2.3")
        ext = self._dir / "dovecot-oauth2.conf.ext"
        ext.write_text(
            f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
        )
        # Refusals are what these tests are about: no 2 s delay per refusal, no per-address penalty.
        return ("auth_failure_delay = 0\n"
                "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
                f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {ext}\n}}\n")

    def _prepare_dirs(self) -> None:
        self.mail_root.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam("dovecot")
            os.chown(self.mail_root, entry.pw_uid, entry.pw_gid)
        self.mail_root.chmod(0o755)

    def _render_config(self) -> str:
        internal, login, uid, gid = self._identity()
        base = self._dir / "run"
        state = self._dir / "state"
        rootless = os.geteuid() != 0
        # imap-login chroots to base_dir/login by default, which only root can do.
        login_chroot = "  chroot =\n" if rootless else ""
        service_users = (
            "".join(
                f"service {name} {{\n  user = {internal}\n}}\n"
                for name in ("anvil", "auth", "auth-worker", "dict", "stats")
            )
            if rootless
            else ""
        )
        if self.version >= (2, 4):
            return f"""\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {base}
state_dir = {state}
log_path = {self.log_path}
protocols = imap lmtp
listen = {self.host}
{self._ssl_config("ssl_server_cert_file", "ssl_server_key_file", "")}auth_allow_cleartext = yes
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {gid}
default_login_user = {login}
first_valid_uid = 1
postmaster_address = postmaster@example.test
passdb static {{
  password = {self.password}
}}
userdb static {{
  fields {{
    uid = {uid}
    gid = {gid}
    home = {self.mail_root}/%{{user}}
  }}
}}
mail_driver = maildir
mail_path = ~/Maildir
service imap-login {{
{login_chroot}  inet_listener imap {{
    listen = {self.host}
    port = {self.imap_port}
  }}
{self._imaps_listener("listen")}}}
service lmtp {{
  inet_listener lmtp {{
    listen = {self.host}
    port = {self.lmtp_port}
  }}
}}
{service_users}"""
        return f"""\
base_dir = {base}
state_dir = {state}
log_path = {self.log_path}
protocols = imap lmtp
listen = {self.host}
{self._ssl_config("ssl_cert", "ssl_key", "<")}disable_plaintext_auth = no
auth_mechanisms = plain login{self._oauth2_mechanisms()}
default_internal_user = {internal}
default_internal_group = {gid}
default_login_user = {login}
first_valid_uid = 1
postmaster_address = postmaster@example.test
{self._oauth2_passdb()}passdb {{
  driver = static
  args = password={self.password}{self._static_mechanisms()}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.mail_root}/%u allow_all_users=yes
}}
mail_location = maildir:~/Maildir
service imap-login {{
{login_chroot}  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
{self._imaps_listener("address")}}}
service lmtp {{
  inet_listener lmtp {{
    address = {self.host}
    port = {self.lmtp_port}
  }}
}}
{service_users}"""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise DovecotUnavailable(
                    f"dovecot exited with {self._proc.returncode}:\n{self.read_log()}"
                )
            try:
                with socket.create_connection((self.host, self.imap_port), timeout=2) as sock:
                    greeting = sock.recv(512)
                with socket.create_connection((self.host, self.lmtp_port), timeout=2) as sock:
                    lmtp_greeting = sock.recv(512)
                greeted = greeting.startswith(b"* OK") and lmtp_greeting.startswith(b"220")
                if greeted and (self.tls is None or self._imaps_greets()):
                    return
                last_error = RuntimeError(f"unexpected greetings {greeting!r} {lmtp_greeting!r}")
            except OSError as exc:
                last_error = exc
            time.sleep(0.05)
        raise DovecotUnavailable(
            f"dovecot did not answer on {self.host}:{self.imap_port} within {timeout}s "
            f"({last_error}):\n{self.read_log()}"
        )

    def _imaps_greets(self) -> bool:
        """True when the imaps listener completes a verified handshake and greets."""
        assert self.tls is not None
        with (
            socket.create_connection((self.host, self.imaps_port), timeout=2) as raw,
            self.tls.client_context().wrap_socket(raw, server_hostname=self.host) as sock,
        ):
            return sock.recv(512).startswith(b"* OK")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # The master did not shut down: kill it and any children left in its session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
