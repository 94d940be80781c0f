"""CPU time of processes, read from ``/proc`` (Linux): who is busy while a figure is measured.

A figure is only meaningful when the load generator is not the bottleneck, so every
measurement reports the CPU share of the generator, the service under test, PostgreSQL and
Redis over the same window. On systems without ``/proc`` the shares are simply absent.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far; None when it is gone or unreadable."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces; fields after ')' are fixed
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def pids_named(*names: str) -> list[int]:
    """Pids of the processes whose command name is one of ``names`` (e.g. every PostgreSQL
    backend is named ``postgres``)."""
    found: list[int] = []
    if not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            found.append(int(entry.name))
    return found


def machine_seconds() -> float | None:
    """Busy CPU seconds of the whole machine (all cores) so far, from ``/proc/stat``."""
    try:
        first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    ticks = [int(v) for v in first[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def sample(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each of ``pids`` still running."""
    out: dict[int, float] = {}
    for pid in pids:
        seconds = process_seconds(pid)
        if seconds is not None:
            out[pid] = seconds
    return out


class CpuWindow:
    """CPU shares (1.0 = one core busy) of labelled process groups between two instants."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self._machine: float | None = None

    def start(self) -> None:
        self._start = {label: sample(pids) for label, pids in self.groups.items()}
        self._machine = machine_seconds()

    def stop(self, seconds: float) -> dict[str, float]:
        """Shares over the ``seconds`` since :meth:`start`."""
        if seconds <= 0:
            return {}
        shares: dict[str, float] = {}
        for label, pids in self.groups.items():
            before, after = self._start[label], sample(pids)
            # a process that exited meanwhile took its counters with it: only pids seen at both
            # ends count (PostgreSQL backends come and go)
            used = sum(after[p] - before[p] for p in after.keys() & before.keys())
            shares[label] = round(used / seconds, 2)
        machine = machine_seconds()
        if machine is not None and self._machine is not None:
            shares["machine"] = round((machine - self._machine) / seconds, 2)
        return shares
