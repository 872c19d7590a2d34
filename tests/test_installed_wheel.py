"""The wheel as an operator installs it, used where an operator uses it.

`python -m build` on a copy of the source tree (sdist, then the wheel from the sdist), the wheel
installed (not editable) into a fresh venv, and every command run there, from a folder outside
the source tree with a clean environment: the demo console journey to an activation e-mail,
`mleg status`, `mleg serve` answering a /start through the Bot API stand-in, and the systemd
unit of deploy/ verified against the installed `mleg`. Built and installed once for the module
(with pip's cache warm, about half a minute on a quiet machine).
"""

from __future__ import annotations

import csv
import email
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from core.app.settings import PROJECT_ROOT
from tests.factories import TEST_SECRET
from tests.servers.botapi import BotApiStandIn
from tests.servers.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# Never part of the wheel; leaving them out of the copy shows the build needs none of them.
_NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "var", "dist", "build", "*.egg-info", "__pycache__",
                                      ".*_cache", ".hypothesis", "tests", "bench")


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # the operator's working folder, outside the source tree
    home: Path  # HOME: the user's data directory lives under it

    @property
    def mleg(self) -> Path:
        return self.venv / "bin" / "mleg"

    def env(self, **settings: str) -> dict[str, str]:
        """The machine's environment without any MLEG_*, PYTHONPATH or the test venv, plus `settings`."""
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("MLEG_", "PYTHON", "VIRTUAL_ENV", "STATE_DIRECTORY", "XDG_"))}
        keep["PATH"] = os.pathsep.join(p for p in keep.get("PATH", "").split(os.pathsep)
                                       if not p.startswith(str(PROJECT_ROOT)))
        return {**keep, "HOME": str(self.home), "PYTHONUNBUFFERED": "1", **settings}

    def run(self, *args: str | Path, env: dict[str, str], stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], env=env, cwd=self.work, input=stdin, capture_output=True,
                              text=True, timeout=timeout)


def _must(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    source, dist = root / "clone", root / "dist"
    shutil.copytree(PROJECT_ROOT, source, ignore=_NOT_SHIPPED)
    _must(subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
                         capture_output=True, text=True, timeout=600))
    [wheel] = dist.glob("mleg-*.whl")
    assert len(list(dist.glob("mleg-*.tar.gz"))) == 1
    venv = root / "venv"
    # The venv gets no pip of its own: this one installs into it (`--python`), a minute faster than
    # bootstrapping one; nothing of the test venv ends up in it.
    _must(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                         text=True, timeout=300))
    _must(subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                          "--quiet", "--disable-pip-version-check", "--no-compile", str(wheel)],
                         capture_output=True, text=True, timeout=600))
    (root / "work").mkdir()
    (root / "home").mkdir()
    return Installed(venv=venv, work=root / "work", home=root / "home")


def _site_packages(installed: Installed) -> Path:
    out = _must(installed.run(installed.venv / "bin" / "python", "-c",
                              "import core, importlib.resources as r; print(core.__file__); "
                              "print(r.files('core._config'))", env=installed.env()))
    code, shipped = (Path(line) for line in out.stdout.splitlines())
    assert shipped == code.parent / "_config"
    return code.parent.parent


