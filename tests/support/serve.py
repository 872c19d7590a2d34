"""`mleg serve` as a subprocess, the way an operator runs it, to be killed and started again."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from core.app.settings import PROJECT_ROOT


class ServeProcess:
    """`mleg serve --no-jobs` with `env`, its output appended to `log`; `run` for a one-off verb."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "core.cli", *args], env=self.env, cwd=PROJECT_ROOT, check=True,
                       capture_output=True, timeout=60)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=self.env,
                                         cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self.proc = None
        return code
