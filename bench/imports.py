"""CSV imports end to end, beside the floor of a raw COPY of the same rows into a table.

    python -m bench.imports [--rows 100000,1000000]

For each size: a users file (userId, email, plan, seats, and a column of manual segment keys)
is written to disk, then timed from the first byte of the upload until the query service
answers that the last row's user is a member of the segment its row names (upload → draft →
start → the worker applies every row → Redis answers). The environment has a dynamic segment
("plan is pro") as well, so each row is evaluated as an identify would be. Beside it, the
same file is loaded by ``COPY ... FROM STDIN (FORMAT csv)`` into a plain table: the floor.

Peak RSS (VmHWM) of the admin, worker and query processes is read from /proc at the end of
each size: constant memory means the same peaks for 100k and 1M rows. The machine may be
shared: compare a figure only with the floor printed beside it, and mind the load average
printed with the CPU figures (the worker applies two lanes at once, so on a busy machine the
end-to-end figure falls faster than the CPU per row rises).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from bench.cpu import machine_seconds, process_seconds
from bench.stack import BenchDatabase, Services, drop_redis_keys, redis_url
from shared.settings import Settings

PLANS = ("free", "pro", "team", "enterprise")
COHORTS = 20
MAPPING = {
    "userId": {"as": "userId"},
    "email": {"as": "email"},
    "plan": {"as": "attribute"},
    "seats": {"as": "attribute"},
    "cohort": {"as": "segment"},
}


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(rows)
    with path.open("w", newline="") as out:
        out.write("userId,email,plan,seats,cohort\r\n")
        for i in range(rows):
            out.write(
                f"user-{i},user-{i}@example.com,{rng.choice(PLANS)},{rng.randint(1, 500)},"
                f"cohort-{i % COHORTS}\r\n"
            )


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            yield piece


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB; NaN without /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def copy_floor(dsn: str, path: Path) -> float:
    """Seconds a COPY of the file into a plain table takes."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS bench_copy
               (user_id text, email text, plan text, seats int, cohort text)"""
        )
        await conn.execute("TRUNCATE bench_copy")
        start = time.perf_counter()
        with path.open("rb") as f:
            await conn.copy_to_table("bench_copy", source=f, format="csv", header=True)
        return time.perf_counter() - start
    finally:
        await conn.close()


class BackendCpu:
    """CPU seconds of a database's PostgreSQL backends over a window. Pools open and close
    backends meanwhile, so they are sampled while the window lasts: a backend first seen
    after the start counts from zero, one gone counts up to its last sample."""

    def __init__(self, conn: asyncpg.Connection, name: str) -> None:
        self.conn, self.name = conn, name
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.started = False

    async def sample(self) -> None:
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.name,
        )
        for pid in (r["pid"] for r in rows):
            seconds = process_seconds(pid)
            if seconds is None:
                continue
            self.first.setdefault(pid, seconds if not self.started else 0.0)
            self.last[pid] = seconds
        self.started = True

    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


async def one_size(db: BenchDatabase, services: Services, rows: int, path: Path) -> None:
    env = await db.environment(f"bench-{rows}")
    admin = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{services.port('admin')}",
        headers={"Authorization": f"Bearer {env.secretKey}"},
        timeout=600,
    )
    query = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{services.port('query')}",
        headers={"Authorization": f"Bearer {env.secretKey}"},
        timeout=30,
    )
    sampler = await asyncpg.connect(db.dsn)
    try:
        for n in range(COHORTS):
            resp = await admin.post(
                "/v1/segments", json={"name": f"Cohort {n}", "key": f"cohort-{n}", "kind": "manual"}
            )
            resp.raise_for_status()
        resp = await admin.post(
            "/v1/segments",
            json={
                "name": "Pro",
                "key": "pro",
                "kind": "dynamic",
                "conditions": {"attribute": "plan", "op": "is", "value": "pro"},
            },
        )
        resp.raise_for_status()
        last_user, last_cohort = f"user-{rows - 1}", f"cohort-{(rows - 1) % COHORTS}"

        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        resp = await admin.post(
            "/v1/imports", content=_chunks(path), headers={"Content-Type": "text/csv"}
        )
        resp.raise_for_status()
        uploaded = time.perf_counter()
        import_id = resp.json()["id"]
        backends = BackendCpu(sampler, db.name)
        await backends.sample()
        worker_cpu = process_seconds(services.pid("worker")) or 0.0
        machine = machine_seconds() or 0.0
        resp = await admin.post(f"/v1/imports/{import_id}/start", json={"mapping": MAPPING})
        resp.raise_for_status()
        while True:
            status = (await admin.get(f"/v1/imports/{import_id}")).json()
            if status["status"] not in ("draft", "processing"):
                break
            services.check_alive()
            await backends.sample()
            await asyncio.sleep(0.5)
        done = time.perf_counter()
        worker_cpu = (process_seconds(services.pid("worker")) or 0.0) - worker_cpu
        await backends.sample()
        pg_cpu = backends.seconds()
        machine = (machine_seconds() or 0.0) - machine
        while True:
            got = await query.get(f"/v1/users/{last_user}/segments/{last_cohort}")
            if got.json().get("member"):
                break
            await asyncio.sleep(0.02)
        visible = time.perf_counter()
        load_after = os.getloadavg()[0]
        floor = await copy_floor(db.dsn, path)
    finally:
        await sampler.close()
        await admin.aclose()
        await query.aclose()
    total = visible - start
    print(
        f"{rows:>9,} rows: {rows / total:>8,.0f} rows/s end to end ({total:.1f} s: upload "
        f"{uploaded - start:.1f} s, apply {done - uploaded:.1f} s, visible +{visible - done:.2f} s;"
        f" status {status['status']}, created {status['created']:,}, rejected "
        f"{status['rejected']:,})"
    )
    apply = done - uploaded
    print(
        f"{'':>9}   where the apply time goes: worker {worker_cpu:.1f} CPU-s "
        f"({worker_cpu / rows * 1e6:.0f} us/row), PostgreSQL backends {pg_cpu:.1f} CPU-s "
        f"({pg_cpu / rows * 1e6:.0f} us/row); the machine was busy {machine / apply:.2f} of "
        f"{os.cpu_count()} cores (load average {load_before:.1f} before, {load_after:.1f} after)"
    )
    print(f"{'':>9}   floor: COPY of the same file {rows / floor:>10,.0f} rows/s ({floor:.1f} s)")
    peaks = ", ".join(
        f"{name} {peak_rss_mb(services.pid(name)):.0f} MB" for name in ("admin", "worker", "query")
    )
    print(f"{'':>9}   peak RSS: {peaks}, bench {peak_rss_mb(os.getpid()):.0f} MB")


async def main(sizes: list[int]) -> None:
    url = redis_url(None)
    prefix = f"benchimp{os.getpid()}"
    async with BenchDatabase(None) as db:
        services = Services(Settings(database_url=db.dsn, redis_url=url, redis_prefix=prefix))
        try:
            for name in ("query", "admin", "worker"):
                await services.start_async(name)
            with tempfile.TemporaryDirectory() as tmp:
                for rows in sizes:
                    path = Path(tmp) / f"users-{rows}.csv"
                    write_file(path, rows)
                    print(f"{rows:>9,} rows: file of {path.stat().st_size / 1e6:.1f} MB")
                    await one_size(db, services, rows, path)
        finally:
            services.stop_all()
            await drop_redis_keys(url, prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.rows.split(",")]))
