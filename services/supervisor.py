"""Child processes that are restarted when they crash, as a container runtime's restart policy
would do: the development runner's services (``segments dev``).

A service that exits without being asked to is started again after a backoff that doubles
with each crash in a row (1 s, 2 s, 4 s, ... 30 s) and starts over once it has stayed up for
a minute, with one line on stderr saying so: a crash-looping service neither spins the CPU nor
takes the other services down with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
#: A service up this long is stable again: its next crash waits FIRST_DELAY.
STABLE_SECONDS = 60.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Child:
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0  # in a row
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Runs ``commands`` ({name: argv}) with ``env``; call :meth:`check` periodically."""

    commands: Mapping[str, list[str]]
    env: Mapping[str, str]
    out: IO[str] = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.monotonic
    children: dict[str, _Child] = field(init=False)

    def __post_init__(self) -> None:
        self.children = {name: _Child(list(argv)) for name, argv in self.commands.items()}

    def start_all(self) -> None:
        for name in self.children:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        child = self.children[name]
        child.proc = subprocess.Popen(child.command, env=dict(self.env))
        child.started_at = self.clock()
        child.restart_at = None

    def pid(self, name: str) -> int | None:
        proc = self.children[name].proc
        return None if proc is None or proc.poll() is not None else proc.pid

    def restarts(self, name: str) -> int:
        return self.children[name].restarts

    def check(self) -> None:
        """Notice crashed services (and schedule their restart); restart those that are due."""
        now = self.clock()
        for name, child in self.children.items():
            if child.proc is not None and (code := child.proc.poll()) is not None:
                child.proc = None
                if now - child.started_at >= STABLE_SECONDS:
                    child.crashes = 0
                delay = min(MAX_DELAY, FIRST_DELAY * 2**child.crashes)
                child.crashes += 1
                child.restart_at = now + delay
                print(
                    f"{name} {describe_exit(code)}; restarting it in {delay:.0f}s",
                    file=self.out,
                    flush=True,
                )
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(name)
                child.restarts += 1
                assert child.proc is not None
                print(f"{name} restarted (pid {child.proc.pid})", file=self.out, flush=True)

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM every running service, then SIGKILL those still running after ``timeout``."""
        procs = [c.proc for c in self.children.values() if c.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for child in self.children.values():
            child.proc = None
            child.restart_at = None