def test_the_package_and_its_texts_come_from_the_venv(installed: Installed) -> None:
    site = _site_packages(installed)
    assert site.is_relative_to(installed.venv) and not site.is_relative_to(PROJECT_ROOT)
    shipped = site / "core" / "_config"
    for name in ("mleg.toml", "demo-register.csv", "faq/pl.toml", "faq/en.toml", "messages/pl/chat.toml",
                 "messages/en/chat.toml", "terms/2025-10-01.pl.md"):
        assert (shipped / name).is_file(), name
    # Every file of the source tree's config/ is in the wheel: a new catalog file needs no packaging change.
    expected = {p.relative_to(PROJECT_ROOT / "config").as_posix() for p in (PROJECT_ROOT / "config").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    found = {p.relative_to(shipped).as_posix() for p in shipped.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= found


def test_status_keeps_data_in_the_user_data_dir_never_in_the_package(installed: Installed) -> None:
    result = _must(installed.run(installed.mleg, "status", env=installed.env()))
    database = re.search(r"^database\s+sqlite:///(\S+)$", result.stdout, re.M)
    assert database, result.stdout
    assert Path(database[1]).is_relative_to(installed.home)  # platformdirs: ~/.local/share/mleg
    assert Path(database[1]).is_file()
    assert not (_site_packages(installed) / "var").exists()
    assert re.search(r"^mode\s+demo$", result.stdout, re.M)  # the shipped settings file was read


class Console:
    """`mleg chat` on pipes: each line typed once the previous turn ended with its prompt."""

    PROMPT = "\n> "

    def __init__(self, installed: Installed, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([str(installed.mleg), "chat", "--account", "smoke"], env=env,
                                     cwd=installed.work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.output = ""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._turns = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self._lock:
                self.output += chunk.decode("utf-8", errors="replace")

    def reply(self, timeout: float = 60.0) -> str:
        """What the console printed for the next turn, once its prompt is there."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                turns = self.output.split(self.PROMPT)
            if len(turns) > self._turns + 1:
                self._turns += 1
                return turns[self._turns - 1]
            assert time.monotonic() < deadline and self.proc.poll() is None, f"no prompt; so far:\n{self.output}"
            time.sleep(0.05)

    def say(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> int:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


def _mails(maildir: Path) -> list[Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in (maildir / "new").iterdir()]


def _text(message: Message) -> str:
    parts = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    return "\n".join(p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8") for p in parts)


def test_demo_console_journey_to_an_activation_email_then_status(installed: Installed) -> None:
    var = installed.work / "demo-var"
    env = installed.env(MLEG_VAR_DIR=str(var))  # demo mode: the shipped settings file says so
    register = _site_packages(installed) / "core" / "_config" / "demo-register.csv"
    _must(installed.run(installed.mleg, "registry", "import", register, env=env))
    with register.open(encoding="utf-8") as handle:
        student = next(r for r in csv.DictReader(handle)
                       if r["pesel"] and r["status"] == "active" and r["study_level"] == "first_cycle")

    console = Console(installed, env)
    try:
        assert "Choose your language" in console.reply()
        assert "Do you accept the terms?" in console.say("2")
        assert "PESEL" in console.say("1")
        assert "student number" in console.say(student["pesel"])
        sent = console.say(student["album"])
        assert "delivered:" in sent and str(var / "maildir") in sent
        [binding] = _mails(var / "maildir")
        code = re.search(r"code for the mLegitymacja chat: (\S+)", _text(binding))
        assert code, _text(binding)
        assert "Apply" in console.say(code[1])
        assert "Shall I go ahead?" in console.say("1")
        accepted = console.say("1")
        assert "Application accepted" in accepted and "your activation data" in accepted
    finally:
        code_at_exit = console.close()
    assert code_at_exit == 0, console.output
    mails = _mails(var / "maildir")
    assert len(mails) == 2  # the chat code, then the activation data
    [activation] = [m for m in mails if "Activation code:" in _text(m)]
    assert activation["To"] == student["email"]
    assert any(part.get_filename() == "mlegitymacja-qr.png" for part in activation.walk())
    assert "Traceback" not in console.output

    status = _must(installed.run(installed.mleg, "status", env=env))
    assert re.search(rf"^database\s+sqlite:///{re.escape(str(var / 'mleg.db'))}$", status.stdout, re.M)
    assert re.search(r"^students\s+[1-9]\d*", status.stdout, re.M), status.stdout


def test_serve_answers_a_start_through_the_bot_api(installed: Installed, api: BotApiStandIn) -> None:
    env = installed.env(
        MLEG_MODE="production", MLEG_SECRET_KEY=TEST_SECRET, MLEG_VAR_DIR=str(installed.work / "serve-var"),
        MLEG_TELEGRAM__TOKEN=api.token, MLEG_TELEGRAM__API_BASE_URL=api.base_url,
        # Production wants an SMTP server; nothing is mailed here, so one that is not listening does.
        MLEG_SMTP__HOST="127.0.0.1", MLEG_SMTP__PORT=str(free_port()), MLEG_SMTP__SECURITY="none")
    log = installed.work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(installed.mleg), "serve", "--no-jobs"], env=env, cwd=installed.work,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        api.push_text(5151, 5151, "/start")
        [answer] = api.wait_for_messages(5151, 1, timeout=90)
        assert "Wybierz język / Choose your language" in (answer.plain_text or ""), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")


def test_the_systemd_unit_verifies_against_the_installed_mleg(installed: Installed, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze missing in CI: scripts/install-test-deps.sh installs systemd")
        pytest.skip("systemd-analyze not installed (make system-deps installs it)")
    unit = (PROJECT_ROOT / "deploy" / "mleg.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/mleg/bin/mleg serve" in unit
    # verify checks that ExecStart exists: point it at this venv's `mleg`, the one change made.
    (tmp_path / "mleg.service").write_text(unit.replace("/opt/mleg/bin/mleg", str(installed.mleg)), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(tmp_path / "mleg.service")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
