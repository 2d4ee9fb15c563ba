"""Many sources due at once: one schedule tick, every run to its end, everything correct."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from bench.common import bench_source, utc_now
from infra.resources import Names
from local.stack import LocalStack, aws_client
from local.ticker import fire_all
from shared.store.db import Database

SIZES = (50, 100, 200)
TIMEOUT_S = 900


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
    connections = _ConnectionSampler(env["DATABASE_URL"])
    connections.start()
    started = time.monotonic()
    fire_all(
        aws_client(env, "events"), aws_client(env, "sqs"), Names(env["SOURCEFLOW_STAGE"]).prefix
    )
    finished = _wait_until_all_ended(db, sources)
    wall = time.monotonic() - started
    connections.stop()
    correct = _all_correct(db, sources)
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
        "db_connections": connections.peak,
        "all_correct": correct and finished == size,
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


class _ConnectionSampler(threading.Thread):
    """The most PostgreSQL connections the services held at once (sampled every 100 ms)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self._dsn, self._stopping, self.peak = dsn, threading.Event(), 0

    def run(self) -> None:
        from psycopg2 import connect

        conn = connect(self._dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self._stopping.wait(0.1):
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'sourceflow\\_%'"
                )
                self.peak = max(self.peak, int(cur.fetchone()[0]))
        conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
