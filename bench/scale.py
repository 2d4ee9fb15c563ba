"""Many sources due at once: one schedule tick, every run to its end, everything correct.

The scheduler admits as many runs at once as the stack has download workers
(shared/rules/admission.py); the rest wait in its line and start as runs end. Per size: the
wall time, runs per minute, how the runs ended, the most runs under way at once (from the
ledger: validation's lock to the unlock), how long runs waited for admission, the peak database
connections, and the machine's load while it ran.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from bench.common import bench_source, utc_now
from infra.resources import Names
from local.stack import LocalStack, aws_client
from local.ticker import fire_all
from shared.store.db import Database

SIZES = (200, 500, 1000)
TIMEOUT_S = 1800


def measure_scale(stack: LocalStack, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in sizes:
        results[str(size)] = _one_size(stack, size)
        print(f"  {size} sources: {results[str(size)]['wall_s']:.1f}s", flush=True)
    first, last = results[str(sizes[0])], results[str(sizes[-1])]
    results["growth"] = {
        "sources": f"{sizes[0]} -> {sizes[-1]}",
        "wall_time_factor": last["wall_s"] / first["wall_s"],
        "size_factor": sizes[-1] / sizes[0],
    }
    return results


def _one_size(stack: LocalStack, size: int) -> dict[str, Any]:
    env = stack.env
    db = Database(env["DATABASE_URL"], application_name="sourceflow-bench")
    cursor = utc_now() - timedelta(days=1)
    sources = [
        bench_source(
            db, env["VENDOR_URL"], "listings-b", cursor=cursor, schedule_interval="1 minute"
        )
        for _ in range(size)
    ]
    sampler = _Sampler(env["DATABASE_URL"])
    sampler.start()
    started = time.monotonic()
    fire_all(
        aws_client(env, "events"), aws_client(env, "sqs"), Names(env["SOURCEFLOW_STAGE"]).prefix
    )
    finished = _wait_until_all_ended(db, sources)
    wall = time.monotonic() - started
    sampler.stop()
    correct = _all_correct(db, sources)
    outcomes = _outcomes(db, sources)
    with db.transaction() as cur:  # out of later ticks' way
        cur.execute(
            "UPDATE public.source SET is_active = false WHERE source_id = ANY(%s)", (sources,)
        )
    db.close()
    return {
        "sources": size,
        "completed": finished,
        "wall_s": wall,
        "runs_per_min": finished / wall * 60,
        "db_connections": sampler.peak_connections,
        "all_correct": correct and finished == size,
        "admission_capacity": stack.options.workers_per_service,
        **outcomes,
        "load_average_1m": {
            "mean": statistics.mean(sampler.loads or [0.0]),
            "max": max(sampler.loads or [0.0]),
        },
    }


def _wait_until_all_ended(db: Database, sources: list[str]) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with db.transaction() as cur:
            cur.execute(
                "SELECT count(*) AS ended FROM public.source_run WHERE source_id = ANY(%s)"
                " AND status IN ('succeeded', 'failed', 'skipped')",
                (sources,),
            )
            ended = int(cur.fetchone()["ended"])
        if ended >= len(sources) or time.monotonic() > deadline:
            return ended
        time.sleep(0.5)


def _all_correct(db: Database, sources: list[str]) -> bool:
    """Every run succeeded once; every source unlocked, counted once, its cursor where the
    ledger says the run put it (the newest record it loaded, or unchanged)."""
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT s.source_id, s.locked_by, s.runtime_count, s.last_modified_date,
                   r.status, r.cursor_after, r.max_last_modified, r.cursor_before
              FROM public.source s JOIN public.source_run r USING (source_id)
             WHERE s.source_id = ANY(%s)
            """,
            (sources,),
        )
        rows = cur.fetchall()
    return len(rows) == len(sources) and all(
        row["status"] == "succeeded"
        and row["locked_by"] is None
        and row["runtime_count"] == 6
        and row["last_modified_date"] == row["cursor_after"]
        and row["cursor_after"]
        == max(filter(None, (row["cursor_before"], row["max_last_modified"])))
        for row in rows
    )


def _outcomes(db: Database, sources: list[str]) -> dict[str, Any]:
    """How the runs ended (status, error, step: count), the most under way at once, and how
    long they waited for admission."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT status, error, failed_step, started_at, finished_at FROM public.source_run"
            " WHERE source_id = ANY(%s)",
            (sources,),
        )
        runs = [dict(row) for row in cur.fetchall()]
        cur.execute(
            "SELECT extract(epoch FROM admitted_at - queued_at) AS waited"
            " FROM public.run_admission WHERE source_id = ANY(%s) AND admitted_at IS NOT NULL",
            (sources,),
        )
        waits = sorted(float(row["waited"]) for row in cur.fetchall())
    ended: dict[str, int] = {}
    for run in runs:
        key = " ".join(filter(None, (run["status"], run["error"], run["failed_step"])))
        ended[key] = ended.get(key, 0) + 1
    return {
        "ended": ended,
        "most_under_way": most_at_once(
            [(r["started_at"], r["finished_at"]) for r in runs if r["finished_at"]]
        ),
        "admission_wait_s": {
            "median": statistics.median(waits) if waits else None,
            "max": waits[-1] if waits else None,
        },
    }


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant (one that ends as another starts is not open)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


class _Sampler(threading.Thread):
    """The most PostgreSQL connections the services held at once (sampled every 100 ms), and
    the machine's one-minute load average (every 5 s)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self._dsn, self._stopping = dsn, threading.Event()
        self.peak_connections, self.loads = 0, list[float]()

    def run(self) -> None:
        from psycopg2 import connect

        conn = connect(self._dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            samples = 0
            while not self._stopping.wait(0.1):
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'sourceflow\\_%'"
                )
                self.peak_connections = max(self.peak_connections, int(cur.fetchone()[0]))
                samples += 1
                if samples % 50 == 0:
                    self.loads.append(os.getloadavg()[0])
        conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
