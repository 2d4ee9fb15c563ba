"""Many sources due at once: one schedule tick, every run to its end, everything correct.

The scheduler admits as many runs at once as the stack has download workers
(shared/rules/admission.py); the rest wait in its line and start as runs end. Per size: the
wall time, runs per minute, how the runs ended, the most runs under way at once as admission
counts them (sampled), how long runs waited for admission, the peak database connections, and
the machine's load while it ran.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from datetime import timedelta
from typing import Any

from bench.common import bench_source, utc_now
from infra.resources import Names
from local.stack import LocalStack, aws_client
from local.ticker import fire_all
from shared.store.admission import runs_under_way
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
    bound = timedelta(seconds=stack.options.timeouts.validate_seconds)
    sampler = _Sampler(env["DATABASE_URL"], bound)
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
        "most_under_way": sampler.most_under_way,
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
    """How the runs ended (status, error and step: how many), and how long they waited for
    admission (median, longest)."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT concat_ws(' ', status, error, failed_step) AS ended, count(*) AS runs"
            " FROM public.source_run WHERE source_id = ANY(%s) GROUP BY 1",
            (sources,),
        )
        ended = {row["ended"]: int(row["runs"]) for row in cur.fetchall()}
        cur.execute(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY waited) AS median,
                   max(waited) AS longest
              FROM (SELECT extract(epoch FROM admitted_at - queued_at)::float8 AS waited
                      FROM public.run_admission
                     WHERE source_id = ANY(%s) AND admitted_at IS NOT NULL) AS admitted
            """,
            (sources,),
        )
        waited = cur.fetchone()
    return {
        "ended": ended,
        "admission_wait_s": {"median": waited["median"], "max": waited["longest"]},
    }


class _Sampler(threading.Thread):
    """Sampled every 100 ms: the most PostgreSQL connections the services held at once, and the
    most runs under way as admission counts them; every 5 s, the one-minute load average."""

    def __init__(self, dsn: str, validation_bound: timedelta) -> None:
        super().__init__(daemon=True)
        self._db = Database(dsn, application_name="sourceflow-bench-sampler")
        self._bound, self._stopping = validation_bound, threading.Event()
        self.peak_connections, self.most_under_way, self.loads = 0, 0, list[float]()

    def run(self) -> None:
        samples = 0
        while not self._stopping.wait(0.1):
            with self._db.transaction() as cur:
                cur.execute(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE usename LIKE 'sourceflow\\_%'"
                )
                self.peak_connections = max(self.peak_connections, int(cur.fetchone()["n"]))
                under_way = runs_under_way(cur, validation_bound=self._bound)
            self.most_under_way = max(self.most_under_way, under_way)
            samples += 1
            if samples % 50 == 0:
                self.loads.append(os.getloadavg()[0])
        self._db.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
