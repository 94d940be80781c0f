"""Issue 14's worker goal as a ratio: ``bench.world`` on this checkout and on an earlier
revision, alternately, on the same machine in one run.

    python -m bench.compare [--base b91c4e7] [--users 50000] [--rounds 2]

The earlier revision (default: main when issue 14 was filed) is checked out into a worktree
in the temporary folder (``segments-bench-base-<rev>``, its own virtual environment, made
once), with this
checkout's ``bench/`` copied over its own so that both run the very same world, stack driver
and floor. Runs go A, B, A, B, ... so that a machine growing busier or quieter weighs on both;
each prints its users/s and its COPY floor. The summary gives the median of each and their
ratio (the goal: 3x), and each one's share of its own floor.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE = re.compile(r"^applied:\s+([\d,]+) users/s", re.M)
FLOOR = re.compile(r"^floor:\s+([\d,]+) users/s", re.M)


def prepare(rev: str) -> Path:
    """A worktree of ``rev`` with its own venv and this checkout's bench/ (made once)."""
    where = Path(tempfile.gettempdir()) / f"segments-bench-base-{rev}"
    if not where.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True
        )
    shutil.copytree(ROOT / "bench", where / "bench", dirs_exist_ok=True)
    python = where / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where / ".venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-e", f"{where}[dev]"], check=True
        )
    return where


def world(checkout: Path, python: Path, users: int) -> tuple[float, float]:
    """One bench.world run in ``checkout``: (users/s, floor users/s)."""
    done = subprocess.run(
        [str(python), "-m", "bench.world", "--users", str(users)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    rate, floor = RATE.search(done.stdout), FLOOR.search(done.stdout)
    if done.returncode != 0 or rate is None or floor is None:
        raise SystemExit(f"bench.world failed in {checkout}:\n{done.stdout}\n{done.stderr}")
    for line in done.stdout.splitlines():
        if line.startswith(("applied:", "floor:", "cpu")):
            print(f"    {line}")
    return float(rate.group(1).replace(",", "")), float(floor.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--base", default="b91c4e7", help="the earlier revision")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = prepare(args.base)
    sides = {
        "this checkout": (ROOT, Path(sys.executable)),
        args.base: (base, base / ".venv" / "bin" / "python"),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for n in range(args.rounds):
        for name, (checkout, python) in sides.items():
            print(f"round {n + 1}, {name}:", flush=True)
            results[name].append(world(checkout, python, args.users))
    medians = {}
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        share = statistics.median(r / f for r, f in runs)
        medians[name] = rate
        print(f"{name:>14}: {rate:8,.0f} users/s (median of {len(runs)}), {share:.2f} of its floor")
    ratio = medians["this checkout"] / medians[args.base]
    verdict = "PASS" if ratio >= 3 else "FAIL"
    print(f"ratio: {ratio:.2f}x the rate of {args.base} (goal >= 3x): {verdict}")


if __name__ == "__main__":
    main()
