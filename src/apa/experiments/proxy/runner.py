"""Runs `apa` commands as the real-data proof's steps, logged and timed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from apa.errors import ApaError


class Runner:
    """Runs `apa` commands as subprocesses (the exact command lines a user would type), logs
    each to OUT/logs/NAME.log, times every step and keeps the times in OUT/timings.json."""

    def __init__(self, out: Path, threads: int, echo: Callable[[str], None] = print):
        self.out = out
        self.threads = threads
        self.echo = echo
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timings_path = out / "timings.json"
        self.timings: dict[str, float] = (json.loads(self.timings_path.read_text())
                                          if self.timings_path.is_file() else {})
        self.commands: list[str] = []

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.echo(line)
        with (self.out / "proxy.log").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def record(self, step: str, seconds: float) -> None:
        self.timings[step] = round(seconds, 1)
        self.timings_path.write_text(json.dumps(self.timings, indent=2) + "\n")

    def apa(self, step: str, args: list[str], skip: str | None = None) -> float | None:
        """Run ``apa ARGS`` as step ``step``; with ``skip`` (why), only record the command."""
        shown = "apa " + shlex.join(args)
        self.commands.append(shown)
        if skip:
            self.say(f"{step}: skipped, {skip}")
            return None
        self.say(f"{step}: {shown}")
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        log_path = self.logs / f"{step.replace('/', '_')}.log"
        start = time.perf_counter()
        with log_path.open("w", encoding="utf-8") as log:
            code = subprocess.run([sys.executable, "-m", "apa.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  env=env).returncode
        seconds = time.perf_counter() - start
        if code:
            tail = "\n    ".join(log_path.read_text(errors="replace").strip().splitlines()[-8:])
            raise ApaError(f"{step} failed (exit {code}): {shown}\n  last lines of {log_path}:\n    {tail}\n"
                           "fix the cause and rerun: finished steps are skipped")
        self.record(step, seconds)
        self.say(f"{step}: done in {seconds:.0f} s")
        return seconds

    def timed(self, step: str, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = function()
        self.record(step, time.perf_counter() - start)
        return value
